"""How an item is laid out in LMDB, and the item as the rest of Stig sees it.

A record is a 13-byte header — client flags (u32), cas unique (u64), state
bits (u8) — followed by the value.  The state bits carry the meta protocol's
``stale`` mark and whether a lease ``win`` was handed out, so they survive a
restart like everything else.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

HEADER = struct.Struct(">IQB")
STALE = 0x01
WIN_SENT = 0x02


class Item(NamedTuple):
    """One stored item.  ``cas`` is 0 for a write that is not committed yet.

    A NamedTuple (immutable, about twice as cheap to build as a frozen attrs
    class): every set builds one for its session's point of view, and every
    read of a stored record decodes into one.
    """

    value: bytes
    flags: int = 0
    cas: int = 0
    state: int = 0

    @property
    def stale(self) -> bool:
        return bool(self.state & STALE)

    @property
    def win_sent(self) -> bool:
        return bool(self.state & WIN_SENT)


def encode(item: Item) -> bytes:
    return HEADER.pack(item.flags, item.cas, item.state) + item.value


def decode(record: bytes) -> Item:
    flags, cas, state = HEADER.unpack_from(record)
    return Item(record[HEADER.size :], flags, cas, state)
