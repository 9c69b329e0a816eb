"""Commands of the classic memcached text protocol, as frozen value objects.

Each class is one request a client can make; the parser builds them, the
server executes them.  They know nothing of storage or sockets.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import attrs

from stig_protocol.errors import InvalidCommand


class StoreMode(enum.Enum):
    """How a storage command treats the item already under its key."""

    SET = "set"
    ADD = "add"
    REPLACE = "replace"
    APPEND = "append"
    PREPEND = "prepend"
    CAS = "cas"


class Retrieve(NamedTuple):
    """``get``/``gets``/``gat``/``gats``: read one or more keys.

    ``touch`` is true for ``gat``/``gats`` (whose ``exptime`` is then given);
    ``with_cas`` for ``gets``/``gats``.

    A named tuple rather than an attrs class (as :class:`Store`): a burst of
    pipelined gets builds one per line, and a tuple is immutable at half the
    cost of a frozen attrs instance (scripts/bench.py's get rows).
    """

    keys: tuple[bytes, ...]
    with_cas: bool = False
    touch: bool = False
    exptime: int = 0


@attrs.frozen(slots=True)
class RetrieveStart:
    """The head of a retrieval line too long to parse whole (more than
    ``Limits.get_window`` bytes, so of any length): the line is parsed as it
    streams in.  Its keys follow in :class:`RetrieveKeys` events, then one
    :class:`RetrieveEnd`; together they ask what one :class:`Retrieve` would.
    """

    with_cas: bool = False
    touch: bool = False
    exptime: int = 0


def _some_keys(_instance: object, _attribute: object, keys: tuple[bytes, ...]) -> None:
    if not keys or not all(isinstance(key, bytes) and key for key in keys):
        raise ValueError("a batch of keys is a non-empty tuple of non-empty keys")


@attrs.frozen(slots=True)
class RetrieveKeys:
    """The next keys of a streamed retrieval line, in order (a batch of at most
    ``Limits.get_window`` bytes of the line)."""

    keys: tuple[bytes, ...] = attrs.field(validator=_some_keys)


@attrs.frozen(slots=True)
class RetrieveEnd:
    """The end of a streamed retrieval line.  ``error``: what the line turned
    out to be past the keys already handed out — a bad key (``CLIENT_ERROR bad
    command line format``; the rest of the line is skipped) or no key at all
    (``ERROR``) — answered instead of ``END``."""

    error: InvalidCommand | None = None


class Store(NamedTuple):
    """``set``/``add``/``replace``/``append``/``prepend``/``cas``.

    A named tuple, as :class:`Retrieve`: a burst of pipelined sets builds
    one per command, and the parser's fast paths build it in C
    (``tuple.__new__``), a fifth of a frozen attrs instance's cost.
    """

    mode: StoreMode
    key: bytes
    flags: int
    exptime: int
    value: bytes
    cas_unique: int = 0
    noreply: bool = False


@attrs.frozen
class Delete:
    key: bytes
    noreply: bool = False


@attrs.frozen
class Arithmetic:
    """``incr``/``decr`` by ``delta`` (an unsigned 64-bit number)."""

    key: bytes
    delta: int
    incr: bool
    noreply: bool = False


@attrs.frozen
class Touch:
    key: bytes
    exptime: int
    noreply: bool = False


@attrs.frozen
class FlushAll:
    delay: int = 0
    noreply: bool = False


@attrs.frozen
class Version:
    pass


@attrs.frozen
class Verbosity:
    level: int
    noreply: bool = False


@attrs.frozen
class Quit:
    pass


@attrs.frozen
class Stats:
    """``stats [group]``; ``group`` is empty for the general counters."""

    group: bytes = b""
    args: tuple[bytes, ...] = ()


@attrs.frozen
class RefreshCerts:
    """``refresh_certs``: reload the TLS certificate and key (memcached with TLS)."""


@attrs.frozen
class Replicate:
    """``stig_replicate <after_seq> <epoch>``: Stig's own, unknown to memcached.
    A follower asks for the committed groups after ``after_seq`` (0: a
    snapshot first); the connection becomes a replication stream
    (docs/replication.md)."""

    after_seq: int
    epoch: int


@attrs.frozen
class Promote:
    """``stig_promote``: Stig's own.  A follower stops following and becomes a
    primary of a new epoch (``stig promote``; docs/replication.md)."""


@attrs.frozen
class Fence:
    """``stig_fence <epoch>``: Stig's own.  A primary of ``epoch`` exists: a
    server of an earlier epoch stops acting as a primary (docs/replication.md)."""

    epoch: int


@attrs.frozen
class LruCrawler:
    """``lru_crawler metadump <classes>``: list keys (the only sub-command Stig has)."""

    subcommand: bytes
    spec: bytes


TextCommand = (
    Retrieve
    | RetrieveStart
    | RetrieveKeys
    | RetrieveEnd
    | Store
    | Delete
    | Arithmetic
    | Touch
    | FlushAll
    | Version
    | Verbosity
    | Quit
    | Stats
    | RefreshCerts
    | Replicate
    | Promote
    | Fence
    | LruCrawler
)
