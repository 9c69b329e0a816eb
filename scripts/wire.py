"""Request bytes and the exact expected reply bytes, per protocol and operation.

The load generator never parses replies.  For every batch it sends it knows
the one byte string a correct server must answer, because every key's value is
a deterministic function of the key (:func:`value_for`) and the key space is
preloaded.  Comparing received bytes against that string is both the cheapest
possible client (a ``memcmp``) and a full verification of every reply: a wrong
value, a wrong key, a miss, an error line or a lost reply all differ.

Protocols:

* ``text``   - classic memcached text protocol (``get``/``set``) and, for the
  batch workload, meta commands (``ms <key> <len> q`` ... ``mn``).
* ``binary`` - memcached binary protocol; only the batch workload
  (``SetQ`` ... ``Noop``), because binary GET replies carry a server-chosen CAS
  that cannot be predicted.
* ``resp``   - Redis RESP2 (``GET``/``SET``/``MGET``; batch is one ``MSET``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PROTOCOLS = ("text", "binary", "resp")


def key_for(i: int) -> bytes:
    """The i-th key of the key space (fixed width, so sizes are uniform)."""
    return b"key:%010d" % i


def value_for(key: bytes, size: int) -> bytes:
    """The value stored under ``key``: the key repeated, cut to ``size`` bytes.

    Deriving the value from the key lets a wrong-key reply be detected.
    """
    return (key * (size // len(key) + 1))[:size]


@dataclass(frozen=True)
class Exchange:
    """One request (or pipeline of requests) and the reply it must produce.

    ``reply_ends`` are the offsets in ``reply`` at which each logical reply
    ends, so a mismatch can be turned into a count of failed replies.
    """

    request: bytes
    reply: bytes
    reply_ends: tuple[int, ...]
    items: int  # keys read or written by the whole exchange


class Text:
    """memcached text protocol (+ meta commands for batches)."""

    name = "text"

    @staticmethod
    def get(key: bytes, size: int, hit: bool) -> tuple[bytes, bytes]:
        req = b"get %s\r\n" % key
        if not hit:
            return req, b"END\r\n"
        return req, b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, size, value_for(key, size))

    @staticmethod
    def set(key: bytes, size: int) -> tuple[bytes, bytes]:
        return b"set %s 0 0 %d\r\n%s\r\n" % (key, size, value_for(key, size)), b"STORED\r\n"

    @staticmethod
    def mget(keys: list[bytes], size: int, hit: bool) -> tuple[bytes, bytes]:
        req = b"get " + b" ".join(keys) + b"\r\n"
        if not hit:
            return req, b"END\r\n"
        parts = [b"VALUE %s 0 %d\r\n%s\r\n" % (k, size, value_for(k, size)) for k in keys]
        return req, b"".join(parts) + b"END\r\n"

    @staticmethod
    def batch(keys: list[bytes], size: int) -> tuple[bytes, bytes]:
        parts = [b"ms %s %d q\r\n%s\r\n" % (k, size, value_for(k, size)) for k in keys]
        parts.append(b"mn\r\n")
        return b"".join(parts), b"MN\r\n"

    @staticmethod
    def batch_plain(keys: list[bytes], size: int) -> tuple[bytes, bytes]:
        """The classic-protocol fallback: pipelined ``set`` x N, every ``STORED`` read."""
        pairs = [Text.set(k, size) for k in keys]
        return b"".join(p[0] for p in pairs), b"".join(p[1] for p in pairs)

    @staticmethod
    def probe() -> tuple[bytes, bytes]:
        """A request any text server answers with a line starting ``VERSION ``."""
        return b"version\r\n", b"VERSION "


_BIN_HEADER = struct.Struct(">BBHBBHIIQ")
_OP_SETQ = 0x11
_OP_NOOP = 0x0A


class Binary:
    """memcached binary protocol: quiet sets closed by a no-op."""

    name = "binary"

    @staticmethod
    def batch(keys: list[bytes], size: int, opaque: int = 0x5715) -> tuple[bytes, bytes]:
        extras = struct.pack(">II", 0, 0)  # flags, exptime
        parts = []
        for k in keys:
            body = len(extras) + len(k) + size
            parts.append(_BIN_HEADER.pack(0x80, _OP_SETQ, len(k), len(extras), 0, 0, body, 0, 0))
            parts.append(extras + k + value_for(k, size))
        parts.append(_BIN_HEADER.pack(0x80, _OP_NOOP, 0, 0, 0, 0, 0, opaque, 0))
        reply = _BIN_HEADER.pack(0x81, _OP_NOOP, 0, 0, 0, 0, 0, opaque, 0)
        return b"".join(parts), reply


def _resp_command(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def _resp_bulk(data: bytes | None) -> bytes:
    return b"$-1\r\n" if data is None else b"$%d\r\n%s\r\n" % (len(data), data)


class Resp:
    """Redis RESP2."""

    name = "resp"

    @staticmethod
    def get(key: bytes, size: int, hit: bool) -> tuple[bytes, bytes]:
        return _resp_command(b"GET", key), _resp_bulk(value_for(key, size) if hit else None)

    @staticmethod
    def set(key: bytes, size: int) -> tuple[bytes, bytes]:
        return _resp_command(b"SET", key, value_for(key, size)), b"+OK\r\n"

    @staticmethod
    def mget(keys: list[bytes], size: int, hit: bool) -> tuple[bytes, bytes]:
        reply = [b"*%d\r\n" % len(keys)]
        reply += [_resp_bulk(value_for(k, size) if hit else None) for k in keys]
        return _resp_command(b"MGET", *keys), b"".join(reply)

    @staticmethod
    def batch(keys: list[bytes], size: int) -> tuple[bytes, bytes]:
        args = [b"MSET"]
        for k in keys:
            args += [k, value_for(k, size)]
        return _resp_command(*args), b"+OK\r\n"

    @staticmethod
    def probe() -> tuple[bytes, bytes]:
        return _resp_command(b"PING"), b"+PONG\r\n"


def codec(protocol: str) -> type[Text] | type[Binary] | type[Resp]:
    """The encoder class for a protocol name."""
    return {"text": Text, "binary": Binary, "resp": Resp}[protocol]
