"""Fast paths of the text parser for the commonest lines.

Each function here recognises a line that is plain beyond doubt and builds
**the same event** :func:`stig_protocol.text_commands.parse_line` would build
from it (and the same data block consumed); for anything unusual it returns
None and consumes nothing, leaving the case to the general path.  They only
save work: tests/protocol/test_text.py feeds any byte stream to a parser with
them and one without, whole and byte by byte, and requires identical events.

* :func:`plain_get`: ``get <keys>`` with every key valid.
* :func:`plain_set`: ``set <key> <flags> <exptime> <bytes> [noreply]`` with
  small plain numbers and its whole block, well ended, already buffered.
* :func:`plain_meta_set`: ``ms <key> <bytes> [q] [T<ttl>] [F<flags>]`` the
  same way.
* :func:`plain_gets`: the run of plain ``get`` lines at the head of the
  buffer, as many events, so that a burst of pipelined gets costs one call.
* :func:`single_get_keys`: the run of ``get <key>`` lines of one key each
  at the head of the buffer, as their keys only (each stands for the event
  ``Retrieve((key,))``), so that a reader answering them needs no event.

* :func:`plain_sets`: the run of plain ``set`` and ``ms`` commands at the
  head of the buffer the same way, for a burst of pipelined writes.
* :func:`buffered_set`: the plain ``set`` at the head of the buffer, found
  by one regex match (:func:`set_line_pattern`) before the line is cut out,
  as :func:`plain_sets` finds each ``set`` of a run.

Events are built with ``tuple.__new__`` (C), not through the named tuple's
own ``__new__``, a Python function: one frame less per get or set line.
"""

from __future__ import annotations

import re

from stig_protocol.commands import Retrieve, Store, StoreMode
from stig_protocol.limits import Limits
from stig_protocol.meta_commands import MetaSet
from stig_protocol.text_framing import Framer

#: Every byte a key may hold, and the space: ``line.translate(None, _KEY_OR_SPACE)``
#: is empty exactly when the line has no control character but spaces.
_KEY_OR_SPACE = bytes(b for b in range(256) if b == 0x20 or not (b <= 0x20 or b == 0x7F))
#: How far :func:`plain_gets` looks ahead for whole lines.
WINDOW = 65536
#: At most this many commands per :func:`plain_sets` call: the caller's loop
#: gets back between runs about as often as it did between single commands
#: (stig.server.connection checks for finished commits and yields every 128 commands).
MAX_SETS = 128
#: The key of each line of a run that :func:`single_gets_pattern` matched.
_ONE_KEY = re.compile(rb"get ([^\r\n]+)\r?\n")
_SINGLE_GETS: dict[Limits, re.Pattern[bytes] | None] = {}
_SET_LINES: dict[Limits, re.Pattern[bytes] | None] = {}
#: The longest a plain ``set`` line is beyond its key: ``set `` and three
#: numbers of up to 9 digits with their spaces, `` noreply`` and ``\r``.
_SET_LINE_REST = 4 + 3 * 10 + 8 + 1
_tuple_new = tuple.__new__


def single_retrieve(key: bytes) -> Retrieve:
    """``Retrieve((key,))``, built in C (see the module docstring)."""
    return _tuple_new(Retrieve, ((key,), False, False, 0))


def _plain_key(key: bytes, max_key: int) -> bool:
    return 0 < len(key) <= max_key and not key.translate(None, _KEY_OR_SPACE)


def _small_number(token: bytes) -> bool:
    """Up to 9 ASCII digits: within every bound the general path checks."""
    return 0 < len(token) < 10 and token.isdigit()


def _block(key: bytes, length: bytes, framer: Framer, limits: Limits) -> bytes | None:
    """The data block of a storage line with a plain ``key`` and a small ``length``
    within the item size: consumed and returned when it is buffered whole and well
    ended, else None with nothing consumed.  The caller checks the rest of its
    line first: after this, the block is gone."""
    if not (_small_number(length) and _plain_key(key, limits.max_key_length)):
        return None
    size = int(length)
    if size > limits.max_item_size:
        return None
    return framer.complete_block(size)


def plain_get(line: bytes, limits: Limits) -> Retrieve | None:
    """The event of a ``get`` line whose keys are all valid, else None."""
    rest = line[4:]
    if rest.translate(None, _KEY_OR_SPACE):
        return None  # a control character: an invalid key
    max_key = limits.max_key_length
    if len(rest) <= max_key and b" " not in rest:
        # One key: the commonest line.
        return _tuple_new(Retrieve, ((rest,), False, False, 0)) if rest else None
    keys = tuple(filter(None, rest.split(b" ")))  # empty tokens dropped, in C
    if not keys or max(map(len, keys)) > max_key:
        return None
    return _tuple_new(Retrieve, (keys, False, False, 0))


def plain_set(line: bytes, framer: Framer, limits: Limits) -> Store | None:
    """The :class:`Store` of a plain ``set`` line whose block is buffered, else None."""
    parts = line.split(b" ")
    count = len(parts)
    if count == 5:
        noreply = False
    elif count == 6 and parts[5] == b"noreply":
        noreply = True
    else:
        return None
    key, flags, exptime, length = parts[1], parts[2], parts[3], parts[4]
    if not (_small_number(flags) and _small_number(exptime)):
        return None
    value = _block(key, length, framer, limits)
    if value is None:
        return None
    return _tuple_new(Store, (StoreMode.SET, key, int(flags), int(exptime), value, 0, noreply))


def plain_meta_set(line: bytes, framer: Framer, limits: Limits) -> MetaSet | None:
    """The :class:`~stig_protocol.meta_commands.MetaSet` of a plain ``ms`` line
    (``q``, ``T``, ``F`` at most once each) whose block is buffered, else None."""
    parts = line.split(b" ")
    count = len(parts)
    if count < 3 or count > 6:
        return None
    key, length = parts[1], parts[2]
    quiet = False
    client_flags = ttl = None
    for token in parts[3:]:
        if token == b"q" and not quiet:
            quiet = True
            continue
        argument = token[1:]
        if not _small_number(argument):
            return None
        letter = token[:1]
        if letter == b"T" and ttl is None:
            ttl = int(argument)
        elif letter == b"F" and client_flags is None:
            client_flags = int(argument)
        else:
            return None
    value = _block(key, length, framer, limits)
    if value is None:
        return None
    return MetaSet(key, value=value, quiet=quiet, client_flags=client_flags or 0, ttl=ttl or 0)


def single_gets_pattern(limits: Limits) -> re.Pattern[bytes] | None:
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
        pattern = re.compile(rb"(?:get [\x21-\x7e\x80-\xff]{1,%d}\r?\n)+" % limits.max_key_length)
    _SINGLE_GETS[limits] = pattern
    return pattern


def set_line_pattern(limits: Limits) -> re.Pattern[bytes] | None:
    """A pattern matching one plain ``set`` line and its newline, exactly
    those :func:`plain_set` takes: ``set <key> <flags> <exptime> <bytes>``
    and an optional `` noreply``, single spaces, a valid key
    (1..max_key_length bytes, none a control character or space), numbers
    of 1 to 9 ASCII digits, an optional ``\\r`` before the ``\\n``; its groups
    are the key, the three numbers and `` noreply`` (None when absent).
    None when such a line could be longer than ``max_line_length`` (the
    line-by-line path must judge it)."""
    try:
        return _SET_LINES[limits]
    except KeyError:
        pass
    pattern = None
    if limits.max_key_length + _SET_LINE_REST <= limits.max_line_length:
        pattern = re.compile(
            rb"set ([\x21-\x7e\x80-\xff]{1,%d}) ([0-9]{1,9}) ([0-9]{1,9}) ([0-9]{1,9})"
            rb"( noreply)?\r?\n" % limits.max_key_length
        )
    _SET_LINES[limits] = pattern
    return pattern


def buffered_set(framer: Framer, limits: Limits, pattern: re.Pattern[bytes]) -> Store | None:
    """The :class:`Store` of the plain ``set`` line at the head of the buffer
    (``pattern``: :func:`set_line_pattern` for ``limits``) whose block is
    buffered whole and well ended, consumed with its block; else None with
    nothing consumed.  One regex match instead of cutting the line out and
    checking its fields one call each (:func:`plain_set`): the same event."""
    buffer = framer.buffer
    match = pattern.match(buffer, framer.start)
    if match is None:
        return None
    begin = match.end()
    key, flags, exptime, length, noreply = match.groups()
    end = begin + int(length)
    if (
        end - begin > limits.max_item_size
        or len(buffer) < end + 2
        or buffer[end] != 13
        or buffer[end + 1] != 10
    ):
        return None
    value = bytes(buffer[begin:end])
    framer.consume_to(end + 2)
    fields = (StoreMode.SET, key, int(flags), int(exptime), value, 0, noreply is not None)
    return _tuple_new(Store, fields)


def plain_gets(framer: Framer, limits: Limits, singles: re.Pattern[bytes] | None) -> list[Retrieve]:
    """Consume the run of plain ``get`` lines at the head of the buffer and
    return their events, in order; stop (consuming nothing more) at the first
    other line, incomplete line or line :func:`plain_get` leaves to the
    general path.  Looks at most :data:`WINDOW` bytes ahead.  ``singles`` is
    :func:`single_gets_pattern` for ``limits``."""
    buffer = framer.buffer
    start = framer.start
    if not buffer.startswith(b"get ", start):
        return []
    found: list[Retrieve] = []
    # The commonest burst first: one key per line, found by one regex.
    if singles is not None:
        match = singles.match(buffer, start, start + WINDOW)
        if match is not None:
            start = match.end()
            found = [
                _tuple_new(Retrieve, ((key,), False, False, 0))
                for key in _ONE_KEY.findall(buffer, framer.start, start)
            ]
            framer.consume_to(start)
            buffer = framer.buffer
            start = framer.start
            if not buffer.startswith(b"get ", start):
                return found
    last = buffer.rfind(b"\n", start, start + WINDOW)
    if last < 0:
        return found
    max_line = limits.max_line_length
    consumed = 0
    for line in bytes(buffer[start:last]).split(b"\n"):
        size = len(line) + 1
        if size > max_line + 1 or line[:4] != b"get ":
            break
        event = plain_get(line[:-1] if line[-1:] == b"\r" else line, limits)
        if event is None:
            break
        found.append(event)
        consumed += size
    framer.consume_to(start + consumed)
    return found


def single_get_keys(framer: Framer, singles: re.Pattern[bytes] | None) -> list[bytes]:
    """Consume the run of ``get <key>`` lines of one key each at the head of
    the buffer that :func:`plain_gets` finds by ``singles`` first, and return
    their keys, in order (the line ``get k`` stands for ``Retrieve((k,))``);
    empty, consuming nothing, when no such line is first.  Looks at most
    :data:`WINDOW` bytes ahead."""
    if singles is None:
        return []
    start = framer.start
    match = singles.match(framer.buffer, start, start + WINDOW)
    if match is None:
        return []
    end = match.end()
    keys: list[bytes] = _ONE_KEY.findall(framer.buffer, start, end)
    framer.consume_to(end)
    return keys


def plain_sets(framer: Framer, limits: Limits) -> list[Store | MetaSet]:
    """Consume the run of commands at the head of the buffer that
    :func:`plain_set` and :func:`plain_meta_set` take (each line whole and
    within ``max_line_length``, its block buffered whole) and return their
    events, in order; stop, consuming nothing more, at the first other one.
    Takes at most :data:`MAX_SETS` commands, starting within :data:`WINDOW`
    bytes of the head."""
    found: list[Store | MetaSet] = []
    longest = limits.max_line_length
    max_item = limits.max_item_size
    sets = set_line_pattern(limits)
    taken = 0  # bytes consumed so far
    while taken < WINDOW and len(found) < MAX_SETS:
        buffer = framer.buffer
        start = framer.start
        match = None if sets is None else sets.match(buffer, start)
        if match is not None:  # a plain set line: buffered_set(), inline
            begin = match.end()
            key, flags, exptime, length, noreply = match.groups()
            end = begin + int(length)
            if (
                end - begin > max_item
                or len(buffer) < end + 2
                or buffer[end] != 13
                or buffer[end + 1] != 10
            ):
                break
            value = bytes(buffer[begin:end])
            fields = (StoreMode.SET, key, int(flags), int(exptime), value, 0, noreply is not None)
            found.append(_tuple_new(Store, fields))
            framer.start = end + 2  # consume_to() once, at the end
            taken += end + 2 - start
            continue
        head = buffer[start : start + 4]
        if head == b"set ":
            build = plain_set
        elif head[:3] == b"ms ":
            build = plain_meta_set  # type: ignore[assignment]
        else:
            break
        newline = buffer.find(b"\n", start, start + longest + 1)
        if newline < 0:
            break  # incomplete, or too long: the general path judges it
        end = newline - 1 if buffer[newline - 1] == 13 else newline
        line = bytes(buffer[start:end])
        framer.start = newline + 1  # the block follows the line (restored if not plain)
        event = build(line, framer, limits)
        if event is None:
            framer.start = start
            break
        found.append(event)
        taken += newline + 3 - start + len(event.value)
    framer.consume_to(framer.start)  # forget what was consumed, if it is much
    return found
