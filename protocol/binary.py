"""Sans-IO parser for the memcached binary protocol (memcached 1.6).

Framing rules, checked in this order on each 24-byte request header, before
any byte of the body is kept:

1. The magic byte must be 0x80; anything else raises
   :class:`BinaryProtocolError` without a reply hint (memcached closes
   silently: the stream is not binary requests any more).
2. ``key length + extras length`` must not exceed the total body length;
   otherwise :class:`BinaryProtocolError` hinting UNKNOWN_COMMAND (as
   memcached answers), then close: the lengths cannot be trusted.
3. An unknown opcode is refused with UNKNOWN_COMMAND.
4. A key longer than ``Limits.max_key_length`` is refused with EINVAL.
5. A request whose key/extras/value lengths do not fit its opcode's
   :data:`~stig_protocol.binary_codes.SHAPES` entry is refused with EINVAL.
6. A value longer than ``Limits.max_item_size`` is refused with E2BIG.

A refused request's body is skipped, counting bytes as they arrive and never
buffering them, and then an :class:`InvalidBinaryRequest` is returned: the
stream goes on with the next request.  Since an accepted request is at most
``24 + max_key_length + 20 + max_item_size`` bytes, that bounds what the
parser holds once :meth:`BinaryParser.next_event` has returned ``NEED_DATA``.

Feed bytes with :meth:`BinaryParser.feed`, then call
:meth:`BinaryParser.next_event` until it returns :data:`NEED_DATA`.  This
module also re-exports the codes, events and writers of the binary protocol,
so ``from stig_protocol.binary import ...`` is all a caller needs.
"""

from __future__ import annotations

import struct
from typing import NoReturn

import attrs

from stig_protocol.binary_codes import (
    HEADER,
    HEADER_SIZE,
    MAX_EXTRAS_SIZE,
    OPCODES,
    REQUEST_MAGIC,
    SHAPES,
    STATUS_MESSAGES,
    Opcode,
    Status,
    base_opcode,
    is_quiet,
    returns_key,
)
from stig_protocol.binary_events import BinaryProtocolError, BinaryRequest, InvalidBinaryRequest
from stig_protocol.binary_writer import (
    BinaryResponse,
    counter_response,
    decode_response,
    encode_request,
    encode_response,
    error_response,
    get_miss_response,
    get_response,
    pack_request,
    refusal_response,
    stat_end_response,
    stat_response,
)
from stig_protocol.events import NEED_DATA, _NeedData
from stig_protocol.limits import Limits

#: A too-large value for these deletes the key (memcached's process_bin_update).
_DISCARDING = frozenset({Opcode.Set, Opcode.SetQ})

__all__ = [
    "NEED_DATA",
    "STATUS_MESSAGES",
    "BinaryEvent",
    "BinaryParser",
    "BinaryProtocolError",
    "BinaryRequest",
    "BinaryResponse",
    "InvalidBinaryRequest",
    "Opcode",
    "Status",
    "base_opcode",
    "counter_response",
    "decode_response",
    "encode_request",
    "encode_response",
    "error_response",
    "get_miss_response",
    "get_response",
    "is_quiet",
    "max_request_size",
    "pack_request",
    "refusal_response",
    "returns_key",
    "stat_end_response",
    "stat_response",
]

BinaryEvent = BinaryRequest | InvalidBinaryRequest

#: Per opcode: the extras' decoder and the request fields it fills.
_EXTRAS: dict[Opcode, tuple[struct.Struct, tuple[str, ...]]] = {
    opcode: (struct.Struct(">" + shape.extras_format), shape.extras)
    for opcode, shape in SHAPES.items()
    if shape.extras_format
}

_COMPACT_AFTER = 65536  # consumed bytes kept before the buffer is compacted
#: At most this many requests per :meth:`BinaryParser.quiet_sets` call (the
#: connection loop checks for finished commits between calls).
MAX_QUIET_SETS = 128


def max_request_size(limits: Limits) -> int:
    """The largest request the parser accepts, hence ever buffers whole."""
    return HEADER_SIZE + limits.max_key_length + MAX_EXTRAS_SIZE + limits.max_item_size


class BinaryParser:
    """Turns a byte stream into binary-protocol events.

    Raises only :class:`BinaryProtocolError` (a :class:`ProtocolError`), and
    from then on raises it again on every call.
    """

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self._buffer = bytearray()
        self._start = 0  # where the unparsed bytes begin in _buffer
        self._skipping = 0  # body bytes of a refused request still to drop
        self._refused: InvalidBinaryRequest | None = None  # sent once skipped
        self._error: BinaryProtocolError | None = None
        #: Requests handed out by :meth:`quiet_sets` since the reader last set
        #: it to 0 (a connection loop that yields every so many commands
        #: counts them too).
        self.batched = 0

    # -- feeding -----------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Add received bytes; those of a body being skipped are dropped here."""
        if self._error is not None:
            return
        view = memoryview(data)
        if self._skipping:
            dropped = min(self._skipping, len(view))
            self._skipping -= dropped
            view = view[dropped:]
        if self._start and self._start == len(self._buffer):
            self._buffer.clear()
            self._start = 0
        self._buffer += view

    @property
    def at_boundary(self) -> bool:
        """True when no part of a request is buffered or being skipped."""
        return not self._skipping and self._refused is None and self._start == len(self._buffer)

    @property
    def buffered(self) -> int:
        """Bytes received and not yet parsed."""
        return len(self._buffer) - self._start

    # -- parsing -----------------------------------------------------------

    def next_event(self) -> BinaryEvent | _NeedData:
        """The next request or refusal, or NEED_DATA if none is complete."""
        if self._error is not None:
            raise self._error
        if self._skipping:
            return NEED_DATA
        if self._refused is not None:
            refused, self._refused = self._refused, None
            return refused
        if len(self._buffer) - self._start < HEADER_SIZE:
            return NEED_DATA
        header = HEADER.unpack_from(self._buffer, self._start)
        magic, opcode, key_len, extras_len, _, vbucket, body_len, opaque, cas = header
        if magic != REQUEST_MAGIC:
            self._fail(None, f"bad magic byte {magic:#04x}")
        if key_len + extras_len > body_len:
            hint = InvalidBinaryRequest(opcode, opaque, Status.UNKNOWN_COMMAND)
            self._fail(hint, f"key and extras ({key_len}+{extras_len}) exceed body ({body_len})")
        refusal = self._refusal(opcode, opaque, key_len, extras_len, body_len)
        if refusal is not None:
            if refusal.status is Status.E2BIG and opcode in _DISCARDING:
                # The key comes before the value: wait for it (a few hundred
                # bytes at most), so that the refusal can name it.
                key_start = self._start + HEADER_SIZE + extras_len
                if len(self._buffer) < key_start + key_len:
                    return NEED_DATA
                key = bytes(self._buffer[key_start : key_start + key_len])
                refusal = attrs.evolve(refusal, discard_key=key)
            return self._skip(HEADER_SIZE + body_len, refusal)
        if len(self._buffer) - self._start < HEADER_SIZE + body_len:
            return NEED_DATA
        return self._request(OPCODES[opcode], key_len, extras_len, body_len, vbucket, opaque, cas)

    def quiet_sets(self) -> list[BinaryRequest]:
        """Consume the run of SetQ requests at the head of the buffer (each
        whole and not refused; at most :data:`MAX_QUIET_SETS`) and return
        them, in order: what :meth:`next_event` would return one by one, so
        that a burst of pipelined SetQ costs one call.  Stops, consuming
        nothing more, at the first other request or one not all here."""
        found: list[BinaryRequest] = []
        if self._error is not None or self._skipping or self._refused is not None:
            return found
        buffer = self._buffer
        while len(found) < MAX_QUIET_SETS:
            start = self._start
            if len(buffer) - start < HEADER_SIZE or buffer[start + 1] != Opcode.SetQ:
                break
            header = HEADER.unpack_from(buffer, start)
            magic, opcode, key_len, extras_len, _, vbucket, body_len, opaque, cas = header
            if (
                magic != REQUEST_MAGIC
                or key_len + extras_len > body_len
                or len(buffer) - start < HEADER_SIZE + body_len
                or self._refusal(opcode, opaque, key_len, extras_len, body_len) is not None
            ):
                break
            found.append(
                self._request(Opcode.SetQ, key_len, extras_len, body_len, vbucket, opaque, cas)
            )
            buffer = self._buffer  # _request may have compacted it (same object)
        self.batched += len(found)
        return found

    def quiet_gets_ahead(self) -> tuple[list[bytes], bool]:
        """Look, consuming nothing, at the run of whole GetQ/GetKQ requests at
        the head of the buffer: their keys, in order, and whether the run's
        end is buffered too — the header of any other request (or of one the
        parser refuses) right behind them.  A Get or GetK that ends the run
        is read with it (python-binary-memcached's ``get_multi`` sends GetKQ…,
        GetK): its key comes last, and the end counts as buffered once that
        key is.  False: the buffer ends inside the run, whose next requests
        (or closing Get's key) have not arrived."""
        keys: list[bytes] = []
        if self._error is not None or self._skipping or self._refused is not None:
            return keys, True
        buffer = self._buffer
        start = self._start
        while len(buffer) - start >= HEADER_SIZE:
            header = HEADER.unpack_from(buffer, start)
            magic, opcode, key_len, extras_len, _, _, body_len, opaque, _ = header
            if (
                magic != REQUEST_MAGIC
                or key_len + extras_len > body_len
                or self._refusal(opcode, opaque, key_len, extras_len, body_len) is not None
            ):
                return keys, True
            quiet = opcode == Opcode.GetQ or opcode == Opcode.GetKQ
            if not quiet and opcode != Opcode.Get and opcode != Opcode.GetK:
                return keys, True
            end = start + HEADER_SIZE + body_len
            if len(buffer) < end:
                break
            key_at = start + HEADER_SIZE + extras_len
            keys.append(bytes(buffer[key_at : key_at + key_len]))
            if not quiet:
                return keys, True  # the Get that ends the run
            start = end
        return keys, False

    def _fail(self, hint: InvalidBinaryRequest | None, message: str) -> NoReturn:
        self._error = BinaryProtocolError(hint, message)
        raise self._error

    def _refusal(
        self, opcode: int, opaque: int, key_len: int, extras_len: int, body_len: int
    ) -> InvalidBinaryRequest | None:
        """Why the request with this header must be refused, or None."""
        known = OPCODES.get(opcode)
        if known is None:
            return InvalidBinaryRequest(opcode, opaque, Status.UNKNOWN_COMMAND)
        value_len = body_len - key_len - extras_len
        if key_len > self.limits.max_key_length:
            return InvalidBinaryRequest(opcode, opaque, Status.EINVAL)
        if not SHAPES[known].accepts(key_len, extras_len, value_len):
            return InvalidBinaryRequest(opcode, opaque, Status.EINVAL)
        if value_len > self.limits.max_item_size:
            return InvalidBinaryRequest(opcode, opaque, Status.E2BIG)
        return None

    def _skip(self, count: int, refusal: InvalidBinaryRequest) -> InvalidBinaryRequest | _NeedData:
        """Drop ``count`` bytes, the buffered ones now, the rest in feed();
        the refusal comes out once they are all gone."""
        dropped = min(len(self._buffer) - self._start, count)
        self._start += dropped
        self._skipping = count - dropped
        self._compact()
        if self._skipping:
            self._refused = refusal
            return NEED_DATA
        return refusal

    def _request(
        self,
        opcode: Opcode,
        key_len: int,
        extras_len: int,
        body_len: int,
        vbucket: int,
        opaque: int,
        cas: int,
    ) -> BinaryRequest:
        """Cut the whole, already validated request out of the buffer."""
        extras_at = self._start + HEADER_SIZE
        key_at = extras_at + extras_len
        value_at = key_at + key_len
        end = extras_at + body_len
        extras: dict[str, int] = {}
        if extras_len:
            decoder, names = _EXTRAS[opcode]
            extras = dict(zip(names, decoder.unpack_from(self._buffer, extras_at), strict=False))
        with memoryview(self._buffer) as view:
            key = bytes(view[key_at:value_at])
            value = bytes(view[value_at:end])
        self._start = end
        self._compact()
        return BinaryRequest(opcode, key, value, cas, opaque, vbucket, **extras)

    def _compact(self) -> None:
        """Forget consumed bytes once they are many and most of the buffer."""
        if self._start == len(self._buffer):
            self._buffer.clear()
            self._start = 0
        elif self._start > _COMPACT_AFTER and self._start * 2 > len(self._buffer):
            del self._buffer[: self._start]
            self._start = 0
