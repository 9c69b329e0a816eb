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
* ``committed_seq[w]``: the replication sequence number of the transaction
  that last raised ``committed[w]``, written by the writer just before it
  (so whoever reads ``committed[w]`` and then this word has a sequence
  number at or past the group of every promotion up to it);
* ``replicated[w]``: the newest submission number of worker ``w`` whose
  group ``--min-replica-acks`` followers have acknowledged, as worker ``w``
  last learnt it (its read hold, stig/engine/replica_hold.py); written only
  by worker ``w``;
* ``slots[w][i]``: the newest submission number of worker ``w`` that writes
  a key with ``crc32(key) % SLOTS == i``; written only by worker ``w``.

A worker numbers its promotions 1, 2, 3, … as it submits them and
*publishes* each one's keys here (:meth:`publish`) in ``submit``, before any
reply that acknowledges them can leave; the writer commits each after every
other worker's run published before it (:meth:`pending`), so a snapshot
holds a prefix of the publish order, as on one process.  A read in another worker, before it
begins its snapshot, looks up its keys (:meth:`clear_for`): a slot newer than
its worker's ``committed`` word (as this worker last looked: ``_seen``)
means a write may be in flight, and the read waits (:meth:`wait`) until
``committed`` passes it — then the LMDB commit has
returned, so the snapshot begun after sees the write.  Slots are per worker
and only ever grow, so a collision (two keys in one slot) makes a read wait
for a commit it did not need, never miss one.  A word is one aligned 8-byte
load or store: atomic on the platforms Stig runs on.

A read that must wait sleeps on its worker's eventfd (``wake``): the writer
writes to every worker's eventfd after each commit that raised a
``committed`` word (:meth:`signal`), and the waiting reads look again.  A
reader empties its eventfd *before* it looks at the words and sleeps only
if they still say wait, so a commit signalled in between is never missed
(the writer raises the word before it signals).

When a worker dies (``--workers N`` restarts it, docs/workers.md) the
writer, once it has read the worker's link to its end and committed every
run it got from it, raises its ``committed`` word past every number the dead
worker published (:meth:`release`): the runs it published but never handed
over will never commit, and reads in the other workers stop waiting for
them.  Its successor numbers its promotions on from there.

The read hold across workers (``--min-replica-acks``, :meth:`unreplicated`):
a read must not see another worker's write before N followers have its
group.  A key's slot names the newest write of each worker to it; that
write is on N followers if its number is at most ``replicated[w]``, or if
it is committed (at most ``committed[w]``) and N followers acknowledged
``committed_seq[w]`` — always computable by the reader, whether or not
worker ``w`` is busy, and a bound past the write's own group (the reader
waits at most a few groups more).  What a reader once found replicated
this way it remembers (``_known``), so later reads of older writes do
not look at the ACKs again.

Bounds: ``SLOTS`` × 8 bytes per worker (512 KiB); one eventfd per worker.
The followers' block (stig/engine/shared_replicas.py) follows the table in
the same segment, at the next page (:func:`replicas_offset`).
"""

from __future__ import annotations

import errno
import mmap
import os
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

import trio

from stig.engine import shared_replicas

#: Slots per worker (a power of two).
SLOTS = 1 << 16
#: Words per worker before the slots: committed, cleared, published,
#: committed_seq, replicated (each an array of ``workers`` words, in that order).
_HEADER = 5
_COMMITTED, _CLEARED, _PUBLISHED, _COMMITTED_SEQ, _REPLICATED = range(_HEADER)
#: :meth:`SharedInFlight.unreplicated`'s answer for a write not committed yet
#: (the same value as the read hold's ``PENDING``).
UNCOMMITTED = 1 << 64


def table_bytes(workers: int) -> int:
    """The in-flight table's size for ``workers`` workers."""
    return 8 * workers * (_HEADER + SLOTS)


def replicas_offset(workers: int) -> int:
    """Where the followers' block begins: after the table, at a page."""
    page = mmap.ALLOCATIONGRANULARITY
    return (table_bytes(workers) + page - 1) // page * page


def segment_bytes(workers: int) -> int:
    """The size of the segment for ``workers`` workers (the table, the followers' block)."""
    return replicas_offset(workers) + shared_replicas.block_bytes(workers)


def create(workers: int) -> int:
    """A new zeroed segment for ``workers`` workers: its file descriptor (inheritable)."""
    fd = os.memfd_create("stig-inflight", 0)
    os.ftruncate(fd, segment_bytes(workers))
    return fd


def create_wakes(workers: int) -> list[int]:
    """One eventfd per worker (non-blocking): the writer signals, its reads wake."""
    return [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(workers)]


def _drain(fd: int) -> None:
    try:
        os.eventfd_read(fd)
    except BlockingIOError:
        pass


class SharedInFlight:
    """One process's view of the segment; ``me``: its worker number (-1: the writer)."""

    __slots__ = (
        "_changed",
        "_known",
        "_map",
        "_seen",
        "_wakes",
        "_watching",
        "_words",
        "me",
        "waits",
        "workers",
    )

    def __init__(self, fd: int, workers: int, me: int, wakes: Sequence[int] = ()) -> None:
        """``wakes``: the eventfds, every worker's for the writer (``me`` -1),
        its own alone for a worker (none: a read waits by polling, for tests)."""
        self._map = mmap.mmap(fd, table_bytes(workers))
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
        self._wakes = list(wakes)
        #: Whether a read of this worker sleeps on the eventfd now (trio lets
        #: one task wait on a descriptor); the others wait for ``_changed``.
        self._watching = False
        self._changed = trio.Event()
        #: Per worker, the newest number this worker has seen replicated by
        #: ``--min-replica-acks`` followers (:meth:`unreplicated`).
        self._known = [0] * workers

    # -- the writer ------------------------------------------------------------

    def committed(self, worker: int) -> int:
        """Worker ``worker``'s newest finished submission number."""
        return int(self._words[worker])

    def set_committed(self, worker: int, number: int, seq: int = 0) -> None:
        """Worker ``worker``'s promotions up to ``number`` are finished, the
        last of them in the transaction of sequence number ``seq`` (0: no
        commit, a dead worker's numbers released); :meth:`signal` then
        wakes the reads waiting for them.  ``seq`` is written first: a
        reader that sees the new ``committed`` word sees it too."""
        words = self._words
        at = _COMMITTED_SEQ * self.workers + worker
        if seq > words[at]:
            words[at] = seq
        if number > words[worker]:
            words[worker] = number

    def signal(self) -> None:
        """Wake every worker's waiting reads: ``committed`` words moved."""
        for fd in self._wakes:
            try:
                os.eventfd_write(fd, 1)
            except OSError as exc:  # the counter is full: it is readable anyway
                if exc.errno != errno.EAGAIN:
                    raise

    def newest_published(self, worker: int) -> int:
        """The largest number worker ``worker`` ever wrote in the table (its
        ``published`` word, or a slot or ``cleared`` word it wrote before
        dying between the two)."""
        words = self._words
        workers = self.workers
        base = _HEADER * workers + worker * SLOTS
        return max(
            int(words[_PUBLISHED * workers + worker]),
            int(words[_CLEARED * workers + worker]),
            max(words[base : base + SLOTS]),
        )

    def release(self, worker: int) -> int:
        """Worker ``worker`` died and the writer has every run it will ever
        get from it: nothing it published is in flight any more.  Its
        ``committed`` word is raised past all it published, the reads waiting
        are woken; returns that number (its successor numbers on from it)."""
        number = self.newest_published(worker)
        self.set_committed(worker, number)
        self.signal()
        return number

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
            words[_CLEARED * self.workers + self.me] = number
        words[_PUBLISHED * self.workers + self.me] = number

    def set_replicated(self, number: int) -> None:
        """This worker's promotions up to ``number`` are on ``--min-replica-acks``
        followers (its read hold learnt it): the other workers' reads of
        them need not look at the ACKs."""
        at = _REPLICATED * self.workers + self.me
        if number > self._words[at]:
            self._words[at] = number

    def pending(self) -> tuple[tuple[int, int], ...]:
        """Before publishing a write (whatever its keys, a flush_all too):
        every other worker's newest published write not committed now,
        ``(worker, number)``, which must commit first — with it, or in an
        earlier transaction.

        So the workers' runs commit in the order they were published, as
        one process's promotions do, and a snapshot is a prefix of that
        order: one that holds a write holds every write published before it
        — every write acknowledged before its client began.  Ordering only
        the runs that share a key is not enough: a read waiting for one
        worker's write could then see a later write of the other worker,
        committed first, without an earlier write of the first that was
        acknowledged before that later write began (G-single-realtime,
        docs/workers.md, "Publish order")."""
        words = self._words
        workers = self.workers
        found: list[tuple[int, int]] = []
        for worker in range(workers):
            if worker != self.me:
                newest = int(words[_PUBLISHED * workers + worker])
                if newest > words[worker]:
                    found.append((worker, newest))
        return tuple(found)

    def settled(self, number: int) -> bool:
        """Whether this worker's promotion ``number`` is committed (the writer's word, now)."""
        return bool(self._words[self.me] >= number)

    # -- reads -----------------------------------------------------------------

    def _newest(
        self,
        worker: int,
        keys: Sequence[bytes] | None,
        own: Collection[bytes] | Mapping[bytes, object],
    ) -> int:
        """The newest number of ``worker`` a read of ``keys`` (None: any key;
        not those in ``own``) may see: the key's slots, its flush_all (only
        if some key is read from the store: a read answered wholly from the
        POV sees no other write, as on one process)."""
        words = self._words
        workers = self.workers
        if keys is None:
            return int(words[_PUBLISHED * workers + worker])
        newest = 0
        stored = not keys  # no key at all (a write of none): as before, the flush_all too
        base = _HEADER * workers + worker * SLOTS
        mask = SLOTS - 1
        crc32 = zlib.crc32
        for key in keys:
            if key in own:
                continue
            stored = True
            number = words[base + (crc32(key) & mask)]
            if number > newest:
                newest = number
        if stored:
            cleared = int(words[_CLEARED * workers + worker])
            if cleared > newest:
                newest = cleared
        return int(newest)

    def _pending(
        self, keys: Sequence[bytes] | None, own: Collection[bytes] | Mapping[bytes, object]
    ) -> list[tuple[int, int]]:
        """(worker, number) pairs a read of ``keys`` must wait for (None: any key)."""
        seen = self._seen
        pending: list[tuple[int, int]] = []
        for worker in range(self.workers):
            if worker == self.me:
                continue
            newest = self._newest(worker, keys, own)
            if newest > seen[worker]:
                pending.append((worker, newest))
        return pending

    def in_flight(self, keys: Iterable[bytes]) -> list[tuple[int, int]]:
        """The other workers' newest writes to ``keys`` not committed now,
        ``(worker, number)``: what a read must wait for if it takes these
        keys from the store (:meth:`wait_for`)."""
        words = self._words
        keys = list(keys)
        found: list[tuple[int, int]] = []
        for worker in range(self.workers):
            if worker != self.me:
                newest = self._newest(worker, keys, ())
                if newest > words[worker]:
                    found.append((worker, newest))
        return found

    def committed_all(self, pairs: Iterable[tuple[int, int]]) -> bool:
        """Whether every ``(worker, number)`` of ``pairs`` is committed now."""
        words = self._words
        return all(words[worker] >= number for worker, number in pairs)

    async def wait_for(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Wait until every ``(worker, number)`` of ``pairs`` is committed."""
        words = self._words
        for worker, number in pairs:
            while words[worker] < number:
                await self._next_signal(worker, number)

    def unreplicated(
        self,
        keys: Sequence[bytes] | None,
        own: Collection[bytes] | Mapping[bytes, object],
        acked: Callable[[], int],
    ) -> int:
        """``--min-replica-acks``: 0 when every other worker's write that a
        read of ``keys`` (None: any key; not those in ``own``) may see is on
        the followers; else the sequence number the read waits for the
        followers to acknowledge (:data:`UNCOMMITTED`: a write not committed
        yet, which a snapshot may see already).  ``acked()``: the newest group
        N followers have (called only when needed)."""
        words = self._words
        workers = self.workers
        known = self._known
        blocking = 0
        for worker in range(workers):
            if worker == self.me:
                continue
            newest = self._newest(worker, keys, own)
            if newest <= known[worker]:
                continue
            if newest <= words[_REPLICATED * workers + worker]:
                known[worker] = int(words[_REPLICATED * workers + worker])
                continue
            committed = int(words[worker])  # before its seq: the writer sets that first
            seq = int(words[_COMMITTED_SEQ * workers + worker])
            if newest > committed:
                blocking = UNCOMMITTED
            elif acked() >= seq:
                known[worker] = committed
            elif seq > blocking:
                blocking = seq
        return blocking

    def header(self) -> bytes:
        """Every worker's words before the slots, as they are now (a held
        read looks again only when they moved: stig/engine/replica_hold.py)."""
        return self._words[: _HEADER * self.workers].tobytes()

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
        await self.wait_for(pending)
        self._seen = list(words[: self.workers])
        await trio.lowlevel.checkpoint()  # a look is taken at an await, always

    async def _next_signal(self, worker: int, number: int) -> None:
        """Return once the writer has signalled a commit (or at once if
        ``committed[worker]`` has reached ``number``)."""
        words = self._words
        await self.next_signal(lambda: words[worker] >= number)

    async def next_signal(self, ready: Callable[[], bool]) -> None:
        """Return once the writer has signalled a commit, or at once if
        ``ready()`` (a look at words the writer sets before it signals:
        looked at after the eventfd is emptied, so no signal is missed).
        Any task of this worker may wait: one sleeps on the eventfd, the
        others on its wake-up (then they look again).  Also used by the
        followers' senders (stig/engine/replicas.py, ``wait_commit``)."""
        if not self._wakes:
            await trio.sleep(0.0005)  # no eventfd (a table opened by hand)
            return
        if self._watching:
            await self._changed.wait()
            return
        fd = self._wakes[0]
        self._watching = True
        try:
            _drain(fd)  # before the look: a signal after it wakes the wait below
            if not ready():
                await trio.lowlevel.wait_readable(fd)
        finally:
            self._watching = False
            changed, self._changed = self._changed, trio.Event()
            changed.set()
