"""Sans-IO parser for the memcached text protocol (classic and meta commands).

Feed it bytes, then call :meth:`TextParser.next_event` until it returns
:data:`~stig_protocol.events.NEED_DATA`.  Each event is a command
(:mod:`stig_protocol.commands`, :mod:`stig_protocol.meta_commands`), an
:class:`~stig_protocol.errors.InvalidCommand` telling the caller which error line
to answer, or a :class:`QuietError` (answer nothing).  A
:class:`~stig_protocol.errors.ProtocolError` means the stream cannot go on: send
its hint, if any, and close.

Four modules do the work, one job each:

* :mod:`stig_protocol.text_framing` cuts the stream into lines and data blocks;
* :mod:`stig_protocol.text_stream` parses a retrieval line too long to take
  whole as it streams in: a ``RetrieveStart``, batches of keys, an end;
* :mod:`stig_protocol.text_commands` turns one line into an event, or into a
  :class:`~stig_protocol.text_commands.BlockFollows` for a line a data block
  follows — the command is built once its block has arrived;
* :mod:`stig_protocol.text_fast` builds the same events faster for the commonest
  lines; ``TextParser(limits, fast=False)`` parses without it.

:meth:`TextParser.plain_gets` hands out the run of plain ``get`` commands at
the head of the buffer at once, as events, so that a burst of pipelined gets
costs one call; :meth:`TextParser.plain_sets` does the same for plain ``set``
and ``ms`` commands.  A caller that stops part way through such a run (its reply
bound is reached, or a get must wait) hands the rest back with
:meth:`TextParser.give_back`; they are the next events out, in order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from stig_protocol import text_fast, text_stream
from stig_protocol.commands import Retrieve, Store
from stig_protocol.errors import ProtocolError
from stig_protocol.events import NEED_DATA, _NeedData
from stig_protocol.limits import Limits
from stig_protocol.meta_commands import MetaSet
from stig_protocol.text_commands import (
    BAD_CHUNK,
    BlockFollows,
    QuietError,
    TextEvent,
    parse_line,
)
from stig_protocol.text_framing import STREAMED, Framer

__all__ = ["QuietError", "TextEvent", "TextParser"]


class TextParser:
    """Turns a byte stream into text-protocol events.  Never raises, except
    :class:`~stig_protocol.errors.ProtocolError` when the stream cannot go on."""

    def __init__(self, limits: Limits = Limits(), fast: bool = True) -> None:
        self.limits = limits
        self.fast = fast
        self._framer = Framer(limits)
        self._singles = text_fast.single_gets_pattern(limits)
        self._sets = text_fast.set_line_pattern(limits) if fast else None
        self._pending: BlockFollows | None = None  # a line whose block is arriving
        self._stream: text_stream.LineStream | None = None  # a long get line arriving
        self._hung_up = False  # an HTTP request line was seen: read nothing more
        #: Events of :meth:`plain_gets` the caller gave back: handed out before
        #: anything still buffered.
        self._held: deque[Retrieve] = deque()
        #: Commands handed out by the run calls (:meth:`plain_gets`,
        #: :meth:`single_get_keys`, :meth:`plain_sets`) since the reader last
        #: set it to 0: a connection loop that yields every so many commands
        #: counts them too (one call may hand out a hundred).
        self.batched = 0

    def feed(self, data: bytes) -> None:
        if not self._hung_up:
            self._framer.feed(data)

    @property
    def at_boundary(self) -> bool:
        """True when no part of a command is buffered (a clean place to stop).

        Events given back are whole commands: they do not count."""
        return self._pending is None and self._stream is None and self._framer.empty

    @property
    def idle(self) -> bool:
        """True when there is nothing to parse: no byte buffered, no event
        given back (the common end of a burst: one cheap check)."""
        return not self._held and self._framer.empty

    @property
    def buffered(self) -> int:
        """Bytes received and not parsed yet."""
        return self._framer.buffered

    def next_event(self) -> TextEvent | _NeedData:
        if self._held:
            return self._held.popleft()
        framer = self._framer
        if framer.skipping or framer.skipping_line:
            return NEED_DATA
        if self._stream is not None:
            return self._streamed(self._stream)
        if self._pending is not None:
            return self._data_block(self._pending)
        sets = self._sets
        if sets is not None and framer.buffer.startswith(b"set ", framer.start):
            # The commonest write whole: one regex match, no line cut out.
            whole = text_fast.buffered_set(framer, self.limits, sets)
            if whole is not None:
                return whole
        line = framer.line()
        if line is None:
            return NEED_DATA
        if line is STREAMED:
            first, self._stream = text_stream.start(framer, self.limits)
            return first
        assert isinstance(line, bytes)
        if self.fast:
            head = line[:4]
            event: TextEvent | None = None
            if head == b"get ":
                event = text_fast.plain_get(line, self.limits)
            elif head == b"set ":
                event = text_fast.plain_set(line, framer, self.limits)
            elif line[:3] == b"ms ":
                event = text_fast.plain_meta_set(line, framer, self.limits)
            if event is not None:
                return event
        try:
            parsed = parse_line(line, self.limits)
        except ProtocolError:
            # An HTTP request line: nothing after it is ever read, so the
            # parser rests between commands however the stream was cut.
            self._framer = Framer(self.limits)
            self._hung_up = True
            raise
        if not isinstance(parsed, BlockFollows):
            return parsed
        if parsed.length > self.limits.max_item_size:
            framer.skip(parsed.length + 2)  # never buffered whole
            return parsed.oversize
        self._pending = parsed
        return self._data_block(parsed)

    def plain_gets(self) -> list[Retrieve]:
        """Consume the run of ``get`` commands at the head of the buffer that
        the fast path takes, and return their events (those :meth:`next_event`
        would return one by one); empty when the next event is anything else.
        Events given back come first (then this call returns only them).
        """
        if self._held:
            held = list(self._held)
            self._held.clear()
            self.batched += len(held)
            return held
        if not self.fast or self._in_command:
            return []
        found = text_fast.plain_gets(self._framer, self.limits, self._singles)
        self.batched += len(found)
        return found

    def single_get_keys(self) -> list[bytes]:
        """Consume the run of one-key ``get`` lines at the head of the buffer
        and return their keys: the first events :meth:`plain_gets` would
        return, ``Retrieve((key,))`` each, as keys only.  Empty when events
        were given back (:meth:`plain_gets` hands those out) or the next
        line is anything else; a caller that does not answer them all gives
        the rest back as events (:func:`stig_protocol.text_fast.single_retrieve`).
        """
        if self._held or not self.fast or self._in_command:
            return []
        keys = text_fast.single_get_keys(self._framer, self._singles)
        self.batched += len(keys)
        return keys

    def plain_sets(self) -> list[Store | MetaSet]:
        """Consume the run of plain ``set`` and ``ms`` commands at the head of
        the buffer that the fast path takes, and return their events (those
        :meth:`next_event` would return one by one); empty when the next
        event is anything else, or events given back wait."""
        if self._held or not self.fast or self._in_command:
            return []
        found = text_fast.plain_sets(self._framer, self.limits)
        self.batched += len(found)
        return found

    def give_back(self, events: Iterable[Retrieve]) -> None:
        """Take back events :meth:`plain_gets` handed out and the caller did not
        handle: they are the next events :meth:`next_event` and
        :meth:`plain_gets` return, in their order, before anything buffered."""
        self._held.extendleft(reversed(list(events)))

    def give_back_keys(self, keys: Iterable[bytes]) -> None:
        """:meth:`give_back` for keys :meth:`single_get_keys` handed out."""
        self.give_back([text_fast.single_retrieve(key) for key in keys])

    def _streamed(self, stream: text_stream.LineStream) -> TextEvent | _NeedData:
        event = stream.next_event(self._framer)
        if stream.done:
            self._stream = None
        return event

    @property
    def _in_command(self) -> bool:
        """Inside a command: a block, a streamed line or a skipped part arriving."""
        framer = self._framer
        return (
            self._pending is not None
            or self._stream is not None
            or bool(framer.skipping)
            or framer.skipping_line
        )

    def _data_block(self, pending: BlockFollows) -> TextEvent | _NeedData:
        block = self._framer.block(pending.length)
        if block is None:
            return NEED_DATA
        self._pending = None
        value, well_ended = block
        if not well_ended:
            return QuietError(BAD_CHUNK) if pending.noreply else BAD_CHUNK
        return pending.complete(value)
