"""Sans-IO codec for memcached's meta commands: ``mg ms md ma mn me``.

Reading: the text parser splits a command line on spaces and calls
:func:`parse_meta`, which returns one of

* an :class:`~stig_protocol.errors.InvalidCommand`: answer it and go on, nothing
  to swallow;
* a :class:`MetaParse` with ``command`` set and ``data_length`` None: a
  complete command;
* a :class:`MetaParse` with a :class:`MetaSet` and ``data_length``: read
  that many bytes and ``\\r\\n``, then ``attrs.evolve(command, value=data)``
  (a block not ended by ``\\r\\n`` is ``CLIENT_ERROR bad data chunk``);
* a :class:`MetaParse` with ``error`` and ``data_length``: a bad or
  too-large ``ms``; swallow ``data_length + 2`` bytes, answer ``error``.

The parsing rules and memcached's exact error strings are listed in
:mod:`stig_protocol.meta_reader`; the command value objects live in
:mod:`stig_protocol.meta_commands`.

Writing: build a :class:`MetaResponse` with :func:`meta_response` (it puts
the flags the client asked for in memcached's order, see
:mod:`stig_protocol.meta_responses`), drop it if :func:`suppressed_in_quiet`,
and send :func:`encode_meta_response`'s bytes.  :func:`encode_meta_request`
writes requests, for tests and benchmarks.

Nothing here touches a socket, trio, LMDB or the store.
"""

from stig_protocol.meta_commands import (
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
from stig_protocol.meta_reader import decode_key, parse_meta
from stig_protocol.meta_responses import (
    EN,
    EX,
    HD,
    ME,
    MN,
    NF,
    NOOP_RESPONSE,
    NS,
    VA,
    ItemFacts,
    MetaDebugResponse,
    MetaResponse,
    debug_response,
    key_token,
    meta_response,
    response_flags,
    suppressed_in_quiet,
)
from stig_protocol.meta_writer import encode_meta_request, encode_meta_response

META_COMMAND_NAMES: frozenset[bytes] = frozenset({b"mg", b"ms", b"md", b"ma", b"mn", b"me"})

__all__ = [
    "EN",
    "EX",
    "HD",
    "ME",
    "META_COMMAND_NAMES",
    "MN",
    "NF",
    "NOOP_RESPONSE",
    "NS",
    "VA",
    "ArithmeticMode",
    "ItemFacts",
    "MetaArithmetic",
    "MetaCommand",
    "MetaDebug",
    "MetaDebugResponse",
    "MetaDelete",
    "MetaGet",
    "MetaNoop",
    "MetaParse",
    "MetaResponse",
    "MetaSet",
    "ReturnFlag",
    "SetMode",
    "debug_response",
    "decode_key",
    "encode_meta_request",
    "encode_meta_response",
    "key_token",
    "meta_response",
    "parse_meta",
    "response_flags",
    "suppressed_in_quiet",
]
