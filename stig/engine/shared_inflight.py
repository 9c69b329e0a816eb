"""The in-flight keys of every worker, in shared memory (``--workers N``, docs/workers.md).

Each worker process keeps its own :class:`~stig.engine.visibility.InFlight`
for its own sessions; this table makes a write acknowledged by one worker
visible to reads in every other one.  One memory segment (a memfd the
supervisor creates and every process maps) holds, as unsigned 64-bit words:

* ``committed[w]``: the newest submission number of worker ``w`` whose
  group has finished (committed or failed); written by the writer process
  right after the LMDB commit returns, before it answers;
* ``cleared[w]``: the newest submission number of worker ``w`` that holds a
  ``flush_all`` (it writes every key);
* ``published[w]``: the newest submission number of worker ``w`` (a read
  that does not know its keys waits for it);
* ``slots[w][i]``: the newest submission number of worker ``w`` that writes
  a key with ``crc32(key) % SLOTS == i``; written only by worker ``w``.

A worker numbers its promotions 1, 2, 3, … as it submits them and
*publishes* each one's keys here (:meth:`publish`) in ``submit``, before any
reply that acknowledges them can leave.  A read in another worker, before it
begins its snapshot, looks up its keys (:meth:`clear_for`): a slot newer than
its worker's ``committed`` word (as this worker last looked: ``_seen``)
means a write may be in flight, and the read waits (:meth:`wait`) until
``committed`` passes it — then the LMDB commit has
returned, so the snapshot begun after sees the write.  Slots are per worker
and only ever grow, so a collision (two keys in one slot) makes a read wait
for a commit it did not need, never miss one.  A word is one aligned 8-byte
load or store: atomic on the platforms Stig runs on.

Bounds: ``SLOTS`` × 8 bytes per worker (512 KiB).
"""

from __future__ import annotations

import mmap
import os
import zlib
from collections.abc import Collection, Mapping, Sequence

import trio

#: Slots per worker (a power of two).
SLOTS = 1 << 16
_HEADER = 3  # words per worker before the slots: committed, cleared, published
#: How often a read waiting for another worker's commit looks again.
POLL_SECONDS = 0.0005


def segment_bytes(workers: int) -> int:
    """The size of the segment for ``workers`` workers."""
    return 8 * workers * (_HEADER + SLOTS)


def create(workers: int) -> int:
    """A new zeroed segment for ``workers`` workers: its file descriptor (inheritable)."""
    fd = os.memfd_create("stig-inflight", 0)
    os.ftruncate(fd, segment_bytes(workers))
    return fd


class SharedInFlight:
    """One process's view of the segment; ``me``: its worker number (-1: the writer)."""

    __slots__ = ("_map", "_seen", "_words", "me", "waits", "workers")

    def __init__(self, fd: int, workers: int, me: int) -> None:
        self._map = mmap.mmap(fd, segment_bytes(workers))
        self._words = memoryview(self._map).cast("Q")
        self.workers = workers
        self.me = me
        self.waits = 0  #: reads that waited for another worker's commit
        #: The ``committed`` words as this worker last looked at them: only
        #: :meth:`wait` (an await) looks again.  Within one synchronous call
        #: they do not move, as a single process's in-flight keys do not: a
        #: burst that reads ahead from one snapshot (stig/frontends/text.py)
        #: checks each later command against what was committed before that
        #: snapshot began, never against a commit that came after it.
        self._seen = list(self._words[:workers])

    # -- the writer ------------------------------------------------------------

    def committed(self, worker: int) -> int:
        """Worker ``worker``'s newest finished submission number."""
        return int(self._words[worker])

    def set_committed(self, worker: int, number: int) -> None:
        """Worker ``worker``'s promotions up to ``number`` are finished."""
        if number > self._words[worker]:
            self._words[worker] = number

    # -- a worker's own writes -------------------------------------------------

    def publish(self, keys: Collection[bytes], number: int, clears_all: bool) -> None:
        """Promotion ``number`` of this worker writes ``keys`` (every key if ``clears_all``)."""
        words = self._words
        base = _HEADER * self.workers + self.me * SLOTS
        mask = SLOTS - 1
        crc32 = zlib.crc32
        for key in keys:
            words[base + (crc32(key) & mask)] = number
        if clears_all:
            words[self.workers + self.me] = number
        words[2 * self.workers + self.me] = number

    def pending(self, keys: Collection[bytes], clears_all: bool) -> tuple[tuple[int, int], ...]:
        """Before publishing a write of ``keys``: the other workers' writes to
        them in flight now, ``(worker, number)``, which must commit first (an
        acknowledged write is never overwritten by an older one)."""
        return tuple(self._pending(None if clears_all else list(keys), ()))

    def settled(self, number: int) -> bool:
        """Whether this worker's promotion ``number`` is committed (the writer's word, now)."""
        return bool(self._words[self.me] >= number)

    # -- reads -----------------------------------------------------------------

    def _pending(
        self, keys: Sequence[bytes] | None, own: Collection[bytes] | Mapping[bytes, object]
    ) -> list[tuple[int, int]]:
        """(worker, number) pairs a read of ``keys`` must wait for (None: any key)."""
        words = self._words
        workers = self.workers
        seen = self._seen
        pending: list[tuple[int, int]] = []
        for worker in range(workers):
            if worker == self.me:
                continue
            committed = seen[worker]
            newest = words[workers + worker]
            if keys is None:
                newest = words[2 * workers + worker]
            else:
                base = _HEADER * workers + worker * SLOTS
                mask = SLOTS - 1
                for key in keys:
                    if key in own:
                        continue
                    number = words[base + (zlib.crc32(key) & mask)]
                    if number > newest:
                        newest = number
            if newest > committed:
                pending.append((worker, newest))
        return pending

    def clear_for(
        self, keys: Sequence[bytes] | None, own: Collection[bytes] | Mapping[bytes, object] = ()
    ) -> bool:
        """True when no other worker has a write to ``keys`` in flight."""
        return not self._pending(keys, own)

    async def wait(
        self, keys: Sequence[bytes] | None, own: Collection[bytes] | Mapping[bytes, object] = ()
    ) -> None:
        """Wait until the other workers' writes to ``keys`` in flight now are finished."""
        words = self._words
        self._seen = list(words[: self.workers])
        pending = self._pending(keys, own)
        if pending:
            self.waits += 1
        for worker, number in pending:
            while words[worker] < number:
                await trio.sleep(POLL_SECONDS)
        self._seen = list(words[: self.workers])
        await trio.lowlevel.checkpoint()  # a look is taken at an await, always
