"""The meta commands (``mg ms md ma mn me``) as frozen, self-validating values.

Every flag of memcached 1.6's meta protocol that changes what the server does
is a typed field here; nothing is kept as a raw flag string.  The flags that
ask the server to *echo* something (``k O c f s t h l``) are kept, in the
order the client sent them, in ``returns``: memcached writes the returned
flags in request order, and so must Stig.

A command can never be built in a state the wire could not carry: keys are
non-empty and (unless base64) free of spaces and control characters, numbers
are in the range memcached parses, ``returns`` only holds flags the command
honours, and ``ReturnFlag.OPAQUE`` is in ``returns`` exactly when ``opaque``
is set.  The maximum key length is a :class:`~stig_protocol.limits.Limits`
setting, so the parser, not the class, enforces it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import attrs

from stig_protocol.errors import InvalidCommand

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
MAX_OPAQUE_LENGTH = 31  #: memcached refuses an ``O`` token longer than 32 bytes

_UNSAFE_KEY = re.compile(rb"[\x00-\x20\x7f]")
_WHITESPACE = re.compile(rb"[ \t\n\r\x0b\x0c]")


class ReturnFlag(enum.Enum):
    """A flag asking the server to echo something back in the reply line."""

    KEY = "k"  #: the key (base64 again, followed by ``b``, for a binary key)
    OPAQUE = "O"  #: the client's opaque token, verbatim
    CAS = "c"  #: the item's CAS value
    CLIENT_FLAGS = "f"  #: the client flags
    SIZE = "s"  #: the value's length
    TTL = "t"  #: seconds left to live, ``-1`` for never (always so in Stig)
    HIT = "h"  #: 1 if the item was fetched before, else 0
    LAST_ACCESS = "l"  #: seconds since the last access

    @property
    def letter(self) -> bytes:
        return self.value.encode()


class SetMode(enum.Enum):
    """``ms``'s ``M`` token: what to do with an item already under the key."""

    SET = "S"  #: store unconditionally (the default)
    ADD = "E"  #: store only if the key is absent
    APPEND = "A"  #: add the value after the existing data
    PREPEND = "P"  #: add the value before the existing data
    REPLACE = "R"  #: store only if the key is present


class ArithmeticMode(enum.Enum):
    """``ma``'s ``M`` token."""

    INCREMENT = "I"  #: also written ``+``; the default
    DECREMENT = "D"  #: also written ``-``; stops at 0


_GET_RETURNS = frozenset(ReturnFlag)
_SET_RETURNS = frozenset({ReturnFlag.KEY, ReturnFlag.OPAQUE, ReturnFlag.CAS, ReturnFlag.SIZE})
_DELETE_RETURNS = frozenset({ReturnFlag.KEY, ReturnFlag.OPAQUE})
_ARITHMETIC_RETURNS = frozenset({ReturnFlag.KEY, ReturnFlag.OPAQUE, ReturnFlag.CAS, ReturnFlag.TTL})


# -- validators ---------------------------------------------------------------


_Validator = Callable[[object, "attrs.Attribute[Any]", Any], None]


def _in_range(low: int, high: int) -> _Validator:
    """An attrs validator: an int (not a bool) within [low, high]."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{attribute.name} must be an int in [{low}, {high}], got {value!r}")

    return check


def _optional_range(low: int, high: int) -> _Validator:
    inner = _in_range(low, high)
    return attrs.validators.optional(inner)


def _returns_tuple(value: Iterable[ReturnFlag]) -> tuple[ReturnFlag, ...]:
    return tuple(value)


def _check_key(key: bytes, key_binary: bool) -> None:
    if not isinstance(key, bytes) or not key:
        raise ValueError("a key is non-empty bytes")
    if not key_binary and _UNSAFE_KEY.search(key):
        raise ValueError("a text key has no spaces or control characters; use key_binary")


def _check_returns(command: _Keyed, allowed: frozenset[ReturnFlag]) -> None:
    returns = command.returns
    if not returns and command.opaque is None:
        return  # the common case: nothing to echo, nothing to check
    if len(set(returns)) != len(returns):
        raise ValueError("a return flag appears twice")
    extra = set(returns) - allowed
    if extra:
        letters = sorted(flag.value for flag in extra)
        raise ValueError(f"{type(command).__name__} does not return {letters}")
    if (ReturnFlag.OPAQUE in returns) != (command.opaque is not None):
        raise ValueError("ReturnFlag.OPAQUE is in returns exactly when opaque is set")
    opaque = command.opaque
    if opaque is not None and (len(opaque) > MAX_OPAQUE_LENGTH or _WHITESPACE.search(opaque)):
        raise ValueError("an opaque token is at most 31 bytes without spaces")


# -- commands -----------------------------------------------------------------


@attrs.frozen
class _Keyed:
    """Fields every keyed meta command shares (``me`` excepted)."""

    key: bytes
    key_binary: bool = attrs.field(default=False, kw_only=True)  #: ``b``: key came base64
    returns: tuple[ReturnFlag, ...] = attrs.field(
        default=(), kw_only=True, converter=_returns_tuple
    )
    opaque: bytes | None = attrs.field(default=None, kw_only=True)  #: ``O``, without the O
    quiet: bool = attrs.field(default=False, kw_only=True)  #: ``q``

    #: the return flags this command honours; others are accepted and ignored
    ALLOWED_RETURNS: ClassVar[frozenset[ReturnFlag]] = frozenset()

    def __attrs_post_init__(self) -> None:
        _check_key(self.key, self.key_binary)
        _check_returns(self, self.ALLOWED_RETURNS)

    def wants(self, flag: ReturnFlag) -> bool:
        """True when the client asked for ``flag`` to be returned."""
        return flag in self.returns


@attrs.frozen
class MetaGet(_Keyed):
    """``mg <key> <flags>*``: read, and optionally touch, vivify or recache."""

    return_value: bool = attrs.field(default=False, kw_only=True)  #: ``v``
    no_lru_bump: bool = attrs.field(default=False, kw_only=True)  #: ``u``
    ttl: int | None = attrs.field(
        default=None, kw_only=True, validator=_optional_range(I32_MIN, I32_MAX)
    )  #: ``T``: touch to this TTL
    vivify_ttl: int | None = attrs.field(
        default=None, kw_only=True, validator=_optional_range(I32_MIN, I32_MAX)
    )  #: ``N``: on miss create an empty item with this TTL and win
    recache_ttl: int | None = attrs.field(
        default=None, kw_only=True, validator=_optional_range(I32_MIN, I32_MAX)
    )  #: ``R``: win if the TTL left is below this
    new_cas: int | None = attrs.field(
        default=None, kw_only=True, validator=_optional_range(0, U64_MAX)
    )  #: ``E``: CAS to give an item this command creates

    ALLOWED_RETURNS = _GET_RETURNS


@attrs.frozen
class MetaSet(_Keyed):
    """``ms <key> <datalen> <flags>*`` then a data block.

    The data length is ``len(value)``.  Parsing its line gives the command
    with an empty value (a header); once the block has arrived the text
    parser builds the whole command with ``attrs.evolve(header, value=data)``.
    """

    value: bytes = attrs.field(default=b"", kw_only=True)
    mode: SetMode = attrs.field(default=SetMode.SET, kw_only=True)  #: ``M``
    client_flags: int = attrs.field(default=0, kw_only=True, validator=_in_range(0, U32_MAX))
    ttl: int = attrs.field(default=0, kw_only=True, validator=_in_range(I32_MIN, I32_MAX))
    cas: int | None = attrs.field(
        default=None, kw_only=True, validator=_optional_range(0, U64_MAX)
    )  #: ``C``: store only if the item's CAS is this
    new_cas: int | None = attrs.field(
        default=None, kw_only=True, validator=_optional_range(0, U64_MAX)
    )  #: ``E``: give the stored item this CAS
    invalidate: bool = attrs.field(default=False, kw_only=True)  #: ``I``
    vivify_ttl: int | None = attrs.field(
        default=None, kw_only=True, validator=_optional_range(I32_MIN, I32_MAX)
    )  #: ``N``: append/prepend on a miss creates the item with this TTL

    ALLOWED_RETURNS = _SET_RETURNS


@attrs.frozen
class MetaDelete(_Keyed):
    """``md <key> <flags>*``: delete, or with ``I`` mark stale."""

    cas: int | None = attrs.field(default=None, kw_only=True, validator=_optional_range(0, U64_MAX))
    new_cas: int | None = attrs.field(
        default=None, kw_only=True, validator=_optional_range(0, U64_MAX)
    )
    invalidate: bool = attrs.field(default=False, kw_only=True)  #: ``I``: mark stale, bump CAS
    ttl: int | None = attrs.field(
        default=None, kw_only=True, validator=_optional_range(I32_MIN, I32_MAX)
    )  #: ``T``: new TTL, only with ``I``
    remove_value: bool = attrs.field(default=False, kw_only=True)  #: ``x``: keep an empty item

    ALLOWED_RETURNS = _DELETE_RETURNS


@attrs.frozen
class MetaArithmetic(_Keyed):
    """``ma <key> <flags>*``: increment or decrement a decimal value."""

    return_value: bool = attrs.field(default=False, kw_only=True)  #: ``v``
    mode: ArithmeticMode = attrs.field(default=ArithmeticMode.INCREMENT, kw_only=True)
    delta: int = attrs.field(default=1, kw_only=True, validator=_in_range(0, U64_MAX))  #: ``D``
    initial: int = attrs.field(default=0, kw_only=True, validator=_in_range(0, U64_MAX))  #: ``J``
    vivify_ttl: int | None = attrs.field(
        default=None, kw_only=True, validator=_optional_range(I32_MIN, I32_MAX)
    )  #: ``N``: on miss create the item with ``initial`` and this TTL
    ttl: int | None = attrs.field(
        default=None, kw_only=True, validator=_optional_range(I32_MIN, I32_MAX)
    )  #: ``T``: new TTL on success
    cas: int | None = attrs.field(default=None, kw_only=True, validator=_optional_range(0, U64_MAX))
    new_cas: int | None = attrs.field(
        default=None, kw_only=True, validator=_optional_range(0, U64_MAX)
    )

    ALLOWED_RETURNS = _ARITHMETIC_RETURNS


@attrs.frozen
class MetaNoop:
    """``mn``: answered ``MN``; marks the end of a pipeline of quiet commands."""


@attrs.frozen
class MetaDebug:
    """``me <key> [b]``: one line of item internals, for humans."""

    key: bytes
    key_binary: bool = attrs.field(default=False, kw_only=True)

    def __attrs_post_init__(self) -> None:
        _check_key(self.key, self.key_binary)


MetaCommand = MetaGet | MetaSet | MetaDelete | MetaArithmetic | MetaNoop | MetaDebug


@attrs.frozen
class MetaParse:
    """What :func:`~stig_protocol.meta.parse_meta` found on a line that needs the
    text parser's help (an ``ms``, whose data block follows) or that is a
    plain command.

    * ``command`` set, ``data_length`` None: the command is complete.
    * ``command`` a :class:`MetaSet`, ``data_length`` an int: read that many
      bytes plus ``\\r\\n``, then ``attrs.evolve(command, value=data)``.
    * ``command`` None, ``error`` and ``data_length`` set: the ``ms`` line
      was bad (or too large); swallow ``data_length + 2`` bytes and answer
      ``error``, so the stream stays in step.
    """

    command: MetaCommand | None
    data_length: int | None = None
    error: InvalidCommand | None = None

    def __attrs_post_init__(self) -> None:
        if (self.command is None) == (self.error is None):
            raise ValueError("exactly one of command and error is set")
        expects_data = isinstance(self.command, MetaSet) or self.error is not None
        if expects_data != (self.data_length is not None):
            raise ValueError("data_length is set exactly for ms lines")
