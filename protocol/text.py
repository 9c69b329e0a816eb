"""Sans-IO parser for the memcached text protocol (classic and meta commands).

Rules, after memcached 1.6 ``doc/protocol.txt``:

* A command is one line ended by ``\\n`` (an optional ``\\r`` before it is
  dropped); tokens are separated by spaces.
* A line longer than ``Limits.max_line_length`` without a newline is an error
  that closes the connection, except for retrieval lines (``get k1 k2 …``),
  which may grow to ``Limits.max_get_line_length`` as large multi-gets do.
* Storage commands (and ``ms``) are followed by a data block of exactly the
  announced length plus ``\\r\\n``.  A block that is too large is swallowed
  (never buffered whole) and answered ``SERVER_ERROR object too large for
  cache``; a block not ended by ``\\r\\n`` is ``CLIENT_ERROR bad data chunk``.
  Either way the connection goes on.
* Keys are at most ``Limits.max_key_length`` bytes, without control
  characters.

The parser never touches a socket: feed it bytes, then call
:meth:`TextParser.next_event` until it returns :data:`NEED_DATA`.  Each event is
a command object, or an :class:`~protocol.errors.InvalidCommand` telling the
caller which error line to answer.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import attrs

from protocol import meta
from protocol.commands import (
    Arithmetic,
    Delete,
    FlushAll,
    LruCrawler,
    Quit,
    RefreshCerts,
    Retrieve,
    Stats,
    Store,
    StoreMode,
    TextCommand,
    Touch,
    Verbosity,
    Version,
)
from protocol.errors import ErrorKind, InvalidCommand, ProtocolError
from protocol.events import NEED_DATA, _NeedData
from protocol.limits import Limits


U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1

BAD_FORMAT = InvalidCommand(ErrorKind.CLIENT_ERROR, "bad command line format")
UNKNOWN = InvalidCommand(ErrorKind.ERROR)
TOO_LARGE = InvalidCommand(ErrorKind.SERVER_ERROR, "object too large for cache")
BAD_CHUNK = InvalidCommand(ErrorKind.CLIENT_ERROR, "bad data chunk")
LINE_TOO_LONG = InvalidCommand(ErrorKind.CLIENT_ERROR, "line too long", close=True)
BAD_DELTA = InvalidCommand(ErrorKind.CLIENT_ERROR, "invalid numeric delta argument")
BAD_EXPTIME = InvalidCommand(ErrorKind.CLIENT_ERROR, "invalid exptime argument")
BAD_DELETE = InvalidCommand(
    ErrorKind.CLIENT_ERROR, "bad command line format.  Usage: delete <key> [noreply]"
)

#: The key of each line of a run :func:`_single_gets` matched.
_ONE_KEY = re.compile(rb"get ([^\r\n]+)\r?\n")
_SINGLE_GETS: dict[Limits, re.Pattern[bytes] | None] = {}


def _single_gets(limits: Limits) -> re.Pattern[bytes] | None:
    """A pattern matching a run of ``get <key>`` lines, each with one valid key
    (1..max_key_length bytes, none a control character or space) and an
    optional ``\\r`` before its ``\\n``; None when such a line could be
    longer than ``max_line_length`` (the general path must judge it)."""
    try:
        return _SINGLE_GETS[limits]
    except KeyError:
        pass
    pattern = None
    if limits.max_key_length + 5 <= limits.max_line_length:
        pattern = re.compile(
            rb"(?:get [\x21-\x7e\x80-\xff]{1,%d}\r?\n)+" % limits.max_key_length
        )
    _SINGLE_GETS[limits] = pattern
    return pattern


#: How far :meth:`TextParser.plain_gets` looks ahead for whole lines.
_PLAIN_WINDOW = 65536
_RETRIEVAL_PREFIXES = (b"get ", b"gets ", b"gat ", b"gats ")
_STORE_MODES = {mode.value.encode(): mode for mode in StoreMode}
_CONTROL = re.compile(rb"[\x00-\x20\x7f]")
#: Every byte a key may hold, and the space: ``line.translate(None, _KEY_OR_SPACE)``
#: is empty exactly when the line has no control character (``_CONTROL`` minus space).
_KEY_OR_SPACE = bytes(b for b in range(256) if b == 0x20 or not (b <= 0x20 or b == 0x7F))


@attrs.frozen
class QuietError:
    """An error the client asked not to hear (``noreply``): nothing is sent."""

    error: InvalidCommand


TextEvent = object


def _quiet(error: InvalidCommand, noreply: bool) -> InvalidCommand | QuietError:
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


@attrs.define
class _PendingData:
    """A command line whose data block is still arriving."""

    length: int  # bytes of value, without the closing \r\n
    finish: Callable[[bytes], TextEvent]
    noreply: bool = False  # a bad chunk is then a QuietError, as in memcached


class TextParser:
    """Turns a byte stream into text-protocol events.  Never raises, except
    :class:`~protocol.errors.ProtocolError` when the stream cannot go on."""

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self._buffer = bytearray()
        self._start = 0  # where the unparsed bytes begin in _buffer
        self._pending: _PendingData | None = None
        self._swallowing = 0  # bytes of an oversized block still to drop
        self._single_limits: Limits | None = None  # what _single_pattern is for
        self._single_pattern: re.Pattern[bytes] | None = None

    # -- feeding -----------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._swallowing:
            dropped = min(self._swallowing, len(data))
            self._swallowing -= dropped
            data = data[dropped:]
        if self._start and self._start == len(self._buffer):
            self._buffer.clear()
            self._start = 0
        self._buffer += data

    @property
    def at_boundary(self) -> bool:
        """True when no part of a command is buffered (a clean place to stop)."""
        return not self._swallowing and self._pending is None and self._start == len(self._buffer)

    @property
    def buffered(self) -> int:
        return len(self._buffer) - self._start

    # -- parsing -----------------------------------------------------------

    def next_event(self) -> TextEvent | _NeedData:
        if self._swallowing:
            return NEED_DATA
        if self._pending is not None:
            return self._next_data_block(self._pending)
        buffer = self._buffer
        start = self._start
        newline = buffer.find(b"\n", start)
        if newline < 0:
            if len(buffer) - start > self.limits.max_line_length:
                self._check_line_length()
            return NEED_DATA
        # The same rule as for a line still waiting for its newline, so that
        # how the stream was cut never changes the outcome.
        if newline - start > self.limits.max_line_length:
            self._check_line_length(newline - start)
        end = newline - 1 if newline > start and buffer[newline - 1] == 13 else newline
        line = bytes(buffer[start:end])
        self._start = newline + 1
        if self._start > 65536:
            self._compact()
        head = line[:4]
        if head == b"get ":
            # The fast path for the commonest line; anything unusual about
            # it (an invalid key, no key at all) goes the general way.
            keys = self._plain_keys(line)
            if keys is not None:
                return Retrieve(keys)
        elif head == b"set ":
            event = self._plain_set(line)
            if event is not None:
                return event
        elif line[:3] == b"ms ":
            meta_set = self._plain_meta_set(line)
            if meta_set is not None:
                return meta_set
        return self._parse_line(line)

    def _plain_set(self, line: bytes) -> Store | None:
        """``set <key> <flags> <exptime> <bytes> [noreply]`` with plain small
        numbers, a valid key and its whole data block, well ended, already
        buffered: the :class:`Store` :meth:`_store` would give, the block
        consumed.  None (nothing consumed) when the general path must decide."""
        parts = line.split(b" ")
        count = len(parts)
        if count == 5:
            noreply = False
        elif count == 6 and parts[5] == b"noreply":
            noreply = True
        else:
            return None
        key, flags, exptime, length = parts[1], parts[2], parts[3], parts[4]
        # Up to 9 ASCII digits: within every bound _parse_uint/_parse_int check.
        if not (
            0 < len(flags) < 10 and flags.isdigit()
            and 0 < len(exptime) < 10 and exptime.isdigit()
            and 0 < len(length) < 10 and length.isdigit()
            and 0 < len(key) <= self.limits.max_key_length
            and not key.translate(None, _KEY_OR_SPACE)
        ):
            return None
        value = self._take_buffered_block(int(length))
        if value is None:
            return None
        return Store(StoreMode.SET, key, int(flags), int(exptime), value, 0, noreply)

    def _take_buffered_block(self, size: int) -> bytes | None:
        """The fast paths' data block: ``size`` bytes and ``\\r\\n``, taken only
        when all of it is buffered and within the item limit; None (nothing
        consumed) leaves the case to the general path."""
        if size > self.limits.max_item_size:
            return None
        buffer = self._buffer
        start = self._start
        end = start + size
        if len(buffer) < end + 2 or buffer[end] != 13 or buffer[end + 1] != 10:
            return None
        value = bytes(buffer[start:end])
        self._start = end + 2
        if self._start > 65536:
            self._compact()
        return value

    def _plain_meta_set(self, line: bytes) -> meta.MetaSet | None:
        """``ms <key> <bytes> [q] [T<ttl>] [F<flags>]`` (those flags once each,
        in any order) with plain small numbers, a text key and its whole data
        block, well ended, already buffered: the :class:`~protocol.meta.MetaSet`
        :meth:`_meta` would give, the block consumed.  None (nothing consumed)
        when the general path must decide."""
        parts = line.split(b" ")
        count = len(parts)
        if count > 6:
            return None
        key, length = parts[1], parts[2] if count > 2 else b""
        # Up to 9 ASCII digits: within every bound the meta reader checks.
        if not (
            0 < len(length) < 10 and length.isdigit()
            and 0 < len(key) <= self.limits.max_key_length
            and not key.translate(None, _KEY_OR_SPACE)
        ):
            return None
        quiet = False
        client_flags = ttl = None
        for token in parts[3:]:
            if token == b"q":
                if quiet:
                    return None
                quiet = True
                continue
            argument = token[1:]
            if not (0 < len(argument) < 10 and argument.isdigit()):
                return None
            letter = token[0]
            if letter == 84 and ttl is None:  # T
                ttl = int(argument)
            elif letter == 70 and client_flags is None:  # F
                client_flags = int(argument)
            else:
                return None
        value = self._take_buffered_block(int(length))
        if value is None:
            return None
        return meta.MetaSet.plain(key, value, quiet, client_flags or 0, ttl or 0)

    def _plain_keys(self, line: bytes) -> tuple[bytes, ...] | list[bytes] | None:
        """The keys of a ``get <keys>`` line exactly as :meth:`_retrieve` would
        take them, when all are valid; None when the general path must decide."""
        rest = line[4:]
        if rest.translate(None, _KEY_OR_SPACE):
            return None  # a control character: an invalid key
        max_key = self.limits.max_key_length
        if len(rest) <= max_key and b" " not in rest:
            return (rest,) if rest else None  # one key: the commonest line
        keys = rest.split(b" ")
        if b"" in keys:
            keys = [key for key in keys if key]
            if not keys:
                return None
        if len(rest) > max_key and max(map(len, keys)) > max_key:
            return None
        return keys

    def next_plain_get(self) -> tuple[bytes, ...] | list[bytes] | None:
        """Consume the next line if it is a ``get`` that :meth:`next_event`
        would return as ``Retrieve(keys)`` and return those keys; otherwise
        consume nothing and return None.

        Lets a handler answer a run of pipelined gets without building an
        event for each.
        """
        buffer = self._buffer
        start = self._start
        if (
            not buffer.startswith(b"get ", start)
            or self._pending is not None
            or self._swallowing
        ):
            return None
        newline = buffer.find(b"\n", start)
        if newline < 0 or newline - start > self.limits.max_line_length:
            return None
        keys = self._plain_keys(
            bytes(buffer[start : newline - 1 if buffer[newline - 1] == 13 else newline])
        )
        if keys is None:
            return None
        self._start = newline + 1
        if self._start > 65536:
            self._compact()
        return keys

    def plain_single_gets(self) -> list[bytes]:
        """Like :meth:`plain_gets` for the commonest burst: a run of
        ``get <key>\\r\\n`` lines of one valid key each, found by one regular
        expression over the buffer.  Returns one key per line (empty: none)."""
        if self._pending is not None or self._swallowing:
            return []
        limits = self.limits
        if limits is not self._single_limits:  # the pattern for these limits, once
            self._single_limits = limits
            self._single_pattern = _single_gets(limits)
        pattern = self._single_pattern
        if pattern is None:
            return []
        start = self._start
        match = pattern.match(self._buffer, start, start + _PLAIN_WINDOW)
        if match is None:
            return []
        end = match.end()
        keys = _ONE_KEY.findall(bytes(self._buffer[start:end]))
        self._start = end
        if end > 65536:
            self._compact()
        return keys

    def plain_gets(self) -> list[Sequence[bytes]]:
        """Consume the run of lines at the head of the buffer that are ``get``
        lines :meth:`next_event` would return as ``Retrieve(keys)``, and return
        their keys, in order; stop (consuming nothing more) at the first other
        line, incomplete line or data.

        Lets a handler answer a burst of pipelined gets with no event and no
        call per line.  Looks at most ``_PLAIN_WINDOW`` bytes ahead.
        """
        buffer = self._buffer
        start = self._start
        if (
            not buffer.startswith(b"get ", start)
            or self._pending is not None
            or self._swallowing
        ):
            return []
        last = buffer.rfind(b"\n", start, start + _PLAIN_WINDOW)
        if last < 0:
            return []
        max_line = self.limits.max_line_length
        max_key = self.limits.max_key_length
        plain_keys = self._plain_keys
        found: list[Sequence[bytes]] = []
        consumed = 0
        for line in bytes(buffer[start:last]).split(b"\n"):
            size = len(line) + 1
            if size > max_line + 1 or line[:4] != b"get ":
                break
            if line[-1:] == b"\r":
                line = line[:-1]
            rest = line[4:]
            if 0 < len(rest) <= max_key and b" " not in rest and not rest.translate(None, _KEY_OR_SPACE):
                found.append((rest,))
            else:
                keys = plain_keys(line)
                if keys is None:
                    break
                found.append(keys)
            consumed += size
        self._start = start + consumed
        if self._start > 65536:
            self._compact()
        return found

    def _compact(self) -> None:
        if self._start > 65536 and self._start * 2 > len(self._buffer):
            del self._buffer[: self._start]
            self._start = 0

    def _check_line_length(self, waiting: int | None = None) -> None:
        """Raise if the line at ``_start`` (``waiting`` bytes before any \\n) is too long."""
        if waiting is None:
            waiting = len(self._buffer) - self._start
        if waiting <= self.limits.max_line_length:
            return
        head = bytes(self._buffer[self._start : self._start + 8]).lstrip(b" ")
        if head.startswith(_RETRIEVAL_PREFIXES) and waiting <= self.limits.max_get_line_length:
            return
        raise ProtocolError(LINE_TOO_LONG)

    def _next_data_block(self, pending: _PendingData) -> TextEvent | _NeedData:
        needed = pending.length + 2
        if len(self._buffer) - self._start < needed:
            return NEED_DATA
        start = self._start
        value = bytes(self._buffer[start : start + pending.length])
        ending = self._buffer[start + pending.length : start + needed]
        self._start = start + needed
        self._pending = None
        self._compact()
        if ending != b"\r\n":
            return QuietError(BAD_CHUNK) if pending.noreply else BAD_CHUNK
        return pending.finish(value)

    def _expect_data(
        self, length: int, finish: Callable[[bytes], TextEvent], noreply: bool = False,
        discard_key: bytes | None = None,
    ) -> TextEvent | _NeedData:
        """Arrange for the next ``length`` bytes (+\\r\\n) to be a data block;
        a too-large block's error carries ``discard_key`` (see InvalidCommand)."""
        if length > self.limits.max_item_size:
            self._skip(length + 2)
            error = TOO_LARGE if discard_key is None else attrs.evolve(TOO_LARGE, discard_key=discard_key)
            return QuietError(error) if noreply else error
        self._pending = _PendingData(length, finish, noreply)
        return self._next_data_block(self._pending)

    def _skip(self, count: int) -> None:
        available = len(self._buffer) - self._start
        dropped = min(available, count)
        self._start += dropped
        self._swallowing = count - dropped
        self._compact()

    def _parse_line(self, line: bytes) -> TextEvent | _NeedData:
        # Spaces only, as memcached's tokenize_command: a tab or other control
        # character stays inside its token (and makes a key invalid) instead
        # of shifting the fields, which would misframe a data block.
        tokens = [token for token in line.split(b" ") if token]
        if not tokens:
            return UNKNOWN
        handler = _COMMANDS.get(tokens[0])
        if handler is None:
            return UNKNOWN
        return handler(self, tokens)

    # -- one method per command family --------------------------------------

    def _retrieve(self, tokens: list[bytes]) -> TextEvent:
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
        max_key = self.limits.max_key_length
        for key in keys:
            if not valid_key(key, max_key):
                return BAD_FORMAT
        return Retrieve(keys, with_cas=name.endswith(b"s"), touch=touch, exptime=exptime)

    def _store(self, tokens: list[bytes]) -> TextEvent | _NeedData:
        mode = _STORE_MODES[tokens[0]]
        fields = 6 if mode is StoreMode.CAS else 5
        if len(tokens) not in (fields, fields + 1):
            return BAD_FORMAT
        # As memcached's set_noreply_maybe: an extra last token that is not
        # "noreply" is ignored (refusing the line would leave its data block
        # to be read as commands).
        noreply = len(tokens) == fields + 1 and tokens[-1] == b"noreply"
        key = tokens[1]
        flags = _parse_uint(tokens[2], U32_MAX)
        exptime = _parse_int(tokens[3])
        length = _parse_uint(tokens[4], 2**31 - 3)
        cas_unique = _parse_uint(tokens[5], U64_MAX) if mode is StoreMode.CAS else 0
        if length is None:
            return BAD_FORMAT
        if flags is None or exptime is None or cas_unique is None:
            # memcached cannot trust the line, yet the data block is coming:
            # swallow it so the stream stays in step.
            return self._swallow_block(length, BAD_FORMAT, noreply)
        if not valid_key(key, self.limits.max_key_length):
            return self._swallow_block(length, BAD_FORMAT, noreply)

        def finish(value: bytes) -> Store:
            return Store(mode, key, flags, exptime, value, cas_unique, noreply)

        return self._expect_data(length, finish, noreply, key if mode is StoreMode.SET else None)

    def _swallow_block(
        self, length: int, error: InvalidCommand, noreply: bool
    ) -> TextEvent | _NeedData:
        """Answer ``error`` for a command whose data block must still be read past."""
        event: TextEvent = QuietError(error) if noreply else error
        if length > self.limits.max_item_size:
            self._skip(length + 2)
            return event
        self._pending = _PendingData(length, lambda _value: event, noreply)
        return self._next_data_block(self._pending)

    # Token counts and noreply as memcached's process_command_ascii and
    # set_noreply_maybe: a wrong count is ERROR; "noreply" is the last token;
    # once it is seen, an error is a QuietError (memcached answers nothing).

    def _delete(self, tokens: list[bytes]) -> TextEvent:
        if not 2 <= len(tokens) <= 4:
            return UNKNOWN
        noreply = len(tokens) > 2 and tokens[-1] == b"noreply"
        if tokens[2:] not in ([], [b"0"], [b"noreply"], [b"0", b"noreply"]):
            return _quiet(BAD_DELETE, noreply)
        if not valid_key(tokens[1], self.limits.max_key_length):
            return _quiet(BAD_FORMAT, noreply)
        return Delete(tokens[1], noreply)

    def _arithmetic(self, tokens: list[bytes]) -> TextEvent:
        if len(tokens) not in (3, 4):
            return UNKNOWN
        noreply = tokens[-1] == b"noreply"
        if not valid_key(tokens[1], self.limits.max_key_length):
            return _quiet(BAD_FORMAT, noreply)
        delta = _parse_uint(tokens[2], U64_MAX)
        if delta is None:
            return _quiet(BAD_DELTA, noreply)
        return Arithmetic(tokens[1], delta, tokens[0] == b"incr", noreply)

    def _touch(self, tokens: list[bytes]) -> TextEvent:
        if len(tokens) not in (3, 4):
            return UNKNOWN
        noreply = tokens[-1] == b"noreply"
        if not valid_key(tokens[1], self.limits.max_key_length):
            return _quiet(BAD_FORMAT, noreply)
        exptime = _parse_int(tokens[2])
        if exptime is None:
            return _quiet(BAD_EXPTIME, noreply)
        return Touch(tokens[1], exptime, noreply)

    def _flush_all(self, tokens: list[bytes]) -> TextEvent:
        if len(tokens) > 3:
            return UNKNOWN
        noreply = tokens[-1] == b"noreply"
        delay = 0
        if len(tokens) > (2 if noreply else 1):
            parsed = _parse_int(tokens[1])
            if parsed is None:
                return _quiet(BAD_EXPTIME, noreply)
            delay = parsed
        return FlushAll(delay, noreply)

    def _version(self, tokens: list[bytes]) -> TextEvent:
        return Version()

    def _verbosity(self, tokens: list[bytes]) -> TextEvent:
        if len(tokens) not in (2, 3):
            return UNKNOWN
        noreply = tokens[-1] == b"noreply"
        level = _parse_uint(tokens[1], U32_MAX)
        if level is None:
            return _quiet(BAD_FORMAT, noreply)
        return Verbosity(level, noreply)

    def _quit(self, tokens: list[bytes]) -> TextEvent:
        return Quit()

    def _refresh_certs(self, tokens: list[bytes]) -> TextEvent:
        return RefreshCerts()

    def _stats(self, tokens: list[bytes]) -> TextEvent:
        group = tokens[1] if len(tokens) > 1 else b""
        return Stats(group, tuple(tokens[2:]))

    def _lru_crawler(self, tokens: list[bytes]) -> TextEvent:
        # Only the key listing; as memcached, a wrong token count is ERROR.
        if len(tokens) != 3 or tokens[1] != b"metadump":
            return UNKNOWN
        return LruCrawler(tokens[1], tokens[2])

    def _meta(self, tokens: list[bytes]) -> TextEvent | _NeedData:
        parsed = meta.parse_meta(tokens, self.limits)
        if isinstance(parsed, InvalidCommand):
            return parsed
        command, length, error = parsed.command, parsed.data_length, parsed.error
        if length is None:
            return error if error is not None else command
        if error is not None:
            return self._swallow_block(length, error, noreply=False)

        def finish(value: bytes) -> TextEvent:
            # The command was built and validated from its line, and nothing
            # else holds it yet: give it its value in place instead of
            # building (and validating) it again with attrs.evolve.
            object.__setattr__(command, "value", value)
            return command

        return self._expect_data(length, finish)


_COMMANDS: dict[bytes, Callable[[TextParser, list[bytes]], TextEvent | _NeedData]] = {
    b"get": TextParser._retrieve,
    b"gets": TextParser._retrieve,
    b"gat": TextParser._retrieve,
    b"gats": TextParser._retrieve,
    **{name: TextParser._store for name in _STORE_MODES},
    b"delete": TextParser._delete,
    b"incr": TextParser._arithmetic,
    b"decr": TextParser._arithmetic,
    b"touch": TextParser._touch,
    b"flush_all": TextParser._flush_all,
    b"version": TextParser._version,
    b"verbosity": TextParser._verbosity,
    b"quit": TextParser._quit,
    b"refresh_certs": TextParser._refresh_certs,
    b"stats": TextParser._stats,
    b"lru_crawler": TextParser._lru_crawler,
    **{name: TextParser._meta for name in meta.META_COMMAND_NAMES},
}
