"""A burst of pipelined sets is handled in one call (TextHandler._set_run).

The parser hands out the run of plain ``set``/``ms`` commands at the head of
the buffer at once and the handler records them in one loop: the replies,
the stats, what other connections see and the verdicts owed to quiet meta
writes must be exactly those of the commands handled one by one.
"""

from __future__ import annotations

import pytest
from support import memcached_ref

VALUE = b"v" * 100


def _round(i: int) -> tuple[bytes, bytes]:
    """One round of every plain shape (and one that is not: an exptime past),
    and the replies memcached gives it."""
    keys = [b"b%04d:%d" % (i, n) for n in range(8)]
    request = b"".join(
        [
            b"set %b 0 0 %d\r\n%b\r\n" % (keys[0], len(VALUE), VALUE),
            b"set %b 3 0 %d noreply\r\n%b\r\n" % (keys[1], len(VALUE), VALUE),
            b"ms %b %d q\r\n%b\r\n" % (keys[2], len(VALUE), VALUE),
            b"ms %b %d F5\r\n%b\r\n" % (keys[3], len(VALUE), VALUE),
            b"set %b 0 0 %d\r\n%b\r\n" % (keys[4], len(VALUE), VALUE),
            b"ms %b %d q F9\r\n%b\r\n" % (keys[5], len(VALUE), VALUE),
            b"ms %b %d q\r\n%b\r\n" % (keys[6], len(VALUE), VALUE),
            b"set %b 0 -1 %d\r\n%b\r\n" % (keys[7], len(VALUE), VALUE),  # stored, then gone
        ]
    )
    return request, b"STORED\r\nHD\r\nSTORED\r\nSTORED\r\n"


def test_a_burst_of_mixed_sets_answers_as_one_by_one(stig_server) -> None:
    """300 rounds in one send (several parser windows): every reply in
    order, ``cmd_set`` counts each set, another connection sees each value
    with its flags, and the set whose exptime is past is gone."""
    rounds = [_round(i) for i in range(300)]
    before = int(stig_server.stats()["cmd_set"])
    with stig_server.connect() as conn:
        reply = conn.send_recv(b"".join(r for r, _ in rounds) + b"mn\r\n", b"MN\r\n")
    assert reply == b"".join(e for _, e in rounds) + b"MN\r\n"
    assert int(stig_server.stats()["cmd_set"]) - before == 300 * 8
    with stig_server.connect() as other:
        for i in (0, 137, 299):
            keys = b" ".join(b"b%04d:%d" % (i, n) for n in range(8))
            got = other.send_recv(b"get %b\r\n" % keys)
            flags = [0, 3, 0, 5, 0, 9, 0]
            assert (
                got
                == b"".join(
                    b"VALUE b%04d:%d %d %d\r\n%b\r\n" % (i, n, flags[n], len(VALUE), VALUE)
                    for n in range(7)
                )
                + b"END\r\n"
            )


def test_a_quiet_verdict_comes_before_the_reply_of_the_set_that_closes_its_run(
    stig_server,
) -> None:
    """A quiet add of a present key owes NS; plain sets pipelined behind it
    (a quiet ms, then a set that replies and closes the run) are read as one
    burst: NS is written before that set's STORED, not after."""
    with stig_server.connect() as conn:
        assert conn.send_recv(b"set x 0 0 1\r\na\r\n", b"STORED\r\n") == b"STORED\r\n"
        request = (
            b"ms x 1 q ME\r\nb\r\nms p 1 q\r\nc\r\nset y 0 0 1\r\nd\r\nset z 0 0 1\r\ne\r\nmn\r\n"
        )
        assert conn.send_recv(request, b"MN\r\n") == b"NS\r\nSTORED\r\nSTORED\r\nMN\r\n"
        got = conn.send_recv(b"get x p y z\r\n")
    assert got == (
        b"VALUE x 0 1\r\na\r\nVALUE p 0 1\r\nc\r\nVALUE y 0 1\r\nd\r\nVALUE z 0 1\r\ne\r\nEND\r\n"
    )


def test_stats_detail_counts_every_set_of_a_burst(stig_server) -> None:
    with stig_server.connect() as conn:
        assert conn.send_recv(b"stats detail on\r\n", b"OK\r\n") == b"OK\r\n"
        burst = b"".join(b"set p:%d 0 0 1\r\nx\r\n" % i for i in range(50))
        assert conn.send_recv(burst + b"mn\r\n", b"MN\r\n") == b"STORED\r\n" * 50 + b"MN\r\n"
        dump = conn.send_recv(b"stats detail dump\r\n")
    assert dump == b"PREFIX p get 0 hit 0 set 50 del 0\r\nEND\r\n"


def test_a_burst_of_binary_setq_is_silent_counted_and_visible(stig_server) -> None:
    """SetQ done at once (BinaryHandler.handle, no coroutine): no response,
    ``cmd_set`` and ``stats detail`` count each, No-op answers after all,
    another connection sees every value with its flags."""
    import struct

    from stig_protocol.binary import Opcode, encode_request

    with stig_server.connect() as text:
        assert text.send_recv(b"stats detail on\r\n", b"OK\r\n") == b"OK\r\n"
    before = int(stig_server.stats()["cmd_set"])
    conn = stig_server.connect_binary()
    burst = b"".join(
        encode_request(Opcode.SetQ, b"q:%d" % i, VALUE, struct.pack(">II", i, 0), opaque=i)
        for i in range(200)
    )
    conn.send(burst + encode_request(Opcode.Noop, opaque=999))
    noop = conn.response()
    assert (noop.opcode, noop.opaque) == (Opcode.Noop, 999)  # nothing before it
    assert int(stig_server.stats()["cmd_set"]) - before == 200
    with stig_server.connect() as other:
        assert other.send_recv(b"get q:0 q:199\r\n") == (
            b"VALUE q:0 0 100\r\n%b\r\nVALUE q:199 199 100\r\n%b\r\nEND\r\n" % (VALUE, VALUE)
        )
        dump = other.send_recv(b"stats detail dump\r\n")
    assert dump == b"PREFIX q get 2 hit 2 set 200 del 0\r\nEND\r\n"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"".join(_round(i)[0] for i in range(200)) + b"mn\r\n",
        b"set x 0 0 1\r\na\r\nms x 1 q ME\r\nb\r\nms p 1 q\r\nc\r\nset y 0 0 1\r\nd\r\n"
        b"set z 0 0 1 noreply\r\ne\r\nms w 2\r\nhi\r\nget x p y z w\r\nmn\r\n",
    ],
    ids=["mixed-rounds", "quiet-verdict"],
)
def test_a_burst_of_sets_answers_the_bytes_memcached_does(stig_server, request_bytes) -> None:
    """The same burst, in one send, to memcached 1.6 and to Stig: the same bytes back."""
    with memcached_ref.memcached() as port:
        theirs = memcached_ref.exchange(port, request_bytes, b"MN\r\n")
    ours = memcached_ref.exchange(stig_server.port, request_bytes, b"MN\r\n")
    assert ours == theirs


def test_a_binary_setq_burst_with_a_cas_in_it_answers_only_that_failure(stig_server) -> None:
    """The run of SetQ read in one call stops at the one with a cas (a
    conditional write): it and those after it are handled one by one — its
    failure answered in its place (KEY_ENOENT, its opaque), the rest silent."""
    import struct

    from stig_protocol.binary import Opcode, Status, encode_request

    extras = struct.pack(">II", 0, 0)
    burst = b"".join(
        encode_request(Opcode.SetQ, b"c:%d" % i, b"x", extras, opaque=i) for i in range(100)
    )
    burst += encode_request(Opcode.SetQ, b"absent", b"y", extras, opaque=500, cas=12345)
    burst += b"".join(
        encode_request(Opcode.SetQ, b"c:%d" % i, b"z", extras, opaque=i) for i in range(100, 200)
    )
    conn = stig_server.connect_binary()
    conn.send(burst + encode_request(Opcode.Noop, opaque=999))
    failure, noop = conn.response(), conn.response()
    assert (failure.opcode, failure.opaque, failure.status) == (
        Opcode.SetQ,
        500,
        Status.KEY_ENOENT,
    )
    assert (noop.opcode, noop.opaque) == (Opcode.Noop, 999)
    with stig_server.connect() as other:
        got = other.send_recv(b"get c:0 c:99 c:100 c:199 absent\r\n")
    assert got == (
        b"VALUE c:0 0 1\r\nx\r\nVALUE c:99 0 1\r\nx\r\nVALUE c:100 0 1\r\nz\r\n"
        b"VALUE c:199 0 1\r\nz\r\nEND\r\n"
    )
