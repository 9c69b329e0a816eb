"""Limits every parser enforces; all of them are settings, none is hidden."""

from __future__ import annotations

import attrs

KEY_MAX_LENGTH = 250
ITEM_SIZE_MAX = 1024 * 1024
LINE_MAX_LENGTH = 2048
#: Bytes of a retrieval line parsed whole; a longer line streams in windows of this size.
GET_WINDOW = 64 * 1024


@attrs.frozen
class Limits:
    """Bounds on what a client may send.

    ``max_line_length`` is memcached's 2048-byte limit on a command line
    without a newline.  Retrieval lines (``get``/``gets``/``gat``/``gats k1
    k2 …``) have no limit, as in memcached: one of up to :attr:`get_window`
    bytes is parsed whole, a longer one as it streams in, its keys handed
    out a window of the line at a time (:mod:`stig_protocol.text_stream`), so
    the parser never holds more than a window of it.
    """

    max_key_length: int = KEY_MAX_LENGTH
    max_item_size: int = ITEM_SIZE_MAX
    max_line_length: int = LINE_MAX_LENGTH
    retrieval_window: int = GET_WINDOW

    @property
    def get_window(self) -> int:
        """The window of a retrieval line: ``retrieval_window``, widened to
        hold any line allowed whole and any key with the space after it."""
        return max(self.retrieval_window, self.max_line_length, self.max_key_length + 1)
