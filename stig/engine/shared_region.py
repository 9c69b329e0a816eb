"""The shared region of ``--workers N``: stats blocks and the write budget's words.

The supervisor makes one memfd for every cross-process table
(:func:`create`): the in-flight table (:mod:`stig.engine.shared_inflight`,
with the followers' block of :mod:`stig.engine.shared_replicas` after it)
at its start, then, at the next page boundary, this region:

* a header of 8 words: the budget's *holder* (:mod:`stig.engine.shared_budget`),
  the rest reserved;
* one slot per worker, written only by that worker: its budget words
  (:class:`~stig.engine.shared_stats.BudgetWords`), its ``stats`` counters
  (:class:`~stig.engine.shared_stats.SharedCommandStats`,
  :class:`~stig.engine.shared_stats.SharedPromoterStats`) and the figures
  its other objects publish (:class:`~stig.engine.shared_stats.Figures`).

Bound: :func:`region_bytes` — 64 bytes plus one slot (:data:`SLOT_BYTES`,
under 512) per worker, fixed at start.  After it, at the next page, the
table of ``stats detail`` (:mod:`stig.engine.prefix_stats`: the switch, the
prefixes and every worker's counters; :func:`prefixes_offset`).

A cross-process lock (:meth:`Region.lock`): a POSIX record lock
(``fcntl.lockf``) on the region's first byte.  Record locks belong to the
process, so they exclude the other workers although all share one open
file; only the budget's rare path (a run past the limit) takes it.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager

from stig.engine import prefix_stats, shared_inflight
from stig.engine.prefix_stats import PrefixStats
from stig.engine.shared_stats import (
    BudgetWords,
    Figures,
    SharedCommandStats,
    SharedPromoterStats,
    Totals,
    combine,
)

HEADER_BYTES = 64
_BLOCKS: tuple[type[ctypes.Structure], ...] = (
    BudgetWords,
    SharedCommandStats,
    SharedPromoterStats,
    Figures,
)
#: Bytes per worker (its blocks, rounded up to a 64-byte cache line).
SLOT_BYTES = (sum(ctypes.sizeof(block) for block in _BLOCKS) + 63) // 64 * 64


def offset(workers: int) -> int:
    """Where the region begins in the memfd: after the in-flight table, at a page."""
    page = mmap.ALLOCATIONGRANULARITY
    return (shared_inflight.segment_bytes(workers) + page - 1) // page * page


def region_bytes(workers: int) -> int:
    """The region's fixed size for ``workers`` workers."""
    return HEADER_BYTES + SLOT_BYTES * workers


def prefixes_offset(workers: int) -> int:
    """Where the table of ``stats detail`` begins: after the region, at a page."""
    page = mmap.ALLOCATIONGRANULARITY
    return (offset(workers) + region_bytes(workers) + page - 1) // page * page


def budget_word(worker: int) -> int:
    """The index (in :attr:`Region.words`) of worker ``worker``'s budget
    ``used`` word; its ``open`` word follows it."""
    return (HEADER_BYTES + SLOT_BYTES * worker) // 8


def create(workers: int) -> int:
    """A new zeroed memfd holding the in-flight table and this region (inheritable)."""
    fd = shared_inflight.create(workers)
    os.ftruncate(fd, prefixes_offset(workers) + prefix_stats.table_bytes(workers))
    return fd


class Slot:
    """One worker's blocks."""

    __slots__ = ("budget", "command", "figures", "promoter")

    def __init__(self, buffer: mmap.mmap, at: int) -> None:
        self.budget = BudgetWords.from_buffer(buffer, at)
        at += ctypes.sizeof(BudgetWords)
        self.command = SharedCommandStats.from_buffer(buffer, at)
        at += ctypes.sizeof(SharedCommandStats)
        self.promoter = SharedPromoterStats.from_buffer(buffer, at)
        at += ctypes.sizeof(SharedPromoterStats)
        self.figures = Figures.from_buffer(buffer, at)


class Region:
    """One worker's view of the region; ``me``: its worker number."""

    __slots__ = (
        "_fd",
        "_map",
        "_prefixes_map",
        "header",
        "me",
        "mine",
        "slots",
        "words",
        "workers",
    )

    def __init__(self, fd: int, workers: int, me: int) -> None:
        # A descriptor of its own for the lock (the caller's may be closed).
        self._fd = os.dup(fd)
        self._map = mmap.mmap(self._fd, region_bytes(workers), offset=offset(workers))
        self.workers = workers
        self.me = me
        self.header = (ctypes.c_int64 * (HEADER_BYTES // 8)).from_buffer(self._map, 0)
        self.slots = [Slot(self._map, HEADER_BYTES + SLOT_BYTES * w) for w in range(workers)]
        self.mine = self.slots[me]
        #: The region as signed 64-bit words (faster than a ctypes field for
        #: the budget's hot path: word 0 is the holder, :func:`budget_word`).
        self.words = memoryview(self._map).cast("q")
        self._prefixes_map = mmap.mmap(
            self._fd, prefix_stats.table_bytes(workers), offset=prefixes_offset(workers)
        )

    def prefixes(self) -> PrefixStats:
        """This worker's view of the server's ``stats detail`` table."""
        return PrefixStats(self._prefixes_map, self.workers, self.me, self.lock)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the cross-process lock (a record lock on the region's first byte)."""
        at = offset(self.workers)
        fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, at, os.SEEK_SET)
        try:
            yield
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, at, os.SEEK_SET)

    def totals(self) -> Totals:
        """Every worker's counters combined, as they are now."""
        slots = self.slots
        return combine(
            [slot.command for slot in slots],
            [slot.promoter for slot in slots],
            [slot.figures for slot in slots],
        )

    def start(self) -> None:
        """This worker starts: its gauges are 0 (a worker that ran in its slot
        before and died left its own; its counters stay in the sums) and no
        run of its holds the budget's turn."""
        mine = self.mine
        for name in ("used", "open", "waiting"):
            setattr(mine.budget, name, 0)
        for name in ("curr_connections", "held_replies"):
            setattr(mine.command, name, 0)
        for name in ("pending_bytes", "paused_connections"):
            setattr(mine.promoter, name, 0)
        ctypes.memset(ctypes.addressof(mine.figures), 0, ctypes.sizeof(mine.figures))
        with self.lock():
            if self.header[0] & 0xFF == self.me + 1:
                self.header[0] = 0

    def reset(self) -> None:
        """``stats reset`` on any worker resets every worker's counters (an
        increment racing with it in another worker may survive it)."""
        for slot in self.slots:
            slot.command.reset()
            slot.promoter.reset()
