"""Connection-level limits: idle timeout, and backpressure on unpromoted bytes."""

from __future__ import annotations

import time


def test_idle_timeout_closes_an_idle_connection(stig_factory):
    server = stig_factory("--idle-timeout", "0.5")
    with server.connect() as conn:
        assert conn.send_recv(b"version\r\n", b"\r\n").startswith(b"VERSION ")
        started = time.monotonic()
        assert conn.is_closed_by_peer(timeout=5)
        assert 0.4 < time.monotonic() - started < 4
    # A busy connection is not idle.
    with server.connect() as conn:
        for _ in range(4):
            time.sleep(0.25)
            assert conn.send_recv(b"get x\r\n") == b"END\r\n"


def test_without_idle_timeout_connections_stay_open(stig_server):
    with stig_server.connect() as conn:
        assert not conn.is_closed_by_peer(timeout=1.0)
        assert conn.send_recv(b"get x\r\n") == b"END\r\n"


def test_pipelined_writes_beyond_max_pending_bytes_all_land(stig_factory):
    """Backpressure pauses reading; it never drops or reorders a write, and
    the uncommitted bytes stay within the budget plus one receive's worth."""
    server = stig_factory("--max-pending-bytes", "64k")
    value = b"x" * 1000
    count = 20000  # ~20 MB, 300 times the bound, in one burst
    burst = b"".join(b"set k%d 0 0 %d\r\n%b\r\n" % (i, len(value), value) for i in range(count))
    with server.connect(timeout=30) as conn:
        conn.send(burst)
        replies = b""
        while replies.count(b"\r\n") < count:
            replies += conn.recv_until(b"\r\n", timeout=30)
        assert replies == b"STORED\r\n" * count
    server.settle()
    reader = server.client()
    found = reader.get_many([f"k{i}" for i in range(0, count, 97)])
    assert len(found) == len(range(0, count, 97)) and set(found.values()) == {value}
    stats = server.stats()
    # One receive (256 KiB of input) may land past the budget before the
    # connection pauses: under 2x that at memory cost for 1 KB loud sets.
    assert int(stats["stig_uncommitted_bytes_peak"]) <= 64 * 1024 + 512 * 1024, stats
    assert int(stats["stig_pauses"]) > 0


def test_append_past_max_item_size_is_not_stored(stig_factory):
    """memcached's answer (NOT_STORED; meta NS) and nothing changes."""
    server = stig_factory("--max-item-size", "2k")
    with server.connect() as conn:
        body = b"x" * 1500
        assert conn.send_recv(b"set k 0 0 1500\r\n%b\r\n" % body, b"\r\n") == b"STORED\r\n"
        extra = b"y" * 600
        assert conn.send_recv(b"append k 0 0 600\r\n%b\r\n" % extra, b"\r\n") == b"NOT_STORED\r\n"
        assert conn.send_recv(b"prepend k 0 0 600\r\n%b\r\n" % extra, b"\r\n") == b"NOT_STORED\r\n"
        assert conn.send_recv(b"ms k 600 MA\r\n%b\r\n" % extra, b"\r\n") == b"NS\r\n"
        assert conn.send_recv(b"append k 0 0 600 noreply\r\n%b\r\nmn\r\n" % extra, b"\r\n") == b"MN\r\n"
        assert conn.send_recv(b"get k\r\n") == b"VALUE k 0 1500\r\n%b\r\nEND\r\n" % body
    assert server.send_recv(b"get k\r\n") == b"VALUE k 0 1500\r\n%b\r\nEND\r\n" % body
