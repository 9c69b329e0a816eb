"""A retrieval line too long to parse whole, parsed as it streams in.

memcached takes ``get`` and ``gets`` lines of any length (it grows its read
buffer for them): a client may ask for 10,000 keys in one 400 KB line.
Stig takes ``get``, ``gets``, ``gat`` and ``gats`` lines of any length and
never holds one whole.  A retrieval line of up to ``Limits.get_window``
bytes is one :class:`~stig_protocol.commands.Retrieve`, as any other command;
a longer one (:data:`~stig_protocol.text_framing.STREAMED`) is parsed here, one
window at a time, into events:

* :class:`~stig_protocol.commands.RetrieveStart` — the command and, for
  ``gat``/``gats``, its exptime (a bad one is ``CLIENT_ERROR invalid
  exptime argument`` for the whole line, which is then skipped);
* :class:`~stig_protocol.commands.RetrieveKeys` — the keys that end within the
  next window of the line (up to its last space, or its newline), as soon
  as the whole window has arrived;
* :class:`~stig_protocol.commands.RetrieveEnd` — the newline, with an error in
  place of ``END`` if the line turned out bad: a bad key (its batch's keys
  before it are handed out first, the rest of the line is skipped as it
  arrives) or no key at all.

Every cut depends on the bytes of the line alone — where a window begins
and what it holds — never on how the input was chunked: fed whole, byte by
byte or in any pieces, a line gives the same events (tests/protocol).  The
parser holds at most one window of the line beyond what was received in
one piece.
"""

from __future__ import annotations

from stig_protocol.commands import RetrieveEnd, RetrieveKeys, RetrieveStart
from stig_protocol.errors import InvalidCommand
from stig_protocol.events import NEED_DATA, _NeedData
from stig_protocol.limits import Limits
from stig_protocol.text_commands import BAD_EXPTIME, BAD_FORMAT, UNKNOWN, parse_exptime
from stig_protocol.text_framing import Framer

#: Every byte a key may hold, and the space (as in stig_protocol.text_fast).
_KEY_OR_SPACE = bytes(b for b in range(256) if b == 0x20 or not (b <= 0x20 or b == 0x7F))
_NAMES = {
    b"get": (False, False),
    b"gets": (True, False),
    b"gat": (False, True),
    b"gats": (True, True),
}

StreamEvent = RetrieveStart | RetrieveKeys | RetrieveEnd | InvalidCommand


class LineStream:
    """The rest of one streamed retrieval line: :meth:`next_event` until :attr:`done`."""

    __slots__ = ("_end", "_keys_seen", "_limits", "done")

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._end: RetrieveEnd | None = None  # due right after the batch handed out
        self._keys_seen = False
        self.done = False

    def next_event(self, framer: Framer) -> RetrieveKeys | RetrieveEnd | _NeedData:
        """The next batch of keys or the end, or NEED_DATA until a whole window
        (or the newline) has arrived."""
        if self._end is not None:
            return self._finish(self._end)
        window = self._limits.get_window
        while True:
            buffer = framer.buffer
            start = framer.start
            newline = buffer.find(b"\n", start, start + window)
            if newline >= 0:
                end = newline - 1 if newline > start and buffer[newline - 1] == 13 else newline
                piece = bytes(buffer[start:end])
                framer.consume_to(newline + 1)
                keys, bad = self._keys(piece)
                if bad:
                    return self._batch(keys, RetrieveEnd(BAD_FORMAT))
                return self._batch(keys, RetrieveEnd(None if self._keys_seen else UNKNOWN))
            if len(buffer) - start < window:
                return NEED_DATA
            space = buffer.rfind(b" ", start, start + window)
            if space < 0:  # one token fills the window: longer than any key
                framer.skip_line()
                return self._finish(RetrieveEnd(BAD_FORMAT))
            piece = bytes(buffer[start:space])
            framer.consume_to(space + 1)
            keys, bad = self._keys(piece)
            if bad:
                framer.skip_line()
                return self._batch(keys, RetrieveEnd(BAD_FORMAT))
            if keys:
                return RetrieveKeys(keys)
            # A window of spaces only: on to the next.

    def _keys(self, piece: bytes) -> tuple[tuple[bytes, ...], bool]:
        """The keys of ``piece`` up to its first bad one, and whether there was one."""
        keys = tuple(filter(None, piece.split(b" ")))
        longest = self._limits.max_key_length
        if keys and not piece.translate(None, _KEY_OR_SPACE) and max(map(len, keys)) <= longest:
            self._keys_seen = self._keys_seen or bool(keys)
            return keys, False
        for index, key in enumerate(keys):
            if len(key) > longest or key.translate(None, _KEY_OR_SPACE):
                good = keys[:index]
                self._keys_seen = self._keys_seen or bool(good)
                return good, True
        return keys, False  # no key at all

    def _batch(self, keys: tuple[bytes, ...], end: RetrieveEnd) -> RetrieveKeys | RetrieveEnd:
        """``keys`` now (if any) and ``end`` next, or ``end`` now."""
        if keys:
            self._end = end
            return RetrieveKeys(keys)
        return self._finish(end)

    def _finish(self, end: RetrieveEnd) -> RetrieveEnd:
        self._end = None
        self.done = True
        return end


def start(framer: Framer, limits: Limits) -> tuple[StreamEvent, LineStream | None]:
    """The first event of the :data:`~stig_protocol.text_framing.STREAMED` line at
    the head of ``framer`` (more than a window of it, without its newline,
    is buffered) and the stream of the rest; None when that event settles
    the whole line (a bad exptime: the rest is skipped)."""
    buffer = framer.buffer
    head_end = framer.start + limits.get_window
    position = framer.start
    while buffer[position] == 0x20:  # memcached skips leading spaces
        position += 1
    space = buffer.index(b" ", position, head_end)  # framer: "get " or "gats " is here
    with_cas, touch = _NAMES[bytes(buffer[position:space])]
    position = space
    exptime = 0
    if touch:
        while position < head_end and buffer[position] == 0x20:
            position += 1
        token_end = buffer.find(b" ", position, head_end)
        parsed = None if token_end < 0 else parse_exptime(bytes(buffer[position:token_end]))
        if parsed is None:
            framer.skip_line()
            return BAD_EXPTIME, None
        exptime, position = parsed, token_end
    framer.consume_to(position)
    return RetrieveStart(with_cas, touch, exptime), LineStream(limits)
