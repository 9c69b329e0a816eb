"""Bytes for meta replies (what the server sends) and requests (for tests,
benchmarks and tools: what a client would send).

Both are exact inverses of what :mod:`stig_protocol.meta_reader` and memcached's
clients read: ``parse_meta(encode_meta_request(c)[:line].split())`` gives
back ``c``.
"""

from __future__ import annotations

from stig_protocol.meta_commands import (
    ArithmeticMode,
    MetaArithmetic,
    MetaCommand,
    MetaDebug,
    MetaDelete,
    MetaGet,
    MetaNoop,
    MetaSet,
    ReturnFlag,
    SetMode,
)
from stig_protocol.meta_responses import VA, AnyMetaResponse, MetaDebugResponse, key_token

CRLF = b"\r\n"


def encode_meta_response(response: AnyMetaResponse) -> bytes:
    """The exact bytes memcached would send for ``response``."""
    if isinstance(response, MetaDebugResponse):
        fields = b"".join(b" " + name + b"=" + value for name, value in response.fields)
        return b"ME " + response.key + fields + CRLF
    head = response.code
    if response.code == VA:
        assert response.value is not None
        head += b" " + str(len(response.value)).encode()
    flags = b"".join(b" " + name + token for name, token in response.flags)
    line = head + flags + CRLF
    if response.value is None:
        return line
    return line + response.value + CRLF


# -- requests -------------------------------------------------------------------


def _number_flags(pairs: list[tuple[str, int | None]]) -> list[bytes]:
    return [letter.encode() + str(value).encode() for letter, value in pairs if value is not None]


def _return_tokens(command: MetaGet | MetaSet | MetaDelete | MetaArithmetic) -> list[bytes]:
    tokens = []
    for flag in command.returns:
        if flag is ReturnFlag.OPAQUE:
            tokens.append(b"O" + (command.opaque or b""))
        else:
            tokens.append(flag.letter)
    return tokens


def _switches(pairs: list[tuple[str, bool]]) -> list[bytes]:
    return [letter.encode() for letter, on in pairs if on]


def _get_tokens(command: MetaGet) -> list[bytes]:
    return _switches([("v", command.return_value), ("u", command.no_lru_bump)]) + _number_flags(
        [
            ("T", command.ttl),
            ("N", command.vivify_ttl),
            ("R", command.recache_ttl),
            ("E", command.new_cas),
        ]
    )


def _set_tokens(command: MetaSet) -> list[bytes]:
    tokens = _switches([("I", command.invalidate)]) + _number_flags(
        [
            ("T", command.ttl or None),
            ("F", command.client_flags or None),
            ("C", command.cas),
            ("E", command.new_cas),
            ("N", command.vivify_ttl),
        ]
    )
    if command.mode is not SetMode.SET:
        tokens.append(b"M" + command.mode.value.encode())
    return tokens


def _delete_tokens(command: MetaDelete) -> list[bytes]:
    return _switches([("I", command.invalidate), ("x", command.remove_value)]) + _number_flags(
        [("T", command.ttl), ("C", command.cas), ("E", command.new_cas)]
    )


def _arithmetic_tokens(command: MetaArithmetic) -> list[bytes]:
    tokens = _switches([("v", command.return_value)]) + _number_flags(
        [
            ("N", command.vivify_ttl),
            ("J", command.initial or None),
            ("D", None if command.delta == 1 else command.delta),
            ("T", command.ttl),
            ("C", command.cas),
            ("E", command.new_cas),
        ]
    )
    if command.mode is ArithmeticMode.DECREMENT:
        tokens.append(b"MD")
    return tokens


_NAMES = {MetaGet: b"mg", MetaSet: b"ms", MetaDelete: b"md", MetaArithmetic: b"ma"}
_SPECIFIC = {
    MetaGet: _get_tokens,
    MetaSet: _set_tokens,
    MetaDelete: _delete_tokens,
    MetaArithmetic: _arithmetic_tokens,
}


def encode_meta_request(command: MetaCommand) -> bytes:
    """The request a client sends for ``command`` (with the data block for ``ms``)."""
    if isinstance(command, MetaNoop):
        return b"mn" + CRLF
    if isinstance(command, MetaDebug):
        binary = b" b" if command.key_binary else b""
        return b"me " + key_token(command.key, command.key_binary) + binary + CRLF
    tokens = [_NAMES[type(command)], key_token(command.key, command.key_binary)]
    if isinstance(command, MetaSet):
        tokens.append(str(len(command.value)).encode())
    if command.key_binary:
        tokens.append(b"b")
    tokens += _return_tokens(command)
    if command.quiet:
        tokens.append(b"q")
    tokens += _SPECIFIC[type(command)](command)  # type: ignore[operator]
    line = b" ".join(tokens) + CRLF
    if isinstance(command, MetaSet):
        return line + command.value + CRLF
    return line
