"""Waiting for something to happen in a server under test: a polled condition
with a deadline, never a fixed sleep (the machine is shared and its pace
varies).  The deadlines are generous; a test that meets its condition at once
costs one look.

A condition not met in time raises :class:`WaitTimeout`, an AssertionError:
a failed test under pytest, a traceback in a script."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TypeVar

T = TypeVar("T")
#: Seconds a condition may take by default.
TIMEOUT = 10.0
#: Seconds between two looks.
INTERVAL = 0.01


class WaitTimeout(AssertionError):
    """A condition was not met within its deadline."""


class _HasStats(Protocol):
    def stats(self) -> dict[str, str]: ...


def wait_for(
    fetch: Callable[[], T],
    ready: Callable[[T], bool],
    timeout: float = TIMEOUT,
    what: str = "condition",
) -> T:
    """``fetch()`` until ``ready`` holds of its value, which is returned; raises
    :class:`WaitTimeout` (naming ``what`` and the last value) after ``timeout``
    seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if ready(value):
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"{what} not met within {timeout}s; last value {value!r}")
        time.sleep(INTERVAL)


def wait_for_stats(
    server: _HasStats,
    ready: Callable[[dict[str, str]], bool],
    timeout: float = TIMEOUT,
    what: str = "stats condition",
) -> dict[str, str]:
    """The server's ``stats`` once ``ready`` holds of them."""
    return wait_for(server.stats, ready, timeout, what)


def wait_until_read(server: _HasStats, sets: int, timeout: float = TIMEOUT) -> None:
    """Until the server has executed ``sets`` storage commands in all (``cmd_set``):
    what was sent is read and run, not waiting in a socket buffer."""
    wait_for_stats(
        server, lambda s: int(s["cmd_set"]) >= sets, timeout, f"the server reading {sets} sets"
    )
