"""Limits every parser enforces; all of them are settings, none is hidden."""

from __future__ import annotations

import attrs

KEY_MAX_LENGTH = 250
ITEM_SIZE_MAX = 1024 * 1024
LINE_MAX_LENGTH = 2048


@attrs.frozen
class Limits:
    """Bounds on what a client may send.

    ``max_line_length`` is memcached's 2048-byte limit on a command line
    without a newline.  Retrieval lines (``get k1 k2 …``) may be longer, up
    to ``max_get_line_length``, so that large multi-gets work as in
    memcached.
    """

    max_key_length: int = KEY_MAX_LENGTH
    max_item_size: int = ITEM_SIZE_MAX
    max_line_length: int = LINE_MAX_LENGTH
    max_get_line_length: int = 256 * 1024
