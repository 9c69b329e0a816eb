"""Numbers of the memcached binary protocol: header, opcodes, statuses, shapes.

Everything here is data, after memcached 1.6 ``protocol_binary.h`` and
``proto_bin.c``:

* the 24-byte header (:data:`HEADER`), big-endian, the same for requests
  (magic 0x80, vbucket in bytes 6-7) and responses (magic 0x81, status there);
* :class:`Opcode` and :class:`Status`, and the quiet ↔ base opcode mapping;
* :data:`SHAPES`, what each request may carry (key, extras, value), the table
  memcached's ``dispatch_bin_command`` checks before running a command;
* :data:`STATUS_MESSAGES`, the exact error texts memcached puts in the value
  of an error response.
"""

from __future__ import annotations

import enum
import struct
from typing import Final

import attrs

REQUEST_MAGIC: Final = 0x80
RESPONSE_MAGIC: Final = 0x81
RAW_BYTES: Final = 0x00  # the only data type memcached defines

#: magic, opcode, key length, extras length, data type, vbucket/status,
#: total body length, opaque, cas.
HEADER: Final = struct.Struct(">BBHBBHIIQ")
HEADER_SIZE: Final = HEADER.size  # 24

U16_MAX: Final = 2**16 - 1
U32_MAX: Final = 2**32 - 1
U64_MAX: Final = 2**64 - 1


class Opcode(enum.IntEnum):
    """Request opcodes of memcached 1.6 (the response echoes the request's)."""

    Get = 0x00
    Set = 0x01
    Add = 0x02
    Replace = 0x03
    Delete = 0x04
    Increment = 0x05
    Decrement = 0x06
    Quit = 0x07
    Flush = 0x08
    GetQ = 0x09
    Noop = 0x0A
    Version = 0x0B
    GetK = 0x0C
    GetKQ = 0x0D
    Append = 0x0E
    Prepend = 0x0F
    Stat = 0x10
    SetQ = 0x11
    AddQ = 0x12
    ReplaceQ = 0x13
    DeleteQ = 0x14
    IncrementQ = 0x15
    DecrementQ = 0x16
    QuitQ = 0x17
    FlushQ = 0x18
    AppendQ = 0x19
    PrependQ = 0x1A
    Verbosity = 0x1B
    Touch = 0x1C
    GAT = 0x1D
    GATQ = 0x1E
    SASLListMechs = 0x20
    SASLAuth = 0x21
    SASLStep = 0x22
    GATK = 0x23
    GATKQ = 0x24


class Status(enum.IntEnum):
    """Response statuses (``protocol_binary_response_status``)."""

    NO_ERROR = 0x00
    KEY_ENOENT = 0x01
    KEY_EEXISTS = 0x02
    E2BIG = 0x03
    EINVAL = 0x04
    NOT_STORED = 0x05
    DELTA_BADVAL = 0x06
    VBUCKET = 0x07
    AUTH_ERROR = 0x20
    AUTH_CONTINUE = 0x21
    UNKNOWN_COMMAND = 0x81
    ENOMEM = 0x82
    NOT_SUPPORTED = 0x83
    EINTERNAL = 0x84
    EBUSY = 0x85
    ETMPFAIL = 0x86


#: memcached's ``write_bin_error`` texts; the last four have none in
#: memcached (it never sends them), so these are ours.
STATUS_MESSAGES: Final[dict[int, str]] = {
    Status.KEY_ENOENT: "Not found",
    Status.KEY_EEXISTS: "Data exists for key.",
    Status.E2BIG: "Too large.",
    Status.EINVAL: "Invalid arguments",
    Status.NOT_STORED: "Not stored.",
    Status.DELTA_BADVAL: "Non-numeric server-side value for incr or decr",
    Status.VBUCKET: "Not my vbucket",
    Status.AUTH_ERROR: "Auth failure.",
    Status.UNKNOWN_COMMAND: "Unknown command",
    Status.ENOMEM: "Out of memory",
    Status.NOT_SUPPORTED: "Not supported",
    Status.EINTERNAL: "Internal error",
    Status.EBUSY: "Busy",
    Status.ETMPFAIL: "Temporary failure",
}

_QUIET_TO_BASE: Final[dict[Opcode, Opcode]] = {
    Opcode.GetQ: Opcode.Get,
    Opcode.GetKQ: Opcode.GetK,
    Opcode.SetQ: Opcode.Set,
    Opcode.AddQ: Opcode.Add,
    Opcode.ReplaceQ: Opcode.Replace,
    Opcode.DeleteQ: Opcode.Delete,
    Opcode.IncrementQ: Opcode.Increment,
    Opcode.DecrementQ: Opcode.Decrement,
    Opcode.QuitQ: Opcode.Quit,
    Opcode.FlushQ: Opcode.Flush,
    Opcode.AppendQ: Opcode.Append,
    Opcode.PrependQ: Opcode.Prepend,
    Opcode.GATQ: Opcode.GAT,
    Opcode.GATKQ: Opcode.GATK,
}

_RETURNS_KEY: Final = frozenset({Opcode.GetK, Opcode.GetKQ, Opcode.GATK, Opcode.GATKQ})

#: int → Opcode without the cost of the enum's constructor on the hot path.
OPCODES: Final[dict[int, Opcode]] = {int(op): op for op in Opcode}


def is_quiet(opcode: int) -> bool:
    """True for the ``…Q`` opcodes, whose success (and, for gets, whose miss)
    gets no response."""
    return opcode in _QUIET_TO_BASE


def base_opcode(opcode: Opcode) -> Opcode:
    """The loud opcode a quiet one is a variant of (GetQ → Get, GATKQ → GATK);
    any other opcode is its own base."""
    return _QUIET_TO_BASE.get(opcode, opcode)


def returns_key(opcode: int) -> bool:
    """True when the response carries the key (GetK, GetKQ, GATK, GATKQ)."""
    return opcode in _RETURNS_KEY


class Presence(enum.Enum):
    """Whether a request part (key or value) must, may or must not be there."""

    REQUIRED = "required"
    OPTIONAL = "optional"
    FORBIDDEN = "forbidden"

    def accepts(self, length: int) -> bool:
        if self is Presence.REQUIRED:
            return length > 0
        if self is Presence.FORBIDDEN:
            return length == 0
        return True


@attrs.frozen
class Shape:
    """What one opcode's request carries.

    ``extras`` names the typed :class:`~stig_protocol.binary.BinaryRequest` fields
    packed, in order, with ``extras_format``; ``optional_extras`` means the
    extras may also be absent (Flush).
    """

    key: Presence
    value: Presence
    extras_format: str = ""
    extras: tuple[str, ...] = ()
    optional_extras: bool = False
    extras_size: int = attrs.field(init=False)

    @extras_size.default
    def _extras_size(self) -> int:
        return struct.calcsize(">" + self.extras_format) if self.extras_format else 0

    def accepts(self, key_length: int, extras_length: int, value_length: int) -> bool:
        """True if these lengths are a well-formed request of this shape."""
        if extras_length != self.extras_size and not (self.optional_extras and extras_length == 0):
            return False
        return self.key.accepts(key_length) and self.value.accepts(value_length)


_REQ, _OPT, _NO = Presence.REQUIRED, Presence.OPTIONAL, Presence.FORBIDDEN
_EMPTY = Shape(key=_NO, value=_NO)
_KEY_ONLY = Shape(key=_REQ, value=_NO)
_STORE = Shape(key=_REQ, value=_OPT, extras_format="II", extras=("flags", "exptime"))
_CONCAT = Shape(key=_REQ, value=_OPT)
_COUNTER = Shape(
    key=_REQ, value=_NO, extras_format="QQI", extras=("delta", "initial", "expiration")
)
_TOUCH = Shape(key=_REQ, value=_NO, extras_format="I", extras=("exptime",))
_FLUSH = Shape(key=_NO, value=_NO, extras_format="I", extras=("exptime",), optional_extras=True)

#: Per base opcode, after memcached's ``dispatch_bin_command``.  Where
#: memcached does not check the value (Stat, Touch, GAT*), it would read a
#: stray value as the next request; Stig refuses it instead.
SHAPES: Final[dict[Opcode, Shape]] = {
    Opcode.Get: _KEY_ONLY,
    Opcode.GetK: _KEY_ONLY,
    Opcode.Set: _STORE,
    Opcode.Add: _STORE,
    Opcode.Replace: _STORE,
    Opcode.Delete: _KEY_ONLY,
    Opcode.Increment: _COUNTER,
    Opcode.Decrement: _COUNTER,
    Opcode.Quit: _EMPTY,
    Opcode.Flush: _FLUSH,
    Opcode.Noop: _EMPTY,
    Opcode.Version: _EMPTY,
    Opcode.Append: _CONCAT,
    Opcode.Prepend: _CONCAT,
    Opcode.Stat: Shape(key=_OPT, value=_NO),
    Opcode.Verbosity: Shape(key=_NO, value=_NO, extras_format="I", extras=("verbosity",)),
    Opcode.Touch: _TOUCH,
    Opcode.GAT: _TOUCH,
    Opcode.GATK: _TOUCH,
    Opcode.SASLListMechs: _EMPTY,
    Opcode.SASLAuth: Shape(key=_REQ, value=_OPT),
    Opcode.SASLStep: Shape(key=_REQ, value=_OPT),
}
SHAPES.update({quiet: SHAPES[base] for quiet, base in _QUIET_TO_BASE.items()})

#: The longest extras any request may have (Increment/Decrement's 20 bytes).
MAX_EXTRAS_SIZE: Final = max(shape.extras_size for shape in SHAPES.values())
