"""``stats detail``: per-prefix counts of gets, hits, sets and deletes.

memcached's detail statistics: off until ``stats detail on``; a key's prefix
is what comes before its first ``:`` (keys without one are not counted);
``stats detail dump`` lists ``PREFIX <p> get <n> hit <n> set <n> del <n>``
lines (in the order the prefixes were first seen), then ``END``.  As in
memcached, the text and binary get, storage and delete commands are counted
(touch, incr/decr and the meta commands are not), and ``stats reset``
forgets every prefix.

One table for the whole server, so that ``--workers N`` answers as one
process does (docs/workers.md, "stats detail"): the switch, the prefixes and
every worker's counters live in one buffer, with ``--workers N`` in the
shared memfd (after the shared region), else in an anonymous map of the same
layout.  Bound, the same on one process and on N: at most
:data:`MAX_PREFIXES` prefixes and :data:`MAX_PREFIX_BYTES` bytes of them,
server-wide; a key whose prefix does not fit is not counted (counted in
``stig_detail_uncounted`` instead).  The buffer is fixed at start:
:func:`table_bytes` (about 1.5 MiB plus 2 MiB per worker of address space;
pages are touched only as prefixes come).

Layout, in 8-byte words (``q``):

* header: the switch, the epoch (``stats reset`` raises it), the number of
  prefixes and their bytes;
* directory: one word per prefix, ``offset << 32 | length`` into the arena;
* arena: the prefixes' bytes, one after the other;
* per worker (written only by that worker): the epoch its counters belong
  to, how many prefixes it may have counted, the keys it left uncounted,
  then four counters per prefix.

A worker adds a prefix under the cross-process lock (only the first time it
sees that prefix: it remembers the directory's entries it has read) and
bumps its own counters without one.  ``stats reset`` empties the directory
and raises the epoch; each worker drops its counters when it next sees the
new epoch, and until then a dump skips them (so a count in flight during a
reset never lands on a prefix the reset made anew).
"""

from __future__ import annotations

import mmap
import operator
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

#: memcached's bound on the counters' memory: prefixes, server-wide.
MAX_PREFIXES = 1 << 16
#: Their bytes, server-wide (16 bytes a prefix on average at the full count).
MAX_PREFIX_BYTES = 1 << 20
DELIMITER = b":"

# The header's words.
_ENABLED, _EPOCH, _COUNT, _BYTES = 0, 1, 2, 3
_HEADER_WORDS = 8
_DIRECTORY = _HEADER_WORDS
_ARENA_BYTES = (_DIRECTORY + MAX_PREFIXES) * 8
# A worker's words: its header, then 4 counters per prefix.
_SEEN, _TOUCHED, _UNCOUNTED = 0, 1, 2
_WORKER_HEADER = 8
_GETS, _HITS, _SETS, _DELETES = 0, 1, 2, 3
_WORKER_WORDS = _WORKER_HEADER + 4 * MAX_PREFIXES
_WORKERS_AT = (_ARENA_BYTES + MAX_PREFIX_BYTES) // 8

Lock = Callable[[], AbstractContextManager[None]]


def table_bytes(workers: int) -> int:
    """The table's fixed size for ``workers`` workers (1: one process)."""
    return (_WORKERS_AT + _WORKER_WORDS * workers) * 8


class PrefixStats:
    """The counters, by prefix, over one table (:func:`table_bytes`).

    ``workers``: how many write counters in it; ``me``: this process's
    number; ``lock``: the cross-process lock (one process: none needed)."""

    __slots__ = (
        "_bytes",
        "_epoch",
        "_known",
        "_lock",
        "_mine",
        "_mine_bytes",
        "_synced",
        "_words",
        "workers",
    )

    def __init__(
        self, buffer: mmap.mmap, workers: int = 1, me: int = 0, lock: Lock = nullcontext
    ) -> None:
        self._words = memoryview(buffer).cast("q")
        self._bytes = memoryview(buffer)
        self.workers = workers
        at = _WORKERS_AT + _WORKER_WORDS * me
        self._mine = self._words[at : at + _WORKER_WORDS]
        self._mine_bytes = self._bytes[at * 8 : (at + _WORKER_WORDS) * 8]
        self._lock = lock
        #: prefix -> the index (in ``_mine``) of its first counter, for the
        #: directory's first ``_synced`` entries of epoch ``_epoch``.
        self._known: dict[bytes, int] = {}
        self._synced = 0
        self._epoch = -1  # unknown: renewed at first use

    @classmethod
    def local(cls) -> PrefixStats:
        """One process's table, in an anonymous map."""
        return cls(mmap.mmap(-1, table_bytes(1)))

    @property
    def enabled(self) -> bool:
        """``stats detail on``: one switch for every worker."""
        return self._words[_ENABLED] != 0

    @enabled.setter
    def enabled(self, on: bool) -> None:
        self._words[_ENABLED] = int(on)

    # -- counting (the hot path while detail is on) ----------------------------

    def _index(self, key: bytes) -> int:
        """Where ``key``'s prefix's counters are in ``_mine``; -1: not counted."""
        prefix, found, _ = key.partition(DELIMITER)
        if not found:
            return -1
        if self._words[_EPOCH] != self._epoch:
            self._renew()
        at = self._known.get(prefix)
        return self._add(prefix) if at is None else at

    def record_gets(self, keys: Sequence[bytes], hits: Sequence[bool]) -> None:
        """:meth:`_index` inlined: a multi-get counts each of its keys."""
        if self._words[_EPOCH] != self._epoch:
            self._renew()
        mine, known = self._mine, self._known
        for key, hit in zip(keys, hits):  # noqa: B905 (hot path)
            prefix, found, _ = key.partition(DELIMITER)
            if not found:
                continue
            at = known.get(prefix)
            if at is None:
                at = self._add(prefix)  # may renew: ``known`` is cleared, not replaced
                if at < 0:
                    continue
            mine[at + _GETS] += 1
            if hit:
                mine[at + _HITS] += 1

    def record_set(self, key: bytes) -> None:
        at = self._index(key)
        if at >= 0:
            self._mine[at + _SETS] += 1

    def record_delete(self, key: bytes) -> None:
        at = self._index(key)
        if at >= 0:
            self._mine[at + _DELETES] += 1

    # -- the rare path: a prefix this process has not seen ---------------------

    def _renew(self) -> None:
        """The epoch moved (``stats reset``), or this process just started:
        forget the directory read so far; counters of an older epoch are
        zeroed (a worker restarted in a slot keeps its predecessor's)."""
        epoch = self._words[_EPOCH]
        mine = self._mine
        if mine[_SEEN] != epoch:
            start, end = _WORKER_HEADER * 8, (_WORKER_HEADER + 4 * mine[_TOUCHED]) * 8
            self._mine_bytes[start:end] = bytes(end - start)
            mine[_TOUCHED] = mine[_UNCOUNTED] = 0
            mine[_SEEN] = epoch
        self._known.clear()
        self._synced = 0
        self._epoch = epoch

    def _sync(self) -> None:
        """Read the directory's entries added since the last look."""
        words, buffer, known = self._words, self._bytes, self._known
        count = words[_COUNT]
        for index in range(self._synced, count):
            entry = words[_DIRECTORY + index]
            start = _ARENA_BYTES + (entry >> 32)
            known[bytes(buffer[start : start + (entry & 0xFFFFFFFF)])] = _WORKER_HEADER + 4 * index
        self._synced = count
        if count > self._mine[_TOUCHED]:
            self._mine[_TOUCHED] = count

    def _add(self, prefix: bytes) -> int:
        """``prefix``'s counters, adding it to the directory if it fits."""
        words = self._words
        if words[_COUNT] == self._synced and not _fits(words, len(prefix)):
            self._mine[_UNCOUNTED] += 1  # full, and no new prefix to read
            return -1
        with self._lock():
            if words[_EPOCH] != self._epoch:
                self._renew()
            self._sync()
            at = self._known.get(prefix)
            if at is None:
                if not _fits(words, len(prefix)):
                    self._mine[_UNCOUNTED] += 1
                    return -1
                count, used = words[_COUNT], words[_BYTES]
                start = _ARENA_BYTES + used
                self._bytes[start : start + len(prefix)] = prefix
                words[_DIRECTORY + count] = used << 32 | len(prefix)
                words[_BYTES] = used + len(prefix)
                words[_COUNT] = count + 1  # last: a reader sees a whole entry
                self._sync()
                at = self._known[prefix]
        return at

    # -- stats reset, dump and the figures of ``stats`` --------------------------

    def clear(self) -> None:
        """``stats reset``: every worker forgets every prefix."""
        words = self._words
        with self._lock():
            words[_COUNT] = words[_BYTES] = 0
            words[_EPOCH] += 1
        self._renew()

    def _live(self) -> list[memoryview]:
        """The workers' counter blocks of the current epoch (a worker that has
        not seen the last reset yet has nothing to show)."""
        words, epoch = self._words, self._words[_EPOCH]
        blocks = []
        for worker in range(self.workers):
            at = _WORKERS_AT + _WORKER_WORDS * worker
            if words[at + _SEEN] == epoch:
                blocks.append(words[at : at + _WORKER_WORDS])
        return blocks

    def figures(self) -> tuple[int, int, int]:
        """``stats``: the prefixes counted, their bytes, and the keys left
        uncounted because their prefix did not fit (every worker's)."""
        words = self._words
        uncounted = sum(block[_UNCOUNTED] for block in self._live())
        return words[_COUNT], words[_BYTES], uncounted

    def dump(self) -> bytes:
        """memcached's dump, every worker's counts summed: one line per prefix
        (in the order first seen), then END.  The directory is copied under
        the lock (no prefix is added or reset meanwhile), the lines are made
        after it: a worker meeting a new prefix waits for the copy only."""
        words = self._words
        with self._lock():
            blocks = self._live()
            count = words[_COUNT]
            directory = words[_DIRECTORY : _DIRECTORY + count].tolist()
            arena = bytes(self._bytes[_ARENA_BYTES : _ARENA_BYTES + words[_BYTES]])
        end = _WORKER_HEADER + 4 * count
        sums = [0] * (4 * count)
        for block in blocks:
            sums = list(map(operator.add, sums, block[_WORKER_HEADER:end].tolist()))
        line = b"PREFIX %b get %d hit %d set %d del %d\r\n"
        lines = [
            line % (arena[entry >> 32 : (entry >> 32) + (entry & 0xFFFFFFFF)], *sums[at : at + 4])
            for at, entry in zip(range(0, 4 * count, 4), directory, strict=True)
        ]
        return b"".join(lines) + b"END\r\n"


def _fits(words: memoryview, length: int) -> bool:
    """Whether one more prefix of ``length`` bytes is within the bound."""
    return words[_COUNT] < MAX_PREFIXES and words[_BYTES] + length <= MAX_PREFIX_BYTES
