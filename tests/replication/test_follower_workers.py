"""A follower with ``--workers 2`` (docs/workers.md, "A follower with
workers"): worker 0 holds the stream, the writer process applies it, both
workers serve reads and refuse writes; ``stig_promote`` and ``stig_fence``
on either worker change every worker.  Real processes, real LMDB; waits
poll ``stats`` or a reply, never a sleep.  The follower tests shared with
a single process are parametrized in tests/replication/test_follower.py.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import lmdb
import pytest

from stig_testkit.connections import RawConnection
from stig_testkit.faulty import FaultyStig, faulty_servers
from stig_testkit.process import StigProcess
from stig_testkit.replicas import caught_up
from stig_testkit.waiting import wait_for, wait_for_stats
from stig_testkit.workers import on_worker, stats_of, writer_pid

Factory = Callable[..., StigProcess]
Faulty = Callable[..., FaultyStig]
OPEN = "--replication-open"
WORKERS = ("--workers", "2")


@pytest.fixture
def faulty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Faulty]:
    """Servers run through stig_testkit.fault_server (their own folder)."""
    (tmp_path / "faulty").mkdir()
    yield from faulty_servers(tmp_path / "faulty", monkeypatch)


def _records(data_dir: Path, name: bytes = b"items") -> dict[bytes, bytes]:
    env = lmdb.open(str(data_dir), readonly=True, lock=True, max_dbs=4, create=False)
    try:
        with env.begin() as txn:
            db = env.open_db(name, txn=txn, create=False)
            return {bytes(k): bytes(v) for k, v in txn.cursor(db=db)}
    finally:
        env.close()


def _address(server: StigProcess) -> str:
    return f"{server.host}:{server.port}"


def _pair(primary: StigProcess, factory: Factory, *args: str) -> StigProcess:
    return factory(*WORKERS, *args, "--replica-of", _address(primary))


def _both(server: StigProcess) -> tuple[RawConnection, RawConnection]:
    return on_worker(server, 0), on_worker(server, 1)


def _groups(primary: StigProcess, first: int, count: int) -> None:
    """``count`` groups, each writing ``a`` and ``b`` the same value (one
    quiet run each, answered at its barrier: one group)."""
    conn = primary.connect()
    for value in range(first, first + count):
        run = b"set a 0 0 4 noreply\r\n%04d\r\nset b 0 0 4 noreply\r\n%04d\r\n" % (value, value)
        conn.send(run)
        assert conn.barrier() == b""
    conn.close()


def _same_stream(server: StigProcess, primary: StigProcess) -> None:
    """The follower's records and log are the primary's, byte for byte."""
    assert _records(server.data_dir) == _records(primary.data_dir)
    primary_log = _records(primary.data_dir, b"replog")
    follower_log = _records(server.data_dir, b"replog")
    assert follower_log
    assert all(primary_log[seq] == entry for seq, entry in follower_log.items())


def test_both_workers_read_whole_applied_groups_and_refuse_writes(stig_factory: Factory) -> None:
    primary = stig_factory(OPEN)
    follower = _pair(primary, stig_factory)
    _groups(primary, 0, 1)
    caught_up(follower, primary)
    zero, one = _both(follower)
    # While groups stream in, every multi-get on either worker sees one group
    # boundary (a and b equal), never half a group.
    conn = primary.connect()
    for value in range(1, 200):
        conn.send(
            b"set a 0 0 4 noreply\r\n%04d\r\nset b 0 0 4 noreply\r\n%04d\r\n" % (value, value)
        )
        assert conn.barrier() == b""
        reader = zero if value % 2 else one
        reply = reader.send_recv(b"get a b\r\n").split(b"\r\n")
        assert reply[1] == reply[3], reply
    stats = caught_up(follower, primary)
    for reader in (zero, one):  # the last group, on both workers at once
        assert reader.send_recv(b"get a b\r\n") == (
            b"VALUE a 0 4\r\n0199\r\nVALUE b 0 4\r\n0199\r\nEND\r\n"
        )
    words = b"SERVER_ERROR read-only replica of %b\r\n" % _address(primary).encode()
    for reader in (zero, one):
        for command in (b"set a 0 0 1\r\nw\r\n", b"delete a\r\n", b"ms a 1\r\nw\r\n"):
            assert reader.send_recv(command, b"\r\n") == words, command
    _same_stream(follower, primary)
    # stats: the same replication lines on both workers.
    first, second = stats_of(zero), stats_of(one)
    assert (first["stig_worker_id"], second["stig_worker_id"]) == ("0", "1")
    names = ("replication_role", "replication_primary", "replication_connected")
    names += ("replication_applied_seq", "replication_connects", "replication_groups_applied")
    assert [first[n] for n in names] == [second[n] for n in names]
    assert second["replication_connected"] == "1"
    assert second["replication_applied_seq"] == stats["replication_applied_seq"]


def _kill_mid_stream(
    primary: StigProcess, follower: StigProcess, pid: Callable[[], int]
) -> list[int]:
    """Groups of 50 sets and an incr while the follower applies them; the
    process ``pid()`` is SIGKILLed with groups on the wire."""
    writer = primary.connect()
    writer.send(b"set counter 0 0 1\r\n0\r\n")
    writer.recv_until(b"STORED\r\n")
    killed: list[int] = []
    for batch in range(40):
        writer.send(
            b"".join(b"set k%d 0 0 4 noreply\r\n%04d\r\n" % (i, batch) for i in range(50))
            + b"incr counter 1\r\n"
        )
        writer.recv_until(b"\r\n")
        if batch == 10:  # it follows (not only started)
            caught_up(follower, primary)
        if batch == 20:
            killed.append(pid())
            os.kill(killed[0], signal.SIGKILL)
    return killed


def _restarted(
    follower: StigProcess,
    primary: StigProcess,
    old: int,
    find: Callable[[], int],
    snapshots: str = "0",
) -> None:
    """The process that was ``old`` is replaced, and the follower catches up
    from its stored group (no new snapshot: ``snapshots`` loaded, as the
    stats said before), byte for byte."""
    wait_for(find, lambda pid: pid not in (0, old), 30.0, what="the killed process replaced")
    stats = caught_up(follower, primary)
    assert stats["replication_snapshots_loaded"] == snapshots
    _same_stream(follower, primary)
    assert follower.send_recv(b"get counter\r\n") == b"VALUE counter 0 2\r\n40\r\nEND\r\n"


def _writer_pid(follower: StigProcess) -> int:
    """The follower's writer process (0 while there is none: it is restarting)."""
    try:
        return writer_pid(follower)
    except (AssertionError, OSError):
        return 0


def _worker0_pid(follower: StigProcess) -> int:
    conn = on_worker(follower, 0)
    pid = int(stats_of(conn)["pid"])
    conn.close()
    return pid


def test_sigkill_of_the_followers_writer_mid_stream_resumes(stig_factory: Factory) -> None:
    primary = stig_factory(OPEN)
    follower = _pair(primary, stig_factory)
    caught_up(follower, primary)
    killed = _kill_mid_stream(primary, follower, lambda: writer_pid(follower))
    _restarted(follower, primary, killed[0], lambda: _writer_pid(follower))


def test_sigkill_of_the_worker_holding_the_stream_resumes(stig_factory: Factory) -> None:
    primary = stig_factory(OPEN)
    follower = _pair(primary, stig_factory)
    caught_up(follower, primary)
    # The server's counters go on across worker 0's restart (a writer's
    # restarts the group: its counters start again): as just before the kill.
    snapshots: list[str] = []

    def target() -> int:
        snapshots.append(follower.stats()["replication_snapshots_loaded"])
        return _worker0_pid(follower)

    killed = _kill_mid_stream(primary, follower, target)
    _restarted(follower, primary, killed[0], lambda: _worker0_pid(follower), snapshots[0])
    assert int(follower.stats()["replication_connects"]) >= 1


def test_promote_with_workers_makes_every_worker_take_writes(stig_factory: Factory) -> None:
    primary = stig_factory(OPEN)
    _groups(primary, 0, 3)
    follower = _pair(primary, stig_factory, OPEN)
    seq = int(caught_up(follower, primary)["replication_applied_seq"])
    zero, one = _both(follower)
    assert one.send_recv(b"stig_promote\r\n", b"\r\n") == b"PROMOTED 2 %d\r\n" % (seq + 1)
    # Both workers take writes as soon as the answer came, cas after the primary's.
    old_cas = int(zero.send_recv(b"gets a\r\n").split()[4])
    for index, conn in enumerate((zero, one)):
        assert conn.send_recv(b"set w%d 0 0 1\r\n%d\r\n" % (index, index), b"\r\n") == b"STORED\r\n"
    for conn in (zero, one):
        reply = conn.send_recv(b"gets w0 w1\r\n")
        assert reply.count(b"VALUE ") == 2, reply
        assert int(reply.split()[4]) > old_cas
        stats = stats_of(conn)
        assert (stats["replication_role"], stats["replication_epoch"]) == ("primary", "2")
    # The writer no longer applies the stream; the old primary is fenced.
    wait_for_stats(primary, lambda s: s["replication_fenced"] == "1", what="the old primary fenced")
    assert zero.send_recv(b"stig_promote\r\n", b"\r\n") == (
        b"SERVER_ERROR this server is already a primary (epoch 2)\r\n"
    )
    assert zero.send_recv(b"get a\r\n") == b"VALUE a 0 4\r\n0002\r\nEND\r\n"
    # A crash of the writer restarts the group: still a primary (not a
    # follower again, as --replica-of on its command line would say).
    old_writer = writer_pid(follower)
    os.kill(old_writer, signal.SIGKILL)
    wait_for(
        lambda: _writer_pid(follower), lambda pid: pid not in (0, old_writer), 30.0, "a new writer"
    )
    for worker in (0, 1):
        conn = on_worker(follower, worker)
        assert conn.send_recv(b"set after 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
        assert stats_of(conn)["replication_role"] == "primary"


def test_promote_with_one_worker_takes_writes(stig_factory: Factory) -> None:
    """``--workers 1``: the server's own writer process begins the epoch."""
    primary = stig_factory(OPEN)
    _groups(primary, 0, 2)
    follower = stig_factory("--workers", "1", OPEN, "--replica-of", _address(primary))
    seq = int(caught_up(follower, primary)["replication_applied_seq"])
    assert follower.send_recv(b"stig_promote\r\n", b"\r\n") == b"PROMOTED 2 %d\r\n" % (seq + 1)
    assert follower.send_recv(b"set w 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
    assert follower.stats()["replication_role"] == "primary"


def test_fence_with_workers_stops_every_workers_writes(stig_factory: Factory) -> None:
    server = stig_factory(*WORKERS, OPEN)
    zero, one = _both(server)
    assert zero.send_recv(b"set k 0 0 1\r\nv\r\n", b"\r\n") == b"STORED\r\n"
    assert one.send_recv(b"stig_fence 2\r\n", b"\r\n") == b"FENCED 2\r\n"
    for conn in (zero, one):  # at once, on both workers
        reply = conn.send_recv(b"set k 0 0 1\r\nw\r\n", b"\r\n")
        assert reply.startswith(b"SERVER_ERROR fenced: a primary of epoch 2 exists"), reply
        assert stats_of(conn)["replication_fenced"] == "1"
        assert conn.send_recv(b"get k\r\n") == b"VALUE k 0 1\r\nv\r\nEND\r\n"
    # A follower of a later epoch fences too (epoch 3, told on worker 0).
    assert zero.send_recv(b"stig_replicate 0 3\r\n", b"\r\n") == (
        b"SERVER_ERROR the follower's epoch 3 is later than 1\r\n"
    )
    for worker in (0, 1):  # (the refused follower's connection is closed)
        assert stats_of(on_worker(server, worker))["replication_fenced_epoch"] == "3"


def test_a_restarted_stream_worker_still_fences_the_former_primary(stig_factory: Factory) -> None:
    """Promoted while the former primary is down: worker 0 tells it of the
    new epoch once it is back, even if worker 0 was restarted meanwhile
    (a dead worker takes the promotion as it starts, the fence too)."""
    primary = stig_factory(OPEN)
    _groups(primary, 0, 2)
    follower = _pair(primary, stig_factory, OPEN)
    caught_up(follower, primary)
    port = primary.port
    primary.kill()  # the primary's machine dies; worker 0 cannot fence it yet
    one = on_worker(follower, 1)
    assert one.send_recv(b"stig_promote\r\n", b"\r\n").startswith(b"PROMOTED 2 ")
    old = _worker0_pid(follower)
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: _worker0_pid(follower), lambda pid: pid != old, 30.0, "worker 0 replaced")
    primary.start(OPEN, "--port", str(port))  # back, on its address
    wait_for_stats(
        primary, lambda s: s["replication_fenced"] == "1", 30.0, "the old primary fenced"
    )


def _roles(server: StigProcess) -> list[str]:
    """Each worker's ``replication_role`` (a worker being restarted: ``?``)."""
    roles = []
    for worker in (0, 1):
        try:
            conn = on_worker(server, worker)
            roles.append(stats_of(conn)["replication_role"])
            conn.close()
        except (AssertionError, OSError):
            roles.append("?")
    return roles


def test_a_writer_killed_just_after_the_promotions_epoch_leaves_a_primary(
    stig_factory: Factory, faulty: Faulty
) -> None:
    """The writer stores the new epoch and dies before it tells the workers
    (the role words): the server began epoch 2, so it must come back a
    primary, as the answer said, not a follower of epoch 2 that fences the
    primary it follows (then nobody takes writes)."""
    primary = stig_factory(OPEN)
    _groups(primary, 0, 2)
    follower = faulty(*WORKERS, OPEN, "--replica-of", _address(primary))
    caught_up(follower, primary)
    old_writer = writer_pid(follower)
    follower.set_fault("kill-after-epoch")
    one = on_worker(follower, 1)
    try:  # the group restart may cut the connection before the answer
        reply = one.send_recv(b"stig_promote\r\n", b"\r\n")
        assert reply.startswith(b"PROMOTED 2 "), reply
    except ConnectionError:
        pass
    wait_for(
        lambda: _writer_pid(follower), lambda pid: pid not in (0, old_writer), 30.0, "a new writer"
    )
    wait_for(lambda: _roles(follower), lambda r: r == ["primary", "primary"], 30.0, "primaries")
    assert follower.send_recv(b"set after 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"


def test_a_group_restart_after_a_promotion_still_fences_the_former_primary(
    stig_factory: Factory,
) -> None:
    """Promoted while the former primary is down, then the writer dies (the
    supervisor restarts the whole group): once the former primary is back
    it must hear of the new epoch, as after a single worker's restart."""
    primary = stig_factory(OPEN)
    _groups(primary, 0, 2)
    follower = _pair(primary, stig_factory, OPEN)
    caught_up(follower, primary)
    port = primary.port
    primary.kill()
    one = on_worker(follower, 1)
    assert one.send_recv(b"stig_promote\r\n", b"\r\n").startswith(b"PROMOTED 2 ")
    old_writer = writer_pid(follower)
    os.kill(old_writer, signal.SIGKILL)
    wait_for(
        lambda: _writer_pid(follower), lambda pid: pid not in (0, old_writer), 30.0, "a new writer"
    )
    primary.start(OPEN, "--port", str(port))
    wait_for_stats(
        primary, lambda s: s["replication_fenced"] == "1", 30.0, "the old primary fenced"
    )


def _on_worker_once_up(server: StigProcess, worker: int) -> RawConnection:
    """A connection on ``worker``, waiting while it is being restarted."""

    def attempt() -> RawConnection | None:
        try:
            return on_worker(server, worker)
        except (AssertionError, OSError):
            return None

    conn = wait_for(attempt, lambda c: c is not None, 30.0, f"worker {worker} serving")
    assert conn is not None
    return conn


def test_a_worker_starting_during_a_fence_refuses_writes(faulty: Faulty) -> None:
    """A fence stored while a worker is being restarted (after it opened the
    store, before it said which role change it has seen): the worker must
    refuse writes once it serves, as the others do."""
    server = faulty(*WORKERS, OPEN)
    zero, one = _both(server)
    old = int(stats_of(one)["pid"])
    one.close()
    held = Path(str(server.faults) + ".held")
    server.set_fault("hold-start")
    os.kill(old, signal.SIGKILL)
    wait_for(held.exists, bool, 30.0, "the new worker 1 starting")
    assert zero.send_recv(b"stig_fence 2\r\n", b"\r\n") == b"FENCED 2\r\n"
    server.set_fault("")
    one = _on_worker_once_up(server, 1)
    reply = one.send_recv(b"set k 0 0 1\r\nw\r\n", b"\r\n")
    assert reply.startswith(b"SERVER_ERROR fenced: a primary of epoch 2 exists"), reply


def test_a_stale_old_primary_rejoins_a_promoted_follower_with_workers(
    stig_factory: Factory,
) -> None:
    """The old primary wrote groups the follower never had, died, and comes
    back as a follower of the promoted server (workers): its own groups are
    gone, it takes the new epoch's, and every worker's stats agree."""
    primary = stig_factory(OPEN)
    _groups(primary, 0, 2)
    follower = _pair(primary, stig_factory, OPEN)
    caught_up(follower, primary)
    follower.terminate()  # it falls behind: the next groups are the old primary's alone
    _groups(primary, 10, 3)
    port = primary.port
    primary.kill()
    follower.start()
    one = on_worker(follower, 1)
    assert one.send_recv(b"stig_promote\r\n", b"\r\n").startswith(b"PROMOTED 2 ")
    assert one.send_recv(b"set a 0 0 4\r\nnew!\r\n", b"\r\n") == b"STORED\r\n"
    primary.start(OPEN, "--port", str(port), "--replica-of", _address(follower))
    # (its own seq is past the new primary's: wait for the new epoch first)
    wait_for_stats(primary, lambda s: s["replication_epoch"] == "2", 30.0, "epoch 2 taken")
    stats = caught_up(primary, follower)
    assert (stats["replication_role"], stats["replication_epoch"]) == ("replica", "2")
    # Its own groups (b = 0012) are gone, by a discard or a snapshot.
    assert primary.send_recv(b"get a b\r\n") == (
        b"VALUE a 0 4\r\nnew!\r\nVALUE b 0 4\r\n0001\r\nEND\r\n"
    )
    assert _records(primary.data_dir) == _records(follower.data_dir)
    for worker in (0, 1):
        conn = on_worker(follower, worker)
        stats = stats_of(conn)
        assert (stats["replication_role"], stats["replication_epoch"]) == ("primary", "2")
        assert stats["connected_replicas"] == "1"


def test_two_promotes_at_once_on_two_workers_begin_one_epoch(stig_factory: Factory) -> None:
    """``stig_promote`` on both workers at once (an impatient operator): one
    epoch is begun, one answer says so, the other is refused; both workers
    then take writes."""
    primary = stig_factory(OPEN)
    _groups(primary, 0, 2)
    follower = _pair(primary, stig_factory, OPEN)
    seq = int(caught_up(follower, primary)["replication_applied_seq"])
    zero, one = _both(follower)
    zero.send(b"stig_promote\r\n")
    one.send(b"stig_promote\r\n")
    replies = sorted([zero.recv_until(b"\r\n"), one.recv_until(b"\r\n")])
    assert replies == [
        b"PROMOTED 2 %d\r\n" % (seq + 1),
        b"SERVER_ERROR this server is already a primary (epoch 2)\r\n",
    ]
    for index, conn in enumerate((zero, one)):
        assert conn.send_recv(b"set w%d 0 0 1\r\nw\r\n" % index, b"\r\n") == b"STORED\r\n"
        assert stats_of(conn)["replication_epoch"] == "2"


def test_a_restarted_stream_worker_keeps_the_servers_follower_counters(
    stig_factory: Factory,
) -> None:
    """The worker holding the stream dies and is replaced: the server did
    not restart, so its follower counters (``stats`` on any worker) go on
    from where they were, never back."""
    primary = stig_factory(OPEN)
    _groups(primary, 0, 3)
    follower = _pair(primary, stig_factory)
    caught_up(follower, primary)
    one = on_worker(follower, 1)
    before = stats_of(one)
    assert (before["replication_connects"], before["replication_snapshots_loaded"]) == ("1", "1")
    old = _worker0_pid(follower)
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: _worker0_pid(follower), lambda pid: pid != old, 30.0, "worker 0 replaced")
    after = wait_for(
        lambda: stats_of(one),
        lambda s: s["replication_connected"] == "1",
        30.0,
        "the new worker 0 following",
    )
    assert int(after["replication_connects"]) == 2
    assert after["replication_snapshots_loaded"] == "1"
    assert int(after["replication_groups_applied"]) >= int(before["replication_groups_applied"])
    assert after["replication_applied_seq"] == before["replication_applied_seq"]
