"""Binary protocol writers: responses for the server, requests for clients.

A packet is the 24-byte header then extras, key and value, in that order;
the header's body length is their total.  Responses echo the request's
opcode and opaque.  The only reader here, :func:`decode_response`, is for
clients and tests; the server reads with :class:`~stig_protocol.binary.BinaryParser`.
"""

from __future__ import annotations

import struct

import attrs

from stig_protocol.binary_codes import (
    HEADER,
    HEADER_SIZE,
    RAW_BYTES,
    REQUEST_MAGIC,
    RESPONSE_MAGIC,
    SHAPES,
    STATUS_MESSAGES,
    Opcode,
    Status,
    returns_key,
)
from stig_protocol.binary_events import BinaryRequest, InvalidBinaryRequest

_FLAGS = struct.Struct(">I")
_COUNTER = struct.Struct(">Q")


def _packet(
    magic: int,
    opcode: int,
    vbucket_or_status: int,
    opaque: int,
    cas: int,
    key: bytes,
    extras: bytes,
    value: bytes,
    data_type: int = RAW_BYTES,
) -> bytes:
    body_length = len(extras) + len(key) + len(value)
    header = HEADER.pack(
        magic, opcode, len(key), len(extras), data_type, vbucket_or_status,
        body_length, opaque, cas,
    )  # fmt: skip
    return b"".join((header, extras, key, value))


# -- responses -------------------------------------------------------------


def encode_response(
    opcode: int,
    status: int = Status.NO_ERROR,
    opaque: int = 0,
    cas: int = 0,
    key: bytes = b"",
    extras: bytes = b"",
    value: bytes = b"",
) -> bytes:
    """Any response packet; the helpers below cover the usual ones."""
    return _packet(RESPONSE_MAGIC, opcode, status, opaque, cas, key, extras, value)


def get_response(
    opcode: int, opaque: int, flags: int, cas: int, value: bytes, key: bytes = b""
) -> bytes:
    """A hit for Get/GetK/GAT/GATK/Touch (and their quiet forms).

    The extras are the 4-byte flags; ``key`` is sent only when the opcode
    returns it (GetK, GetKQ, GATK, GATKQ) and ignored otherwise; Touch sends
    no value, as in memcached.
    """
    if opcode == Opcode.Touch:
        value = b""
    return encode_response(
        opcode, Status.NO_ERROR, opaque, cas,
        key=key if returns_key(opcode) else b"", extras=_FLAGS.pack(flags), value=value,
    )  # fmt: skip


def get_miss_response(opcode: int, opaque: int, key: bytes = b"") -> bytes:
    """A miss for a get or touch: KEY_ENOENT, "Not found".

    For opcodes that return the key, memcached sends the key both as the key
    and as the value instead of the message; so do we.
    """
    if returns_key(opcode):
        return encode_response(opcode, Status.KEY_ENOENT, opaque, key=key, value=key)
    return error_response(opcode, opaque, Status.KEY_ENOENT)


def counter_response(opcode: int, opaque: int, cas: int, value: int) -> bytes:
    """Increment/Decrement success: the new value as an 8-byte body."""
    return encode_response(opcode, Status.NO_ERROR, opaque, cas, value=_COUNTER.pack(value))


def error_response(opcode: int, opaque: int, status: int, message: str = "") -> bytes:
    """An error: the status, and its text (memcached's by default) as value."""
    text = message or STATUS_MESSAGES.get(status, "")
    return encode_response(opcode, status, opaque, value=text.encode())


def refusal_response(refusal: InvalidBinaryRequest) -> bytes:
    """The error response memcached sends for a request the parser refused."""
    return error_response(refusal.opcode, refusal.opaque, refusal.status, refusal.message)


def stat_response(opaque: int, name: bytes | str, value: bytes | str) -> bytes:
    """One statistic: its name as key, its value as value."""
    return encode_response(Opcode.Stat, opaque=opaque, key=_as_bytes(name), value=_as_bytes(value))


def stat_end_response(opaque: int) -> bytes:
    """The empty Stat packet that ends a list of statistics."""
    return encode_response(Opcode.Stat, opaque=opaque)


def _as_bytes(text: bytes | str) -> bytes:
    return text.encode() if isinstance(text, str) else text


# -- requests (clients, tests, benchmarks) ---------------------------------


def encode_request(
    opcode: int,
    key: bytes = b"",
    value: bytes = b"",
    extras: bytes = b"",
    *,
    cas: int = 0,
    opaque: int = 0,
    vbucket: int = 0,
    data_type: int = RAW_BYTES,
    magic: int = REQUEST_MAGIC,
) -> bytes:
    """Any request packet, valid or not: extras are given already packed."""
    return _packet(magic, opcode, vbucket, opaque, cas, key, extras, value, data_type)


def pack_request(request: BinaryRequest) -> bytes:
    """The one encoding of a :class:`~stig_protocol.binary.BinaryRequest`.

    Extras are packed from the request's typed fields; a Flush without an
    exptime is sent without extras.
    """
    shape = SHAPES[request.opcode]
    extras = b""
    if shape.extras_format and not (shape.optional_extras and request.exptime == 0):
        values = [getattr(request, name) for name in shape.extras]
        extras = struct.pack(">" + shape.extras_format, *values)
    return encode_request(
        request.opcode, request.key, request.value, extras,
        cas=request.cas, opaque=request.opaque, vbucket=request.vbucket,
    )  # fmt: skip


@attrs.frozen
class BinaryResponse:
    """A decoded response packet (for clients and tests)."""

    opcode: int
    status: int
    opaque: int
    cas: int
    key: bytes
    extras: bytes
    value: bytes


def decode_response(data: bytes, offset: int = 0) -> tuple[BinaryResponse, int] | None:
    """The response starting at ``offset`` and the offset just after it, or
    None if ``data`` does not hold all of it yet.  Raises ValueError on a
    wrong magic byte."""
    if len(data) - offset < HEADER_SIZE:
        return None
    magic, opcode, key_len, extras_len, _, status, body_len, opaque, cas = HEADER.unpack_from(
        data, offset
    )
    if magic != RESPONSE_MAGIC:
        raise ValueError(f"not a response: magic {magic:#04x}")
    end = offset + HEADER_SIZE + body_len
    if len(data) < end:
        return None
    extras_at = offset + HEADER_SIZE
    key_at = extras_at + extras_len
    value_at = key_at + key_len
    response = BinaryResponse(
        opcode, status, opaque, cas,
        bytes(data[key_at:value_at]), bytes(data[extras_at:key_at]), bytes(data[value_at:end]),
    )  # fmt: skip
    return response, end
