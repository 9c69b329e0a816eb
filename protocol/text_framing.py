"""Framing of the text protocol: a byte stream cut into lines and data blocks.

Rules, after memcached 1.6 ``doc/protocol.txt``:

* A command is one line ended by ``\\n``; an optional ``\\r`` before it is
  dropped.
* A line longer than ``Limits.max_line_length`` without its newline is an
  error that closes the connection (:data:`LINE_TOO_LONG`), except for
  retrieval lines (``get k1 k2 …``), which have no limit, as in memcached:
  one longer than ``Limits.get_window`` is :data:`STREAMED`, its parser
  reads it a window at a time (:mod:`stig_protocol.text_stream`).  The same rule
  holds whether the newline has arrived or not, so how the stream was cut
  never changes the outcome.
* The rest of a line that must be dropped (a streamed line found bad part
  way) is skipped as it arrives, up to its newline, never buffered.
* A data block is an announced number of bytes and ``\\r\\n``.  A block that
  must be dropped (too large, or announced by a bad line) is skipped as it
  arrives, never buffered whole.

:class:`Framer` knows nothing of commands; :mod:`stig_protocol.text` asks it for
the next line or block.
"""

from __future__ import annotations

from stig_protocol.errors import ErrorKind, InvalidCommand, ProtocolError
from stig_protocol.limits import Limits

LINE_TOO_LONG = InvalidCommand(ErrorKind.CLIENT_ERROR, "line too long", close=True)


class _Streamed:
    def __repr__(self) -> str:
        return "STREAMED"


#: What :meth:`Framer.line` answers for a retrieval line longer than the window.
STREAMED = _Streamed()

#: Consumed bytes kept at the head of the buffer before it is compacted.
COMPACT_AFTER = 65536
_RETRIEVAL_PREFIXES = (b"get ", b"gets ", b"gat ", b"gats ")


class Framer:
    """The receive buffer of one connection, consumed a line or a block at a time.

    ``buffer[start:]`` are the bytes received and not consumed yet; the fast
    paths of :mod:`stig_protocol.text_fast` read them in place and consume with
    :meth:`consume_to`.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.buffer = bytearray()
        self.start = 0  # where the unconsumed bytes begin in buffer
        self.skipping = 0  # bytes of a dropped block that have not arrived yet
        self.skipping_line = False  # dropping input up to the next newline

    def feed(self, data: bytes) -> None:
        """Add received bytes; those of a block being skipped are dropped here."""
        if self.skipping:
            dropped = min(self.skipping, len(data))
            self.skipping -= dropped
            data = data[dropped:]
        elif self.skipping_line:
            newline = data.find(b"\n")
            if newline < 0:
                return
            self.skipping_line = False
            data = data[newline + 1 :]
        if self.start and self.start == len(self.buffer):
            self.buffer.clear()
            self.start = 0
        self.buffer += data

    @property
    def buffered(self) -> int:
        """Bytes received and not consumed yet."""
        return len(self.buffer) - self.start

    @property
    def empty(self) -> bool:
        """Nothing buffered and nothing being skipped."""
        return not self.skipping and not self.skipping_line and self.start == len(self.buffer)

    def line(self) -> bytes | _Streamed | None:
        """Consume and return the next line without its ``\\r\\n`` (or ``\\n``);
        None while its newline has not arrived; :data:`STREAMED`, consuming
        nothing, for a retrieval line longer than ``Limits.get_window``.
        Raises :class:`~stig_protocol.errors.ProtocolError` on a line too long."""
        buffer = self.buffer
        start = self.start
        newline = buffer.find(b"\n", start)
        longest = self.limits.max_line_length
        if newline < 0:
            if len(buffer) - start > longest:
                return self._long_line(len(buffer) - start)
            return None
        if newline - start > longest and self._long_line(newline - start) is STREAMED:
            return STREAMED
        end = newline - 1 if newline > start and buffer[newline - 1] == 13 else newline
        line = bytes(buffer[start:end])
        self.consume_to(newline + 1)
        return line

    def block(self, size: int) -> tuple[bytes, bool] | None:
        """Consume a data block of ``size`` bytes and its two-byte ending: the
        value and whether the ending was ``\\r\\n``; None until all of it has
        arrived."""
        start = self.start
        end = start + size
        if len(self.buffer) < end + 2:
            return None
        value = bytes(self.buffer[start:end])
        well_ended = self.buffer[end] == 13 and self.buffer[end + 1] == 10
        self.consume_to(end + 2)
        return value, well_ended

    def complete_block(self, size: int) -> bytes | None:
        """Like :meth:`block`, but only a block already buffered whole and
        ended by ``\\r\\n``; otherwise None and nothing consumed."""
        buffer = self.buffer
        end = self.start + size
        if len(buffer) < end + 2 or buffer[end] != 13 or buffer[end + 1] != 10:
            return None
        value = bytes(buffer[self.start : end])
        self.consume_to(end + 2)
        return value

    def skip(self, count: int) -> None:
        """Drop the next ``count`` bytes: the buffered ones now, the rest as they arrive."""
        dropped = min(self.buffered, count)
        self.skipping = count - dropped
        self.consume_to(self.start + dropped)

    def consume_to(self, end: int) -> None:
        """Mark ``buffer[:end]`` consumed; forget it once it is much of the buffer."""
        self.start = end
        if end > COMPACT_AFTER and end * 2 > len(self.buffer):
            del self.buffer[:end]
            self.start = 0

    def skip_line(self) -> None:
        """Drop the rest of the current line and its newline: the buffered
        part now, the rest as it arrives."""
        newline = self.buffer.find(b"\n", self.start)
        if newline < 0:
            self.consume_to(len(self.buffer))
            self.skipping_line = True
        else:
            self.consume_to(newline + 1)

    def _long_line(self, waiting: int) -> _Streamed | None:
        """The line at ``start`` has ``waiting`` bytes, more than
        ``max_line_length``, before any \\n: raise unless it is a retrieval
        line; :data:`STREAMED` once it is longer than the window, else None
        (it may still be parsed whole)."""
        head = bytes(self.buffer[self.start : self.start + 8]).lstrip(b" ")
        if not head.startswith(_RETRIEVAL_PREFIXES):
            raise ProtocolError(LINE_TOO_LONG)
        return STREAMED if waiting > self.limits.get_window else None
