"""Fuzz targets of the protocol handlers: bytes in, a real server's replies out.

Each input is one client connection to a real Stig (real LMDB store, real
promoter and commit thread, the real connection loop) over an in-memory
transport (:mod:`stig_testkit.fuzz.harness`).  The stream is fed whole, a
byte at a time and in random chunks, each time on a fresh store, and:

* no exception escapes the server and nothing is logged at ERROR (an
  internal error costs the client its connection: a finding), nor does a
  connection hang;
* the client receives the same replies, and the store keeps the same items,
  whichever way the stream was cut;
* binary replies are whole response packets.

What varies by nature is masked before comparing: the values of ``stats``
(times, resource usage, commit counts; ``stats items`` is a key listing
and kept) and the ``la=`` (last access) of
``me`` and ``lru_crawler metadump``.

* :func:`handler_text`: text commands (the corpus and dictionary lean to the
  classic ones);
* :func:`handler_meta`: the same handler (meta commands arrive on text
  connections) with a corpus and dictionary of meta commands;
* :func:`handler_binary`: binary requests (the stream's first byte is made
  0x80, the binary magic, as memcached chooses the protocol by it).
"""

from __future__ import annotations

import re

from stig_protocol.binary import decode_response
from stig_protocol.binary_codes import Opcode
from stig_testkit.fuzz.harness import VARIANTS, Served, serve
from stig_testkit.fuzz.streams import feedings, split

#: A ``stats`` line, but those of ``stats items``: a key listing, the same
#: however the stream was cut (docs/pov.md, "Key listings").
_STAT_LINE = re.compile(rb"^STAT (?!items:)(\S+) [^\r\n]*", re.MULTILINE)
_LAST_ACCESS = re.compile(rb"\bla=\d+")


def mask_text(replies: bytes) -> bytes:
    """Text replies with what varies by nature masked (see the module docstring)."""
    return _LAST_ACCESS.sub(b"la=*", _STAT_LINE.sub(rb"STAT \1 *", replies))


def mask_binary(replies: bytes) -> bytes:
    """Binary replies with the values of Stat responses masked (the rest as is)."""
    out = bytearray()
    at = 0
    while True:
        try:
            decoded = decode_response(replies, at)
        except ValueError:
            decoded = None
        if decoded is None:
            return bytes(out + replies[at:])
        response, end = decoded
        if response.opcode == Opcode.Stat and not response.key.startswith(b"items:"):
            out += b"STAT %d %b\n" % (response.opaque, response.key)
        else:
            out += replies[at:end]
        at = end


def check_binary_framing(replies: bytes) -> None:
    """A binary reply stream is whole response packets, nothing else."""
    at = 0
    while at < len(replies):
        decoded = decode_response(replies, at)  # ValueError: not a response
        assert decoded is not None, ("a cut response", replies[at:])
        at = decoded[1]


def _check(stream: bytes, option: int, mask: object, framing: object = None) -> None:
    variant = VARIANTS[option % len(VARIANTS)]
    expected: tuple[bytes, Served] | None = None
    for name, chunks in feedings(stream, option >> 1):
        served = serve(chunks, variant)
        assert not served.errors, (name, served.errors)
        if framing is not None:
            framing(served.replies)  # type: ignore[operator]
        replies = mask(served.replies)  # type: ignore[operator]
        if expected is None:
            expected = replies, served
            continue
        assert replies == expected[0], (name, variant.name, replies, expected[0])
        assert served.items == expected[1].items, (name, variant.name)


def handler_text(data: bytes) -> None:
    option, stream = split(data)
    if stream[:1] == b"\x80":
        return  # a binary connection: handler_binary's
    _check(stream, option, mask_text)


handler_meta = handler_text


def handler_binary(data: bytes) -> None:
    option, stream = split(data)
    _check(b"\x80" + stream[1:], option, mask_binary, check_binary_framing)
