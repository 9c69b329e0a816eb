"""Fuzz target of the meta commands' reader and writers (stig_protocol.meta_*).

:func:`meta` takes the first line of its stream as a meta command line:

* :func:`~stig_protocol.codec.parse_meta` never raises and returns what it
  documents (an :class:`~stig_protocol.errors.InvalidCommand` or a valid
  :class:`~stig_protocol.meta.MetaParse`), the same as the text parser makes of
  the line;
* round trip: a command it reads, written back by
  :func:`~stig_protocol.codec.encode_meta_request` (an ``ms`` with the rest of the
  stream as its value), is read back as the same command by the text
  parser, with its fast paths and without;
* every reply the server may build for that command
  (:func:`~stig_protocol.codec.meta_response`, :func:`~stig_protocol.codec.debug_response`)
  is built without error and written as one line (and its value):
  nothing a client sent can break the reply stream's framing;
* a base64 key token it decodes (``b``) is the one token of that key.
"""

from __future__ import annotations

import attrs

from stig_protocol import meta as codec
from stig_protocol.errors import InvalidCommand
from stig_protocol.meta import (
    EN,
    EX,
    HD,
    NF,
    NS,
    VA,
    ItemFacts,
    MetaDebug,
    MetaGet,
    MetaNoop,
    MetaParse,
    MetaSet,
)
from stig_protocol.text import TextParser
from stig_testkit.fuzz.streams import split
from stig_testkit.fuzz.text_targets import LIMITS, Outcome, parse

_FACTS = (
    ItemFacts(),
    ItemFacts(cas=2**64 - 1, client_flags=2**32 - 1, size=3, last_access=7, fetched=True,
              won=True, stale=True, win_sent=True),
)  # fmt: skip


def _check_reply_framing(encoded: bytes, value: bytes | None) -> None:
    line, sep, rest = encoded.partition(b"\r\n")
    assert sep and b"\n" not in line and b"\r" not in line, encoded
    if value is None:
        assert rest == b"", encoded
    else:
        assert rest == value + b"\r\n", encoded
        assert line.split(b" ")[1] == b"%d" % len(value), encoded


def _check_replies(command: object) -> None:
    if isinstance(command, MetaDebug):
        for facts in _FACTS:
            response = codec.debug_response(command, facts)
            _check_reply_framing(codec.encode_meta_response(response), None)
        return
    if isinstance(command, MetaNoop):
        return
    for facts in (None, *_FACTS):
        for code in (HD, VA, EN, NF, NS, EX):
            value = b"v\r\n" if code == VA else None
            response = codec.meta_response(command, code, facts, value)  # type: ignore[arg-type]
            _check_reply_framing(codec.encode_meta_response(response), value)


def _round_trip(command: object, value: bytes, option: int) -> None:
    limits = LIMITS[option % len(LIMITS)]
    if isinstance(command, MetaSet):
        command = attrs.evolve(command, value=value[: limits.max_item_size])
    encoded = codec.encode_meta_request(command)  # type: ignore[arg-type]
    line = encoded.split(b"\n", 1)[0]  # with its \r: the framer counts it
    if len(line) > limits.max_line_length:
        return  # the limits refuse the line, whoever wrote it
    for fast in (False, True):
        got = parse(TextParser(limits, fast=fast), [encoded])
        assert got == Outcome((command,), None, True), (fast, encoded, got)


def meta(data: bytes) -> None:
    option, stream = split(data)
    limits = LIMITS[option % len(LIMITS)]
    line, _, rest = stream.partition(b"\n")
    line = line.removesuffix(b"\r")
    tokens = [token for token in line.split(b" ") if token]
    parsed = codec.parse_meta(tokens, limits)
    assert isinstance(parsed, MetaParse | InvalidCommand), parsed
    if isinstance(parsed, InvalidCommand):
        return
    assert attrs.evolve(parsed) == parsed  # its validators pass
    command = parsed.command
    if command is None:
        return
    for token in tokens[1:2]:
        key = codec.decode_key(token)
        if key is not None:
            assert codec.key_token(key, True) == token, token
    _check_replies(command)
    if parsed.data_length is None and isinstance(command, MetaGet | MetaNoop | MetaDebug):
        _round_trip(command, b"", option)
    else:
        _round_trip(command, rest, option)
