"""Every classic text command of memcached's doc/protocol.txt against a real server.

pymemcache where a client library's view is what matters; raw sockets where
the exact reply bytes are the point (and for what pymemcache refuses to send).
"""

from __future__ import annotations

import lmdb
import pytest
from pymemcache.exceptions import MemcacheClientError, MemcacheServerError

from stig_testkit.waiting import wait_for_stats

EXPTIME_REJECTED = (
    b"CLIENT_ERROR exptime must be 0: Stig is a database and items never expire"
    b" (see --ttl-policy)\r\n"
)
NON_NUMERIC = b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
TOO_LARGE = b"SERVER_ERROR object too large for cache\r\n"
BAD_CHUNK = b"CLIENT_ERROR bad data chunk\r\n"
BAD_FORMAT = b"CLIENT_ERROR bad command line format\r\n"


# -- retrieval -----------------------------------------------------------------


def test_get_hit_miss_and_multi_key(stig_server):
    conn = stig_server.connect()
    assert conn.send_recv(b"get nothing\r\n") == b"END\r\n"
    assert conn.send_recv(b"set k1 7 0 3\r\none\r\n", b"\r\n") == b"STORED\r\n"
    assert conn.send_recv(b"set k2 0 0 0\r\n\r\n", b"\r\n") == b"STORED\r\n"
    assert conn.send_recv(b"get k1\r\n") == b"VALUE k1 7 3\r\none\r\nEND\r\n"
    # Order of the request, misses skipped, an empty value kept.
    assert conn.send_recv(b"get k2 missing k1\r\n") == (
        b"VALUE k2 0 0\r\n\r\nVALUE k1 7 3\r\none\r\nEND\r\n"
    )


def test_values_are_binary_safe_and_flags_round_trip(stig_server):
    value = bytes(range(256)) + b"\r\nEND\r\n"
    conn = stig_server.connect()
    reply = conn.send_recv(b"set bin 4294967295 0 %d\r\n%b\r\n" % (len(value), value), b"\r\n")
    assert reply == b"STORED\r\n"
    reply = conn.send_recv(b"get bin\r\n")
    assert reply == b"VALUE bin 4294967295 %d\r\n%b\r\nEND\r\n" % (len(value), value)
    stig_server.settle()
    assert stig_server.client().get("bin") == value


def test_largest_value_round_trips(stig_server):
    value = bytes(range(256)) * 4096  # exactly the default --max-item-size
    conn = stig_server.connect()
    assert (
        conn.send_recv(b"set max 1 0 %d\r\n%b\r\n" % (len(value), value), b"\r\n") == b"STORED\r\n"
    )
    assert conn.send_recv(b"get max\r\n") == b"VALUE max 1 %d\r\n%b\r\nEND\r\n" % (
        len(value),
        value,
    )
    stig_server.settle()
    assert stig_server.client().get("max") == value


def test_gets_returns_cas_and_multi_key(stig_server):
    client = stig_server.client()
    client.set("a", b"1")
    client.set("b", b"2")
    stig_server.settle()
    conn = stig_server.connect()
    reply = conn.send_recv(b"gets a b c\r\n")
    lines = reply.split(b"\r\n")
    assert lines[0].startswith(b"VALUE a 0 1 ") and lines[1] == b"1"
    assert lines[2].startswith(b"VALUE b 0 1 ") and lines[3] == b"2"
    assert lines[4:] == [b"END", b""]
    cas_a, cas_b = int(lines[0].split()[4]), int(lines[2].split()[4])
    assert cas_a > 0 and cas_b > 0 and cas_a != cas_b
    assert client.gets("a") == (b"1", str(cas_a).encode())


def test_gat_and_gats(stig_server):
    client = stig_server.client()
    client.set("t1", b"v1", flags=3)
    client.set("t2", b"v2")
    stig_server.settle()
    conn = stig_server.connect()
    assert conn.send_recv(b"gat 0 t1 nope t2\r\n") == (
        b"VALUE t1 3 2\r\nv1\r\nVALUE t2 0 2\r\nv2\r\nEND\r\n"
    )
    reply = conn.send_recv(b"gats 0 t1\r\n")
    head, value, end, _ = reply.split(b"\r\n")
    assert head.startswith(b"VALUE t1 3 2 ") and int(head.split()[4]) > 0
    assert (value, end) == (b"v1", b"END")
    # A non-zero exptime is refused by default: Stig items never expire.
    assert conn.send_recv(b"gat 100 t1\r\n", b"\r\n") == EXPTIME_REJECTED
    assert conn.send_recv(b"gat 0 t1\r\n") == b"VALUE t1 3 2\r\nv1\r\nEND\r\n"


def test_multi_get_longer_than_the_line_limit(stig_server):
    """Retrieval lines may exceed 2048 bytes, as large multi-gets do in memcached."""
    client = stig_server.client()
    keys = [f"long-multi-get-key-{i:04d}" for i in range(300)]
    client.set_many({k: k.encode() for k in keys[::2]})
    stig_server.settle()
    line = b"get " + b" ".join(k.encode() for k in keys) + b"\r\n"
    assert len(line) > 2048
    conn = stig_server.connect()
    reply = conn.send_recv(line)
    expected = b"".join(
        b"VALUE %b 0 %d\r\n%b\r\n" % (k.encode(), len(k), k.encode()) for k in keys[::2]
    )
    assert reply == expected + b"END\r\n"


# -- storage ---------------------------------------------------------------------


def test_set_add_replace(stig_server):
    conn = stig_server.connect()
    assert conn.send_recv(b"add k 0 0 1\r\na\r\n", b"\r\n") == b"STORED\r\n"
    assert conn.send_recv(b"add k 0 0 1\r\nb\r\n", b"\r\n") == b"NOT_STORED\r\n"
    assert conn.send_recv(b"replace k 5 0 1\r\nc\r\n", b"\r\n") == b"STORED\r\n"
    assert conn.send_recv(b"replace nope 0 0 1\r\nd\r\n", b"\r\n") == b"NOT_STORED\r\n"
    assert conn.send_recv(b"set k 6 0 1\r\ne\r\n", b"\r\n") == b"STORED\r\n"
    assert conn.send_recv(b"get k nope\r\n") == b"VALUE k 6 1\r\ne\r\nEND\r\n"
    client = stig_server.client()
    assert client.add("k", b"x") is False
    assert client.replace("nope", b"x") is False
    assert client.get("nope") is None


def test_append_prepend(stig_server):
    client = stig_server.client()
    assert client.append("nope", b"x") is False
    assert client.prepend("nope", b"x") is False
    assert client.get("nope") is None
    client.set("ap", b"mid", flags=9)
    assert client.append("ap", b"-end") is True
    assert client.prepend("ap", b"start-") is True
    stig_server.settle()
    conn = stig_server.connect()
    # The flags of the existing item are kept (protocol.txt ignores the new ones).
    assert conn.send_recv(b"append ap 1 0 1\r\n!\r\n", b"\r\n") == b"STORED\r\n"
    assert conn.send_recv(b"get ap\r\n") == b"VALUE ap 9 14\r\nstart-mid-end!\r\nEND\r\n"


def test_cas_outcomes(stig_server):
    conn = stig_server.connect()
    assert conn.send_recv(b"cas nope 0 0 1 1\r\nx\r\n", b"\r\n") == b"NOT_FOUND\r\n"
    assert conn.send_recv(b"set c 0 0 2\r\nv1\r\n", b"\r\n") == b"STORED\r\n"
    head = conn.send_recv(b"gets c\r\n").split(b"\r\n")[0]
    unique = int(head.split()[4])
    assert conn.send_recv(b"cas c 4 0 2 %d\r\nv2\r\n" % (unique + 1000), b"\r\n") == b"EXISTS\r\n"
    assert conn.send_recv(b"cas c 4 0 2 %d\r\nv2\r\n" % unique, b"\r\n") == b"STORED\r\n"
    # The unique changed with the write: the same one no longer matches.
    assert conn.send_recv(b"cas c 4 0 2 %d\r\nv3\r\n" % unique, b"\r\n") == b"EXISTS\r\n"
    assert conn.send_recv(b"get c\r\n") == b"VALUE c 4 2\r\nv2\r\nEND\r\n"
    client = stig_server.client()
    value, token = client.gets("c")
    assert value == b"v2"
    assert client.cas("c", b"v4", token) is True
    assert client.cas("c", b"v5", token) is False
    assert client.cas("nope", b"v5", token) is None
    assert client.get("c") == b"v4"


def test_delete(stig_server):
    conn = stig_server.connect()
    conn.send_recv(b"set d 0 0 1\r\nx\r\n", b"\r\n")
    assert conn.send_recv(b"delete d\r\n", b"\r\n") == b"DELETED\r\n"
    assert conn.send_recv(b"delete d\r\n", b"\r\n") == b"NOT_FOUND\r\n"
    assert conn.send_recv(b"get d\r\n") == b"END\r\n"
    # The legacy time argument 0 is accepted; anything else is refused.
    conn.send_recv(b"set d 0 0 1\r\nx\r\n", b"\r\n")
    assert conn.send_recv(b"delete d 0\r\n", b"\r\n") == b"DELETED\r\n"
    reply = conn.send_recv(b"delete d 10\r\n", b"\r\n")
    assert reply.startswith(b"CLIENT_ERROR bad command line format")


# -- arithmetic ----------------------------------------------------------------------


def test_incr_decr(stig_server):
    conn = stig_server.connect()
    assert conn.send_recv(b"incr missing 1\r\n", b"\r\n") == b"NOT_FOUND\r\n"
    assert conn.send_recv(b"decr missing 1\r\n", b"\r\n") == b"NOT_FOUND\r\n"
    conn.send_recv(b"set n 3 0 2\r\n10\r\n", b"\r\n")
    assert conn.send_recv(b"incr n 5\r\n", b"\r\n") == b"15\r\n"
    assert conn.send_recv(b"decr n 4\r\n", b"\r\n") == b"11\r\n"
    assert conn.send_recv(b"decr n 100\r\n", b"\r\n") == b"0\r\n"  # stops at 0
    assert conn.send_recv(b"get n\r\n") == b"VALUE n 3 1\r\n0\r\nEND\r\n"  # flags kept
    stig_server.settle()
    client = stig_server.client()
    assert client.incr("n", 7) == 7
    assert client.decr("n", 2) == 5
    assert client.incr("missing", 1) is None


def test_incr_wraps_at_2_64(stig_server):
    conn = stig_server.connect()
    top = b"%d" % (2**64 - 1)
    conn.send_recv(b"set w 0 0 %d\r\n%b\r\n" % (len(top), top), b"\r\n")
    assert conn.send_recv(b"incr w 1\r\n", b"\r\n") == b"0\r\n"
    conn.send_recv(b"set w 0 0 %d\r\n%b\r\n" % (len(top), top), b"\r\n")
    assert conn.send_recv(b"incr w 10\r\n", b"\r\n") == b"9\r\n"
    assert conn.send_recv(b"incr w %d\r\n" % (2**64 - 1), b"\r\n") == b"8\r\n"
    assert conn.send_recv(b"get w\r\n") == b"VALUE w 0 1\r\n8\r\nEND\r\n"


def test_incr_non_numeric_and_bad_delta(stig_server):
    conn = stig_server.connect()
    conn.send_recv(b"set s 0 0 3\r\nabc\r\n", b"\r\n")
    assert conn.send_recv(b"incr s 1\r\n", b"\r\n") == NON_NUMERIC
    assert conn.send_recv(b"decr s 1\r\n", b"\r\n") == NON_NUMERIC
    assert conn.send_recv(b"get s\r\n") == b"VALUE s 0 3\r\nabc\r\nEND\r\n"
    stig_server.settle()
    reply = conn.send_recv(b"incr s abc\r\n", b"\r\n")
    assert reply == b"CLIENT_ERROR invalid numeric delta argument\r\n"
    client = stig_server.client()
    with pytest.raises(MemcacheClientError):
        client.incr("s", 1)


# -- touch, flush_all, misc ----------------------------------------------------------


def test_touch(stig_server):
    conn = stig_server.connect()
    conn.send_recv(b"set t 0 0 1\r\nx\r\n", b"\r\n")
    assert conn.send_recv(b"touch t 0\r\n", b"\r\n") == b"TOUCHED\r\n"
    assert conn.send_recv(b"touch nope 0\r\n", b"\r\n") == b"NOT_FOUND\r\n"
    assert conn.send_recv(b"touch t 60\r\n", b"\r\n") == EXPTIME_REJECTED
    assert conn.send_recv(b"get t\r\n") == b"VALUE t 0 1\r\nx\r\nEND\r\n"
    stig_server.settle()
    client = stig_server.client()
    assert client.touch("t", 0) is True
    assert client.touch("nope", 0) is False


def test_flush_all(stig_server):
    client = stig_server.client()
    client.set_many({"f1": b"1", "f2": b"2"})
    stig_server.settle()
    conn = stig_server.connect()
    assert conn.send_recv(b"flush_all 10\r\n", b"\r\n") == (
        b"CLIENT_ERROR flush_all delay must be 0: Stig items never expire\r\n"
    )
    assert conn.send_recv(b"get f1 f2\r\n").count(b"VALUE") == 2  # the refused flush did nothing
    assert conn.send_recv(b"flush_all\r\n", b"\r\n") == b"OK\r\n"
    assert conn.send_recv(b"get f1 f2\r\n") == b"END\r\n"
    assert client.get("f1") is None
    client.set("f3", b"3")
    assert conn.send_recv(b"flush_all 0\r\n", b"\r\n") == b"OK\r\n"
    assert client.get("f3") is None
    assert stig_server.stats()["curr_items"] == "0"


def test_flush_all_disabled(stig_factory):
    server = stig_factory("--disable-flush-all")
    conn = server.connect()
    conn.send_recv(b"set keep 0 0 1\r\nx\r\n", b"\r\n")
    assert conn.send_recv(b"flush_all\r\n", b"\r\n") == b"CLIENT_ERROR flush_all not allowed\r\n"
    assert conn.send_recv(b"get keep\r\n") == b"VALUE keep 0 1\r\nx\r\nEND\r\n"
    assert server.stats("settings")["flush_enabled"] == "no"


def test_version_verbosity_quit(stig_server):
    conn = stig_server.connect()
    reply = conn.send_recv(b"version\r\n", b"\r\n")
    assert reply.startswith(b"VERSION ") and b"stig" in reply
    assert stig_server.client().version().startswith(b"1.")
    assert conn.send_recv(b"verbosity 1\r\n", b"\r\n") == b"OK\r\n"
    conn.send(b"verbosity 1 noreply\r\n")
    assert conn.send_recv(b"quit\r\n", None) == b""  # closed, nothing said
    assert conn.is_closed_by_peer()


def test_quit_after_pipelined_commands_answers_them_first(stig_server):
    conn = stig_server.connect()
    reply = conn.send_recv(b"set q 0 0 1\r\nx\r\nget q\r\nquit\r\nget q\r\n", None)
    assert reply == b"STORED\r\nVALUE q 0 1\r\nx\r\nEND\r\n"


# -- noreply -----------------------------------------------------------------------------


def test_noreply_variants_are_silent_and_take_effect(stig_server):
    conn = stig_server.connect()
    conn.send(
        b"set a 0 0 1 noreply\r\n1\r\n"
        b"set b 0 0 1 noreply\r\n2\r\n"
        b"set c 0 0 2 noreply\r\n10\r\n"
        b"set gone 0 0 1 noreply\r\nx\r\n"
        b"add a 0 0 1 noreply\r\nX\r\n"  # fails: a exists
        b"add d 0 0 1 noreply\r\n4\r\n"
        b"replace b 0 0 2 noreply\r\n22\r\n"
        b"replace nope 0 0 1 noreply\r\nX\r\n"  # fails
        b"append a 0 0 1 noreply\r\n+\r\n"
        b"prepend a 0 0 1 noreply\r\n-\r\n"
        b"incr c 5 noreply\r\n"
        b"decr c 1 noreply\r\n"
        b"incr nope 1 noreply\r\n"
        b"delete gone noreply\r\n"
        b"delete nope noreply\r\n"
        b"touch a 0 noreply\r\n"
        b"verbosity 0 noreply\r\n"
    )
    # Everything received up to the get's END is the get's reply: the noreply
    # commands before it said not one word.
    assert conn.send_recv(b"get a b c d gone nope\r\n") == (
        b"VALUE a 0 3\r\n-1+\r\nVALUE b 0 2\r\n22\r\nVALUE c 0 2\r\n14\r\n"
        b"VALUE d 0 1\r\n4\r\nEND\r\n"
    )
    # Another connection sees the same once the run is committed.
    stig_server.settle()
    other = stig_server.client()
    assert other.get_many(["a", "b", "c", "d", "gone"]) == {
        "a": b"-1+",
        "b": b"22",
        "c": b"14",
        "d": b"4",
    }


def test_noreply_cas(stig_server):
    client = stig_server.client()
    client.set("nc", b"old")
    _, token = client.gets("nc")
    conn = stig_server.connect()
    conn.send(b"cas nc 0 0 3 %b noreply\r\nnew\r\n" % token)
    conn.send(b"cas nc 0 0 3 %b noreply\r\nbad\r\n" % token)  # stale unique now
    assert conn.send_recv(b"get nc\r\n") == b"VALUE nc 0 3\r\nnew\r\nEND\r\n"


def test_noreply_errors_are_silent_too(stig_server):
    conn = stig_server.connect()
    conn.send(b"set s 0 0 3\r\nabc\r\n")
    assert conn.recv_until(b"\r\n") == b"STORED\r\n"
    conn.send(b"incr s 1 noreply\r\n")  # non-numeric, silenced
    conn.send(b"set x 0 0 2000000 noreply\r\n" + b"x" * 2_000_000 + b"\r\n")  # too large
    assert conn.send_recv(b"get s x\r\n") == b"VALUE s 0 3\r\nabc\r\nEND\r\n"


def test_flush_all_noreply(stig_server):
    conn = stig_server.connect()
    conn.send(b"set a 0 0 1\r\n1\r\nflush_all noreply\r\n")
    assert conn.recv_until(b"\r\n") == b"STORED\r\n"
    assert conn.send_recv(b"get a\r\n") == b"END\r\n"


# -- errors ------------------------------------------------------------------------------


def test_unknown_command_and_empty_line(stig_server):
    conn = stig_server.connect()
    assert conn.send_recv(b"bogus\r\n", b"\r\n") == b"ERROR\r\n"
    assert conn.send_recv(b"GET a\r\n", b"\r\n") == b"ERROR\r\n"  # commands are case-sensitive
    assert conn.send_recv(b"\r\n", b"\r\n") == b"ERROR\r\n"
    assert conn.send_recv(b"version\r\n", b"\r\n").startswith(b"VERSION ")


def test_key_too_long_is_a_client_error_and_the_connection_goes_on(stig_server):
    conn = stig_server.connect()
    ok, too_long = b"k" * 250, b"k" * 251
    assert conn.send_recv(b"get %b\r\n" % too_long, b"\r\n") == BAD_FORMAT
    assert conn.send_recv(b"set %b 0 0 1\r\nx\r\n" % too_long, b"\r\n") == BAD_FORMAT
    assert conn.send_recv(b"delete %b\r\n" % too_long, b"\r\n") == BAD_FORMAT
    assert conn.send_recv(b"incr %b 1\r\n" % too_long, b"\r\n") == BAD_FORMAT
    assert conn.send_recv(b"touch %b 0\r\n" % too_long, b"\r\n") == BAD_FORMAT
    # The refused set's data block was consumed, not taken for a command.
    assert conn.send_recv(b"set %b 0 0 1\r\nx\r\n" % ok, b"\r\n") == b"STORED\r\n"
    assert conn.send_recv(b"get %b\r\n" % ok) == b"VALUE %b 0 1\r\nx\r\nEND\r\n" % ok
    stig_server.settle()
    assert stig_server.stats()["curr_items"] == "1"


def test_max_key_length_option(stig_factory):
    server = stig_factory("--max-key-length", "10")
    conn = server.connect()
    assert conn.send_recv(b"set 0123456789 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
    assert conn.send_recv(b"set 0123456789a 0 0 1\r\nx\r\n", b"\r\n") == BAD_FORMAT


def test_value_too_large_is_refused_and_swallowed(stig_factory):
    server = stig_factory("--max-item-size", "1k")
    conn = server.connect()
    assert conn.send_recv(b"set ok 0 0 1024\r\n%b\r\n" % (b"a" * 1024), b"\r\n") == b"STORED\r\n"
    big = b"set big 0 0 1025\r\n" + b"b" * 1025 + b"\r\n"
    assert conn.send_recv(big, b"\r\n") == TOO_LARGE
    # Far larger than a receive buffer: swallowed in pieces, the stream stays in step.
    huge = b"set huge 0 0 3000000\r\n" + b"get ok\r\n" * 375_000 + b"\r\n"
    assert conn.send_recv(huge, b"\r\n") == TOO_LARGE
    assert conn.send_recv(b"get ok big huge\r\n") == (
        b"VALUE ok 0 1024\r\n" + b"a" * 1024 + b"\r\nEND\r\n"
    )
    with pytest.raises(MemcacheServerError, match="object too large"):
        server.client().set("big", b"c" * 2000)
    assert server.stats("settings")["item_size_max"] == "1024"


def test_bad_data_chunk(stig_server):
    conn = stig_server.connect()
    # The right length but the wrong terminator.
    assert conn.send_recv(b"set k 0 0 3\r\nabcXY", b"\r\n") == BAD_CHUNK
    assert conn.send_recv(b"get k\r\n") == b"END\r\n"
    # One byte too many: the bad chunk, then memcached reads the leftover
    # "\n" as an empty command line.
    assert conn.send_recv(b"set k 0 0 3\r\nabcd\r\n", b"ERROR\r\n") == BAD_CHUNK + b"ERROR\r\n"
    assert conn.send_recv(b"set k 0 0 3\r\nabc\r\n", b"\r\n") == b"STORED\r\n"
    assert conn.send_recv(b"get k\r\n") == b"VALUE k 0 3\r\nabc\r\nEND\r\n"


def test_malformed_storage_lines(stig_server):
    conn = stig_server.connect()
    assert (
        conn.send_recv(b"set k 0 0\r\n", b"\r\n") == b"ERROR\r\n"
    )  # a wrong token count, as memcached
    assert conn.send_recv(b"set k 0 0 x\r\n", b"\r\n") == BAD_FORMAT
    # Bad flags: the announced data block is swallowed with the line.
    assert conn.send_recv(b"set k abc 0 1\r\nx\r\n", b"\r\n") == BAD_FORMAT
    assert conn.send_recv(b"set k %d 0 1\r\nx\r\n" % 2**32, b"\r\n") == BAD_FORMAT
    assert conn.send_recv(b"get k\r\n") == b"END\r\n"
    assert conn.send_recv(b"version\r\n", b"\r\n").startswith(b"VERSION ")


def test_storage_line_with_a_bad_extra_token_keeps_the_stream_in_step(stig_server):
    conn = stig_server.connect()
    # memcached ignores a last token that is not "noreply" and stores; refusing
    # is fine too, as long as the data block is not taken for a command.
    conn.send(b"set k 0 0 11 extra\r\nflush_all\r\n\r\n")
    reply = conn.recv_until(b"\r\n")
    assert reply in (b"STORED\r\n", BAD_FORMAT)
    assert conn.barrier() == b""  # the data block was not run as flush_all (no OK)


def test_line_too_long_closes_the_connection(stig_server):
    conn = stig_server.connect()
    conn.send(b"set " + b"x" * 3000)  # no newline yet
    reply = conn.recv_until(None)
    assert reply == b"CLIENT_ERROR line too long\r\n"
    assert stig_server.client().set("alive", b"1") is True


def test_complete_line_too_long_closes_the_connection(stig_server):
    conn = stig_server.connect()
    reply = conn.send_recv(b"delete " + b"x" * 2100 + b"\r\n", None)
    assert reply == b"CLIENT_ERROR line too long\r\n"


def test_nonzero_exptime_is_refused_and_nothing_stored(stig_server):
    conn = stig_server.connect()
    for command in (b"set", b"add", b"replace"):
        assert conn.send_recv(b"%b e 0 60 1\r\nx\r\n" % command, b"\r\n") == EXPTIME_REJECTED
    assert conn.send_recv(b"cas e 0 60 1 1\r\nx\r\n", b"\r\n") == EXPTIME_REJECTED
    for command in (b"append", b"prepend"):  # memcached ignores their exptime
        assert conn.send_recv(b"%b e 0 60 1\r\nx\r\n" % command, b"\r\n") == b"NOT_STORED\r\n"
    assert conn.send_recv(b"get e\r\n") == b"END\r\n"
    conn.send(b"set e 0 60 1 noreply\r\nx\r\n")  # silent, and still not stored
    assert conn.send_recv(b"get e\r\n") == b"END\r\n"
    with pytest.raises(MemcacheClientError, match="exptime"):
        stig_server.client().set("e", b"x", expire=30)
    assert stig_server.client().get("e") is None


def test_ttl_policy_ignore_stores_forever(stig_factory):
    server = stig_factory("--ttl-policy", "ignore")
    conn = server.connect()
    assert conn.send_recv(b"set e 0 60 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
    assert conn.send_recv(b"touch e 30\r\n", b"\r\n") == b"TOUCHED\r\n"
    assert conn.send_recv(b"gat 1 e\r\n") == b"VALUE e 0 1\r\nx\r\nEND\r\n"
    assert server.client().set("e2", b"y", expire=1) is True
    assert server.stats("settings")["stig_ttl_policy"] == "ignore"
    server.restart()
    assert server.client().get_many(["e", "e2"]) == {"e": b"x", "e2": b"y"}


def test_max_connections(stig_factory):
    server = stig_factory("--max-connections", "2")
    first, second = server.connect(), server.connect()
    for conn in (first, second):  # both are being served
        assert conn.send_recv(b"version\r\n", b"\r\n").startswith(b"VERSION ")
    third = server.connect()
    # memcached's bytes, and its counter (item 7 of issue 12).
    assert third.recv_until(None) == b"ERROR Too many open connections\r\n"
    assert first.send_recv(b"stats\r\n").count(b"STAT rejected_connections 1\r\n") == 1
    # The first two go on; once one leaves, a new connection is accepted.
    assert first.send_recv(b"set a 0 0 1\r\n1\r\n", b"\r\n") == b"STORED\r\n"
    second.close()
    for _ in range(50):
        fourth = server.connect()
        reply = fourth.send_recv(b"version\r\n", b"\r\n")
        if reply.startswith(b"VERSION "):
            break
        fourth.close()  # the close of `second` was not noticed yet
    else:
        pytest.fail("a slot freed by a closed connection was never reused")
    assert server.connect().recv_until(None) == b"ERROR Too many open connections\r\n"


# -- stats -------------------------------------------------------------------------------


def _ints(stats: dict[str, str], *names: str) -> dict[str, int]:
    return {name: int(stats[name]) for name in names}


def test_stats_counters(stig_server):
    counters = (
        "cmd_get",
        "get_hits",
        "get_misses",
        "cmd_set",
        "cmd_touch",
        "delete_hits",
        "delete_misses",
        "incr_hits",
        "incr_misses",
        "decr_hits",
        "decr_misses",
        "cas_hits",
        "cas_misses",
        "cas_badval",
        "curr_items",
        "bytes",
        "total_connections",
    )
    before = _ints(stig_server.stats(), *counters)
    client = stig_server.client()
    client.set("s1", b"12345")
    client.set("s2", b"10")
    client.get_many(["s1", "s2", "nope"])
    client.get("nope")
    client.touch("s1", 0)
    client.delete("s1")
    client.delete("s1")
    client.incr("s2", 1)
    client.incr("nope", 1)
    client.decr("s2", 1)
    client.decr("nope", 1)
    client.decr("nope", 1)
    _, token = client.gets("s2")
    client.cas("s2", b"20", token)
    client.cas("s2", b"30", token)
    client.cas("nope", b"1", token)
    after = _ints(stig_server.stats(), *counters)
    delta = {name: after[name] - before[name] for name in counters}
    assert delta == {
        "cmd_get": 5,
        "get_hits": 3,
        "get_misses": 2,
        "cmd_set": 5,  # 2 sets + 3 cas
        "cmd_touch": 1,
        "delete_hits": 1,
        "delete_misses": 1,
        "incr_hits": 1,
        "incr_misses": 1,
        "decr_hits": 1,
        "decr_misses": 2,
        "cas_hits": 1,
        "cas_misses": 1,
        "cas_badval": 1,
        "curr_items": 1,  # s2
        "bytes": 2,  # "20"
        "total_connections": 2,  # the client, and the second stats connection
    }


def test_stats_connections_and_uptime(stig_server):
    stats = stig_server.stats()
    assert int(stats["curr_connections"]) == 1  # the stats connection itself
    assert int(stats["uptime"]) >= 0
    conns = [stig_server.connect() for _ in range(3)]
    for conn in conns:
        conn.send_recv(b"version\r\n", b"\r\n")
    # The earlier stats connections are gone once the server noticed they closed.
    stats = wait_for_stats(stig_server, lambda s: s["curr_connections"] == "4")
    assert int(stats["total_connections"]) >= 5
    for conn in conns:
        conn.close()
    wait_for_stats(stig_server, lambda s: s["curr_connections"] == "1")


def test_stats_stig_commit_counters(stig_server):
    names = (
        "stig_commits",
        "stig_group_commit_avg",
        "stig_group_commit_max",
        "stig_commit_latency_avg_us",
        "stig_commit_latency_max_us",
        "stig_pending_promotion_bytes",
        "stig_gil_loans",
    )
    stats = stig_server.stats()
    assert set(names) <= set(stats)
    commits = int(stats["stig_commits"])
    client = stig_server.client()
    for i in range(5):
        client.set(f"c{i}", b"x")
    client.get("c0")
    # The writes commit in the background; commits are counted once done.
    stig_server.settle()
    stats = stig_server.stats()
    # Five acknowledged writes: at least one commit, at most one each.
    assert commits + 1 <= int(stats["stig_commits"]) <= commits + 5
    assert int(stats["stig_promotions"]) >= 5
    assert float(stats["stig_group_commit_avg"]) >= 1.0
    assert int(stats["stig_group_commit_max"]) >= 1
    assert int(stats["stig_commit_latency_max_us"]) > 0
    assert 0 < int(stats["stig_commit_latency_avg_us"]) <= int(stats["stig_commit_latency_max_us"])
    assert int(stats["stig_pending_promotion_bytes"]) == 0  # nothing waits now


def test_pymemcache_stats_and_settings(stig_server):
    client = stig_server.client()
    stats = client.stats()
    assert stats[b"curr_connections"] >= 1
    settings = client.stats("settings")
    assert settings[b"item_size_max"] == 1024 * 1024
    assert settings[b"maxconns"] == 1024
    assert settings[b"stig_durable_acks"] == b"no"


def test_stats_settings_reflect_options(stig_factory):
    server = stig_factory(
        "--max-connections",
        "7",
        "--durable-acks",
        "--batch-idle-ms",
        "5",
        "--max-item-size",
        "2m",
    )
    settings = server.stats("settings")
    assert settings["maxconns"] == "7"
    assert settings["item_size_max"] == str(2 << 20)
    assert settings["stig_durable_acks"] == "yes"
    assert float(settings["stig_batch_idle_ms"]) == 5.0
    assert settings["stig_data_dir"] == str(server.data_dir)
    assert server.send_recv(b"stats nonsense\r\n", b"\r\n") == b"ERROR\r\n"


def test_stats_reset(stig_server):
    client = stig_server.client()
    client.get("x")
    assert int(stig_server.stats()["cmd_get"]) == 1
    assert stig_server.send_recv(b"stats reset\r\n", b"\r\n") == b"RESET\r\n"
    assert int(stig_server.stats()["cmd_get"]) == 0


def test_reader_slots_exceed_two_per_connection(stig_factory):
    """Each connection may hold a snapshot while its reply streams and briefly
    read a second (an mg lease re-read); LMDB refuses a reader past its table,
    so the live environment has 2 per connection and spares for the tools —
    in each worker process of ``--workers N`` (N tables' worth: the
    connections may all land on one worker)."""
    server = stig_factory("--max-connections", "600")
    readers = (2 * 600 + 64) * max(1, int(server.stats()["stig_workers"]))
    settings = server.stats("settings")
    assert settings["stig_max_readers"] == str(readers)
    env = lmdb.open(str(server.data_dir), readonly=True, lock=True, max_dbs=2)
    try:
        assert env.info()["max_readers"] >= readers  # the table the server made
    finally:
        env.close()
