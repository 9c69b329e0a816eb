"""The dump stream: memcached meta commands, so any meta-protocol server can replay it.

A dump is a sequence of

* ``ms <key> <length> F<flags> q\\r\\n<value>\\r\\n`` — one item; the
  key as it is when a text line can carry it (:func:`key_token`), else
  base64 with the flag ``b`` (``ms <base64 key> <length> b F<flags> q``), so
  any byte string survives; ``F`` keeps the client flags, ``q`` asks for
  silence on success;
* ``mn\\r\\n`` — a barrier, written every N items and at the end: replayed
  into Stig, each group of items between barriers is one atomic, durable
  transaction, and the ``MN`` reply confirms it.

Nothing else: no header, no expiry (Stig items never expire).  The full
description, with an example, is docs/operations.md#dump-format.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

BARRIER = b"mn\r\n"
#: The longest ms line a valid dump holds (a 250-byte key is 336 base64 bytes).
MAX_LINE = 1024
#: The longest value a dump may announce (LMDB cannot store more than 4 GiB
#: anyway): a larger length is a damaged or hostile stream, refused before
#: anything is allocated for it.
MAX_VALUE = 1 << 31


#: The bytes a plain (not base64) meta key cannot hold: space, controls, DEL.
_NOT_PLAIN = re.compile(rb"[\x00-\x20\x7f]")


def key_token(key: bytes) -> tuple[bytes, bytes]:
    """The key as a meta command names it, and the flag that goes with it:
    ``(key, b"")`` when the key holds no space, control byte or DEL, else
    ``(base64, b" b")``.

    Plain whenever possible, because memcached limits the key *token* to 250
    bytes before decoding base64: a base64 key of 187 bytes or more (a token
    of 252+) is refused by memcached 1.6, so only keys that need base64 pay
    that limit (docs/operations.md#dump-format).
    """
    if _NOT_PLAIN.search(key) is None:
        return key, b""
    return base64.b64encode(key), b" b"


class DumpItem(NamedTuple):
    key: bytes
    value: bytes
    flags: int


class DumpFormatError(Exception):
    """The stream is not a dump; the message says where and why."""


def encode_item(key: bytes, value: bytes, flags: int) -> bytes:
    token, b_flag = key_token(key)
    return b"ms %b %d%b F%d q\r\n%b\r\n" % (token, len(value), b_flag, flags, value)


def read(stream: BinaryIO) -> Iterator[DumpItem | None]:
    """The items of a dump, with None for each barrier; DumpFormatError on bad input.

    Reads line by line and value by value: memory stays at one item.
    """
    offset = 0
    while True:
        line = stream.readline(MAX_LINE)
        if not line:
            return
        where = f"at byte {offset}"
        offset += len(line)
        if not line.endswith(b"\n"):
            raise DumpFormatError(f"{where}: line too long or cut short: {line[:60]!r}")
        if line.rstrip(b"\r\n") == b"mn":
            yield None
            continue
        tokens = line.split()
        if len(tokens) < 3 or tokens[0] != b"ms":
            raise DumpFormatError(f"{where}: expected 'ms' or 'mn', got {line[:60]!r}")
        raw_key, length_text = tokens[1], tokens[2]
        if not length_text.isdigit():
            raise DumpFormatError(f"{where}: bad length {length_text!r}")
        flags = 0
        encoded = False
        for flag in tokens[3:]:
            if flag == b"b":
                encoded = True
            elif flag[:1] == b"F" and flag[1:].isdigit() and int(flag[1:]) < 2**32:
                flags = int(flag[1:])
            elif flag in (b"q", b"T0", b"T-1", b"MS"):
                pass  # silence; "never expires"; plain set mode
            else:
                raise DumpFormatError(f"{where}: unsupported ms flag {flag!r}")
        key = raw_key
        if encoded:
            try:
                key = base64.b64decode(raw_key, validate=True)
            except binascii.Error:
                raise DumpFormatError(f"{where}: key is not base64: {raw_key[:60]!r}") from None
        length = int(length_text)
        if length > MAX_VALUE:
            raise DumpFormatError(
                f"{where}: value length {length} of key {key[:60]!r} is over {MAX_VALUE}"
            )
        block = stream.read(length + 2)
        offset += len(block)
        if len(block) != length + 2 or not block.endswith(b"\r\n"):
            raise DumpFormatError(
                f"{where}: value of key {key[:60]!r} cut short or not ended by \\r\\n"
            )
        yield DumpItem(key, block[:-2], flags)
