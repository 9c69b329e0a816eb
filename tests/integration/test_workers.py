"""``stig serve --workers 2``: two worker processes on one port, one writer (docs/workers.md).

Connections land on either worker (SO_REUSEPORT); each test finds two on
different workers by the ``pid`` stat, and checks a promise of docs/pov.md
across them: a write answered on one is seen by a read on the other right
after the reply, the last acknowledged write wins, ``add`` is exclusive,
increments all count, ``flush_all`` reaches every worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from stig_testkit.connections import RawConnection
from stig_testkit.notify_socket import NotifySocket
from stig_testkit.process import STOP_TIMEOUT, StigProcess, child_env
from stig_testkit.waiting import wait_for, wait_for_stats
from stig_testkit.workers import writer_pid

WORKERS = ("--workers", "2")


def _stats(conn: RawConnection) -> dict[str, str]:
    reply = conn.send_recv(b"stats\r\n").decode()
    return {
        parts[1]: parts[2]
        for parts in (line.split(" ", 2) for line in reply.split("\r\n"))
        if parts[0] == "STAT"
    }


def _pinned(server: StigProcess, count: int = 24) -> tuple[RawConnection, RawConnection]:
    """Two connections on different workers (found by their ``pid`` stat)."""
    by_pid: dict[str, RawConnection] = {}
    for _ in range(count):
        conn = server.connect()
        by_pid.setdefault(_stats(conn)["pid"], conn)
        if len(by_pid) == 2:
            first, second = by_pid.values()
            return first, second
    pytest.fail(f"{count} connections all landed on one worker")


@pytest.fixture
def workers(stig_factory) -> StigProcess:
    return stig_factory(*WORKERS)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_each_worker_is_its_own_process(workers):
    one, two = _pinned(workers)
    first, second = _stats(one), _stats(two)
    assert {first["stig_worker_id"], second["stig_worker_id"]} == {"0", "1"}
    assert first["stig_workers"] == second["stig_workers"] == "2"
    assert workers.proc.pid not in (int(first["pid"]), int(second["pid"]))


def test_a_write_answered_on_one_worker_is_read_on_the_other_at_once(workers):
    writer, reader = _pinned(workers)
    for index in range(300):
        value = b"%d" % index
        assert writer.send_recv(b"set k 0 0 %d\r\n%s\r\n" % (len(value), value), b"\r\n") == (
            b"STORED\r\n"
        )
        reply = reader.send_recv(b"get k other\r\n")
        assert reply == b"VALUE k 0 %d\r\n%s\r\nEND\r\n" % (len(value), value), index
        # ... and the other way round, as a noreply run closed by a barrier.
        back = b"b%d" % index
        writer_reply = reader.send_recv(
            b"set j 0 0 %d noreply\r\n%s\r\nmn\r\n" % (len(back), back), b"MN\r\n"
        )
        assert writer_reply == b"MN\r\n"
        assert writer.send_recv(b"get j\r\n") == b"VALUE j 0 %d\r\n%s\r\nEND\r\n" % (
            len(back),
            back,
        )


def test_the_last_acknowledged_write_wins_across_workers(workers):
    one, two = _pinned(workers)
    third = workers.connect()
    for index in range(200):
        conn = one if index % 2 else two
        value = b"%d" % index
        assert conn.send_recv(b"set k 0 0 %d\r\n%s\r\n" % (len(value), value), b"\r\n") == (
            b"STORED\r\n"
        )
    # A barrier on each: every write is committed.
    for conn in (one, two):
        assert conn.send_recv(b"mn\r\n", b"\r\n") == b"MN\r\n"
    assert third.send_recv(b"get k\r\n") == b"VALUE k 0 3\r\n199\r\nEND\r\n"
    workers.restart()
    assert workers.send_recv(b"get k\r\n") == b"VALUE k 0 3\r\n199\r\nEND\r\n"


def test_add_is_exclusive_and_increments_all_count_across_workers(workers):
    one, two = _pinned(workers)
    replies: dict[int, list[bytes]] = {0: [], 1: []}

    def race(side: int, conn: RawConnection) -> None:
        for index in range(100):
            replies[side].append(
                conn.send_recv(b"add a%d 0 0 1\r\n%d\r\n" % (index, side), b"\r\n")
            )
            conn.send_recv(b"incr n 1 noreply\r\n", b"")

    assert one.send_recv(b"set n 0 0 1\r\n0\r\n", b"\r\n") == b"STORED\r\n"
    threads = [
        threading.Thread(target=race, args=(side, conn)) for side, conn in enumerate((one, two))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index in range(100):
        assert sorted([replies[0][index], replies[1][index]]) == [b"NOT_STORED\r\n", b"STORED\r\n"]
    for conn in (one, two):
        assert conn.send_recv(b"mn\r\n", b"MN\r\n").endswith(b"MN\r\n")
    assert one.send_recv(b"get n\r\n") == b"VALUE n 0 3\r\n200\r\nEND\r\n"


def test_flush_all_on_one_worker_empties_reads_on_the_other(workers):
    one, two = _pinned(workers)
    assert one.send_recv(b"set k 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
    assert two.send_recv(b"get k\r\n") == b"VALUE k 0 1\r\nx\r\nEND\r\n"
    assert two.send_recv(b"flush_all\r\n", b"\r\n") == b"OK\r\n"
    assert one.send_recv(b"get k\r\n") == b"END\r\n"


def test_sigterm_stops_every_process(workers):
    one, two = _pinned(workers)
    pids = [
        int(_stats(one)["pid"]),
        int(_stats(two)["pid"]),
        writer_pid(workers),
    ]
    assert one.send_recv(b"set k 0 0 1 noreply\r\nx\r\nmn\r\n", b"MN\r\n") == b"MN\r\n"
    one.close()
    two.close()
    assert workers.terminate() == 0
    for pid in pids:
        assert not _alive(pid)
    workers.start()
    assert workers.send_recv(b"get k\r\n") == b"VALUE k 0 1\r\nx\r\nEND\r\n"


def test_sigkill_of_the_supervisor_ends_every_process(workers):
    one, two = _pinned(workers)
    pids = [int(_stats(one)["pid"]), int(_stats(two)["pid"])]
    workers.kill()
    for pid in pids:
        wait_for(lambda pid=pid: not _alive(pid), bool, 10.0, what=f"the end of worker {pid}")
    workers.start()  # the data directory and the port's workers are free again
    assert workers.send_recv(b"version\r\n", b"\r\n").startswith(b"VERSION ")


def _committed_everywhere(one: RawConnection, two: RawConnection, count: int) -> None:
    """Writes acknowledged on both workers, each read back on the other one
    (a read waits for the other worker's commit, so all are committed)."""
    for index in range(count):
        for conn, name in ((one, b"one"), (two, b"two")):
            assert conn.send_recv(b"set %s%d 0 0 1\r\nv\r\n" % (name, index), b"\r\n") == (
                b"STORED\r\n"
            )
    for conn, name in ((two, b"one"), (one, b"two")):
        assert conn.send_recv(b"get %s%d\r\n" % (name, count - 1)) == (
            b"VALUE %s%d 0 1\r\nv\r\nEND\r\n" % (name, count - 1)
        )


def _all_there(server: StigProcess, names: tuple[bytes, ...], count: int) -> None:
    conn = server.connect()
    for name in names:
        keys = b" ".join(b"%s%d" % (name, index) for index in range(count))
        assert conn.send_recv(b"get %s\r\n" % keys).count(b"VALUE ") == count, name


def _worker_pids(server: StigProcess, want: int = 2) -> dict[str, int]:
    """``stig_worker_id`` → pid of the workers serving now, found by connecting
    until each of ``want`` workers has answered (a dead one's connections
    wait in its socket's backlog until its successor accepts them)."""
    found: dict[str, int] = {}

    def look() -> dict[str, int]:
        conn = server.connect()
        stats = _stats(conn)
        conn.close()
        found[stats["stig_worker_id"]] = int(stats["pid"])
        return found

    return wait_for(look, lambda seen: len(seen) == want, 20.0, what="every worker answering")


def _on(server: StigProcess, pid: int) -> RawConnection:
    """A connection served by the worker ``pid``."""
    for _ in range(24):
        conn = server.connect()
        if int(_stats(conn)["pid"]) == pid:
            return conn
        conn.close()
    pytest.fail(f"24 connections, none on worker {pid}")


def test_a_killed_worker_is_restarted_and_no_read_waits_for_its_lost_runs(workers):
    """docs/workers.md 'Failures with N workers': a SIGKILLed worker is
    restarted on the same port; what it acknowledged and the other worker
    read (so committed) survives; the runs it had published in the shared
    in-flight table but never handed to the writer are released, so reads of
    those keys on the other worker answer (they would wait for ever); the
    surviving worker's acknowledged writes are kept."""
    victim, survivor = _pinned(workers)
    _committed_everywhere(victim, survivor, 50)
    before = _worker_pids(workers)
    victim_pid = int(_stats(victim)["pid"])
    watcher = _on(workers, victim_pid)
    sets = int(_stats(watcher)["cmd_set"])
    # The writer paused: the victim's first group waits in its socket to the
    # writer, and the runs of its other connections are published in the
    # shared table but never handed over (one group in flight per worker).
    writer = writer_pid(workers)
    os.kill(writer, signal.SIGSTOP)
    try:
        for index in range(5):
            conn = victim if index == 0 else _on(workers, victim_pid)
            run = b"".join(
                b"set hot%d 0 0 2 noreply\r\nh%d\r\n" % (key, index) for key in range(100)
            )
            conn.send(run + b"mn\r\n")
        wait_for(
            lambda: int(_stats(watcher)["cmd_set"]),
            lambda now: now >= sets + 500,
            what="the victim taking the runs",
        )
        os.kill(victim_pid, signal.SIGKILL)
    finally:
        os.kill(writer, signal.SIGCONT)
    # Every key the victim was writing: read at once on the other worker.
    # The group it had handed to the writer is committed (and waited for),
    # whole; the runs it had not handed over are gone.
    keys = b" ".join(b"hot%d" % key for key in range(100))
    reply = survivor.send_recv(b"get %s\r\n" % keys).split(b"\r\n")
    values = {line for line in reply if line.startswith(b"h")}
    assert sum(line.startswith(b"VALUE ") for line in reply) == 100 and len(values) == 1
    # The survivor's writes go on (none waits for the dead worker's runs).
    run = b"".join(b"set after%d 0 0 1 noreply\r\nv\r\n" % index for index in range(50))
    assert survivor.send_recv(run + b"mn\r\n", b"MN\r\n") == b"MN\r\n"
    after = _worker_pids(workers)
    assert after[_stats(survivor)["stig_worker_id"]] == int(_stats(survivor)["pid"])
    assert set(after.values()) - set(before.values()) and victim_pid not in after.values()
    assert workers.running
    _all_there(workers, (b"one", b"two", b"after"), 50)
    survivor.close()
    workers.close_clients()
    assert workers.terminate() == 0
    workers.start()
    _all_there(workers, (b"one", b"two", b"after"), 50)


def test_a_killed_writer_restarts_the_workers_and_committed_writes_survive(workers):
    """docs/workers.md 'Failures with N workers': the writer's death ends
    every worker (their connections close: the outcome of a group in flight
    is unknown) and the supervisor starts the writer and the workers again on
    the same port; what was committed is there."""
    one, two = _pinned(workers)
    _committed_everywhere(one, two, 50)
    before = _worker_pids(workers)
    os.kill(writer_pid(workers), signal.SIGKILL)
    assert one.is_closed_by_peer() and two.is_closed_by_peer()
    after = _worker_pids(workers)
    assert not set(after.values()) & set(before.values())
    assert workers.running
    _all_there(workers, (b"one", b"two"), 50)
    # The new group keeps every promise: a write on one worker, read on the other.
    one, two = _pinned(workers)
    _committed_everywhere(one, two, 20)
    workers.close_clients()
    assert workers.terminate() == 0


def test_restarts_are_bounded_then_the_server_stops(workers):
    """More than MAX_RESTARTS deaths in RESTART_WINDOW seconds stop the server
    with exit status 1 (a worker that dies at once is not restarted for ever)."""
    from stig.server.supervisor import MAX_RESTARTS

    pid = _worker_pids(workers)["0"]
    for _ in range(MAX_RESTARTS):
        os.kill(pid, signal.SIGKILL)
        pid = wait_for(
            lambda: _worker_pids(workers)["0"],
            lambda new, old=pid: new != old,
            20.0,
            what="worker 0 restarted",
        )
    os.kill(pid, signal.SIGKILL)
    assert workers.proc is not None
    assert workers.proc.wait(STOP_TIMEOUT) == 1
    workers.close_clients()


def test_the_supervisor_alone_tells_the_service_manager(tmp_path):
    """sd_notify with N workers: READY=1 once every worker listens (from the
    supervisor, the unit's main process), STOPPING=1 when SIGTERM begins the stop."""
    with tempfile.TemporaryDirectory(prefix="stig-") as short:
        notify = NotifySocket.in_directory(Path(short))
        server = StigProcess(tmp_path / "data", tmp_path, WORKERS)
        server.environment = lambda: child_env(NOTIFY_SOCKET=notify.name)
        try:
            server.start()
            ready = notify.wait_for("READY")
            assert ready["STATUS"] == f"serving on {server.host}:{server.port}", ready
            assert server.send_recv(b"version\r\n", b"\r\n").startswith(b"VERSION ")
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            assert "SIGTERM" in notify.wait_for("STOPPING")["STATUS"]
            assert server.proc.wait(STOP_TIMEOUT) == 0
            assert [fields for fields in notify.received if "READY" in fields] == [ready]
        finally:
            server.kill()
            server.close_clients()
            notify.close()


def test_the_supervisor_pings_the_watchdog(tmp_path):
    """``WatchdogSec=`` with N workers: the supervisor (the unit's main
    process) sends ``WATCHDOG=1`` every half period while it serves."""
    with tempfile.TemporaryDirectory(prefix="stig-") as short:
        notify = NotifySocket.in_directory(Path(short))
        server = StigProcess(tmp_path / "data", tmp_path, WORKERS)
        server.environment = lambda: child_env(NOTIFY_SOCKET=notify.name, WATCHDOG_USEC="200000")
        try:
            server.start()
            notify.wait_for("READY")
            for _ in range(3):
                assert notify.wait_for("WATCHDOG")["WATCHDOG"] == "1"
            assert server.terminate() == 0
        finally:
            server.kill()
            server.close_clients()
            notify.close()


def test_a_pov_copy_never_hides_a_later_write_of_the_other_worker(workers):
    """A session's own write, read from its POV until its worker has the
    writer's answer, must not hide a later write of another worker that was
    acknowledged after that commit (docs/workers.md, 'Write order across
    workers': the read waits for the answer once the writer has committed)."""
    one, two = _pinned(workers)
    for index in range(300):
        mine, theirs = b"a%d" % index, b"b%d" % index
        assert one.send_recv(b"set k 0 0 %d\r\n%s\r\n" % (len(mine), mine), b"\r\n") == (
            b"STORED\r\n"
        )
        # The other worker reads it (so it is committed), then overwrites it.
        assert two.send_recv(b"get k\r\n") == b"VALUE k 0 %d\r\n%s\r\nEND\r\n" % (len(mine), mine)
        assert two.send_recv(b"set k 0 0 %d\r\n%s\r\n" % (len(theirs), theirs), b"\r\n") == (
            b"STORED\r\n"
        )
        assert one.send_recv(b"get k\r\n") == b"VALUE k 0 %d\r\n%s\r\nEND\r\n" % (
            len(theirs),
            theirs,
        ), index


def test_a_follower_streams_from_a_server_with_one_worker(stig_factory):
    """``--workers 1`` (the writer process started by the server itself, no
    supervisor): the writer logs each group, the server streams it."""
    primary = stig_factory("--workers", "1", "--min-replica-acks", "1", "--replication-open")
    follower = stig_factory("--replica-of", f"{primary.host}:{primary.port}")
    wait_for_stats(primary, lambda s: s["connected_replicas"] == "1", what="the follower connected")
    conn = primary.connect()
    for index in range(5):
        request = b"set k%d 0 0 1\r\n%d\r\n" % (index, index)
        assert conn.send_recv(request, b"\r\n") == b"STORED\r\n"
    stats = primary.stats()
    assert int(stats["replication_log_groups"]) >= 1
    # Acknowledged under --min-replica-acks 1: the follower has them.
    query = b"get k0 k1 k2 k3 k4\r\n"
    assert follower.send_recv(query, b"END\r\n") == primary.send_recv(query, b"END\r\n")


def _second_server(port: int, data_dir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``stig serve`` on ``port`` with its own data directory, to its end
    (it must fail at start: a server that serves is killed after a minute)."""
    command = [sys.executable, "-m", "stig", "serve", "--listen", "127.0.0.1", "--port"]
    command += [str(port), "--data-dir", str(data_dir), *args]
    with subprocess.Popen(
        command, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            pytest.fail(f"a second server serves on port {port}: {command}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@pytest.mark.parametrize(
    ("first", "second"),
    [(WORKERS, WORKERS), ((), WORKERS), (WORKERS, ())],
    ids=["workers-then-workers", "plain-then-workers", "workers-then-plain"],
)
def test_a_second_server_on_the_port_fails_at_start(stig_factory, tmp_path, first, second):
    """One port, one database: a second server (another data directory) on
    a served port must refuse to start, never share the connections (the
    kernel would split them between the two databases)."""
    server = stig_factory(*first)
    done = _second_server(server.port, tmp_path / "other", *second)
    assert done.returncode == 1, done
    assert b"cannot listen on 127.0.0.1:%d" % server.port in done.stderr, done.stderr
    # The first still serves every connection from its own database.
    assert server.send_recv(b"set k 0 0 1\r\n1\r\n", b"\r\n") == b"STORED\r\n"
    for _ in range(6):
        assert server.connect().send_recv(b"get k\r\n") == b"VALUE k 0 1\r\n1\r\nEND\r\n"


def test_every_worker_shows_every_follower_in_stats(stig_factory):
    """The replication lines of ``stats`` are the same on both workers:
    the follower (streaming from one of them), what it acknowledged, and
    the last commit's sequence number (docs/workers.md, Replication)."""
    primary = stig_factory(*WORKERS, "--replication-open", "--min-replica-acks", "1")
    follower = stig_factory("--replica-of", f"{primary.host}:{primary.port}")
    one, two = _pinned(primary)
    wait_for_stats(primary, lambda s: s["connected_replicas"] == "1", what="the follower connected")
    for index, conn in enumerate((one, two) * 3):
        request = b"set k%d 0 0 1\r\n%d\r\n" % (index, index)
        assert conn.send_recv(request, b"\r\n") == b"STORED\r\n"  # on the follower's disk
    first, second = _stats(one), _stats(two)
    assert first["stig_worker_id"] != second["stig_worker_id"]
    for stats in (first, second):
        assert stats["connected_replicas"] == "1"
        assert stats["replication_log_on"] == "1"
        assert int(stats["replica_0_acked_seq"]) >= 1
    names = ("replication_seq", "replica_0_acked_seq", "replication_log_groups")
    assert [first[name] for name in names] == [second[name] for name in names]
    assert follower.stats()["replication_applied_seq"] == first["replica_0_acked_seq"]
