"""Quiet gets answer their hits at once; a run of them still reads one snapshot.

memcached answers a binary GetQ/GetKQ hit as soon as it reads the request
(only a miss is quiet), and meta ``mg … q`` the same way (only ``EN`` is
quiet).  A client such as libmemcached sends its GetKQ run, then a No-op that
Nagle may hold back until the server sends something: a server that kept its
hits until the No-op would stall every get by the peer's delayed ACK (44 ms
through pylibmc in binary mode).  Stig answers each hit at once and still
reads the whole run — from its first quiet get to the No-op (``mn``) or any
other request — from one snapshot (docs/pov.md, "Binary protocol").

Nothing here times anything: each test waits for a reply that must come (the
old server never sent it) or for a stat, with a generous deadline.
"""

from __future__ import annotations

import struct

import pytest

from stig_protocol.binary import Opcode, Status
from stig_testkit.waiting import wait_for_stats

STORE_EXTRAS = struct.pack(">II", 0, 0)
#: A run also ends after --batch-idle-ms without input; the tests that write
#: between two parts of a run give themselves a minute.
PATIENT = ("--batch-idle-ms", "60000")


def _set(conn, key: bytes, value: bytes) -> None:
    assert conn.call(Opcode.Set, key, value, STORE_EXTRAS).status == Status.NO_ERROR


def test_a_getkq_hit_is_answered_without_a_noop_behind_it(stig_server):
    conn = stig_server.connect_binary()
    _set(conn, b"present", b"here")
    conn.request(Opcode.GetKQ, b"present", opaque=7)
    hit = conn.response(timeout=10)  # the old server held it until the No-op
    assert (hit.opcode, hit.status, hit.opaque, hit.key, hit.value) == (
        Opcode.GetKQ,
        Status.NO_ERROR,
        7,
        b"present",
        b"here",
    )
    assert hit.cas != 0
    # A miss stays quiet: the No-op's reply is the next thing on the wire.
    conn.request(Opcode.GetQ, b"absent", opaque=8)
    conn.request(Opcode.GetQ, b"present", opaque=9)
    hit = conn.response(timeout=10)
    assert (hit.opcode, hit.opaque, hit.key, hit.value) == (Opcode.GetQ, 9, b"", b"here")
    noop = conn.call(Opcode.Noop, opaque=10)
    assert (noop.opcode, noop.opaque) == (Opcode.Noop, 10)


def test_a_quiet_get_run_reads_one_snapshot_from_its_first_get_to_the_noop(stig_factory):
    stig_server = stig_factory(*PATIENT)
    reader, writer = stig_server.connect_binary(), stig_server.connect_binary()
    keys = [b"s%d" % i for i in range(20)]
    for key in keys:
        _set(writer, key, b"old")
    reader.request(Opcode.GetKQ, keys[0], opaque=0)
    assert reader.response(timeout=10).value == b"old"  # the run's snapshot is taken
    assert wait_for_stats(stig_server, lambda s: int(s["stig_held_snapshots"]) == 1)
    for key in keys:
        _set(writer, key, b"new")  # answered after its commit: seen by reads begun from now
    for i, key in enumerate(keys[1:], 1):
        reader.request(Opcode.GetKQ, key, opaque=i)
    reader.request(Opcode.Noop, opaque=99)
    replies = [reader.response() for _ in keys[1:]]
    assert [(r.opaque, r.key, r.value) for r in replies] == [
        (i, key, b"old") for i, key in enumerate(keys) if i
    ]
    assert reader.response().opcode == Opcode.Noop
    # The No-op ended the run: its snapshot is released, the next run reads anew.
    assert wait_for_stats(stig_server, lambda s: int(s["stig_held_snapshots"]) == 0)
    reader.request(Opcode.GetKQ, keys[5], opaque=5)
    reader.request(Opcode.Noop, opaque=6)
    assert reader.response().value == b"new"
    assert reader.response().opcode == Opcode.Noop


def test_a_run_sees_every_write_acknowledged_before_it_began(stig_server):
    """A write answered (from its POV, still being committed) before the run's
    first quiet get is seen by a later get of the run, whose key was not known
    when the snapshot was taken."""
    reader = stig_server.connect_binary()
    _set(reader, b"first", b"f")
    with stig_server.connect() as writer:
        for n in range(100):
            value = b"%d" % n
            reply = writer.send_recv(b"set later 0 0 %d\r\n%b\r\n" % (len(value), value), b"\r\n")
            assert reply == b"STORED\r\n"
            reader.request(Opcode.GetKQ, b"first", opaque=1)
            assert reader.response().opaque == 1  # the run has begun, its snapshot taken
            reader.request(Opcode.GetKQ, b"later", opaque=2)
            reader.request(Opcode.Noop, opaque=3)
            hit = reader.response()
            assert (hit.opaque, hit.value) == (2, value), n
            assert reader.response().opcode == Opcode.Noop


def test_a_getk_ending_a_run_is_read_from_its_snapshot_and_sees_acknowledged_writes(
    stig_server,
):
    """python-binary-memcached's ``get_multi``: GetKQ…, GetK, sent at once.
    The GetK is the run's last read, from its snapshot (a write landing
    between them is not seen: test_binary_multiget_snapshot.py), and that
    snapshot waited for its key's acknowledged write too (rule 2)."""
    reader = stig_server.connect_binary()
    _set(reader, b"first", b"f")
    with stig_server.connect() as writer:
        for n in range(100):
            value = b"%d" % n
            reply = writer.send_recv(b"set later 0 0 %d\r\n%b\r\n" % (len(value), value), b"\r\n")
            assert reply == b"STORED\r\n"  # from its POV: the commit may still be under way
            reader.request(Opcode.GetKQ, b"first", opaque=1)
            reader.request(Opcode.GetK, b"later", opaque=2)
            assert reader.response().opaque == 1  # the GetKQ's hit
            getk = reader.response()
            assert (getk.opcode, getk.opaque, getk.key, getk.value) == (
                Opcode.GetK,
                2,
                b"later",
                value,
            ), n
    assert wait_for_stats(stig_server, lambda s: int(s["stig_held_snapshots"]) == 0)


def test_a_meta_run_sees_every_write_acknowledged_before_it_began(stig_server):
    with stig_server.connect() as reader, stig_server.connect() as writer:
        assert writer.send_recv(b"ms first 1\r\nf\r\n", b"\r\n") == b"HD\r\n"
        for n in range(100):
            value = b"%d" % n
            reply = writer.send_recv(b"ms later %d\r\n%b\r\n" % (len(value), value), b"\r\n")
            assert reply == b"HD\r\n"
            # The run has begun (its snapshot taken) once the first hit is back.
            assert reader.send_recv(b"mg first v q\r\n", b"f\r\n") == b"VA 1\r\nf\r\n"
            expected = b"VA %d\r\n%b\r\nMN\r\n" % (len(value), value)
            assert reader.send_recv(b"mg later v q\r\nmn\r\n", b"MN\r\n") == expected, n


def test_the_held_snapshot_ends_with_the_connection_and_after_an_idle_pause(stig_server):
    conn = stig_server.connect_binary()
    _set(conn, b"k", b"v")
    conn.request(Opcode.GetKQ, b"k")
    assert conn.response(timeout=10).value == b"v"
    # No more input: the run ends after --batch-idle-ms, as an open write run does.
    assert wait_for_stats(stig_server, lambda s: int(s["stig_held_snapshots"]) == 0)
    _set(conn, b"k", b"w")
    conn.request(Opcode.GetKQ, b"k")
    assert conn.response(timeout=10).value == b"w"
    conn.close()
    assert wait_for_stats(stig_server, lambda s: int(s["stig_held_snapshots"]) == 0)


def test_meta_quiet_get_hits_are_answered_without_an_mn(stig_server):
    with stig_server.connect() as conn:
        assert conn.send_recv(b"ms mk 2\r\nhi\r\n", b"\r\n") == b"HD\r\n"
        conn.send(b"mg absent v q\r\nmg mk v k q\r\n")
        assert conn.recv_until(b"hi\r\n", timeout=10) == b"VA 2 kmk\r\nhi\r\n"
        assert conn.send_recv(b"mn\r\n", b"\r\n") == b"MN\r\n"


def test_a_meta_quiet_run_reads_one_snapshot_until_its_mn(stig_factory):
    stig_server = stig_factory(*PATIENT)
    with stig_server.connect() as reader, stig_server.connect() as writer:
        keys = [b"m%d" % i for i in range(10)]
        for key in keys:
            assert writer.send_recv(b"ms %b 3\r\nold\r\n" % key, b"\r\n") == b"HD\r\n"
        reader.send(b"mg %b v q\r\n" % keys[0])
        assert reader.recv_until(b"old\r\n", timeout=10) == b"VA 3\r\nold\r\n"
        for key in keys:
            assert writer.send_recv(b"ms %b 3\r\nnew\r\n" % key, b"\r\n") == b"HD\r\n"
        reader.send(b"".join(b"mg %b v q\r\n" % key for key in keys[1:]) + b"mn\r\n")
        assert reader.recv_until(b"MN\r\n") == b"VA 3\r\nold\r\n" * (len(keys) - 1) + b"MN\r\n"
        assert reader.send_recv(b"mg m3 v q\r\nmn\r\n", b"MN\r\n") == b"VA 3\r\nnew\r\nMN\r\n"


# -- real clients ------------------------------------------------------------------


@pytest.mark.parametrize("nodelay", [True, False], ids=["tcp_nodelay", "default"])
def test_pylibmc_binary_gets_in_both_nagle_modes(stig_server, nodelay):
    pylibmc = pytest.importorskip("pylibmc")
    behaviors = {"tcp_nodelay": True} if nodelay else {}
    address = f"{stig_server.host}:{stig_server.port}"
    db = pylibmc.Client([address], binary=True, behaviors=behaviors)
    stig_server._clients.append(db)
    other = stig_server.client()
    for n in range(200):
        assert db.set("round", b"%d" % n)
        assert db.get("round") == b"%d" % n
        assert db.get("never-set") is None
        other.set("elsewhere", b"%d" % n, noreply=False)
        assert db.get("elsewhere") == b"%d" % n  # a run sees writes acknowledged before it
    present = {f"key-{i:05d}": b"v%d" % i for i in range(0, 2000, 2)}
    assert db.set_multi(present) == []
    asked = [f"key-{i:05d}" for i in range(2000)]
    assert db.get_multi(asked) == present
    before = int(stig_server.stats()["get_hits"])
    assert db.get_multi(asked) == present
    assert int(stig_server.stats()["get_hits"]) - before == len(present)


def test_a_setq_behind_a_quiet_get_run_ends_it_and_a_later_get_sees_the_write(stig_server):
    """GetKQ, GetKQ, SetQ k=NEW, GetK k in one burst: the SetQ ends the run of
    quiet gets (its snapshot predates the write), so the GetK reads the
    session's own write. Found by review: the pipelined-SetQ fast path took
    the SetQ without ending the run, and the GetK, read as the run's closing
    get from its old snapshot, answered the old value."""
    from stig_protocol.binary import encode_request

    conn = stig_server.connect_binary()
    _set(conn, b"k", b"old")
    _set(conn, b"o", b"o")
    conn.send(
        encode_request(Opcode.GetKQ, b"o", opaque=1)
        + encode_request(Opcode.GetKQ, b"o", opaque=2)
        + encode_request(Opcode.SetQ, b"k", b"NEW", STORE_EXTRAS, opaque=5)
        + encode_request(Opcode.GetK, b"k", opaque=3)
        + encode_request(Opcode.Noop, opaque=9)
    )
    replies = [conn.response(timeout=10) for _ in range(4)]
    assert [(r.opaque, r.value) for r in replies] == [(1, b"o"), (2, b"o"), (3, b"NEW"), (9, b"")]
