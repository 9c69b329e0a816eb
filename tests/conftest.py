"""Real-server fixtures: Stig as a subprocess, on a free port, in a temporary directory.

Every protocol's integration and durability tests use these:

* ``stig_server`` — a server with default options, started for the test;
* ``stig_factory`` — ``stig_factory("--durable-acks", ...)`` starts one with
  extra command-line options (call it several times for several servers).

The object handed out (:class:`stig_testkit.process.StigProcess`) knows
``host``, ``port`` and ``data_dir``, can ``restart()``, ``kill()`` (SIGKILL)
and ``terminate()`` (SIGTERM, clean exit expected), and speaks raw bytes
through ``send_recv``/``connect`` for exact-reply tests.  Teardown always
kills the process, whatever the test did.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from stig_testkit import single_process

# Re-exported for tests that still say ``from conftest import ...``; new
# tests import them from stig_testkit.
from stig_testkit.connections import IO_TIMEOUT, BinaryConnection, RawConnection  # noqa: F401
from stig_testkit.process import (  # noqa: F401
    READY_PREFIX,
    STARTUP_TIMEOUT,
    STOP_TIMEOUT,
    ServerFailed,
    StigProcess,
)

# Hypothesis' per-example deadline is a timing assertion: on a shared 2-core
# machine (CI, or a benchmark running beside the tests) a slow example is
# load, not a bug.  Speed is measured in scripts/, never in tests.
settings.register_profile("stig", deadline=None, suppress_health_check=[HealthCheck.too_slow])
# In CI (``CI`` set, as GitHub Actions and GitLab do) the examples are a fixed
# function of each test (derandomize, no example database): a run fails or
# passes again the same way, and a failure names its example.  Elsewhere every
# run draws new ones.  HYPOTHESIS_PROFILE=ci or =stig picks one explicitly.
settings.register_profile("ci", settings.get_profile("stig"), derandomize=True, database=None)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "stig")
)

REPO = Path(__file__).resolve().parent.parent
_MARKED = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", single_process.DESCRIPTION)


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config.stash[_MARKED] = single_process.summary(session.items)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the tests that ran their servers as one process, and why."""
    lines = terminalreporter.config.stash.get(_MARKED, [])
    if lines:
        terminalreporter.section("servers run as one process (single_process marker)")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def _single_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test marked ``single_process`` starts its servers with ``--workers 0``."""
    single_process.apply(request.node, monkeypatch)


@pytest.fixture
def stig_factory(tmp_path: Path) -> Iterator[Callable[..., StigProcess]]:
    """Start servers with extra options; each gets its own data directory."""
    servers: list[StigProcess] = []

    def start(*args: str, data_dir: Path | None = None) -> StigProcess:
        index = len(servers)
        log_dir = tmp_path / f"logs{index}"
        log_dir.mkdir()
        server = StigProcess(data_dir or tmp_path / f"data{index}", log_dir, args)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill()
        server.close_clients()


@pytest.fixture
def stig_server(stig_factory: Callable[..., StigProcess]) -> StigProcess:
    """A Stig server with default options."""
    return stig_factory()
