"""A key touched to a time already past, read again in the same snapshot read.

``gat``/``gats`` and a run of meta ``mg`` read one snapshot, held while the
reply is sent.  A touch to an exptime already past answers the item, then it
is gone (memcached): a later read of the same key in the same command or run
misses, as in memcached (checked against memcached 1.6.18: ``gat -1 k k``
answers one VALUE; ``mg j v T-1`` then ``mg j v`` answers VA, then EN).
"""

from __future__ import annotations


def test_gat_to_a_past_time_answers_a_repeated_key_once(stig_server) -> None:
    with stig_server.connect() as conn:
        assert conn.send_recv(b"set k 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
        reply = conn.send_recv(b"gat -1 k k\r\n")
        assert reply == b"VALUE k 0 1\r\nx\r\nEND\r\n"
        assert conn.send_recv(b"get k\r\n") == b"END\r\n"


def test_mg_run_after_a_touch_to_a_past_time_misses(stig_server) -> None:
    with stig_server.connect() as conn:
        assert conn.send_recv(b"set j 0 0 1\r\ny\r\n", b"\r\n") == b"STORED\r\n"
        reply = conn.send_recv(b"mg j v T-1\r\nmg j v\r\nmn\r\n", b"MN\r\n")
        assert reply == b"VA 1\r\ny\r\nEN\r\nMN\r\n"
