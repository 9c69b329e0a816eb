"""Bursts of pipelined text gets, answered on their hot paths (TextHandler._read_run).

A burst of one-key ``get`` lines is answered as keys (no event per line,
``Snapshot.render_each``) and a multi-get renders its found keys in one loop
(``Snapshot.render``).  Both must lay this session's uncommitted writes over
the snapshot, stop at ``--max-reply-bytes`` and go on where they stopped,
and count every key in ``stats``.
"""

from __future__ import annotations

from stig_testkit.process import StigProcess


def _value(key: bytes, data: bytes, flags: int = 0) -> bytes:
    return b"VALUE %b %d %d\r\n%b\r\n" % (key, flags, len(data), data)


def test_a_burst_of_gets_behind_own_writes_reads_them(stig_server: StigProcess) -> None:
    """Within one burst the writes are not even submitted yet: only the
    session's overlay holds them, for the one-key gets and the multi-get."""
    with stig_server.connect() as conn:
        conn.send(b"set a 0 0 3\r\nold\r\nset b 0 0 3\r\nold\r\n")
        assert conn.recv_until(b"STORED\r\nSTORED\r\n") == b"STORED\r\nSTORED\r\n"
    stig_server.settle()
    with stig_server.connect() as conn:
        conn.send(
            b"set a 5 0 4\r\nnewA\r\ndelete b\r\nset c 0 0 1\r\nC\r\n"
            b"get x\r\nget a\r\nget b\r\nget c\r\nget a b c x\r\nget a\r\n"
        )
        expected = (
            b"STORED\r\nDELETED\r\nSTORED\r\n"
            + b"END\r\n"
            + _value(b"a", b"newA", 5)
            + b"END\r\n"
            + b"END\r\n"
            + _value(b"c", b"C")
            + b"END\r\n"
            + _value(b"a", b"newA", 5)
            + _value(b"c", b"C")
            + b"END\r\n"
            + _value(b"a", b"newA", 5)
            + b"END\r\n"
        )
        assert conn.recv_until(expected) == expected


def test_a_burst_of_gets_past_the_reply_bound_is_answered_whole_in_order(
    stig_factory,
) -> None:
    server = stig_factory("--max-reply-bytes", "64k")
    values = {b"k%03d" % i: bytes([65 + i % 26]) * (5000 + i) for i in range(60)}
    with server.connect() as conn:
        for key, data in values.items():
            conn.send(b"set %b 0 0 %d noreply\r\n%b\r\n" % (key, len(data), data))
        assert conn.send_recv(b"mn\r\n", b"MN\r\n") == b"MN\r\n"
    server.settle()
    keys = [*values, b"missing", *values]
    with server.connect() as conn:
        conn.send(b"".join(b"get %b\r\n" % key for key in keys))
        expected = b"".join(
            (_value(key, values[key]) if key in values else b"") + b"END\r\n" for key in keys
        )
        assert conn.recv_until(expected) == expected
        conn.send(b"get " + b" ".join(keys) + b"\r\n")  # one multi-get: streamed
        expected = b"".join(_value(key, values[key]) for key in keys if key in values) + b"END\r\n"
        assert conn.recv_until(expected) == expected
    stats = server.stats()
    assert int(stats["cmd_get"]) == 2 * len(keys)
    assert int(stats["get_hits"]) == 2 * (len(keys) - 1)
    assert int(stats["get_misses"]) == 2
