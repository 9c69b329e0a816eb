"""Replies to meta commands, and the rules for what goes in them.

A reply is a two-letter code, then flags, then (for ``VA``) a data block:

* ``VA <size> <flags>*\\r\\n<data>\\r\\n`` a value (``mg v`` hit, ``ma v``)
* ``HD <flags>*\\r\\n`` success without a value
* ``EN`` miss (``mg``), ``NF`` not found, ``NS`` not stored, ``EX`` CAS
  mismatch, each with the ``O``/``k`` flags the client asked for
* ``MN\\r\\n`` for ``mn``; ``ME <key> <name>=<value>*\\r\\n`` for ``me``

Returned flags, as memcached writes them:

* in the order the client sent them; ``O`` is echoed verbatim, ``k`` is the
  key, base64-encoded again and followed by ``b`` if the key was binary;
* item flags (``c f s t h l`` for ``mg``, ``c s`` for ``ms``, ``c t`` for
  ``ma``) only when there is an item to describe (a hit, a store, a
  successful arithmetic); on a miss only ``O`` and ``k`` — except that a
  failed ``ms`` (``NS EX NF``) answers ``c`` with ``c0``, as memcached 1.6;
* after them, for ``mg`` only: ``Z`` (a win token was already sent), ``X``
  (item is stale), ``W`` (this client won the right to recache).

Quiet mode (``q``) hides the nominal answers only, never an error:
``mg`` hides ``EN``; ``ms``, ``md`` and ``ma`` hide ``HD``.  This is what
memcached's code does (``md`` still reports ``NF`` and ``EX``).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

import attrs

from stig_protocol.meta_commands import (
    U64_MAX,
    MetaArithmetic,
    MetaCommand,
    MetaDebug,
    MetaDelete,
    MetaGet,
    MetaSet,
    ReturnFlag,
)

HD = b"HD"  #: success, no value
VA = b"VA"  #: a value follows
EN = b"EN"  #: mg miss
NF = b"NF"  #: not found
NS = b"NS"  #: not stored
EX = b"EX"  #: CAS mismatch ("exists")
MN = b"MN"  #: answer to mn
ME = b"ME"  #: answer to me

RESPONSE_CODES = frozenset({HD, VA, EN, NF, NS, EX, MN})

Flag = tuple[bytes, bytes]  #: (flag letter, token), written as letter + token

_TOKEN_SAFE = re.compile(rb"[^ \r\n]*\Z")


def _flags_tuple(value: object) -> tuple[Flag, ...]:
    return tuple((bytes(name), bytes(token)) for name, token in value)  # type: ignore[attr-defined]


def _check_flags(flags: tuple[Flag, ...], separator: bytes) -> None:
    for name, token in flags:
        if not name or not _TOKEN_SAFE.match(name) or separator in name:
            raise ValueError(f"bad flag name {name!r}")
        if not _TOKEN_SAFE.match(token):
            raise ValueError(f"flag {name!r} has a token with spaces or newlines")


@attrs.frozen
class MetaResponse:
    """One reply to ``mg ms md ma mn``; ``value`` is set exactly for ``VA``."""

    code: bytes
    flags: tuple[Flag, ...] = attrs.field(default=(), converter=_flags_tuple)
    value: bytes | None = None

    def __attrs_post_init__(self) -> None:
        if self.code not in RESPONSE_CODES:
            raise ValueError(f"unknown meta response code {self.code!r}")
        if (self.code == VA) != (self.value is not None):
            raise ValueError("a value is carried by VA and only by VA")
        for name, _token in self.flags:
            if len(name) != 1 or not name.isalpha():
                raise ValueError(f"a meta flag is one letter, not {name!r}")
        _check_flags(self.flags, b" ")


@attrs.frozen
class MetaDebugResponse:
    """The reply to ``me``: ``ME <key> <name>=<value>...``.

    ``key`` is written as is: give the base64 form for a binary key (see
    :func:`debug_response`).
    """

    key: bytes
    fields: tuple[Flag, ...] = attrs.field(default=(), converter=_flags_tuple)

    def __attrs_post_init__(self) -> None:
        if not self.key or not _TOKEN_SAFE.match(self.key):
            raise ValueError("the ME key is one non-empty token")
        _check_flags(self.fields, b"=")


AnyMetaResponse = MetaResponse | MetaDebugResponse

NOOP_RESPONSE = MetaResponse(MN)


@attrs.frozen
class ItemFacts:
    """What the server knows of an item, for the flags a client asked for.

    Stig's items never expire, so ``ttl`` defaults to memcached's ``-1``.
    """

    cas: int = 0
    client_flags: int = 0
    size: int = 0  #: length of the value
    ttl: int = -1  #: seconds left, -1 for never
    fetched: bool = False  #: ``h``
    last_access: int = 0  #: ``l``: seconds since the last access
    won: bool = False  #: ``W``
    stale: bool = False  #: ``X``
    win_sent: bool = False  #: ``Z``

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.cas <= U64_MAX or self.size < 0 or self.client_flags < 0:
            raise ValueError("cas, size and client flags are unsigned")


def _number(value: int) -> bytes:
    return str(value).encode()


_ITEM_FLAG: dict[ReturnFlag, Callable[[ItemFacts], bytes]] = {
    ReturnFlag.CAS: lambda item: _number(item.cas),
    ReturnFlag.CLIENT_FLAGS: lambda item: _number(item.client_flags),
    ReturnFlag.SIZE: lambda item: _number(item.size),
    ReturnFlag.TTL: lambda item: _number(item.ttl),
    ReturnFlag.HIT: lambda item: b"1" if item.fetched else b"0",
    ReturnFlag.LAST_ACCESS: lambda item: _number(item.last_access),
}


def key_token(key: bytes, binary: bool) -> bytes:
    """A key as it goes on the wire: base64 again if it came base64."""
    return base64.b64encode(key) if binary else key


def _key_flags(command: MetaGet | MetaSet | MetaDelete | MetaArithmetic) -> list[Flag]:
    flags = [(b"k", key_token(command.key, command.key_binary))]
    if command.key_binary:
        flags.append((b"b", b""))
    return flags


def response_flags(
    command: MetaGet | MetaSet | MetaDelete | MetaArithmetic, item: ItemFacts | None = None
) -> tuple[Flag, ...]:
    """The flags to return, in memcached's order, for ``command``.

    ``item`` is None on a miss (or whenever there is no item to describe):
    then only ``O`` and ``k`` are returned.
    """
    flags: list[Flag] = []
    for flag in command.returns:
        if flag is ReturnFlag.OPAQUE:
            flags.append((b"O", command.opaque or b""))
        elif flag is ReturnFlag.KEY:
            flags.extend(_key_flags(command))
        elif item is not None:
            flags.append((flag.letter, _ITEM_FLAG[flag](item)))
        elif flag is ReturnFlag.CAS and isinstance(command, MetaSet):
            flags.append((b"c", b"0"))  # memcached 1.6: an ms that failed says c0
    if isinstance(command, MetaGet) and item is not None:
        flags.extend(_win_flags(item))
    return tuple(flags)


def _win_flags(item: ItemFacts) -> list[Flag]:
    """``Z``, ``X``, ``W`` in the order memcached appends them."""
    flags = []
    if item.win_sent:
        flags.append((b"Z", b""))
    if item.stale:
        flags.append((b"X", b""))
    if item.won:
        flags.append((b"W", b""))
    return flags


def meta_response(
    command: MetaGet | MetaSet | MetaDelete | MetaArithmetic,
    code: bytes,
    item: ItemFacts | None = None,
    value: bytes | None = None,
) -> MetaResponse:
    """The reply ``code`` to ``command``, with the flags it asked for.

    Give ``value`` for ``VA`` (an ``mg v`` hit, an ``ma v`` success).
    """
    return MetaResponse(code, response_flags(command, item), value)


def debug_response(command: MetaDebug, item: ItemFacts, slab_class: int = 1) -> MetaDebugResponse:
    """``me``'s line, with memcached's fields (``exp la cas fetch cls size``)."""
    fields = (
        (b"exp", _number(item.ttl)),
        (b"la", _number(item.last_access)),
        (b"cas", _number(item.cas)),
        (b"fetch", b"yes" if item.fetched else b"no"),
        (b"cls", _number(slab_class)),
        (b"size", _number(item.size)),
    )
    return MetaDebugResponse(key_token(command.key, command.key_binary), fields)


_QUIET_HIDES: dict[type, frozenset[bytes]] = {
    MetaGet: frozenset({EN}),
    MetaSet: frozenset({HD}),
    MetaDelete: frozenset({HD}),
    MetaArithmetic: frozenset({HD}),
}


def suppressed_in_quiet(command: MetaCommand, code: bytes) -> bool:
    """True when ``command`` was sent with ``q`` and reply ``code`` must not be sent."""
    hidden = _QUIET_HIDES.get(type(command))
    return hidden is not None and command.quiet and code in hidden  # type: ignore[union-attr]
