"""A stopped worker and the other workers' writes (``--workers 2``; review of
the publish order, docs/workers.md, "Write order across workers" and
"Failures with N workers").

Since every run waits at the writer for each other worker's newest
published, uncommitted run (``SharedInFlight.pending``), a worker that has
published a run and stops before its job reaches the writer (SIGSTOP, a
frozen cgroup, a long pause) holds every commit of every other worker,
whatever their keys; reads of those writes on the other workers wait as
long.  The bound: after ``HUNG_SECONDS`` the writer has the supervisor kill
it as hung, and its death goes as a SIGKILL's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time

from stig.engine.hung_workers import HUNG_SECONDS
from stig_testkit.workers import on_worker, stats_of


def _flood(sock: socket.socket, stop: threading.Event, started: threading.Event) -> None:
    """Sets with replies on ``sock`` until ``stop`` (its replies read by a
    second thread): the worker always has runs published and queued."""
    value = b"f" * 200
    burst = b"".join(b"set flood%d 0 0 %d\r\n%b\r\n" % (i, len(value), value) for i in range(200))

    def drain() -> None:
        try:
            while sock.recv(1 << 16):
                started.set()
        except OSError:
            pass

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        while not stop.is_set():
            sock.sendall(burst)
    except OSError:
        pass


def test_a_stopped_worker_is_killed_as_hung_and_the_others_commit_go_on(stig_factory):
    """Worker 0 floods, then stops (SIGSTOP) with runs published and never
    handed over: worker 1's write waits at the writer behind them until the
    bound (``HUNG_SECONDS``), then the writer has worker 0 killed as hung;
    its runs are released, worker 1's read is answered, a successor serves
    and ``stig_workers_killed_hung`` counts it."""
    server = stig_factory("--workers", "2")
    flooder = on_worker(server, 0)
    writer = on_worker(server, 1)
    reader = on_worker(server, 1)
    stopped_pid = int(stats_of(flooder)["pid"])
    assert stats_of(writer)["stig_workers_killed_hung"] == "0"
    stop, started = threading.Event(), threading.Event()
    flood = threading.Thread(target=_flood, args=(flooder.sock, stop, started), daemon=True)
    flood.start()
    assert started.wait(10)
    os.kill(stopped_pid, signal.SIGSTOP)
    try:
        writer.send_recv(b"set other 0 0 1\r\nx\r\n", b"STORED\r\n")  # from its POV
        # Another session's read waits for the commit of that run, which
        # waits at the writer for worker 0's run published before it, until
        # worker 0 is killed as hung.
        began = time.monotonic()
        got = reader.send_recv(b"get other\r\n", b"END\r\n", timeout=HUNG_SECONDS + 10)
        waited = time.monotonic() - began
        assert got == b"VALUE other 0 1\r\nx\r\nEND\r\n"
        assert waited >= HUNG_SECONDS - 1  # the bound, from the STORED on
    finally:
        stop.set()
        with contextlib.suppress(ProcessLookupError):
            os.kill(stopped_pid, signal.SIGCONT)
        with contextlib.suppress(OSError):
            flooder.sock.shutdown(socket.SHUT_RDWR)
        flood.join(10)
    successor = on_worker(server, 0, timeout=20)
    assert int(stats_of(successor)["pid"]) != stopped_pid
    assert stats_of(reader)["stig_workers_killed_hung"] == "1"
    assert stats_of(successor)["stig_workers_killed_hung"] == "1"
    successor.send_recv(b"set after 0 0 1\r\ny\r\n", b"STORED\r\n")
    assert reader.send_recv(b"get after\r\n") == b"VALUE after 0 1\r\ny\r\nEND\r\n"
    assert "killing it as hung" in server.stderr


def test_a_killed_worker_with_published_runs_does_not_stop_the_others(stig_factory):
    """The same flood, then SIGKILL: the writer releases what the dead worker
    published and never handed over, so the other worker's runs commit; its
    successor numbers on after them and the two see each other's writes."""
    server = stig_factory("--workers", "2")
    flooder = on_worker(server, 0)
    writer = on_worker(server, 1)
    reader = on_worker(server, 1)
    killed_pid = int(stats_of(flooder)["pid"])
    stop, started = threading.Event(), threading.Event()
    flood = threading.Thread(target=_flood, args=(flooder.sock, stop, started), daemon=True)
    flood.start()
    assert started.wait(10)
    os.kill(killed_pid, signal.SIGKILL)
    stop.set()
    flood.join(10)
    writer.send_recv(b"set other 0 0 1\r\nx\r\n", b"STORED\r\n")
    assert reader.send_recv(b"get other\r\n", timeout=10) == b"VALUE other 0 1\r\nx\r\nEND\r\n"
    successor = on_worker(server, 0, timeout=20)
    assert int(stats_of(successor)["pid"]) != killed_pid
    successor.send_recv(b"set after 0 0 1\r\ny\r\n", b"STORED\r\n")
    assert reader.send_recv(b"get after\r\n") == b"VALUE after 0 1\r\ny\r\nEND\r\n"
    writer.send_recv(b"set back 0 0 1\r\nz\r\n", b"STORED\r\n")
    assert successor.send_recv(b"get back\r\n") == b"VALUE back 0 1\r\nz\r\nEND\r\n"
