"""The supervisor of ``stig serve --workers N`` and a stop signal that
comes while it forks a child (docs/workers.md, "Failures with N workers").

:func:`stig.server.fork.spawn` blocks every signal across the fork, so a
SIGTERM that arrives meanwhile is handled just as the fork returns in the
supervisor, before the new child is one of the children it passes signals
on to.  The child it just forked must still be told to stop: otherwise it
serves on (its listening socket is its own copy) and the supervisor waits
for it forever.  The fault server's ``term-in-fork`` sends that SIGTERM
at exactly that moment (stig_testkit/fault_server.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from stig_testkit.faulty import faulty_servers
from stig_testkit.process import STOP_TIMEOUT, StigProcess
from stig_testkit.workers import on_worker, stats_of, writer_pid


@pytest.fixture
def faulty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    yield from faulty_servers(tmp_path, monkeypatch, "--workers", "2")


def _worker_pid(server: StigProcess, worker: int) -> int:
    conn = on_worker(server, worker)
    try:
        return int(stats_of(conn)["pid"])
    finally:
        conn.close()


@pytest.mark.parametrize("victim", ["worker", "writer"])
def test_sigterm_during_a_restart_stops_what_was_being_started_too(faulty, victim):
    """A worker killed is restarted alone; the writer killed, the whole
    group: the SIGTERM comes as the first child of the restart is forked."""
    server = faulty()
    assert server.proc is not None
    old = _worker_pid(server, 1) if victim == "worker" else writer_pid(server)
    server.set_fault("term-in-fork")
    os.kill(old, signal.SIGKILL)
    try:
        code = server.proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the supervisor never stopped after SIGTERM\n{server._output()}")
    assert server.faults.read_text() == ""  # the SIGTERM came from the fork's fault
    assert code == 0, server._output()
