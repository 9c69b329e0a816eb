"""Events of the binary protocol: what :class:`~stig_protocol.binary.BinaryParser`
hands out.

* :class:`BinaryRequest` — one well-formed request, extras decoded into typed
  fields.  It checks itself when built, so nobody holds a malformed one.
* :class:`InvalidBinaryRequest` — one request was refused (bad shape, key too
  long, value too large, unknown opcode); its bytes are gone from the stream,
  answer it and go on.
* :class:`BinaryProtocolError` — the stream cannot be trusted any more; answer
  its ``binary_hint`` if there is one, then close.

Events are values only: :mod:`stig_protocol.binary_writer` turns them into bytes
(:func:`~stig_protocol.binary_writer.refusal_response`).
"""

from __future__ import annotations

import attrs

from stig_protocol.binary_codes import (
    SHAPES,
    STATUS_MESSAGES,
    U16_MAX,
    U32_MAX,
    U64_MAX,
    Opcode,
    Status,
    base_opcode,
    is_quiet,
    returns_key,
)
from stig_protocol.errors import ProtocolError

#: The typed extras fields and their bounds; fields the opcode does not
#: carry must stay 0 so that a request has exactly one encoding.
_EXTRAS_BOUNDS = (
    ("flags", U32_MAX),
    ("exptime", U32_MAX),
    ("delta", U64_MAX),
    ("initial", U64_MAX),
    ("expiration", U32_MAX),
    ("verbosity", U32_MAX),
)


@attrs.frozen
class BinaryRequest:
    """One well-formed binary request.

    ``flags``/``exptime`` come from Set/Add/Replace extras, ``exptime`` alone
    from Touch/GAT*/Flush, ``delta``/``initial``/``expiration`` from
    Increment/Decrement and ``verbosity`` from Verbosity; the others are 0.
    An Increment/Decrement ``expiration`` of 0xffffffff means "do not create
    a missing counter".
    """

    opcode: Opcode
    key: bytes = b""
    value: bytes = b""
    cas: int = 0
    opaque: int = 0
    vbucket: int = 0
    flags: int = 0
    exptime: int = 0
    delta: int = 0
    initial: int = 0
    expiration: int = 0
    verbosity: int = 0

    def __attrs_post_init__(self) -> None:
        shape = SHAPES.get(self.opcode)
        if shape is None:
            raise ValueError(f"unknown opcode {self.opcode!r}")
        if not shape.key.accepts(len(self.key)) or len(self.key) > U16_MAX:
            raise ValueError(f"{self.opcode.name}: key must be {shape.key.value}")
        if not shape.value.accepts(len(self.value)):
            raise ValueError(f"{self.opcode.name}: value must be {shape.value.value}")
        if len(self.key) + shape.extras_size + len(self.value) > U32_MAX:
            raise ValueError(f"{self.opcode.name}: body longer than 2**32-1 bytes")
        if not (0 <= self.cas <= U64_MAX and 0 <= self.opaque <= U32_MAX
                and 0 <= self.vbucket <= U16_MAX):  # fmt: skip
            raise ValueError("cas, opaque or vbucket out of range")
        if self.flags or self.exptime or self.delta or self.initial or self.expiration \
                or self.verbosity:  # fmt: skip
            self._check_extras(shape.extras)

    def _check_extras(self, carried: tuple[str, ...]) -> None:
        for name, bound in _EXTRAS_BOUNDS:
            value = getattr(self, name)
            if value and name not in carried:
                raise ValueError(f"{self.opcode.name} carries no {name}")
            _check_range(name, value, bound)

    @property
    def quiet(self) -> bool:
        """A quiet (``…Q``) request: no reply on success (nor on a get miss)."""
        return is_quiet(self.opcode)

    @property
    def base(self) -> Opcode:
        """The loud opcode of this request (SetQ → Set)."""
        return base_opcode(self.opcode)

    @property
    def returns_key(self) -> bool:
        """The response must carry the key (GetK, GetKQ, GATK, GATKQ)."""
        return returns_key(self.opcode)


def _check_range(name: str, value: int, bound: int) -> None:
    if not 0 <= value <= bound:
        raise ValueError(f"{name} {value} not in 0..{bound}")


@attrs.frozen
class InvalidBinaryRequest:
    """One request was refused and its bytes skipped: answer and go on.

    ``opcode`` is the raw byte (it may be no known :class:`Opcode`);
    ``message`` is memcached's text for ``status``, sent as the reply value.
    ``discard_key``: a Set refused as too large, whose key memcached then
    deletes so that the old value does not outlive it.
    """

    opcode: int
    opaque: int
    status: Status
    message: str = attrs.field()
    discard_key: bytes | None = attrs.field(default=None, kw_only=True, eq=False)

    @message.default
    def _default_message(self) -> str:
        return STATUS_MESSAGES.get(self.status, "")


class BinaryProtocolError(ProtocolError):
    """The binary stream is broken (bad magic, lengths that do not add up).

    ``binary_hint`` is the error to answer before closing, or None when
    nothing should be answered (memcached closes silently on a bad magic).
    """

    def __init__(self, binary_hint: InvalidBinaryRequest | None, message: str) -> None:
        super().__init__(None, message)
        self.binary_hint = binary_hint
