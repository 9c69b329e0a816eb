"""``--min-replica-acks``: no other session reads a write before enough
followers have it (stig/engine/replica_hold.py, docs/replication.md).

A follower SIGSTOPped leaves a write committed on the primary and not
replicated; a read of it on another connection, in every protocol, waits —
it is answered only once the follower is continued, and at that moment the
follower's data directory holds the write (that is the proof it waited: the
value left after the follower had it, whatever the pace) — or, after
``--replica-ack-timeout-ms``, gets a ``SERVER_ERROR`` naming the missing
acks instead of the value.  Real processes; waits poll ``stats``.
"""

from __future__ import annotations

from collections.abc import Callable

from stig_protocol.binary import Opcode, Status
from stig_testkit.connections import RawConnection
from stig_testkit.process import StigProcess
from stig_testkit.replicas import data_dir_has, stopped
from stig_testkit.waiting import wait_for, wait_for_stats
from stig_testkit.workers import on_worker, stats_of

Factory = Callable[..., StigProcess]


def _pair(stig_factory: Factory, timeout_ms: int) -> tuple[StigProcess, StigProcess]:
    args = ("--min-replica-acks", "1", "--replica-ack-timeout-ms", str(timeout_ms))
    primary = stig_factory(*args, "--replication-open")  # a follower without a login
    follower = stig_factory("--replica-of", f"{primary.host}:{primary.port}")
    wait_for_stats(primary, lambda s: s["connected_replicas"] == "1", what="the follower connected")
    conn = primary.connect()
    assert conn.send_recv(b"set warm 0 0 1\r\nv\r\n", b"\r\n") == b"STORED\r\n"
    return primary, follower


def _committed_unreplicated(primary: StigProcess, key: bytes) -> RawConnection:
    """Write ``key`` (value ``new``) on a connection of its own, and return
    once the primary has committed it: its reply waits for the follower."""
    seq = int(primary.stats()["replication_seq"])
    writer = primary.connect()
    writer.send(b"set %b 0 0 3\r\nnew\r\n" % key)
    wait_for_stats(
        primary, lambda s: int(s["replication_seq"]) > seq, what="the write committed locally"
    )
    return writer


def _watchers(server: StigProcess) -> list[RawConnection]:
    """A connection on each worker of ``server`` (one for a single process):
    the hold's counters are each worker's own, and the kernel spreads a
    test's connections over the workers (``STIG_TEST_SERVE_ARGS``)."""
    return [on_worker(server, w) for w in range(max(1, int(server.stats()["stig_workers"])))]


def _summed(watchers: list[RawConnection], name: str) -> int:
    """The counter ``name`` summed over every worker."""
    return sum(int(stats_of(conn)[name]) for conn in watchers)


#: A read of ``key`` in each protocol (as a function of the key), the bytes
#: that end its reply, and what its reply must hold.
_TEXT_READS = [
    (lambda k: b"get %b\r\n" % k, b"END\r\n", b"new"),
    (lambda k: b"gets %b\r\n" % k, b"END\r\n", b"new"),
    (lambda k: b"get warm %b\r\n" % k, b"END\r\n", b"new"),  # one snapshot for both
    (lambda k: b"mg %b v\r\n" % k, b"\r\nnew\r\n", b"VA 3"),
]


def test_a_read_of_an_unreplicated_write_waits_for_the_follower(stig_factory: Factory) -> None:
    primary, follower = _pair(stig_factory, 60_000)
    reader = primary.connect()
    binary = primary.connect_binary()
    watchers = _watchers(primary)
    rounds = len(_TEXT_READS) + 1
    for index in range(rounds):
        key = b"k%d" % index
        with stopped(follower):
            writer = _committed_unreplicated(primary, key)
            waits = _summed(watchers, "replication_read_waits")
            if index < len(_TEXT_READS):
                read, end, _ = _TEXT_READS[index]
                reader.send(read(key))
            else:
                binary.request(Opcode.Get, key)
            # The event: the read is held back, waiting for the follower.
            wait_for(
                lambda: _summed(watchers, "replication_read_waits"),
                lambda now, w=waits: now == w + 1,
                what="the read held back",
            )
            assert not data_dir_has(follower.data_dir, key)
        # Continued: the reply comes, and the follower has the write by then.
        if index < len(_TEXT_READS):
            reply = reader.recv_until(end)
            assert _TEXT_READS[index][2] in reply, reply
        else:
            response = binary.response()
            assert (response.status, response.value) == (Status.NO_ERROR, b"new")
        assert data_dir_has(follower.data_dir, key), key
        assert writer.recv_until(b"\r\n") == b"STORED\r\n"
    assert _summed(watchers, "replication_read_timeouts") == 0
    assert primary.stats()["replication_ack_timeouts"] == "0"  # summed by the server


def test_a_read_of_an_unreplicated_write_fails_after_the_bound(stig_factory: Factory) -> None:
    primary, follower = _pair(stig_factory, 300)
    reader = primary.connect()
    binary = primary.connect_binary()
    watchers = _watchers(primary)
    words = (
        b"SERVER_ERROR only 0 of --min-replica-acks 1 followers acknowledged within 300 ms"
        b" a write this read would see; nothing was read\r\n"
    )
    with stopped(follower):
        writer = _committed_unreplicated(primary, b"k")
        # A read of it waits for the follower, then gets the error, never the value.
        assert reader.send_recv(b"get k\r\n", b"\r\n") == words
        # The writer is told its write may be lost, and its connection closes.
        assert writer.recv_until(b"\r\n").startswith(b"SERVER_ERROR only 0 of")
        assert writer.is_closed_by_peer()
        # Past the bound since its commit, every read of it fails at once;
        # the reader's connection stays: other keys are read.
        assert reader.send_recv(b"get k\r\n", b"\r\n") == words
        assert reader.send_recv(b"get warm k\r\n", b"\r\n") == words
        assert reader.send_recv(b"mg k v\r\n", b"\r\n") == words
        response = binary.call(Opcode.Get, b"k")
        assert response.status == Status.EINTERNAL
        assert response.value == words[len(b"SERVER_ERROR ") : -2]
        assert reader.send_recv(b"get warm\r\n") == b"VALUE warm 0 1\r\nv\r\nEND\r\n"
        # A connection with unreplicated writes of its own fails as a writer:
        # its replies wait for the same follower.
        mixed = primary.connect()
        assert mixed.send_recv(b"set own 0 0 1 noreply\r\nv\r\nget k\r\n", b"\r\n") == words
        assert mixed.is_closed_by_peer()
        assert _summed(watchers, "replication_read_timeouts") == 6
        assert not data_dir_has(follower.data_dir, b"k")
    # Once the follower has it, it is read (past the bound a read of it
    # fails at once until the ACK reaches the reader's worker).
    wait_for(
        lambda: reader.send_recv(b"get k\r\nmn\r\n", b"MN\r\n"),
        lambda reply: reply == b"VALUE k 0 3\r\nnew\r\nEND\r\nMN\r\n",
        what="the read answered once the follower acked",
    )
    assert data_dir_has(follower.data_dir, b"k")


def test_a_session_reads_its_own_writes_from_its_pov(stig_factory: Factory) -> None:
    """Its own writes not yet committed are read from its POV, never held back."""
    primary, follower = _pair(stig_factory, 60_000)
    conn = primary.connect()
    watchers = _watchers(primary)
    with stopped(follower):
        conn.send(b"set own 0 0 1 noreply\r\nv\r\nmg own v q\r\nmn\r\n")
        # The reply waits for the follower; what it says is read from the POV.
        waits = _summed(watchers, "replication_read_waits")
    assert conn.recv_until(b"MN\r\n") == b"VA 1\r\nv\r\nMN\r\n"
    assert _summed(watchers, "replication_read_waits") == waits


def test_a_restarted_primary_holds_what_its_follower_may_lack(stig_factory: Factory) -> None:
    """The hold is in memory: a primary SIGKILLed with a write its follower
    lacks must not serve that write after its restart until the follower
    has it; and once the follower is back in step, reads go on at once."""
    primary, follower = _pair(stig_factory, 60_000)
    same = (*primary.args, "--port", str(primary.port))  # where the follower reconnects
    with stopped(follower):
        _committed_unreplicated(primary, b"k")
        primary.restart(*same, kill=True)
        reader = primary.connect()
        watchers = _watchers(primary)
        reader.send(b"get k\r\n")
        wait_for(
            lambda: _summed(watchers, "replication_read_waits"),
            lambda waits: waits == 1,
            what="the read held back",
        )
        assert not data_dir_has(follower.data_dir, b"k")
    assert reader.recv_until(b"END\r\n") == b"VALUE k 0 3\r\nnew\r\nEND\r\n"
    assert data_dir_has(follower.data_dir, b"k")
    # Restarted with a follower that has everything: it resumes where it
    # was, which counts as its acknowledgement; reads are not held.
    # With workers, on every worker: the follower's resume is heard by one
    # (a read on another waited for an ACK that had come before it).
    primary.restart(*same, kill=True)
    wait_for_stats(primary, lambda s: s["connected_replicas"] == "1", what="the follower back")
    for reader in _watchers(primary):
        assert reader.send_recv(b"get k\r\n") == b"VALUE k 0 3\r\nnew\r\nEND\r\n"


# -- --workers 2: a read on one worker of a write committed by the other --------


def _pair_with_workers(stig_factory: Factory, timeout_ms: int) -> tuple[StigProcess, StigProcess]:
    args = ("--min-replica-acks", "1", "--replica-ack-timeout-ms", str(timeout_ms))
    primary = stig_factory("--workers", "2", *args, "--replication-open")
    follower = stig_factory("--replica-of", f"{primary.host}:{primary.port}")
    wait_for_stats(primary, lambda s: s["connected_replicas"] == "1", what="the follower connected")
    assert on_worker(primary, 0).send_recv(b"set warm 0 0 1\r\nv\r\n", b"\r\n") == b"STORED\r\n"
    return primary, follower


def _read_waits(conn: RawConnection, after: int) -> None:
    """Until the worker of ``conn`` has one more read held back than ``after``
    (``replication_read_waits`` is each worker's own)."""
    wait_for(
        lambda: int(stats_of(conn)["replication_read_waits"]),
        lambda waits: waits == after + 1,
        what="the read held back on the other worker",
    )


def test_with_workers_a_read_on_the_other_worker_waits_for_the_follower(
    stig_factory: Factory,
) -> None:
    """The write is committed by worker 0; the read comes on worker 1, whose
    own hold never saw it: the shared table holds it there too."""
    primary, follower = _pair_with_workers(stig_factory, 60_000)
    writer_side, reader, watcher = (
        on_worker(primary, 0),
        on_worker(primary, 1),
        on_worker(primary, 1),
    )
    for index, (read, end, wanted) in enumerate(_TEXT_READS):
        key = b"w%d" % index
        with stopped(follower):
            seq = int(stats_of(writer_side)["replication_seq"])
            writer_side.send(b"set %b 0 0 3\r\nnew\r\n" % key)
            wait_for(
                lambda: int(stats_of(watcher)["replication_seq"]),
                lambda now, seq=seq: now > seq,
                what="the write committed locally",
            )
            waits = int(stats_of(watcher)["replication_read_waits"])
            reader.send(read(key))
            _read_waits(watcher, waits)  # the event: held back on worker 1
            assert not data_dir_has(follower.data_dir, key)
        reply = reader.recv_until(end)
        assert wanted in reply, reply
        assert data_dir_has(follower.data_dir, key), key
        assert writer_side.recv_until(b"\r\n") == b"STORED\r\n"
    assert stats_of(watcher)["replication_read_timeouts"] == "0"


def test_with_workers_a_read_on_the_other_worker_fails_after_the_bound(
    stig_factory: Factory,
) -> None:
    primary, follower = _pair_with_workers(stig_factory, 300)
    writer_side, reader = on_worker(primary, 0), on_worker(primary, 1)
    words = (
        b"SERVER_ERROR only 0 of --min-replica-acks 1 followers acknowledged within 300 ms"
        b" a write this read would see; nothing was read\r\n"
    )
    with stopped(follower):
        seq = int(stats_of(reader)["replication_seq"])
        writer_side.send(b"set k 0 0 3\r\nnew\r\n")
        wait_for(
            lambda: int(stats_of(reader)["replication_seq"]),
            lambda now: now > seq,
            what="the write committed locally",
        )
        assert reader.send_recv(b"get k\r\n", b"\r\n") == words
        assert reader.send_recv(b"mg k v\r\n", b"\r\n") == words
        # Other keys are read at once; the connection stays.
        assert reader.send_recv(b"get warm\r\n") == b"VALUE warm 0 1\r\nv\r\nEND\r\n"
        assert stats_of(reader)["replication_read_timeouts"] == "2"
        assert not data_dir_has(follower.data_dir, b"k")
    # Once the follower has it, worker 1 reads it.
    wait_for(
        lambda: reader.send_recv(b"get k\r\n"),
        lambda reply: reply == b"VALUE k 0 3\r\nnew\r\nEND\r\n",
        what="the read answered once the follower acked",
    )
    assert data_dir_has(follower.data_dir, b"k")


def test_with_workers_a_restarted_primary_holds_on_every_worker(stig_factory: Factory) -> None:
    """The restart rule with workers: every worker of a restarted primary
    holds every key until the follower acknowledges the stored sequence."""
    primary, follower = _pair_with_workers(stig_factory, 60_000)
    same = (*primary.args, "--port", str(primary.port))
    with stopped(follower):
        _committed_unreplicated(primary, b"k")
        primary.restart(*same, kill=True)  # the supervisor: its workers and writer die too
        readers = [(on_worker(primary, w), on_worker(primary, w)) for w in (0, 1)]
        for reader, watcher in readers:
            waits = int(stats_of(watcher)["replication_read_waits"])
            reader.send(b"get k\r\n")
            _read_waits(watcher, waits)
        assert not data_dir_has(follower.data_dir, b"k")
    for reader, _ in readers:
        assert reader.recv_until(b"END\r\n") == b"VALUE k 0 3\r\nnew\r\nEND\r\n"
    assert data_dir_has(follower.data_dir, b"k")
