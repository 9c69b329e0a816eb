"""One rule, three protocols: what the core (stig/core/command_core.py) decides once,
every protocol says alike.

The text, meta and binary handlers only translate (issue #13): the refusal
words, the ``stats <group>`` answers and the ``cmd_set`` counting come from
the core, so a client sees the same whatever protocol it speaks.  Real
server, raw sockets.
"""

from __future__ import annotations

import struct

import pytest

from stig_protocol.binary import Opcode, Status

TTL_WORDS = b"exptime must be 0: Stig is a database and items never expire (see --ttl-policy)"
FLUSH_DELAY_WORDS = b"flush_all delay must be 0: Stig items never expire"


def _binary_stats(conn, group: bytes) -> list[tuple[bytes, bytes]]:
    conn.request(Opcode.Stat, group)
    pairs = []
    while (rsp := conn.response()).key:
        assert rsp.status == Status.NO_ERROR
        pairs.append((rsp.key, rsp.value))
    return pairs


def _text_stats(conn, group: bytes) -> list[tuple[bytes, bytes]]:
    reply = conn.send_recv(b"stats %b\r\n" % group, b"END\r\n")
    lines = reply.split(b"\r\n")[:-2]
    return [tuple(line.split(b" ", 2)[1:]) for line in lines]  # type: ignore[misc]


def test_refusal_words_are_the_same_in_every_protocol(stig_server):
    text = stig_server.connect()
    assert (
        text.send_recv(b"set k 0 60 1\r\nx\r\n", b"\r\n") == b"CLIENT_ERROR " + TTL_WORDS + b"\r\n"
    )
    assert text.send_recv(b"ms k 1 T60\r\nx\r\n", b"\r\n") == b"CLIENT_ERROR " + TTL_WORDS + b"\r\n"
    assert (
        text.send_recv(b"flush_all 5\r\n", b"\r\n")
        == b"CLIENT_ERROR " + FLUSH_DELAY_WORDS + b"\r\n"
    )
    binary = stig_server.connect_binary()
    rsp = binary.call(Opcode.Set, b"k", b"x", struct.pack(">II", 0, 60))
    assert (rsp.status, rsp.value) == (Status.EINVAL, TTL_WORDS)
    rsp = binary.call(Opcode.Flush, extras=struct.pack(">I", 5))
    assert (rsp.status, rsp.value) == (Status.EINVAL, FLUSH_DELAY_WORDS)


def test_stats_items_lists_the_same_in_text_and_binary(stig_server):
    """memcached 1.6's binary Stat ``items`` lists the items, as text does
    (before, Stig's binary answered it empty)."""
    text = stig_server.connect()
    assert text.send_recv(b"set a 0 0 3\r\nabc\r\n", b"\r\n") == b"STORED\r\n"
    assert text.send_recv(b"mn\r\n", b"\r\n") == b"MN\r\n"
    listed = _text_stats(text, b"items")
    assert (b"items:1:number", b"1") in listed
    assert _binary_stats(stig_server.connect_binary(), b"items") == listed


def test_stats_detail_words_are_the_same_in_text_and_binary(stig_server):
    """``detail on <extra>`` switches in both, as memcached's binary does."""
    binary = stig_server.connect_binary()
    rsp = binary.call(Opcode.Stat, b"detail on extra")
    assert (rsp.status, rsp.key) == (Status.NO_ERROR, b"")
    text = stig_server.connect()
    assert text.send_recv(b"get p:1\r\n") == b"END\r\n"
    dump = text.send_recv(b"stats detail dump\r\n")
    assert dump == b"PREFIX p get 1 hit 0 set 0 del 0\r\nEND\r\n"
    assert _binary_stats(binary, b"detail dump") == [(b"detailed", dump)]
    assert text.send_recv(b"stats detail off\r\n", b"\r\n") == b"OK\r\n"


@pytest.mark.parametrize(
    "protocol",
    ["text", "meta", "binary"],
)
def test_cmd_set_counts_every_store_alike(stig_server, protocol):
    """A set, an append, a conditional append and a refused set count one
    ``cmd_set`` each, in every protocol (memcached counts every store
    command, refused or not)."""
    before = int(stig_server.stats()["cmd_set"])
    if protocol == "binary":
        conn = stig_server.connect_binary()
        extras = struct.pack(">II", 0, 0)
        cas = conn.call(Opcode.Set, b"c", b"x", extras).cas
        assert conn.call(Opcode.Append, b"c", b"y").status == Status.NO_ERROR
        assert conn.call(Opcode.Append, b"c", b"z", cas=cas + 99).status == Status.KEY_EEXISTS
        assert conn.call(Opcode.Set, b"c", b"x", struct.pack(">II", 0, 60)).status == Status.EINVAL
    else:
        conn = stig_server.connect()
        if protocol == "text":
            lines = [
                (b"set c 0 0 1\r\nx\r\n", b"STORED\r\n"),
                (b"append c 0 0 1\r\ny\r\n", b"STORED\r\n"),
                (b"gets c\r\n", None),
                (b"cas c 0 0 1 99999\r\nz\r\n", b"EXISTS\r\n"),
                (b"set c 0 60 1\r\nx\r\n", b"CLIENT_ERROR " + TTL_WORDS + b"\r\n"),
            ]
        else:
            lines = [
                (b"ms c 1\r\nx\r\n", b"HD\r\n"),
                (b"ms c 1 MA\r\ny\r\n", b"HD\r\n"),
                (b"ms c 1 MA C99999\r\nz\r\n", b"EX\r\n"),
                (b"ms c 1 T60\r\nx\r\n", b"CLIENT_ERROR " + TTL_WORDS + b"\r\n"),
            ]
        for line, expected in lines:
            if expected is None:
                conn.send_recv(line, b"END\r\n")
            else:
                assert conn.send_recv(line, b"\r\n") == expected
    # text's "cas" is its conditional store; meta and binary append conditionally
    assert int(stig_server.stats()["cmd_set"]) - before == 4


def test_get_statistics_count_a_streamed_multi_get_once(stig_server):
    """A multi-get whose reply passes --max-reply-bytes is sent in parts
    (the rest handed over mid-line): its hits and misses are counted once,
    by the core, as for any other read."""
    conn = stig_server.connect()
    value = b"x" * 300_000
    for i in range(6):
        assert conn.send_recv(b"set k%d 0 0 %d\r\n%b\r\n" % (i, len(value), value), b"\r\n") == (
            b"STORED\r\n"
        )
    reply = conn.send_recv(b"get k0 k1 nope k2 k3 k4 k5 nope2\r\n", b"END\r\n")
    assert reply.count(b"VALUE ") == 6
    stats = stig_server.stats()
    assert (stats["cmd_get"], stats["get_hits"], stats["get_misses"]) == ("8", "6", "2")


@pytest.mark.parametrize("ahead", [b"get other\r\n", b"get other1 other2\r\n"])
def test_a_get_read_ahead_waits_for_this_sessions_quiet_add(stig_server, ahead):
    """A get read ahead behind another get (the text fast path) checks what
    every read checks (Core.read_ready): a quiet ``add`` of this session whose
    verdict is pending makes it wait for that verdict, so the session sees its
    own write.  Before, the read-ahead check asked only about other sessions'
    writes in flight, and this get missed the add."""
    conn = stig_server.connect()
    burst = b"add mine 0 0 1 noreply\r\nv\r\n" + ahead + b"get mine\r\nmn\r\n"
    reply = conn.send_recv(burst, b"MN\r\n")
    reply = reply.removesuffix(b"MN\r\n")
    assert reply.endswith(b"END\r\nVALUE mine 0 1\r\nv\r\nEND\r\n"), reply
