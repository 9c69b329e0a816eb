"""Every kind of reply that closes a run of quiet/noreply writes, per protocol.

docs/pov.md ("Which replies acknowledge what"): the reply of the command that
closes a run acknowledges the whole run — whatever that command is.  The
SIGKILL tests (tests/durability/test_closing_replies.py), the power-cut tests
(tests/powercut/test_powercut_closing_replies.py) and the visibility tests read this
one table: a run of writes, then one closing command, then its reply.

A *run* is ``RUN`` writes of fresh keys ``<prefix>-<i>`` (text ``set …
noreply``, meta ``ms … q``, binary SetQ); a *closer* is the bytes of one
command and how to recognise the end of its reply.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import attrs

from stig_protocol.binary import Opcode, encode_request

#: Writes in a run; the values are big enough that the run's commit takes a
#: real fsync, so an acknowledgement sent before it loses the race to SIGKILL.
RUN = 20
VALUE_SIZE = 2000


def value(prefix: str, index: int) -> bytes:
    head = b"%s-%d:" % (prefix.encode(), index)
    return (head * (VALUE_SIZE // len(head) + 1))[:VALUE_SIZE]


def keys(prefix: str) -> list[str]:
    return [f"{prefix}-{i}" for i in range(RUN)]


def text_run(prefix: str) -> bytes:
    return b"".join(
        b"set %s 0 0 %d noreply\r\n%s\r\n" % (key.encode(), VALUE_SIZE, value(prefix, i))
        for i, key in enumerate(keys(prefix))
    )


def meta_run(prefix: str) -> bytes:
    return b"".join(
        b"ms %s %d q\r\n%s\r\n" % (key.encode(), VALUE_SIZE, value(prefix, i))
        for i, key in enumerate(keys(prefix))
    )


_SET_EXTRAS = struct.pack(">II", 0, 0)


def binary_run(prefix: str) -> bytes:
    return b"".join(
        encode_request(Opcode.SetQ, key.encode(), value(prefix, i), _SET_EXTRAS, opaque=1000 + i)
        for i, key in enumerate(keys(prefix))
    )


RUNS: dict[str, Callable[[str], bytes]] = {
    "text": text_run,
    "meta": meta_run,
    "binary": binary_run,
}


@attrs.frozen
class TextCloser:
    """A text or meta command and the bytes its reply ends with."""

    name: str
    request: bytes
    until: bytes


#: Every kind of reply a text connection can give that closes the run before
#: it (reads, the barrier, informational commands, failures, listings).
TEXT_CLOSERS = [
    TextCloser("version", b"version\r\n", b"\r\n"),
    TextCloser("get", b"get other\r\n", b"END\r\n"),
    TextCloser("gets", b"gets other\r\n", b"END\r\n"),
    TextCloser("gat", b"gat 0 other\r\n", b"END\r\n"),
    TextCloser("touch", b"touch other 0\r\n", b"NOT_FOUND\r\n"),
    TextCloser("stats", b"stats\r\n", b"END\r\n"),
    TextCloser("stats-settings", b"stats settings\r\n", b"END\r\n"),
    TextCloser("verbosity", b"verbosity 1\r\n", b"OK\r\n"),
    TextCloser("unknown-command", b"bogus\r\n", b"ERROR\r\n"),
    TextCloser("client-error", b"incr other notanumber\r\n", b"\r\n"),
    TextCloser("incr-miss", b"incr other 1\r\n", b"NOT_FOUND\r\n"),
    TextCloser("delete-miss", b"delete other\r\n", b"NOT_FOUND\r\n"),
    TextCloser("metadump", b"lru_crawler metadump all\r\n", b"END\r\n"),
    TextCloser("cachedump", b"stats cachedump 1 0\r\n", b"END\r\n"),
    TextCloser("mg", b"mg other v\r\n", b"EN\r\n"),
    TextCloser("me", b"me other\r\n", b"EN\r\n"),
    TextCloser("mn", b"mn\r\n", b"MN\r\n"),
    TextCloser("md-miss", b"md other\r\n", b"NF\r\n"),
    TextCloser("ma-miss", b"ma other\r\n", b"NF\r\n"),
    TextCloser("loud-set", b"set closer 0 0 1\r\nc\r\n", b"STORED\r\n"),
]


@attrs.frozen
class BinaryCloser:
    """A binary request (sent with opaque ``OPAQUE``) whose response closes the run."""

    name: str
    opcode: int
    key: bytes = b""
    value: bytes = b""
    extras: bytes = b""

    def request(self) -> bytes:
        return encode_request(self.opcode, self.key, self.value, self.extras, opaque=OPAQUE)


OPAQUE = 0xC105E
_INCR_EXTRAS = struct.pack(">QQI", 1, 0, 0xFFFFFFFF)  # delta 1, no create

BINARY_CLOSERS = [
    BinaryCloser("Get", Opcode.Get, b"other"),
    BinaryCloser("GetK", Opcode.GetK, b"other"),
    BinaryCloser("GAT", Opcode.GAT, b"other", extras=struct.pack(">I", 0)),
    BinaryCloser("Touch", Opcode.Touch, b"other", extras=struct.pack(">I", 0)),
    BinaryCloser("Version", Opcode.Version),
    BinaryCloser("Stat", Opcode.Stat),
    BinaryCloser("Verbosity", Opcode.Verbosity, extras=struct.pack(">I", 1)),
    BinaryCloser("Noop", Opcode.Noop),
    BinaryCloser("Increment-miss", Opcode.Increment, b"other", extras=_INCR_EXTRAS),
    BinaryCloser("Delete-miss", Opcode.Delete, b"other"),
    BinaryCloser("SASL-unknown", Opcode.SASLListMechs),
    BinaryCloser("key-too-long", Opcode.Get, b"k" * 251),
    BinaryCloser("unknown-opcode", 0x5F),
    BinaryCloser("loud-Set", Opcode.Set, b"closer", b"c", _SET_EXTRAS),
]


#: The closers a quiet meta run is tried with: the meta commands, and one of
#: each other kind (a noreply text run tries them all on the same connection).
META_CLOSERS = [
    closer
    for closer in TEXT_CLOSERS
    if closer.name
    in {"version", "get", "stats", "unknown-command", "mg", "me", "mn", "md-miss", "ma-miss"}
]


def read_binary_reply(conn, closer: BinaryCloser) -> None:
    """Read responses until the closer's last one (Stat ends with an empty key)."""
    while True:
        response = conn.response()
        if response.opaque != OPAQUE:
            continue
        if closer.opcode == Opcode.Stat and response.key:
            continue
        return


def lost_writes(server, prefix: str) -> list[str]:
    """The writes of the run ``prefix`` that ``server`` does not show (wrong or gone)."""
    found = server.client().get_many(keys(prefix))
    return [key for i, key in enumerate(keys(prefix)) if found.get(key) != value(prefix, i)]
