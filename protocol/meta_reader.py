"""Reads one tokenised meta command line into a command or an error.

The rules (and every error string) follow memcached 1.6's meta parser
(``proto_parser.c`` / ``proto_text.c``):

1. ``mn`` ignores its arguments.  ``me <key> [b]`` ignores anything else.
2. ``mg``/``md``/``ma`` need a key; ``ms`` needs a key and a data length,
   a decimal in [0, 2**31 - 3].  Otherwise ``CLIENT_ERROR bad command line
   format`` (for ``ms`` nothing is swallowed: the length is unknown).
3. At most 20 tokens per line, command and key included, else ``CLIENT_ERROR
   options flags are too long``.
4. Each flag token is one letter, maybe followed by its argument.  Its first
   byte may appear once (``CLIENT_ERROR duplicate flag``; memcached says so
   for any byte >= 127 too) and must be a flag memcached knows (``CLIENT_ERROR
   invalid flag``).  As in memcached, every known flag is accepted by every
   command and ignored where it means nothing (``mg k F5`` is fine).
5. Arguments are checked as memcached does: ``N T R`` signed 32-bit and ``C E``
   unsigned 64-bit (``CLIENT_ERROR bad token in command line format``), ``F``
   unsigned 32-bit (``CLIENT_ERROR bad command line format``), ``J``
   (``CLIENT_ERROR invalid numeric initial value``), ``D`` (``CLIENT_ERROR
   invalid numeric delta value``), ``M`` one character (``CLIENT_ERROR
   incorrect length for M token``), ``b`` a valid base64 key (``CLIENT_ERROR
   error decoding key``).  When several are wrong, the last one is reported,
   as in memcached.
6. ``md`` and ``ma`` answer every error of rules 4-5 with ``CLIENT_ERROR
   invalid or duplicate flag`` (memcached does; clients match on it).
7. Modes: ``ms`` takes ``S E A P R`` (``CLIENT_ERROR invalid mode for ms M
   token``), ``ma`` takes ``I + D -`` (``... for ma M token``).  Stig also
   takes their lower-case letters.
8. The key (after base64 decoding with ``b``) is 1..``Limits.max_key_length``
   bytes and, unless binary, has no control characters: ``CLIENT_ERROR bad
   command line format``.  An ``O`` token is at most 32 bytes: ``CLIENT_ERROR
   opaque token too long``.
9. An ``ms`` whose line is bad after its length was read, or whose length is
   above ``Limits.max_item_size`` (``SERVER_ERROR object too large for
   cache``), still has its data block swallowed.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable, Sequence
from typing import TypedDict

import attrs

from stig_protocol.errors import ErrorKind, InvalidCommand
from stig_protocol.limits import Limits
from stig_protocol.meta_commands import (
    I32_MAX,
    I32_MIN,
    MAX_OPAQUE_LENGTH,
    U32_MAX,
    U64_MAX,
    ArithmeticMode,
    MetaArithmetic,
    MetaCommand,
    MetaDebug,
    MetaDelete,
    MetaGet,
    MetaNoop,
    MetaParse,
    MetaSet,
    ReturnFlag,
    SetMode,
)


def _client_error(message: str) -> InvalidCommand:
    return InvalidCommand(ErrorKind.CLIENT_ERROR, message)


UNKNOWN_COMMAND = InvalidCommand(ErrorKind.ERROR)
BAD_FORMAT = _client_error("bad command line format")
TOO_MANY_FLAGS = _client_error("options flags are too long")
DUPLICATE_FLAG = _client_error("duplicate flag")
INVALID_FLAG = _client_error("invalid flag")
BAD_TOKEN = _client_error("bad token in command line format")
BAD_INITIAL = _client_error("invalid numeric initial value")
BAD_DELTA = _client_error("invalid numeric delta value")
BAD_MODE_LENGTH = _client_error("incorrect length for M token")
BAD_KEY_ENCODING = _client_error("error decoding key")
INVALID_OR_DUPLICATE = _client_error("invalid or duplicate flag")
BAD_SET_MODE = _client_error("invalid mode for ms M token")
BAD_ARITHMETIC_MODE = _client_error("invalid mode for ma M token")
OPAQUE_TOO_LONG = _client_error("opaque token too long")
TOO_LARGE = InvalidCommand(ErrorKind.SERVER_ERROR, "object too large for cache")

MAX_TOKENS = 20  #: memcached's MFLAG_MAX_OPT_LENGTH, command and key included
MAX_DATA_LENGTH = 2**31 - 3  #: memcached's ``vlen > INT_MAX - 2`` bound

_SIGNED = re.compile(rb"[+-]?[0-9]{1,20}\Z")
_UNSIGNED = re.compile(rb"\+?[0-9]{1,20}\Z")
_CONTROL = re.compile(rb"[\x00-\x20\x7f]")
_WHITESPACE = re.compile(rb"[ \t\n\r\x0b\x0c]")
_KNOWN_FLAGS = frozenset(b"bNTRlOPLkstcfvhuqxFCEMJDI")
_SET_MODES = {
    **{mode.value.encode(): mode for mode in SetMode},
    **{mode.value.lower().encode(): mode for mode in SetMode},
}
_ARITHMETIC_MODES = {
    b"I": ArithmeticMode.INCREMENT,
    b"i": ArithmeticMode.INCREMENT,
    b"+": ArithmeticMode.INCREMENT,
    b"D": ArithmeticMode.DECREMENT,
    b"d": ArithmeticMode.DECREMENT,
    b"-": ArithmeticMode.DECREMENT,
}

MetaResult = MetaParse | InvalidCommand


# -- numbers ------------------------------------------------------------------


def parse_number(token: bytes, low: int, high: int) -> int | None:
    """A decimal in [low, high] as memcached's ``safe_strto*`` read it, or None."""
    pattern = _SIGNED if low < 0 else _UNSIGNED
    if pattern.match(token) is None:
        return None
    value = int(token)
    return value if low <= value <= high else None


_Check = Callable[[bytes], InvalidCommand | None]


def _checker(low: int, high: int, error: InvalidCommand) -> _Check:
    """A check that an argument is a decimal in [low, high], else ``error``."""

    def check(argument: bytes) -> InvalidCommand | None:
        return None if parse_number(argument, low, high) is not None else error

    return check


def _check_mode(argument: bytes) -> InvalidCommand | None:
    return None if len(argument) == 1 else BAD_MODE_LENGTH


_ARGUMENT_CHECKS: dict[int, _Check] = {
    ord("N"): _checker(I32_MIN, I32_MAX, BAD_TOKEN),
    ord("T"): _checker(I32_MIN, I32_MAX, BAD_TOKEN),
    ord("R"): _checker(I32_MIN, I32_MAX, BAD_TOKEN),
    ord("C"): _checker(0, U64_MAX, BAD_TOKEN),
    ord("E"): _checker(0, U64_MAX, BAD_TOKEN),
    ord("F"): _checker(0, U32_MAX, BAD_FORMAT),
    ord("J"): _checker(0, U64_MAX, BAD_INITIAL),
    ord("D"): _checker(0, U64_MAX, BAD_DELTA),
    ord("M"): _check_mode,
}


# -- flag scanning --------------------------------------------------------------


@attrs.define
class _Flags:
    """The flag tokens of one line, by first byte, in the order they came."""

    arguments: dict[str, bytes]  #: flag letter -> what follows it
    key: bytes
    key_binary: bool

    def has(self, letter: str) -> bool:
        return letter in self.arguments

    def number(self, letter: str) -> int | None:
        """The (already validated) numeric argument of ``letter``, if given."""
        argument = self.arguments.get(letter)
        return None if argument is None else int(argument)

    def returns(self, allowed: frozenset[ReturnFlag]) -> tuple[ReturnFlag, ...]:
        flags = (_RETURN_LETTERS.get(letter) for letter in self.arguments)
        return tuple(flag for flag in flags if flag in allowed)

    def opaque(self) -> bytes | None:
        return self.arguments.get("O")


_RETURN_LETTERS = {flag.value: flag for flag in ReturnFlag}


def decode_key(token: bytes) -> bytes | None:
    """The binary key a ``b`` key token stands for, or None.

    Only canonical, padded base64 is taken, so that echoing the key (``k``)
    gives back exactly the token the client sent.
    """
    try:
        key = binascii.a2b_base64(token, strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    if not key or binascii.b2a_base64(key, newline=False) != token:
        return None
    return key


def _scan_flags(key_token: bytes, tokens: Sequence[bytes]) -> _Flags | InvalidCommand:
    """Check every flag token (rules 4 and 5) and collect them."""
    arguments: dict[str, bytes] = {}
    key, key_binary = key_token, False
    error: InvalidCommand | None = None
    for token in tokens:
        first = token[0]
        if first >= 127 or chr(first) in arguments:
            return DUPLICATE_FLAG
        if first not in _KNOWN_FLAGS:
            return INVALID_FLAG
        argument = token[1:]
        arguments[chr(first)] = argument
        if first == ord("b"):
            key_binary = True
            decoded = decode_key(key_token)
            if decoded is None:
                error = BAD_KEY_ENCODING
            else:
                key = decoded
            continue
        check = _ARGUMENT_CHECKS.get(first)
        problem = check(argument) if check is not None else None
        if problem is BAD_FORMAT:
            error = error or problem  # memcached leaves its message as it was
        elif problem is not None:
            error = problem
    if error is not None:
        return error
    return _Flags(arguments, key, key_binary)


def _check_key_and_opaque(flags: _Flags, limits: Limits) -> InvalidCommand | None:
    """Rule 8: a key of the right size and bytes, an opaque that fits."""
    key = flags.key
    if not 0 < len(key) <= limits.max_key_length:
        return BAD_FORMAT
    if not flags.key_binary and _CONTROL.search(key):
        return BAD_FORMAT
    opaque = flags.opaque()
    if opaque is not None and len(opaque) > MAX_OPAQUE_LENGTH:
        return OPAQUE_TOO_LONG
    if opaque is not None and _WHITESPACE.search(opaque):
        return BAD_FORMAT  # only if the caller split on spaces alone; never echo it
    return None


def _read_flags(
    tokens: Sequence[bytes], first_flag: int, limits: Limits, collapse: bool
) -> _Flags | InvalidCommand:
    """Rules 3-6 and 8 for the tokens of a keyed command."""
    if len(tokens) > MAX_TOKENS:
        return TOO_MANY_FLAGS
    flags = _scan_flags(tokens[1], tokens[first_flag:])
    if isinstance(flags, InvalidCommand):
        return INVALID_OR_DUPLICATE if collapse else flags
    return _check_key_and_opaque(flags, limits) or flags


# -- one builder per command ----------------------------------------------------


class _Common(TypedDict):
    """The fields every keyed command takes from its flags."""

    key_binary: bool
    returns: tuple[ReturnFlag, ...]
    opaque: bytes | None
    quiet: bool


def _common(flags: _Flags, allowed: frozenset[ReturnFlag]) -> _Common:
    return {
        "key_binary": flags.key_binary,
        "returns": flags.returns(allowed),
        "opaque": flags.opaque(),
        "quiet": flags.has("q"),
    }


def _build_get(flags: _Flags) -> MetaGet:
    return MetaGet(
        flags.key,
        **_common(flags, MetaGet.ALLOWED_RETURNS),
        return_value=flags.has("v"),
        no_lru_bump=flags.has("u"),
        ttl=flags.number("T"),
        vivify_ttl=flags.number("N"),
        recache_ttl=flags.number("R"),
        new_cas=flags.number("E"),
    )


def _build_set(flags: _Flags) -> MetaSet | InvalidCommand:
    mode = SetMode.SET
    if flags.has("M"):
        found = _SET_MODES.get(flags.arguments["M"])
        if found is None:
            return BAD_SET_MODE
        mode = found
    return MetaSet(
        flags.key,
        **_common(flags, MetaSet.ALLOWED_RETURNS),
        mode=mode,
        client_flags=flags.number("F") or 0,
        ttl=flags.number("T") or 0,
        cas=flags.number("C"),
        new_cas=flags.number("E"),
        invalidate=flags.has("I"),
        vivify_ttl=flags.number("N"),
    )


def _build_delete(flags: _Flags) -> MetaDelete:
    return MetaDelete(
        flags.key,
        **_common(flags, MetaDelete.ALLOWED_RETURNS),
        cas=flags.number("C"),
        new_cas=flags.number("E"),
        invalidate=flags.has("I"),
        ttl=flags.number("T"),
        remove_value=flags.has("x"),
    )


def _build_arithmetic(flags: _Flags) -> MetaArithmetic | InvalidCommand:
    mode = ArithmeticMode.INCREMENT
    if flags.has("M"):
        found = _ARITHMETIC_MODES.get(flags.arguments["M"])
        if found is None:
            return BAD_ARITHMETIC_MODE
        mode = found
    delta = flags.number("D")
    return MetaArithmetic(
        flags.key,
        **_common(flags, MetaArithmetic.ALLOWED_RETURNS),
        return_value=flags.has("v"),
        mode=mode,
        delta=1 if delta is None else delta,
        initial=flags.number("J") or 0,
        vivify_ttl=flags.number("N"),
        ttl=flags.number("T"),
        cas=flags.number("C"),
        new_cas=flags.number("E"),
    )


_Builder = Callable[[_Flags], MetaCommand | InvalidCommand]

#: command name -> (builder, collapse flag errors into "invalid or duplicate flag")
_KEYED: dict[bytes, tuple[_Builder, bool]] = {
    b"mg": (_build_get, False),
    b"md": (_build_delete, True),
    b"ma": (_build_arithmetic, True),
}


# -- entry points ------------------------------------------------------------------


def _parse_keyed(tokens: Sequence[bytes], limits: Limits) -> MetaResult:
    builder, collapse = _KEYED[tokens[0]]
    if len(tokens) < 2:
        return BAD_FORMAT
    flags = _read_flags(tokens, 2, limits, collapse)
    if isinstance(flags, InvalidCommand):
        return flags
    built = builder(flags)
    return built if isinstance(built, InvalidCommand) else MetaParse(built)


def _parse_set(tokens: Sequence[bytes], limits: Limits) -> MetaResult:
    if len(tokens) < 3:
        return BAD_FORMAT
    length = parse_number(tokens[2], 0, MAX_DATA_LENGTH)
    if length is None:
        return BAD_FORMAT
    flags = _read_flags(tokens, 3, limits, collapse=False)
    built = flags if isinstance(flags, InvalidCommand) else _build_set(flags)
    if isinstance(built, InvalidCommand):
        return MetaParse(None, length, built)
    if length > limits.max_item_size:
        # memcached drops the key of a too-large ms, whatever its mode.
        return MetaParse(None, length, attrs.evolve(TOO_LARGE, discard_key=built.key))
    return MetaParse(built, length)


def _parse_debug(tokens: Sequence[bytes], limits: Limits) -> MetaResult:
    if len(tokens) < 2:
        return BAD_FORMAT
    key_binary = len(tokens) > 2 and tokens[2] == b"b"
    key = decode_key(tokens[1]) if key_binary else tokens[1]
    if key is None or not 0 < len(key) <= limits.max_key_length:
        return BAD_FORMAT
    if not key_binary and _CONTROL.search(key):
        return BAD_FORMAT
    return MetaParse(MetaDebug(key, key_binary=key_binary))


def parse_meta(tokens: Sequence[bytes], limits: Limits = Limits()) -> MetaResult:
    """Parse the space-split tokens of one meta command line.

    Returns an :class:`~stig_protocol.errors.InvalidCommand` (answer it, nothing
    to swallow) or a :class:`~stig_protocol.meta_commands.MetaParse`.  Never
    raises on any input.
    """
    if not tokens or any(not token for token in tokens):
        return UNKNOWN_COMMAND if not tokens else BAD_FORMAT
    name = tokens[0]
    if name == b"mn":
        return MetaParse(MetaNoop())
    if name == b"ms":
        return _parse_set(tokens, limits)
    if name == b"me":
        return _parse_debug(tokens, limits)
    if name in _KEYED:
        return _parse_keyed(tokens, limits)
    return UNKNOWN_COMMAND
