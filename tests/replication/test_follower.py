"""A follower (``stig serve --replica-of``) against a real primary: real
processes, real LMDB, compared record for record (issue 22 items 1-2).

Every wait polls the follower's ``stats`` for the group it has applied
(``replication_applied_seq``), never a sleep.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import lmdb
import pytest

from stig.storage.replog import U64
from stig.storage.store import Store
from stig_protocol.binary import Opcode, Status
from stig_testkit.process import StigProcess
from stig_testkit.replicas import caught_up
from stig_testkit.shapes import FOLLOWER_SHAPES, PRIMARY_SHAPES
from stig_testkit.waiting import wait_for_stats

Factory = Callable[..., StigProcess]
#: The primaries here take followers without logins (a trusted network);
#: tests/replication/test_takeover_guards.py checks the default.
OPEN = "--replication-open"


def _records(data_dir: Path, name: bytes = b"items") -> dict[bytes, bytes]:
    """Every raw record of a named database (items: flags, cas, state, value),
    read beside the running server as the tools do."""
    env = lmdb.open(str(data_dir), readonly=True, lock=True, max_dbs=4, create=False)
    try:
        with env.begin() as txn:
            db = env.open_db(name, txn=txn, create=False)
            return {bytes(k): bytes(v) for k, v in txn.cursor(db=db)}
    finally:
        env.close()


def _seq(server: StigProcess) -> int:
    return int(server.stats()["replication_seq"])


def _follower(factory: Factory, primary: StigProcess, *args: str) -> StigProcess:
    return factory("--replica-of", f"{primary.host}:{primary.port}", *args)


def _store_extras(flags: int = 0) -> bytes:
    return struct.pack(">II", flags, 0)


def _mixed_load(primary: StigProcess, round_: int) -> None:
    """Writes of every kind in the three protocols, checked as they go."""
    text = primary.connect()
    r = round_
    assert text.send_recv(b"set t%d 7 0 3\r\nabc\r\n" % r, b"\r\n") == b"STORED\r\n"
    assert text.send_recv(b"add t%d 0 0 1\r\nx\r\n" % r, b"\r\n") == b"NOT_STORED\r\n"
    assert text.send_recv(b"append t%d 0 0 2\r\nde\r\n" % r, b"\r\n") == b"STORED\r\n"
    text.send(b"set n%d 0 0 2\r\n10\r\nincr n%d 5\r\ndecr n%d 3\r\n" % (r, r, r))
    assert text.recv_until(b"12\r\n") == b"STORED\r\n15\r\n12\r\n"
    text.send(b"".join(b"set q%d_%d 1 0 1 noreply\r\n%d\r\n" % (r, i, i % 10) for i in range(50)))
    text.send(b"delete q%d_3 noreply\r\n" % r)
    assert text.barrier() == b""
    reply = text.send_recv(b"gets t%d\r\n" % r)
    cas = int(reply.split(b"\r\n")[0].split()[4])
    assert text.send_recv(b"cas t%d 9 0 1 %d\r\nz\r\n" % (r, cas), b"\r\n") == b"STORED\r\n"
    assert text.send_recv(b"touch t%d 0\r\n" % r, b"\r\n") == b"TOUCHED\r\n"

    meta = primary.connect()
    assert meta.send_recv(b"ms m%d 2 F5\r\nhi\r\n" % r, b"\r\n") == b"HD\r\n"
    assert meta.send_recv(b"ms m%d 2 MA\r\n!!\r\n" % r, b"\r\n") == b"HD\r\n"
    assert meta.send_recv(b"ma c%d N0 J13 v\r\n" % r, b"\r\n").startswith(b"VA 2")
    assert meta.send_recv(b"md m%d I\r\n" % r, b"\r\n") == b"HD\r\n"  # stale, kept
    meta.send(b"ms x%d 1 q\r\na\r\nms y%d 1 q\r\nb\r\nmd q%d_4 q\r\nmn\r\n" % (r, r, r))
    assert meta.recv_until(b"MN\r\n") == b"MN\r\n"

    binary = primary.connect_binary()
    assert binary.call(Opcode.Set, b"b%d" % r, b"bin", _store_extras(3)).status == Status.NO_ERROR
    for i in range(20):
        binary.request(Opcode.SetQ, b"bq%d_%d" % (r, i), b"v%d" % i, _store_extras(i))
    binary.request(Opcode.DeleteQ, b"bq%d_0" % r)
    assert binary.barrier() == []
    arith = struct.pack(">QQI", 4, 100, 0)
    response = binary.call(Opcode.Increment, b"bn%d" % r, extras=arith)
    assert (response.status, response.value) == (Status.NO_ERROR, struct.pack(">Q", 100))
    assert binary.call(Opcode.Increment, b"bn%d" % r, extras=arith).status == Status.NO_ERROR
    assert binary.call(Opcode.Delete, b"t%d" % (r - 1)).status in (
        Status.NO_ERROR,
        Status.KEY_ENOENT,
    )
    for conn in (text, meta, binary):
        conn.close()


@pytest.mark.parametrize(
    ("shape", "follower_shape"),
    [
        pytest.param((), (), id="single-single"),
        pytest.param(("--workers", "2"), (), id="workers2-single"),
        pytest.param(("--workers", "2"), ("--workers", "2"), id="workers2-workers2"),
    ],
)
def test_a_follower_matches_the_primary_item_for_item_and_cas_for_cas(
    stig_factory: Factory, shape: tuple[str, ...], follower_shape: tuple[str, ...]
) -> None:
    primary = stig_factory(*shape, OPEN)
    _mixed_load(primary, 0)  # before the follower: it starts from a snapshot
    follower = _follower(stig_factory, primary, *follower_shape)
    stats = caught_up(follower, primary)
    assert stats["replication_snapshots_loaded"] == "1"
    for round_ in range(1, 4):  # while it follows: from the log, as committed
        _mixed_load(primary, round_)
    primary.send_recv(b"flush_all\r\n", b"OK\r\n")
    _mixed_load(primary, 4)
    stats = caught_up(follower, primary)
    assert stats["replication_snapshots_loaded"] == "1"
    assert int(stats["replication_groups_applied"]) > 5
    expected = _records(primary.data_dir)
    assert len(expected) > 20
    assert _records(follower.data_dir) == expected  # records: value, flags, cas, state
    # ... and the cas counter, so that cas tokens mean the same on both
    assert (
        _records(follower.data_dir, b"meta")[b"cas"] == _records(primary.data_dir, b"meta")[b"cas"]
    )
    # Reads on the follower answer as on the primary, cas included.
    query = b"gets t4 b4 n4 m4\r\n"
    assert follower.send_recv(query) == primary.send_recv(query)
    primary_stats = primary.stats()
    assert primary_stats["connected_replicas"] == "1"
    assert primary_stats["replication_role"] == "primary"
    assert stats["replication_role"] == "replica"


@pytest.mark.parametrize("follower_shape", FOLLOWER_SHAPES)
def test_writes_on_a_follower_are_refused_naming_the_primary(
    stig_factory: Factory, follower_shape: tuple[str, ...]
) -> None:
    primary = stig_factory(OPEN)
    primary.send_recv(b"set k 0 0 1\r\n5\r\n", b"\r\n")
    follower = _follower(stig_factory, primary, *follower_shape)
    caught_up(follower, primary)
    words = b"SERVER_ERROR read-only replica of %b:%d\r\n" % (primary.host.encode(), primary.port)
    text = follower.connect()
    for command in (
        b"set k 0 0 1\r\nw\r\n",
        b"delete k\r\n",
        b"incr k 1\r\n",
        b"flush_all\r\n",
        b"ms k 1\r\nw\r\n",
        b"md k\r\n",
        b"ma k\r\n",
    ):
        assert text.send_recv(command, b"\r\n") == words, command
    assert text.send_recv(b"get k\r\n") == b"VALUE k 0 1\r\n5\r\nEND\r\n"
    binary = follower.connect_binary()
    for opcode, key, value, extras in (
        (Opcode.Set, b"k", b"w", _store_extras()),
        (Opcode.Delete, b"k", b"", b""),
        (Opcode.Append, b"k", b"w", b""),
    ):
        response = binary.call(opcode, key, value, extras)
        assert response.status == Status.NOT_SUPPORTED, opcode
        assert response.value == words[len(b"SERVER_ERROR ") : -2]
    assert _records(follower.data_dir) == _records(primary.data_dir)
    assert follower.stats()["stig_write_refusals"] != "0"


@pytest.mark.parametrize("follower_shape", FOLLOWER_SHAPES)
def test_a_follower_killed_mid_stream_resumes_without_applying_a_group_twice(
    stig_factory: Factory, follower_shape: tuple[str, ...]
) -> None:
    """With workers the supervisor is SIGKILLed: its workers and writer die
    with it (tests/replication/test_follower_workers.py kills one of them)."""
    primary = stig_factory(OPEN)
    follower = _follower(stig_factory, primary, *follower_shape)
    writer = primary.connect()
    for batch in range(40):
        writer.send(
            b"".join(b"set k%d 0 0 4 noreply\r\n%04d\r\n" % (i, batch) for i in range(50))
            + b"incr counter 1\r\n"
        )
        writer.recv_until(b"\r\n")  # a run of 50 sets closed: one group each
        if batch == 0:
            writer.send(b"set counter 0 0 1\r\n0\r\n")
            writer.recv_until(b"STORED\r\n")
        if batch == 10:  # it follows (not only started)...
            wait_for_stats(follower, lambda s: int(s["replication_applied_seq"]) > 0)
        if batch == 20:
            follower.kill()  # ...and is SIGKILLed with groups on the wire
    before = _records(follower.data_dir, b"repl")
    follower.restart()
    stats = caught_up(follower, primary)
    # It resumed from its stored group: no snapshot, nothing applied twice
    # (a group that is not the next one is refused: tested in the store below).
    assert stats["replication_snapshots_loaded"] == "0"
    assert int(U64.unpack(before[b"seq"])[0]) > 0
    assert int(stats["replication_groups_applied"]) == _seq(primary) - int(
        U64.unpack(before[b"seq"])[0]
    )
    assert _records(follower.data_dir) == _records(primary.data_dir)
    # Its own log holds the primary's groups, byte for byte.
    primary_log = _records(primary.data_dir, b"replog")
    follower_log = _records(follower.data_dir, b"replog")
    assert follower_log and all(primary_log[seq] == entry for seq, entry in follower_log.items())


def test_the_store_refuses_a_group_that_does_not_follow(tmp_path: Path) -> None:
    """What makes a group applied twice (or one skipped) impossible: each is
    applied only as the next after the stored sequence number."""
    primary = Store(tmp_path / "p")
    follower = Store(tmp_path / "f")
    try:
        from stig.storage.ops import Put

        primary.apply([[Put(b"a", b"1", 0)]])
        primary.apply([[Put(b"a", b"2", 0)]])
        with primary.log_txn() as txn:
            groups = primary.log_entries(txn, 0, 1 << 20)
        assert [seq for seq, _ in groups] == [1, 2]
        follower.apply_replicated(groups[:1])
        for wrong in ([groups[0]], [groups[1], groups[1]]):
            with pytest.raises(ValueError, match="does not follow"):
                follower.apply_replicated(wrong)
        assert follower.log_state.seq == 1
        follower.apply_replicated(groups[1:])
        assert follower.get(b"a") == primary.get(b"a")
        assert follower.log_state.seq == 2
    finally:
        primary.close()
        follower.close()


@pytest.mark.parametrize("shape", PRIMARY_SHAPES)
def test_a_follower_behind_the_trimmed_log_starts_again_from_a_snapshot(
    stig_factory: Factory, shape: tuple[str, ...]
) -> None:
    primary = stig_factory(*shape, OPEN, "--replication-log-bytes", "2k")
    follower = _follower(stig_factory, primary)
    primary.send_recv(b"set first 0 0 1\r\n1\r\n", b"\r\n")
    caught_up(follower, primary)
    follower.terminate()
    writer = primary.connect()
    for i in range(30):  # 30 groups of ~300 bytes: past 2 KiB
        assert writer.send_recv(b"set k%d 0 0 200\r\n%b\r\n" % (i, b"x" * 200), b"\r\n") == (
            b"STORED\r\n"
        )
    applied = int(U64.unpack(_records(follower.data_dir, b"repl")[b"seq"])[0])
    # The groups it needs are gone, once the sets are committed (waited for:
    # with workers, the sets' commits may come after their replies).
    wait_for_stats(
        primary,
        lambda s: int(s["replication_log_first_seq"]) > applied + 1,
        what="the log trimmed past the follower's group",
    )
    follower.restart()
    stats = caught_up(follower, primary)
    assert stats["replication_snapshots_loaded"] == "1"
    assert _records(follower.data_dir) == _records(primary.data_dir)
    writer.send_recv(b"set after 0 0 1\r\n1\r\n", b"\r\n")  # and it follows on from the log
    stats = caught_up(follower, primary)
    assert stats["replication_snapshots_loaded"] == "1"
    assert _records(follower.data_dir) == _records(primary.data_dir)
    # The bound holds, but the newest group always stays, whatever its size
    # (sets answered before their commit may share a group).
    stats = primary.stats()
    assert int(stats["replication_log_bytes"]) <= 2048 or stats["replication_log_groups"] == "1"


@pytest.mark.parametrize("follower_shape", FOLLOWER_SHAPES)
def test_a_follower_reconnects_to_a_restarted_primary_and_resumes(
    stig_factory: Factory, follower_shape: tuple[str, ...]
) -> None:
    primary = stig_factory(OPEN)
    follower = _follower(stig_factory, primary, *follower_shape)
    primary.send_recv(b"set a 0 0 1\r\n1\r\n", b"\r\n")
    snapshots = caught_up(follower, primary)["replication_snapshots_loaded"]  # 0 or 1
    port = primary.port
    primary.terminate()  # a clean exit, also with a follower streaming
    wait_for_stats(follower, lambda s: s["replication_connected"] == "0", what="the stream ended")
    primary.start(OPEN, "--port", str(port))
    primary.send_recv(b"set b 0 0 1\r\n2\r\n", b"\r\n")
    stats = caught_up(follower, primary)
    assert int(stats["replication_connects"]) == 2
    assert stats["replication_snapshots_loaded"] == snapshots  # resumed from the log
    assert _records(follower.data_dir) == _records(primary.data_dir)
