"""Stig servers with injected faults (stig_testkit.fault_server), for tests.

A test writes a fault into the server's fault file (:meth:`FaultyStig.set_fault`)
and the server's next commits meet it: a disk error, a slow commit, a death.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stig_testkit.process import StigProcess


class FaultyStig(StigProcess):
    """``stig serve`` run through :mod:`stig_testkit.fault_server`."""

    faults: Path  #: the file the server reads its fault from

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "stig_testkit.fault_server", *super().command[3:]]

    def set_fault(self, fault: str) -> None:
        """Replace the fault file at once: the server never reads a half-written one."""
        fresh = self.faults.with_suffix(".new")
        fresh.write_text(fault)
        fresh.replace(self.faults)


def faulty_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *always: str
) -> Iterator[Callable[..., FaultyStig]]:
    """The body of a fixture that starts faulty servers (with ``always``
    before each one's own arguments) sharing one fault file, and kills them
    at teardown."""
    faults = tmp_path / "faults"
    faults.write_text("")
    monkeypatch.setenv("STIG_FAULT_FILE", str(faults))
    servers: list[FaultyStig] = []

    def start(*args: str) -> FaultyStig:
        log_dir = tmp_path / f"logs{len(servers)}"
        log_dir.mkdir()
        server = FaultyStig(tmp_path / f"data{len(servers)}", log_dir, (*always, *args))
        server.faults = faults
        servers.append(server)
        return server.start()  # type: ignore[return-value]

    yield start
    for server in servers:
        server.kill()
        server.close_clients()
