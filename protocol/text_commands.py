"""Parsing of one text-protocol command line into a command or an error.

Token counts, ``noreply`` and error lines follow memcached 1.6's
``process_command_ascii`` (``proto_text.c``):

* Tokens are separated by spaces only: a tab or other control character
  stays inside its token (and makes a key invalid) instead of shifting the
  fields, which would misframe a data block.
* A wrong token count is ``ERROR``, even with ``noreply`` (memcached checks
  the count first).  For a storage command nothing is swallowed then: the
  line cannot be trusted, and memcached reads its data line as a command.
* ``noreply`` is the last token; once it is seen, an error is a
  :class:`QuietError` (memcached answers nothing).
* Keys are 1..``Limits.max_key_length`` bytes without control characters.
* A storage line whose length is readable but whose other fields are bad
  still has its data block swallowed (memcached reads it as a command; Stig
  keeps the stream in step, see docs/pov.md).
* An unknown command whose last token starts with ``HTTP/`` is a web
  browser's request sent to the port (a cross-protocol attack): memcached
  hangs up without a word, and so does Stig: :func:`parse_line` raises a
  :class:`~stig_protocol.errors.ProtocolError` without a reply hint.

:func:`parse_line` returns a command, an error, or a :class:`BlockFollows`
for the lines a data block follows (``set``…, ``ms``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import attrs

from stig_protocol import meta
from stig_protocol.commands import (
    Arithmetic,
    Delete,
    Fence,
    FlushAll,
    LruCrawler,
    Promote,
    Quit,
    RefreshCerts,
    Replicate,
    Retrieve,
    Stats,
    Store,
    StoreMode,
    TextCommand,
    Touch,
    Verbosity,
    Version,
)
from stig_protocol.errors import ErrorKind, InvalidCommand, ProtocolError
from stig_protocol.limits import Limits

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
MAX_DATA_LENGTH = 2**31 - 3  #: memcached's ``vlen > INT_MAX - 2`` bound

BAD_FORMAT = InvalidCommand(ErrorKind.CLIENT_ERROR, "bad command line format")
UNKNOWN = InvalidCommand(ErrorKind.ERROR)
TOO_LARGE = InvalidCommand(ErrorKind.SERVER_ERROR, "object too large for cache")
BAD_CHUNK = InvalidCommand(ErrorKind.CLIENT_ERROR, "bad data chunk")
BAD_DELTA = InvalidCommand(ErrorKind.CLIENT_ERROR, "invalid numeric delta argument")
BAD_EXPTIME = InvalidCommand(ErrorKind.CLIENT_ERROR, "invalid exptime argument")
BAD_DELETE = InvalidCommand(
    ErrorKind.CLIENT_ERROR, "bad command line format.  Usage: delete <key> [noreply]"
)
#: The message of the :class:`~stig_protocol.errors.ProtocolError` (without a
#: reply hint: close silently) raised on an HTTP request line.
HTTP_REQUEST = "an HTTP request line: hanging up without a reply"

_STORE_MODES = {mode.value.encode(): mode for mode in StoreMode}
_CONTROL = re.compile(rb"[\x00-\x20\x7f]")

#: memcached's tokenizer keeps at most this many tokens; the rest of a
#: longer line is not looked at when it checks for ``HTTP/``.
_MAX_TOKENS = 23
#: Command names memcached dispatches before its ``HTTP/`` check (by first
#: byte: every g/s/a/c/i/d/t command and two-letter m command; then these).
_CHECKED_FIRST = frozenset(b"gsacidt")
_KNOWN_TO_MEMCACHED = frozenset(
    {
        b"replace", b"prepend", b"bget", b"flush_all", b"version", b"quit",
        b"lru_crawler", b"watch", b"verbosity", b"lru", b"extstore", b"refresh_certs",
    }
)  # fmt: skip


@attrs.frozen
class QuietError:
    """An error the client asked not to hear (``noreply``): nothing is sent."""

    error: InvalidCommand


TextEvent = TextCommand | meta.MetaCommand | InvalidCommand | QuietError


@attrs.frozen
class BlockFollows:
    """A command line a data block follows: ``length`` bytes and ``\\r\\n``.

    ``complete(value)`` is the event once the block has arrived well ended;
    ``oversize`` is answered at once (and the block skipped) when ``length``
    is above ``Limits.max_item_size``; a block not ended by ``\\r\\n`` is
    ``bad data chunk``, quiet when ``noreply``.
    """

    length: int
    complete: Callable[[bytes], TextEvent]
    oversize: TextEvent
    noreply: bool = False


def quiet(error: InvalidCommand, noreply: bool) -> InvalidCommand | QuietError:
    """``error``, or nothing to answer if the client said ``noreply``."""
    return QuietError(error) if noreply else error


def valid_key(key: bytes, max_length: int) -> bool:
    """A key is 1..max_length bytes with no spaces or control characters."""
    return 0 < len(key) <= max_length and _CONTROL.search(key) is None


def _parse_uint(token: bytes, maximum: int) -> int | None:
    digits = token.lstrip(b"0")  # int() refuses over 4300 digits, zeros included
    if not token.isdigit() or len(digits) > 20:
        return None
    value = int(digits or b"0")
    return value if value <= maximum else None


def _parse_int(token: bytes) -> int | None:
    """A signed decimal, as memcached's ``safe_strtol`` accepts for exptime."""
    body = token[1:] if token[:1] == b"-" else token
    digits = body.lstrip(b"0")
    if not body.isdigit() or len(digits) > 10:
        return None
    value = -int(digits or b"0") if token[:1] == b"-" else int(digits or b"0")
    return value if -(2**31) <= value < 2**31 else None


#: An exptime token (``gat``'s, also on a streamed line): a signed 32-bit decimal, or None.
parse_exptime = _parse_int


def parse_line(line: bytes, limits: Limits) -> TextEvent | BlockFollows:
    """The event for one command line (without its ``\\r\\n``).

    Raises :class:`~stig_protocol.errors.ProtocolError` without a hint (hang up
    silently) on an HTTP request line; never anything else.
    """
    tokens = [token for token in line.split(b" ") if token]
    if not tokens:
        return UNKNOWN
    parse = _COMMANDS.get(tokens[0])
    if parse is None:
        if _is_http_request(tokens):
            raise ProtocolError(None, HTTP_REQUEST)
        return UNKNOWN
    return parse(tokens, limits)


def _is_http_request(tokens: list[bytes]) -> bool:
    """memcached's cross-protocol defence, for a line of no command it knows."""
    name = tokens[0]
    if len(name) < 2 or name[0] in _CHECKED_FIRST or name in _KNOWN_TO_MEMCACHED:
        return False
    if name[0] == ord("m") and len(name) == 2:
        return False
    return tokens[:_MAX_TOKENS][-1].startswith(b"HTTP/")


# -- one function per command family ------------------------------------------


def _retrieve(tokens: list[bytes], limits: Limits) -> TextEvent:
    name = tokens[0]
    touch = name.startswith(b"gat")
    keys = tokens[2:] if touch else tokens[1:]
    if not keys:
        return UNKNOWN
    exptime = 0
    if touch:
        parsed = _parse_int(tokens[1])
        if parsed is None:
            return BAD_EXPTIME
        exptime = parsed
    max_key = limits.max_key_length
    for key in keys:
        if not valid_key(key, max_key):
            return BAD_FORMAT
    return Retrieve(tuple(keys), with_cas=name.endswith(b"s"), touch=touch, exptime=exptime)


def _store(tokens: list[bytes], limits: Limits) -> TextEvent | BlockFollows:
    mode = _STORE_MODES[tokens[0]]
    fields = 6 if mode is StoreMode.CAS else 5
    if len(tokens) not in (fields, fields + 1):
        return UNKNOWN
    # As memcached's set_noreply_maybe: "noreply" is the last token,
    # whatever the count; an extra last token that is not "noreply" is
    # ignored (refusing the line would leave its data block to be read as
    # commands).
    noreply = tokens[-1] == b"noreply"
    key = tokens[1]
    flags = _parse_uint(tokens[2], U32_MAX)
    exptime = _parse_int(tokens[3])
    length = _parse_uint(tokens[4], MAX_DATA_LENGTH)
    cas_unique = _parse_uint(tokens[5], U64_MAX) if mode is StoreMode.CAS else 0
    if length is None:
        return quiet(BAD_FORMAT, noreply)  # no length: nothing to swallow
    if flags is None or exptime is None or cas_unique is None:
        # memcached cannot trust the line, yet the data block is coming:
        # swallow it so the stream stays in step.
        return _swallow(length, quiet(BAD_FORMAT, noreply), noreply)
    if not valid_key(key, limits.max_key_length):
        return _swallow(length, quiet(BAD_FORMAT, noreply), noreply)
    complete = functools.partial(
        Store, mode, key, flags, exptime, cas_unique=cas_unique, noreply=noreply
    )
    # memcached deletes the key of a set refused as too large, so that the
    # old value does not outlive it (the error's discard_key, see InvalidCommand).
    too_large = attrs.evolve(TOO_LARGE, discard_key=key) if mode is StoreMode.SET else TOO_LARGE
    return BlockFollows(length, complete, quiet(too_large, noreply), noreply)


def _swallow(length: int, event: TextEvent, noreply: bool) -> BlockFollows:
    """Answer ``event`` for a line whose data block must still be read past."""

    def complete(_value: bytes) -> TextEvent:
        return event

    return BlockFollows(length, complete, event, noreply)


def _delete(tokens: list[bytes], limits: Limits) -> TextEvent:
    if not 2 <= len(tokens) <= 4:
        return UNKNOWN
    noreply = len(tokens) > 2 and tokens[-1] == b"noreply"
    if tokens[2:] not in ([], [b"0"], [b"noreply"], [b"0", b"noreply"]):
        return quiet(BAD_DELETE, noreply)
    if not valid_key(tokens[1], limits.max_key_length):
        return quiet(BAD_FORMAT, noreply)
    return Delete(tokens[1], noreply)


def _arithmetic(tokens: list[bytes], limits: Limits) -> TextEvent:
    if len(tokens) not in (3, 4):
        return UNKNOWN
    noreply = tokens[-1] == b"noreply"
    if not valid_key(tokens[1], limits.max_key_length):
        return quiet(BAD_FORMAT, noreply)
    delta = _parse_uint(tokens[2], U64_MAX)
    if delta is None:
        return quiet(BAD_DELTA, noreply)
    return Arithmetic(tokens[1], delta, tokens[0] == b"incr", noreply)


def _touch(tokens: list[bytes], limits: Limits) -> TextEvent:
    if len(tokens) not in (3, 4):
        return UNKNOWN
    noreply = tokens[-1] == b"noreply"
    if not valid_key(tokens[1], limits.max_key_length):
        return quiet(BAD_FORMAT, noreply)
    exptime = _parse_int(tokens[2])
    if exptime is None:
        return quiet(BAD_EXPTIME, noreply)
    return Touch(tokens[1], exptime, noreply)


def _flush_all(tokens: list[bytes], limits: Limits) -> TextEvent:
    if len(tokens) > 3:
        return UNKNOWN
    noreply = tokens[-1] == b"noreply"
    delay = 0
    if len(tokens) > (2 if noreply else 1):
        parsed = _parse_int(tokens[1])
        if parsed is None:
            return quiet(BAD_EXPTIME, noreply)
        delay = parsed
    return FlushAll(delay, noreply)


def _version(tokens: list[bytes], limits: Limits) -> TextEvent:
    return Version()


def _verbosity(tokens: list[bytes], limits: Limits) -> TextEvent:
    if len(tokens) not in (2, 3):
        return UNKNOWN
    noreply = tokens[-1] == b"noreply"
    level = _parse_uint(tokens[1], U32_MAX)
    if level is None:
        return quiet(BAD_FORMAT, noreply)
    return Verbosity(level, noreply)


def _quit(tokens: list[bytes], limits: Limits) -> TextEvent:
    return Quit()


def _refresh_certs(tokens: list[bytes], limits: Limits) -> TextEvent:
    return RefreshCerts()


def _replicate(tokens: list[bytes], limits: Limits) -> TextEvent:
    if len(tokens) != 3:
        return UNKNOWN
    after, epoch = tokens[1], tokens[2]
    if not (after.isdigit() and epoch.isdigit()) or len(after) > 20 or len(epoch) > 10:
        return BAD_FORMAT
    if int(after) > U64_MAX or int(epoch) > U32_MAX:  # a u64 sequence, a u32 epoch
        return BAD_FORMAT
    return Replicate(int(after), int(epoch))


def _promote(tokens: list[bytes], limits: Limits) -> TextEvent:
    return Promote() if len(tokens) == 1 else UNKNOWN


def _fence(tokens: list[bytes], limits: Limits) -> TextEvent:
    if len(tokens) != 2:
        return UNKNOWN
    if not tokens[1].isdigit() or len(tokens[1]) > 10 or int(tokens[1]) > U32_MAX:
        return BAD_FORMAT  # epochs are u32
    return Fence(int(tokens[1]))


def _stats(tokens: list[bytes], limits: Limits) -> TextEvent:
    group = tokens[1] if len(tokens) > 1 else b""
    return Stats(group, tuple(tokens[2:]))


def _lru_crawler(tokens: list[bytes], limits: Limits) -> TextEvent:
    # Only the key listing; as memcached, a wrong token count is ERROR.
    if len(tokens) != 3 or tokens[1] != b"metadump":
        return UNKNOWN
    return LruCrawler(tokens[1], tokens[2])


def _meta(tokens: list[bytes], limits: Limits) -> TextEvent | BlockFollows:
    parsed = meta.parse_meta(tokens, limits)
    if isinstance(parsed, InvalidCommand):
        return parsed
    header, length, error = parsed.command, parsed.data_length, parsed.error
    if length is None:
        assert header is not None  # MetaParse: a command when no block follows
        return header
    if error is not None:
        return _swallow(length, error, noreply=False)
    assert isinstance(header, meta.MetaSet)  # MetaParse: only an ms has a block

    def complete(value: bytes) -> meta.MetaSet:
        # The line gave a validated header with an empty value; the command
        # is built anew with its value, never changed in place.
        return attrs.evolve(header, value=value)

    return BlockFollows(length, complete, TOO_LARGE)


_Parse = Callable[[list[bytes], Limits], "TextEvent | BlockFollows"]

_COMMANDS: dict[bytes, _Parse] = {
    b"get": _retrieve,
    b"gets": _retrieve,
    b"gat": _retrieve,
    b"gats": _retrieve,
    **{name: _store for name in _STORE_MODES},
    b"delete": _delete,
    b"incr": _arithmetic,
    b"decr": _arithmetic,
    b"touch": _touch,
    b"flush_all": _flush_all,
    b"version": _version,
    b"verbosity": _verbosity,
    b"quit": _quit,
    b"refresh_certs": _refresh_certs,
    b"stig_replicate": _replicate,
    b"stig_promote": _promote,
    b"stig_fence": _fence,
    b"stats": _stats,
    b"lru_crawler": _lru_crawler,
    **{name: _meta for name in meta.META_COMMAND_NAMES},
}
