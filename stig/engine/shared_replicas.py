"""Replication state every worker shares (``--workers N`` as a primary, docs/replication.md).

A follower's ``stig_replicate`` connection lands on any worker; that
worker streams to it (stig/replication/sender.py) and hears its ``ACK``
lines.  ``--min-replica-acks`` must hold the replies of **every** worker
until N followers have the group, and ``stats`` on any worker shows every
follower, so what the followers acknowledged lives here, in shared memory,
as unsigned 64-bit words:

* ``seq``: the newest committed sequence number, written by the writer
  process after each commit (a worker's senders learn of the other
  workers' groups from it);
* per worker, :data:`SLOTS_PER_WORKER` follower slots of
  :data:`SLOT_WORDS` words — ``live`` (1 while a follower streams from it),
  ``acked`` (its last ``ACK``), two spare — written only by that worker
  (and cleared by the writer when the worker's link ends: it died, its
  streams with it), read by all;
* per worker, :data:`COUNTERS` words of counters for ``stats``
  (``replication_ack_timeouts``, ``replication_snapshots_sent``), written
  only by that worker and summed by whoever answers ``stats``, the
  role change it has adopted (:data:`ROLE_SEEN`), and how many times it
  was killed as hung (:data:`KILLED_HUNG`, ``stig_workers_killed_hung``:
  written by the writer, stig/engine/hung_workers.py);
* a follower with workers (docs/workers.md): the role words the writer
  sets when it begins an epoch (``stig_promote``) or stores a fence —
  ``role_gen`` (one more at each change), ``promoted_epoch`` and
  ``promoting_from`` (set while it begins one) — and, from
  byte :data:`FOLLOWER_OFFSET`, the stream's progress as the worker
  holding it publishes it (stig/engine/shared_follower.py);
* the writes-refused words (stig/engine/shared_refusal.py): the writer
  sets them when a commit fails for a cause that refuses writes and when
  a probe commits — ``refused_gen`` (one more at each change), the cause's
  code (0: writes accepted), since when (``time.monotonic`` in µs: one
  clock for every process of the machine) and the largest value of the
  failed runs — and every worker adopts them.

Slots are per worker, so claiming one needs no lock; a worker with
:data:`SLOTS_PER_WORKER` followers refuses the next (a follower
reconnects, and may land on another worker).  A word is one aligned
8-byte load or store: atomic on the platforms Stig runs on.  The block
lives in the in-flight table's memfd (stig/engine/shared_inflight.py), at
the page after the table, so the supervisor makes, and every process
inherits, one segment.

Waiting: a sender waiting for a new group sleeps on its worker's eventfd,
which the writer signals after each commit, once ``seq`` is set
(``SharedInFlight.next_signal``).  A reply (or a held read) waiting for
ACKs heard by another worker looks at the slots again every
:data:`POLL_SECONDS` while it waits (a bounded poll; nothing polls while
nothing waits).  TODO: an eventfd per worker signalled on each ``ACK``.

Bound: 512 bytes plus ``(SLOTS_PER_WORKER × SLOT_WORDS + COUNTERS) × 8``
(288) bytes per worker, plus :data:`COMMIT_ERROR_BYTES` (320: the last
commit failure), fixed at start.
"""

from __future__ import annotations

import mmap

#: Followers one worker can stream to at once.
SLOTS_PER_WORKER = 8
#: Words per follower slot: live, acked, and two spare.
SLOT_WORDS = 4
_HEADER_WORDS = 64  # seq, the role words, the refusal's words, the follower's progress
_SEQ, _ROLE_GEN, _PROMOTED_EPOCH, _PROMOTING_FROM = 0, 1, 2, 3
#: The writes-refused words (stig/engine/shared_refusal.py): where they begin
#: in the header, and how many (generation, cause, since, largest).
REFUSAL_WORD, REFUSAL_WORDS = 4, 4
#: Where the follower's progress begins in the block, and its size (bytes).
FOLLOWER_OFFSET = 64
FOLLOWER_BYTES = _HEADER_WORDS * 8 - FOLLOWER_OFFSET
_LIVE, _ACKED = 0, 1
#: Counter words per worker, and which is which.
COUNTERS = 4
ACK_TIMEOUTS, SNAPSHOTS_SENT, ROLE_SEEN, KILLED_HUNG = 0, 1, 2, 3
#: How often a wait for ACKs heard by another worker looks again (a reply,
#: a held read; a sender without an eventfd for commits).
POLL_SECONDS = 0.001


#: Bytes at the block's end for the last commit failure, as the writer
#: tells every worker (stig/engine/shared_refusal.py).
COMMIT_ERROR_BYTES = 320


def block_bytes(workers: int) -> int:
    """The block's size for ``workers`` workers."""
    return _words_bytes(workers) + COMMIT_ERROR_BYTES


def _words_bytes(workers: int) -> int:
    return 8 * (_HEADER_WORDS + workers * (SLOTS_PER_WORKER * SLOT_WORDS + COUNTERS))


class SharedReplicas:
    """One process's view of the block; ``me``: its worker number (-1: the writer).

    ``fd`` is the shared segment, ``offset`` where the block begins in it
    (a multiple of the page size: stig/engine/shared_inflight.py)."""

    __slots__ = ("_counters", "_map", "_words", "me", "workers")

    def __init__(self, fd: int, workers: int, me: int, offset: int) -> None:
        self._map = mmap.mmap(fd, block_bytes(workers), offset=offset)
        self._words = memoryview(self._map)[: _words_bytes(workers)].cast("Q")
        self.workers = workers
        self.me = me
        self._counters = _HEADER_WORDS + workers * SLOTS_PER_WORKER * SLOT_WORDS

    # -- the writer --------------------------------------------------------------

    @property
    def seq(self) -> int:
        """The newest committed sequence number, as the writer last wrote it."""
        return int(self._words[_SEQ])

    def set_seq(self, seq: int) -> None:
        """A group committed (the writer, after each commit)."""
        if seq > self._words[_SEQ]:
            self._words[_SEQ] = seq

    # -- the role (a follower with workers) ----------------------------------------

    @property
    def role_gen(self) -> int:
        """How many times the writer promoted or fenced this server (this group)."""
        return int(self._words[_ROLE_GEN])

    @property
    def promoted_epoch(self) -> int:
        """The epoch the writer began on ``stig_promote`` (0: not promoted)."""
        return int(self._words[_PROMOTED_EPOCH])

    @property
    def promoting_from(self) -> int:
        """The epoch the writer is beginning a new one after (0: none)."""
        return int(self._words[_PROMOTING_FROM])

    def promoting(self, from_epoch: int) -> None:
        """The writer begins an epoch after ``from_epoch`` (0: it is done, or
        failed): if it dies before :meth:`role_changed`, the supervisor
        tells from LMDB whether the new epoch was stored."""
        self._words[_PROMOTING_FROM] = from_epoch

    def role_changed(self, promoted_epoch: int) -> None:
        """The writer began ``promoted_epoch`` (0: it stored a fence)."""
        if promoted_epoch:
            self._words[_PROMOTED_EPOCH] = promoted_epoch
        self._words[_ROLE_GEN] += 1  # last: a worker woken by it sees the epoch

    def saw_role(self, gen: int) -> None:
        """This worker has adopted role change ``gen``."""
        self._words[self._counters + self.me * COUNTERS + ROLE_SEEN] = gen

    def role_seen(self, worker: int) -> int:
        return int(self._words[self._counters + worker * COUNTERS + ROLE_SEEN])

    def refusal_words(self) -> memoryview:
        """The writes-refused words (stig/engine/shared_refusal.py), as 8-byte words."""
        return self._words[REFUSAL_WORD : REFUSAL_WORD + REFUSAL_WORDS]

    def commit_error_bytes(self) -> memoryview:
        """The last commit failure's area (stig/engine/shared_refusal.py)."""
        return memoryview(self._map)[-COMMIT_ERROR_BYTES:]

    def follower_bytes(self) -> memoryview:
        """The follower's progress block (stig/engine/shared_follower.py)."""
        return memoryview(self._map)[FOLLOWER_OFFSET : FOLLOWER_OFFSET + FOLLOWER_BYTES]

    # -- a worker's followers ----------------------------------------------------

    def _base(self, slot: int) -> int:
        return _HEADER_WORDS + slot * SLOT_WORDS

    def clear_mine(self) -> None:
        """This worker starts: none of its slots is live (a predecessor's are not)."""
        self.clear_worker(self.me)

    def clear_worker(self, worker: int) -> None:
        """None of worker ``worker``'s slots is live: it started, or it died
        (the writer, at its link's end: its followers' streams died with it,
        and one that reconnects on another worker must not count twice
        before a successor starts)."""
        for index in range(SLOTS_PER_WORKER):
            self._words[self._base(worker * SLOTS_PER_WORKER + index) + _LIVE] = 0

    def claim(self) -> int | None:
        """A free slot of this worker's, now live with nothing acknowledged;
        None when all are taken."""
        words = self._words
        for index in range(SLOTS_PER_WORKER):
            base = self._base(self.me * SLOTS_PER_WORKER + index)
            if not words[base + _LIVE]:
                words[base + _ACKED] = 0
                words[base + _LIVE] = 1  # last: a reader never sees an old ACK live
                return self.me * SLOTS_PER_WORKER + index
        return None

    def set_acked(self, slot: int, seq: int) -> None:
        self._words[self._base(slot) + _ACKED] = seq

    def release(self, slot: int) -> None:
        self._words[self._base(slot) + _LIVE] = 0

    def count(self, counter: int) -> None:
        """Add one to this worker's ``counter`` (:data:`ACK_TIMEOUTS`, …)."""
        self._words[self._counters + self.me * COUNTERS + counter] += 1

    def count_killed_hung(self, worker: int) -> None:
        """The writer: worker ``worker``, killed as hung, has ended."""
        self._words[self._counters + worker * COUNTERS + KILLED_HUNG] += 1

    # -- anyone --------------------------------------------------------------------

    def total(self, counter: int) -> int:
        """``counter`` summed over every worker."""
        words = self._words
        base = self._counters + counter
        return sum(int(words[base + worker * COUNTERS]) for worker in range(self.workers))

    def acked(self) -> list[int]:
        """Every live follower's acknowledged group, on every worker, in slot order."""
        words = self._words
        seqs: list[int] = []
        for slot in range(self.workers * SLOTS_PER_WORKER):
            base = self._base(slot)
            if words[base + _LIVE]:
                seqs.append(int(words[base + _ACKED]))
        return seqs
