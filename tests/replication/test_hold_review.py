"""Hostile review of the read hold and the own-keys rule across workers
(``--workers 2 --min-replica-acks 1``, docs/workers.md): real processes, a
SIGSTOPped follower, waits on ``stats``."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from stig_testkit.connections import RawConnection
from stig_testkit.process import StigProcess
from stig_testkit.replicas import data_dir_has, stopped
from stig_testkit.waiting import wait_for, wait_for_stats
from stig_testkit.workers import on_worker, stats_of, writer_pid

Factory = Callable[..., StigProcess]


def _pair(stig_factory: Factory, timeout_ms: int) -> tuple[StigProcess, StigProcess]:
    args = ("--min-replica-acks", "1", "--replica-ack-timeout-ms", str(timeout_ms))
    primary = stig_factory("--workers", "2", *args, "--replication-open")
    follower = stig_factory("--replica-of", f"{primary.host}:{primary.port}")
    wait_for_stats(primary, lambda s: s["connected_replicas"] == "1", what="the follower connected")
    return primary, follower


def test_a_read_of_its_own_pov_ignores_another_workers_unreplicated_flush_all(
    stig_factory: Factory,
) -> None:
    """A read of keys all taken from the session's POV is answered from it,
    as on one process, even while a flush_all of another worker lacks its
    follower's ACK: its reply then fails only as a writer's does (its own
    noreply write is unreplicated: docs/pov.md, "Which replies acknowledge
    what").  It was held as a read of the store (the other worker's
    ``cleared`` word counted although no key came from the store) and
    failed as a read "of a write this read would see" — a write it would
    never see."""
    primary, follower = _pair(stig_factory, 500)
    flusher, reader = on_worker(primary, 0), on_worker(primary, 1)
    with stopped(follower):
        seq = int(stats_of(reader)["replication_seq"])
        flusher.send(b"flush_all\r\n")  # its reply waits for the follower
        wait_for(
            lambda: int(stats_of(reader)["replication_seq"]),
            lambda now: now > seq,
            what="the flush_all committed locally",
        )
        reply = reader.send_recv(b"set k 0 0 1 noreply\r\nv\r\nget k\r\n", b"\r\n")
        assert reply == (
            b"SERVER_ERROR only 0 of --min-replica-acks 1 followers acknowledged within"
            b" 500 ms; the writes are committed here but may be lost with this server\r\n"
        ), reply


def _resume(conn: RawConnection, seq: int, epoch: int) -> None:
    """``conn`` becomes a follower that resumes after group ``seq`` (what a
    follower with ``seq`` on disk sends when it reconnects): it counts as
    acknowledging ``seq`` (stig/replication/sender.py)."""
    reply = conn.send_recv(b"stig_replicate %d %d\r\n" % (seq, epoch), b"\r\n")
    assert reply.startswith(b"REPLICATING "), reply


def test_a_killed_workers_follower_is_not_counted_while_it_restarts(
    stig_factory: Factory,
) -> None:
    """A follower streamed by worker 0 has group ``seq``; worker 0 is
    SIGKILLed (the supervisor stopped: its restart comes late, as under
    load) and the follower reconnects, landing on worker 1.  Its dead
    connection's slot must not count any more: else it counts twice and
    ``--min-replica-acks 2`` is met by one follower — a read on worker 1
    returns a write that one follower has.  The slot was cleared only by
    the successor, at its start."""
    args = ("--min-replica-acks", "2", "--replica-ack-timeout-ms", "500")
    primary = stig_factory("--workers", "2", *args, "--replication-open")
    assert primary.proc is not None
    dying, reader, reconnected = on_worker(primary, 0), on_worker(primary, 1), on_worker(primary, 1)
    dying_pid = int(stats_of(dying)["pid"])
    before = int(stats_of(reader)["replication_seq"])
    reader.send(b"set k 0 0 3\r\nnew\r\n")  # committed; its reply waits for two followers
    wait_for(
        lambda: int(stats_of(reconnected)["replication_seq"]),
        lambda now: now > before,
        what="the write committed locally",
    )
    stats = stats_of(reconnected)
    seq, epoch = int(stats["replication_seq"]), int(stats["replication_epoch"])
    _resume(dying, seq, epoch)  # the follower, on worker 0, has the write
    assert reader.recv_until(b"\r\n").startswith(b"SERVER_ERROR only 1 of")  # one follower
    watcher = on_worker(primary, 1)
    os.kill(primary.proc.pid, signal.SIGSTOP)
    try:
        os.kill(dying_pid, signal.SIGKILL)
        wait_for(
            lambda: stats_of(watcher)["connected_replicas"],
            lambda count: count == "0",
            what="the killed worker's follower no longer counted",
        )
        _resume(reconnected, seq, epoch)  # the same follower, reconnected on worker 1
        assert watcher.send_recv(b"get k\r\n", b"\r\n") == (
            b"SERVER_ERROR only 1 of --min-replica-acks 2 followers acknowledged within"
            b" 500 ms a write this read would see; nothing was read\r\n"
        )
    finally:
        os.kill(primary.proc.pid, signal.SIGCONT)


def _held(watcher: RawConnection, after: int) -> None:
    """Until the worker of ``watcher`` has held one more read than ``after``."""
    wait_for(
        lambda: int(stats_of(watcher)["replication_read_waits"]),
        lambda waits: waits == after + 1,
        what="the read held back",
    )


def test_a_worker_killed_mid_hold_leaves_its_write_held_everywhere(stig_factory: Factory) -> None:
    """Worker 0 commits a write the follower lacks and is SIGKILLed: the
    write stays held on worker 1 (through worker 0's ``committed_seq``
    word, which outlives it) and on worker 0's successor (its restart
    rule), and both reads are answered once the follower has it."""
    primary, follower = _pair(stig_factory, 60_000)
    with stopped(follower):
        doomed = on_worker(primary, 0)
        pid = int(stats_of(doomed)["pid"])
        seq = int(stats_of(doomed)["replication_seq"])
        doomed.send(b"set k 0 0 3\r\nnew\r\n")  # its reply waits for the follower
        wait_for(
            lambda: int(stats_of(on_worker(primary, 1))["replication_seq"]),
            lambda now: now > seq,
            what="the write committed locally",
        )
        os.kill(pid, signal.SIGKILL)
        successor = on_worker(primary, 0, timeout=30.0)
        assert int(stats_of(successor)["pid"]) != pid
        readers = []
        for worker in (1, 0):
            reader, watcher = on_worker(primary, worker), on_worker(primary, worker)
            waits = int(stats_of(watcher)["replication_read_waits"])
            reader.send(b"get k\r\n")
            _held(watcher, waits)
            readers.append(reader)
        assert not data_dir_has(follower.data_dir, b"k")
    for reader in readers:
        assert reader.recv_until(b"END\r\n") == b"VALUE k 0 3\r\nnew\r\nEND\r\n"
    assert data_dir_has(follower.data_dir, b"k")


def test_another_workers_unreplicated_flush_all_holds_every_key(stig_factory: Factory) -> None:
    """A flush_all on worker 0 that the follower lacks holds a read on
    worker 1 of a key written long before (through worker 0's ``cleared``
    word): the miss is answered only once the follower has the flush."""
    primary, follower = _pair(stig_factory, 60_000)
    flusher, reader, watcher = on_worker(primary, 0), on_worker(primary, 1), on_worker(primary, 1)
    assert reader.send_recv(b"set old 0 0 1\r\nv\r\n", b"\r\n") == b"STORED\r\n"
    with stopped(follower):
        seq = int(stats_of(watcher)["replication_seq"])
        flusher.send(b"flush_all\r\n")  # its reply waits for the follower
        wait_for(
            lambda: int(stats_of(watcher)["replication_seq"]),
            lambda now: now > seq,
            what="the flush_all committed locally",
        )
        waits = int(stats_of(watcher)["replication_read_waits"])
        reader.send(b"get old\r\n")
        _held(watcher, waits)
        assert data_dir_has(follower.data_dir, b"old")
    assert reader.recv_until(b"END\r\n") == b"END\r\n"
    assert not data_dir_has(follower.data_dir, b"old")


def _new_worker(server: StigProcess, worker: int, old: set[int]) -> RawConnection | None:
    """A connection on worker ``worker`` if it is not one of the ``old``
    processes (None: the old one still, or one closing as the group restarts)."""
    try:
        conn = on_worker(server, worker, timeout=30.0)
        if int(stats_of(conn)["pid"]) not in old:
            return conn
    except (ConnectionError, TimeoutError):
        pass
    return None


def test_a_writer_killed_mid_hold_leaves_the_write_held_on_every_worker(
    stig_factory: Factory,
) -> None:
    """The writer is SIGKILLed after committing a write the follower lacks:
    the supervisor restarts it and every worker (a new shared table: the
    ``committed_seq`` and ``replicated`` words start at zero), and every new
    worker holds the write (the restart rule) until the follower has it."""
    primary, follower = _pair(stig_factory, 60_000)
    with stopped(follower):
        writer_side = on_worker(primary, 0)
        old_pids = {int(stats_of(on_worker(primary, w))["pid"]) for w in (0, 1)}
        seq = int(stats_of(writer_side)["replication_seq"])
        writer_side.send(b"set k 0 0 3\r\nnew\r\n")  # its reply waits for the follower
        wait_for(
            lambda: int(stats_of(on_worker(primary, 1))["replication_seq"]),
            lambda now: now > seq,
            what="the write committed locally",
        )
        os.kill(writer_pid(primary), signal.SIGKILL)
        readers = []
        for worker in (0, 1):
            watcher = wait_for(
                lambda worker=worker: _new_worker(primary, worker, old_pids),
                lambda conn: conn is not None,
                what="the worker restarted",
            )
            assert watcher is not None
            reader = on_worker(primary, worker)
            waits = int(stats_of(watcher)["replication_read_waits"])
            reader.send(b"get k\r\n")
            _held(watcher, waits)
            readers.append(reader)
        assert not data_dir_has(follower.data_dir, b"k")
    for reader in readers:
        assert reader.recv_until(b"END\r\n") == b"VALUE k 0 3\r\nnew\r\nEND\r\n"
    assert data_dir_has(follower.data_dir, b"k")
