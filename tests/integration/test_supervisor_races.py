"""The supervisor of ``stig serve --workers N`` when something happens in
the middle of a restart (docs/workers.md, "Failures with N workers").

A stop signal while it forks a child: :func:`stig.server.fork.spawn`
blocks every signal across the fork, so a SIGTERM that arrives meanwhile
is handled just as the fork returns in the supervisor, before the new
child is one of the children it passes signals on to.  The child it just
forked must still be told to stop: otherwise it serves on (its listening
socket is its own copy) and the supervisor waits for it forever.  The
fault server's ``term-in-fork`` sends that SIGTERM at exactly that moment.

The writer dying just after it released a dead worker's writes: the
supervisor's hand-over of the successor's link then meets a closed
control socket; the writer's death restarts the group, and the supervisor
itself must live on (``kill-after-release``; stig_testkit/fault_server.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from stig_testkit.faulty import faulty_servers
from stig_testkit.process import STOP_TIMEOUT, StigProcess
from stig_testkit.waiting import wait_for
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


def test_a_writer_dead_as_a_workers_successor_starts_restarts_the_group(faulty):
    """The writer releases a dead worker's writes and dies before the
    supervisor hands it the successor's link: the supervisor restarts the
    whole group (as for any death of the writer), never dies of the
    broken control socket itself."""
    server = faulty()
    assert server.proc is not None
    old_writer = writer_pid(server)
    old = _worker_pid(server, 1)
    server.set_fault("kill-after-release")
    os.kill(old, signal.SIGKILL)
    for worker in (0, 1):
        conn = wait_for(
            lambda w=worker: _on_worker_or_none(server, w), bool, 30.0, f"worker {worker} serving"
        )
        assert conn is not None
        assert conn.send_recv(b"set k 0 0 1\r\nw\r\n", b"\r\n") == b"STORED\r\n"
        conn.close()
    assert server.faults.read_text() == ""  # the writer died of the fault
    assert server.proc.poll() is None, server._output()
    assert writer_pid(server) != old_writer


def _on_worker_or_none(server: StigProcess, worker: int):  # type: ignore[no-untyped-def]
    """A connection on ``worker``, or None while the group is being restarted."""
    assert server.proc is not None
    if server.proc.poll() is not None:
        pytest.fail(f"the supervisor died\n{server._output()}")
    try:
        return on_worker(server, worker)
    except (AssertionError, OSError):
        return None


def test_a_worker_ended_by_a_signal_python_has_no_name_for_is_restarted(faulty):
    """A real-time signal (SIGRTMIN+6 here; its default action ends the
    process) has no member in ``signal.Signals``: the supervisor must
    restart the worker and name the signal by its number, not die of a
    ValueError while it words its log line."""
    server = faulty()
    assert server.proc is not None
    old = _worker_pid(server, 1)
    os.kill(old, signal.SIGRTMIN + 6)
    conn = wait_for(lambda: _on_worker_or_none(server, 1), bool, 30.0, "worker 1 serving")
    assert conn is not None
    assert int(stats_of(conn)["pid"]) != old
    conn.close()
    assert server.proc.poll() is None, server._output()


def _worker_process(server: StigProcess, worker: int) -> int:
    """The pid of the supervisor's child ``stig-worker-<worker>`` (started or not)."""
    assert server.proc is not None
    parent = server.proc.pid
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        try:
            name = Path(f"/proc/{child}/comm").read_text().strip()
        except FileNotFoundError:
            continue
        if name == f"stig-worker-{worker}":
            return int(child)
    return 0


def test_a_sighup_while_a_worker_starts_does_not_kill_it(faulty):
    """SIGHUP reloads the certificates (a worker's ``refresh_certs`` sends
    it to the supervisor, which passes it to every worker): a worker that
    is still starting, its own handler not there yet, must not die of
    SIGHUP's default action (a restart spent, or the whole server's start
    failed)."""
    server = faulty()
    assert server.proc is not None
    old = _worker_pid(server, 1)
    held = Path(str(server.faults) + ".held")
    server.set_fault("hold-start")
    os.kill(old, signal.SIGKILL)
    wait_for(held.exists, bool, 30.0, "the new worker 1 starting")
    starting = _worker_process(server, 1)
    assert starting not in (0, old)
    os.kill(server.proc.pid, signal.SIGHUP)
    # Worker 0 logs the SIGHUP passed on: worker 1 was sent it as well.
    wait_for(lambda: server.stderr.count("received SIGHUP"), bool, 30.0, "the SIGHUP passed on")
    server.set_fault("")
    conn = wait_for(lambda: _on_worker_or_none(server, 1), bool, 30.0, "worker 1 serving")
    assert conn is not None
    assert int(stats_of(conn)["pid"]) == starting, server._output()
    conn.close()


def test_a_sighup_while_the_supervisor_forks_its_first_children_is_no_end(faulty, tmp_path):
    """A reload (SIGHUP) that comes while the supervisor forks its writer
    at start, before it would otherwise have its handler: the server
    starts and serves (SIGHUP's default action ended the supervisor, and
    every child with it)."""
    (tmp_path / "faults").write_text("hup-in-fork")  # the fault file of faulty_servers
    server = faulty()
    assert server.proc is not None
    assert server.faults.read_text() == ""  # the SIGHUP was sent
    assert server.send_recv(b"set k 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
    assert server.proc.poll() is None, server._output()
