"""Binary transactions against a real server: quiet write runs are atomic,
quiet get runs read one snapshot, No-op is a barrier, verdicts come in order."""

from __future__ import annotations

import struct
import threading
from concurrent.futures import ThreadPoolExecutor

from stig_protocol.binary import Opcode, Status, encode_request
from stig_testkit.waiting import wait_for_stats, wait_until_read

EXTRAS = struct.pack(">II", 0, 0)


def setq_run(items: dict[bytes, bytes]) -> bytes:
    return b"".join(encode_request(Opcode.SetQ, k, v, EXTRAS) for k, v in items.items())


def test_a_quiet_run_is_invisible_until_its_closing_command(stig_factory):
    server = stig_factory("--batch-idle-ms", "60000")
    conn = server.connect_binary()
    items = {b"t%d" % i: b"v%d" % i for i in range(50)}
    conn.send(setq_run(items))
    wait_until_read(server, len(items))
    other = server.client()
    assert other.get_many([k.decode() for k in items]) == {}
    assert conn.call(Opcode.Noop).status == 0
    # No-op answered: committed, so every connection sees the whole run at once.
    assert other.get_many([k.decode() for k in items]) == {k.decode(): v for k, v in items.items()}


def test_runs_are_atomic_and_quiet_get_runs_read_one_snapshot(stig_server):
    keys = [b"g%d" % i for i in range(8)]
    stop = threading.Event()

    def write(writer: int) -> None:
        conn = stig_server.connect_binary()
        for n in range(100):
            value = b"%d-%d" % (writer, n)
            conn.send(setq_run({k: value for k in keys}))
            assert conn.call(Opcode.Noop).opcode == Opcode.Noop

    def read(_: int) -> int:
        conn = stig_server.connect_binary()
        full = 0
        while not stop.is_set():
            conn.send(b"".join(encode_request(Opcode.GetKQ, k) for k in keys))
            conn.request(Opcode.Noop)
            seen = {}
            while (rsp := conn.response()).opcode != Opcode.Noop:
                seen[rsp.key] = rsp.value
            assert len(seen) in (0, len(keys)), seen
            assert len(set(seen.values())) <= 1, f"a torn snapshot: {seen}"
            full += bool(seen)
        return full

    with ThreadPoolExecutor(5) as pool:
        readers = [pool.submit(read, i) for i in range(2)]
        writers = [pool.submit(write, i) for i in range(3)]
        for future in writers:
            future.result()
        stop.set()
        assert sum(future.result() for future in readers) > 0


def test_a_quiet_failure_closed_by_the_idle_timer_comes_before_the_next_reply(stig_server):
    conn = stig_server.connect_binary()
    assert conn.call(Opcode.Set, b"taken", b"x", EXTRAS).status == 0
    stig_server.settle()
    before = int(stig_server.stats()["stig_promotions"])
    conn.request(Opcode.AddQ, b"taken", b"y", EXTRAS, opaque=5)
    # The timer, not the Version below, must close and commit the run: wait
    # until the server has committed it (nothing else is sent meanwhile).
    wait_for_stats(
        stig_server,
        lambda s: int(s["stig_promotions"]) > before,
        what="--batch-idle-ms closing the quiet run",
    )
    conn.request(Opcode.Version, opaque=6)
    failure, version = conn.response(), conn.response()
    assert (failure.opcode, failure.status, failure.opaque) == (Opcode.AddQ, Status.KEY_EEXISTS, 5)
    assert (version.opcode, version.opaque) == (Opcode.Version, 6)
    assert conn.barrier() == []  # the failure came once, and nothing else


def test_a_loud_write_closes_the_run_as_its_last_member(stig_factory):
    server = stig_factory("--batch-idle-ms", "60000")
    conn = server.connect_binary()
    assert conn.call(Opcode.Set, b"taken", b"x", EXTRAS).status == 0
    conn.send(setq_run({b"a": b"1", b"b": b"2"}))
    conn.request(Opcode.AddQ, b"taken", b"y", EXTRAS, opaque=3)
    conn.request(Opcode.Set, b"c", b"3", EXTRAS, opaque=4)
    failure, stored = conn.response(), conn.response()
    assert (failure.opaque, failure.status) == (3, Status.KEY_EEXISTS)
    assert (stored.opaque, stored.status) == (4, 0) and stored.cas != 0
    assert server.client().get_many(["a", "b", "c"]) == {"a": b"1", "b": b"2", "c": b"3"}


def test_quiet_failures_come_in_the_order_of_their_writes(stig_server):
    """The binary twin of the meta test of the same name: an AddQ whose
    failure its commit decides comes before the failures of the DeleteQ and
    IncrementQ sent after it, which the POV knows at once (clients that match
    quiet errors by position, not opaque, would blame the wrong request)."""
    conn = stig_server.connect_binary()
    assert conn.call(Opcode.Set, b"oo", b"x", EXTRAS).status == 0
    conn.send(
        encode_request(Opcode.AddQ, b"oo", b"y", EXTRAS, opaque=1)
        + encode_request(Opcode.DeleteQ, b"missing_oo", opaque=2)
        + encode_request(
            Opcode.IncrementQ, b"missing_oo", extras=struct.pack(">QQI", 1, 0, 0xFFFFFFFF), opaque=3
        )
    )
    failures = [(r.opcode, r.status, r.opaque) for r in conn.barrier()]
    assert failures == [
        (Opcode.AddQ, Status.KEY_EEXISTS, 1),
        (Opcode.DeleteQ, Status.KEY_ENOENT, 2),
        (Opcode.IncrementQ, Status.KEY_ENOENT, 3),
    ]
