"""Seed inputs of each fuzz target: real protocol conversations, from
memcached's ``doc/protocol.txt`` and the clients' habits.

``scripts/fuzz.py --seed`` writes them into ``tests/fuzz/corpus/<target>/``
(then a campaign grows and minimizes that corpus).  Each input is the option
byte (:func:`stig_testkit.fuzz.streams.split`) and a stream.
"""

from __future__ import annotations

import base64
import struct

from stig_protocol.binary import BinaryRequest, Opcode, encode_request, pack_request

TEXT_STREAMS = [
    b"set k 0 0 5\r\nhello\r\nget k\r\n",
    b"set k 7 0 1 noreply\r\nx\r\nadd k 0 0 1\r\ny\r\nreplace k 0 0 1\r\nz\r\nget k\r\n",
    b"append k 0 0 2\r\nab\r\nprepend k 0 0 2\r\ncd\r\ngets k\r\n",
    b"set k 0 0 1\r\nx\r\ngets k\r\ncas k 0 0 1 1\r\ny\r\ncas k 0 0 1 99 noreply\r\nz\r\nget k\r\n",
    b"get a b c\r\ngets a\r\ngat 0 a b\r\ngats 100 a\r\n",
    b"set n 0 0 2\r\n10\r\nincr n 5\r\ndecr n 100\r\nincr n 18446744073709551615\r\nincr x 1\r\n",
    b"delete k\r\ndelete k 0\r\ndelete k noreply\r\ndelete k 0 noreply\r\ndelete k 1\r\n",
    b"touch k 0\r\ntouch k 10 noreply\r\nflush_all\r\nflush_all 0 noreply\r\nversion\r\n",
    b"verbosity 1\r\nverbosity 1 noreply\r\nstats\r\nstats settings\r\nstats items\r\n",
    b"stats slabs\r\nstats sizes\r\nstats conns\r\nstats detail on\r\nstats detail dump\r\n",
    b"set a:1 0 0 1\r\nx\r\nstats cachedump 1 0\r\nlru_crawler metadump all\r\nquit\r\n",
    b"set k 0 0 1 noreply\r\nx\r\nset j 0 0 1 noreply\r\ny\r\nget k j\r\n",
    b"set k 0 0 3\r\nab\r\nget k\r\n",
    b"set k 0 0 2000000\r\nget k\r\n",
    b"set k 0 abc 1\r\nx\r\nset k\r\nbogus\r\n\r\nget\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"get " + b"k" * 251 + b"\r\n",
    b"set k 0 -1 1\r\nx\r\nset k 0 100 1\r\nx\r\ntouch k 1\r\n",
    b"set k 0 0 1\r\nx\r\nms k 2 T0\r\nhi\r\nmg k v\r\nmn\r\n",
    b"refresh_certs\r\nshutdown\r\nstats reset\r\n",
]

META_STREAMS = [
    b"ms foo 2\r\nhi\r\nmg foo v\r\n",
    b"ms foo 2 T0 F5 c k O123\r\nhi\r\nmg foo s v f t c k O9 q\r\nmn\r\n",
    b"mg missing v q\r\nmg missing k O1\r\nmn\r\n",
    b"ms k 1 MA\r\nx\r\nms k 1 MP N0\r\ny\r\nms k 1 ME\r\nz\r\nms k 1 MR\r\nw\r\nmg k v\r\n",
    b"ms k 1 I C5\r\nx\r\nms k 1 E77\r\ny\r\nmg k c v\r\n",
    b"md k q\r\nmd k I T30\r\nmd k x C1\r\nmg k v c\r\nmn\r\n",
    b"ma n N0 J10 v\r\nma n D5 MD v\r\nma n MI q\r\nma n M- D100 v t c\r\nmn\r\n",
    b"mg k N30 v c\r\nmg k R30 v c\r\nmg k v c h l t\r\nmg k T60 u\r\n",
    b"me k\r\nms "
    + base64.b64encode(b"\x00bin")
    + b" 1 b\r\nx\r\nmg "
    + base64.b64encode(b"\x00bin")
    + b" b k v\r\nme "
    + base64.b64encode(b"\x00bin")
    + b" b\r\n",
    b"ms k 1 q\r\na\r\nms j 1 q\r\nb\r\nmd k q\r\nmn\r\n",
    b"mg k zz\r\nmg k vv\r\nms k bad\r\nms k 2 MX\r\nhi\r\nma k MX\r\nmd k Cx\r\n",
    b"ms k 3 O" + b"o" * 40 + b"\r\nabc\r\nmg\r\nms\r\nmn extra\r\n",
    b"ms k 2000000 T0\r\nmg k v\r\n",
    b"ms k 2 q\r\nhi\r\nget k\r\nms j 2 q\r\nyo\r\nversion\r\n",
]


def _request(opcode: Opcode, key: bytes = b"", value: bytes = b"", **fields: int) -> bytes:
    return pack_request(BinaryRequest(opcode, key, value, **fields))


BINARY_STREAMS = [
    _request(Opcode.Set, b"k", b"v", flags=5) + _request(Opcode.Get, b"k"),
    _request(Opcode.SetQ, b"a", b"1") + _request(Opcode.SetQ, b"b", b"2")
    + _request(Opcode.GetKQ, b"a") + _request(Opcode.GetKQ, b"zz") + _request(Opcode.Noop),
    _request(Opcode.Add, b"k", b"v") + _request(Opcode.Add, b"k", b"w")
    + _request(Opcode.Replace, b"k", b"x") + _request(Opcode.ReplaceQ, b"q", b"y"),
    _request(Opcode.Append, b"k", b"a") + _request(Opcode.Prepend, b"k", b"b")
    + _request(Opcode.Set, b"k", b"v") + _request(Opcode.AppendQ, b"k", b"c")
    + _request(Opcode.GetK, b"k"),
    _request(Opcode.Increment, b"n", delta=5, initial=10)
    + _request(Opcode.Decrement, b"n", delta=100)
    + _request(Opcode.IncrementQ, b"n", delta=1, expiration=0xFFFFFFFF)
    + _request(Opcode.Increment, b"m", delta=1, expiration=0xFFFFFFFF),
    _request(Opcode.Delete, b"k") + _request(Opcode.DeleteQ, b"k") + _request(Opcode.Version)
    + _request(Opcode.Verbosity, verbosity=1) + _request(Opcode.Flush)
    + _request(Opcode.FlushQ, exptime=0),
    _request(Opcode.Set, b"k", b"v") + _request(Opcode.Touch, b"k", exptime=0)
    + _request(Opcode.GAT, b"k") + _request(Opcode.GATQ, b"k") + _request(Opcode.GATK, b"x")
    + _request(Opcode.GATKQ, b"k") + _request(Opcode.Noop),
    _request(Opcode.Stat) + _request(Opcode.Stat, b"settings") + _request(Opcode.Stat, b"items"),
    _request(Opcode.Set, b"k", b"v", cas=1) + _request(Opcode.Get, b"k")
    + _request(Opcode.Set, b"k", b"w", cas=2) + _request(Opcode.Delete, b"k", cas=3),
    _request(Opcode.SASLListMechs) + _request(Opcode.SASLAuth, b"PLAIN", b"\x00u\x00p"),
    encode_request(0x55) + encode_request(Opcode.Get) + encode_request(Opcode.Set, b"k", b"v")
    + encode_request(Opcode.Get, b"k" * 300) + _request(Opcode.Noop),
    encode_request(Opcode.Set, b"k", b"v" * 70, struct.pack(">II", 0, 0))
    + _request(Opcode.Get, b"k"),
    _request(Opcode.SetQ, b"k", b"v") + _request(Opcode.Quit),
    _request(Opcode.SetQ, b"k", b"v") + _request(Opcode.QuitQ),
    _request(Opcode.SetQ, b"k", b"v") + b"\x80\x01\x00\x05\x08\x00\x00\x00\x00\x00\x00\x01",
    _request(Opcode.Get, b"k") + b"\x81" + bytes(23),
]  # fmt: skip

#: Logins of the ``auth`` server variant (stig_testkit.fuzz.harness.VARIANTS[2]).
AUTH_TEXT = b"set a 0 0 3\r\nu p\r\n"
AUTH_BINARY = _request(Opcode.SASLAuth, b"PLAIN", b"\x00u\x00p")

LISTING_STREAMS = [b"all", b"hash", b"1,2,3", b"0", b"64", b"1 0", b"a%20b%zz", b"k\x00 \xff%"]


def seeds(target: str) -> list[bytes]:
    """The seed inputs of ``target``: each stream under every option byte in 0..3."""
    streams = {
        "text": TEXT_STREAMS + META_STREAMS[:3],
        "text_fast": TEXT_STREAMS + META_STREAMS[:3],
        "handler_text": TEXT_STREAMS,
        "meta": [line for stream in META_STREAMS for line in stream.split(b"\n")[:1]]
        + [b"ms k 2 T0 F5 c k O123\r\nhi", b"md k I T30 q", b"ma n N0 J10 v MD D3"],
        "handler_meta": META_STREAMS,
        "binary": BINARY_STREAMS,
        "handler_binary": BINARY_STREAMS,
        "listing": LISTING_STREAMS,
    }[target]
    if not target.startswith("handler_"):
        return [bytes([option]) + stream for stream in streams for option in range(4)]
    login = AUTH_BINARY if target == "handler_binary" else AUTH_TEXT
    found = [bytes([option]) + stream for stream in streams for option in range(2)]
    # The auth variant: each stream without logging in, then after logging in.
    found += [b"\x02" + stream for stream in streams[:4]]
    found += [b"\x02" + login + stream for stream in streams]
    return found
