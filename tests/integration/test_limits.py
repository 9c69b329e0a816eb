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
    """Backpressure pauses reading; it never drops or reorders a write."""
    server = stig_factory("--max-pending-bytes", "64k")
    value = b"x" * 1000
    count = 2000  # ~2 MB, 30 times the bound, in one burst
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
