"""``--min-replica-acks N`` for readers: no session reads a write before N followers have it.

The replies that acknowledge a write wait for N followers' ``ACK``
(stig/core/replies.py); without more, a read on another connection could
still see the write as soon as the primary committed it.  If the primary
and its followers then die and a follower that never got it is promoted,
a write someone *read* is gone: the history across that failover has
cycles (docs/replication.md, "What a failover loses").  So under
``--min-replica-acks`` a key written by a group stays held for readers
until N followers have acknowledged that group's sequence number, and a
read of it waits — at most ``--replica-ack-timeout-ms``, then it fails
with :class:`~stig.engine.errors.NotReplicated` (``SERVER_ERROR`` naming
the missing acks) instead of answering with the value.

:class:`ReplicaHold` keeps key → the sequence number of the newest group
that writes it and that N followers have not acknowledged yet
(:data:`PENDING` while that group is with the commit thread: from the
moment a group is handed over, its commit may land in LMDB before the event
loop hears of it, so a snapshot may already see it).  The promoter tells it
of each group handed over (:meth:`ReplicaHold.dispatched`) and finished
(:meth:`ReplicaHold.finished`, with the store's sequence number then: the
group's own, or later — never earlier, so the hold is never too short); the
ack hub of each ACK (stig/engine/replicas.py, ``on_ack``), upon which
entries N followers have are dropped.  Sequence numbers only grow and a
follower's ACK covers every group up to it, so "replicated" is one number.

Bounded: a read waits at most ``--replica-ack-timeout-ms``, and never past
that long after the write it waits for was committed — so once a write has
gone unacknowledged that long (the writer's connection has failed by then),
its readers fail at once instead of each waiting the bound again (a binary
run of quiet gets, a pipeline of gets).  The table holds one entry per key
the followers lack, plus the groups' key lists, compacted when they
outgrow it.

A read checks, at the moment its snapshot is taken (no await between),
that none of its keys is held; the in-flight rule of
stig/engine/visibility.py (wait for writes acknowledged before the read)
comes first, unchanged.  A multi-get checks all its keys before its one
snapshot.  A read of keys not known yet (``None``) or a key listing waits
until nothing is held.  The session's own uncommitted writes (its POV
overlay) are never held: it reads them from its POV, as always.  A key
written by every group commit may keep its readers waiting up to the bound:
its newest value is never on the followers yet.

With ``--workers N`` each worker holds the keys its own groups wrote, as
above, and learns of every worker's followers' ACKs from the shared slots
(stig/engine/shared_replicas.py: at each group it finishes, and every
:data:`~stig.engine.shared_replicas.POLL_SECONDS` while a read waits).  The
**other** workers' writes a read may see are found in the shared in-flight
table (stig/engine/shared_inflight.py, :meth:`SharedInFlight.unreplicated`):
a key's newest write by worker ``w`` is held unless its number is at most
``replicated[w]`` — the newest of its promotions worker ``w``'s own hold
saw acknowledged (:meth:`ReplicaHold.finished` keeps each group's newest
number beside its sequence number, and publishes it as the followers ack) —
or it is committed and N followers acknowledged ``committed_seq[w]``, the
group that last committed one of ``w``'s promotions (a bound at or past
the write's own group, which the reader can always compute).  A write of
another worker not committed yet is held as :data:`PENDING` is here: a
snapshot may see it already.

Without ``--min-replica-acks`` there is no hold: the engine uses the
in-flight registry alone, and nothing here runs.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Protocol

import trio

from stig.engine.errors import NotReplicated
from stig.engine.replicas import ReplicaHub
from stig.engine.shared_inflight import SharedInFlight
from stig.engine.shared_replicas import POLL_SECONDS
from stig.engine.visibility import InFlight

#: A group handed to the commit thread and not finished yet: its sequence
#: number is not known, and it may already be committed.
PENDING = 1 << 64

#: Key references in the groups' lists tolerated beyond twice the keys held
#: before they are compacted (a key rewritten by every group).
_COMPACT_SLACK = 4096
#: Keys held one by one at most: past this many, every key is held through
#: the newest finished group instead (reads of any key wait for the
#: followers, as after a restart), so the hold's memory stays bounded while
#: followers are away and distinct keys keep being written (the hostile
#: review saw 300,000 keys and +84 MB with the follower gone).
MAX_KEYS_HELD = 65_536
#: Finished groups whose newest submission number is kept (``--workers N``)
#: until N followers have them; past this many the oldest is forgotten: the
#: other workers then wait for a later group's ACK (their bound, not their
#: promise), and the memory stays bounded while followers are away.
MAX_GROUPS_NUMBERED = 4096


def _now() -> float:
    """The trio clock; outside a trio run (a tool committing synchronously,
    where nobody reads meanwhile) infinity: no reader's bound starts then."""
    try:
        return float(trio.current_time())
    except RuntimeError:
        return math.inf


class Written(Protocol):
    """What the hold needs of a promotion (:class:`stig.engine.promoter.Promotion` is one)."""

    @property
    def key_seqs(self) -> Collection[bytes]:
        """The keys it writes."""
        ...

    @property
    def clears_all(self) -> bool:
        """Whether it holds a flush_all: every key is written."""
        ...

    @property
    def number(self) -> int:
        """Its submission number in the shared in-flight table (``--workers N``; else 0)."""
        ...


class ReplicaHold:
    """Keys whose newest write N followers have not acknowledged; see the module docstring."""

    __slots__ = (
        "_changed",
        "_count",
        "_everything",
        "_groups",
        "_held",
        "_hub",
        "_in_flight",
        "_numbered",
        "_refs",
        "_since",
        "_table",
        "_timeout",
        "_waiting",
        "collapses",
        "replicated",
        "timeouts",
        "waits",
    )

    def __init__(
        self,
        in_flight: InFlight,
        hub: ReplicaHub,
        count: int,
        timeout: float,
        table: SharedInFlight | None = None,
    ) -> None:
        self._in_flight = in_flight
        #: The other workers' writes and this worker's ``replicated`` word
        #: (``--workers N``); None: one process.
        self._table = table
        #: (seq, the newest submission number of its promotions) of the
        #: finished groups not yet on N followers, oldest first (``--workers N``).
        self._numbered: deque[tuple[int, int]] = deque()
        self._hub = hub
        self._count = count  #: --min-replica-acks
        self._timeout = timeout  #: --replica-ack-timeout-ms, in seconds
        #: key -> the newest group writing it not yet on N followers (PENDING:
        #: with the commit thread).
        self._held: dict[bytes, int] = {}
        #: The finished groups not yet on N followers, oldest first: (seq,
        #: the key collections of its promotions), to drop their keys later.
        self._groups: deque[tuple[int, list[Collection[bytes]]]] = deque()
        self._refs = 0  # the keys in those lists (a key may repeat)
        #: seq -> when it finished (trio clock): its readers give up the
        #: bound after that.
        self._since: dict[int, float] = {}
        #: The newest flush_all not yet on N followers (0: none; PENDING).
        self._everything = 0
        #: The newest group N followers have on disk (only grows: a group on
        #: N disks stays there when a follower disconnects).
        self.replicated = 0
        self._changed = trio.Event()
        self._waiting = 0  # reads waiting on it: no new Event per group without one
        #: Reads that waited here, and those that gave up (``stats``).
        self.waits = 0
        self.timeouts = 0
        #: Times more than MAX_KEYS_HELD keys made it hold every key (``stats``).
        self.collapses = 0
        hub.on_ack = self._acked

    def held_through(self, seq: int) -> None:
        """At start: the groups up to ``seq`` were committed before this
        process, and which of them N followers have is not known (the hold
        lived in the process that died), so every key is held until N
        followers acknowledge ``seq`` (a follower that resumes counts as
        acknowledging where it resumes: stig/replication/sender.py)."""
        if seq > self.replicated:
            self._everything = max(self._everything, seq)

    # -- the promoter's side ------------------------------------------------------

    def dispatched(self, promotions: Iterable[Written]) -> None:
        """A group is handed to the commit thread: from now on its commit may
        be visible to a snapshot, so its keys are held until it finishes."""
        held = self._held
        for promotion in promotions:
            held.update(dict.fromkeys(promotion.key_seqs, PENDING))
            if promotion.clears_all:
                self._everything = PENDING

    def finished(self, promotions: Sequence[Written], seq: int) -> None:
        """Promotions finished (committed or failed) with the store at group
        ``seq``: their keys are held until N followers have ``seq``."""
        keys = [promotion.key_seqs for promotion in promotions]
        if self._table is not None and promotions:
            numbered = self._numbered
            numbered.append((seq, max(promotion.number for promotion in promotions)))
            if len(numbered) > MAX_GROUPS_NUMBERED:
                numbered.popleft()
        held = self._held
        for written in keys:
            held.update(dict.fromkeys(written, seq))
            self._refs += len(written)
        if any(promotion.clears_all for promotion in promotions):
            self._everything = seq
        self._groups.append((seq, keys))
        self._since.setdefault(seq, _now())
        if self._hub.shared is not None:
            # --workers N: ACKs heard by other workers call no on_ack here.
            self._acked()
        if seq <= self.replicated:  # only if a follower acked ahead of the loop
            self._drop(self.replicated)
        elif len(held) > MAX_KEYS_HELD:
            self._hold_everything_through(seq)
        elif self._refs > 2 * len(held) + _COMPACT_SLACK:
            self._compact()
        self._wake()

    def _hold_everything_through(self, seq: int) -> None:
        """Too many keys to hold one by one: hold every key until N followers
        have ``seq`` (a flush_all still with the commit thread holds them
        already, and its group comes later)."""
        if self._everything != PENDING:
            self._everything = max(self._everything, seq)
        self._held = {key: at for key, at in self._held.items() if at == PENDING}
        self.collapses += 1
        self._compact()

    def _acked(self) -> None:
        """The followers acknowledged more (the hub's ``on_ack``)."""
        replicated = self._hub.acked_by(self._count)
        if replicated > self.replicated:
            self.replicated = replicated
            self._drop(replicated)
            self._wake()

    def _drop(self, replicated: int) -> None:
        """Forget the groups N followers have: their keys are readable."""
        numbered = self._numbered
        if numbered and numbered[0][0] <= replicated:
            newest = 0
            while numbered and numbered[0][0] <= replicated:
                newest = numbered.popleft()[1]
            assert self._table is not None
            self._table.set_replicated(newest)
        groups = self._groups
        held = self._held
        since = self._since
        while groups and groups[0][0] <= replicated:
            seq, keys = groups.popleft()
            since.pop(seq, None)
            for written in keys:
                self._refs -= len(written)
                for key in written:
                    if held.get(key) == seq:
                        del held[key]
        if self._everything <= replicated:
            self._everything = 0

    def _compact(self) -> None:
        """Rebuild the groups' key lists from the keys held: one entry per key."""
        by_seq: dict[int, list[bytes]] = {}
        for key, seq in self._held.items():
            if seq != PENDING:
                by_seq.setdefault(seq, []).append(key)
        since = self._since
        everything = self._everything
        if everything and everything != PENDING:
            by_seq.setdefault(everything, [])
        self._groups = deque((seq, [by_seq[seq]]) for seq in sorted(by_seq))
        self._since = {seq: since[seq] for seq in by_seq if seq in since}
        self._refs = sum(len(keys) for keys in by_seq.values())

    def _wake(self) -> None:
        if self._waiting:
            self._changed.set()
            self._changed = trio.Event()

    # -- the readers' side --------------------------------------------------------

    @property
    def keys_held(self) -> int:
        """Keys held (``stats``)."""
        return len(self._held)

    def clear_for(
        self, keys: Sequence[bytes] | None, own: Collection[bytes] | Mapping[bytes, object] = ()
    ) -> bool:
        """True when a read of ``keys`` (None: any key) needs no wait: no write
        in flight to them (:meth:`InFlight.clear_for`) and none held here."""
        return self._in_flight.clear_for(keys, own) and self._readable(keys, own)

    def _acked_now(self) -> int:
        """The newest group N followers have, as the shared slots say now."""
        return self._hub.acked_by(self._count)

    def _readable(
        self, keys: Sequence[bytes] | None, own: Collection[bytes] | Mapping[bytes, object]
    ) -> bool:
        """Whether no key of ``keys`` (but ``own``) is held, here or by
        another worker's write.  (Every entry here is one the followers
        lack: those they have are dropped at their ACK.)"""
        table = self._table
        if table is not None and table.unreplicated(keys, own, self._acked_now):
            return False
        held = self._held
        if not held and not self._everything:
            return True
        if keys is None:
            return False
        if self._everything:
            return all(key in own for key in keys)
        return all(key in own or key not in held for key in keys)

    def _blocking_seq(
        self, keys: Sequence[bytes] | None, own: Collection[bytes] | Mapping[bytes, object]
    ) -> int:
        """The newest held group a read of ``keys`` would see (0: none)."""
        held = self._held
        everything = self._everything
        table = self._table
        newest = 0 if table is None else table.unreplicated(keys, own, self._acked_now)
        if not held and not everything:
            return newest
        if keys is None:
            return max(newest, everything, max(held.values(), default=0))
        for key in keys:
            if key in own:
                continue
            newest = max(newest, everything, held.get(key, 0))
        return newest

    async def wait(
        self, keys: Sequence[bytes] | None, own: Collection[bytes] | Mapping[bytes, object] = ()
    ) -> None:
        """Wait for the writes in flight to ``keys`` (as :meth:`InFlight.wait`),
        then until none of them is held (nor, for a key that leaves the
        session's POV meanwhile, unfinished: :meth:`InFlight.left_pov_clear`).
        Returns with no await after the last check: the caller's snapshot,
        taken next, sees no held write.
        Raises :class:`NotReplicated` after ``--replica-ack-timeout-ms``."""
        in_flight = self._in_flight
        marks = in_flight.pov_marks(keys, own)
        await in_flight.wait(keys, own, marks)
        shared = self._hub.shared is not None
        if shared:
            # --workers N: an ACK another worker heard calls no on_ack here;
            # one heard before this read came (a follower that resumed on
            # another worker of a restarted primary) is taken now.
            self._acked()
        if self._readable(keys, own):
            return
        self.waits += 1
        give_up = trio.current_time() + self._timeout
        self._waiting += 1
        look = self._look()
        try:
            # Not past the bound after the write it waits for was committed.
            seq = 0 if keys is None else self._blocking_seq(keys, own)
            deadline = min(give_up, self._since.get(seq, give_up) + self._timeout)
            while True:
                # --workers N: the ACKs other workers hear are looked at again
                # every POLL_SECONDS (stig/engine/shared_replicas.py).
                wake = trio.current_time() + POLL_SECONDS if shared else deadline
                woken = False
                with trio.move_on_at(min(deadline, wake)):
                    await self._changed.wait()
                    woken = True
                if shared:
                    # What this drops counts as a change even when the ACK
                    # came before ``look`` was taken (so ``look`` shows none).
                    replicated = self.replicated
                    self._acked()
                    woken = woken or self.replicated != replicated
                # Its keys are looked at again only if something they depend
                # on moved: a poll that finds nothing new costs no pass over
                # them (a held read of thousands of keys, every millisecond).
                now = self._look()
                if woken or now != look or trio.current_time() >= deadline:
                    look = now
                    # A key whose own write committed meanwhile is read from the
                    # store: the writes to it in flight when the read began too.
                    if self._readable(keys, own) and in_flight.left_pov_clear(marks, own):
                        return
                    seq = 0 if keys is None else self._blocking_seq(keys, own)
                    deadline = min(give_up, self._since.get(seq, give_up) + self._timeout)
                if trio.current_time() >= deadline:
                    break
        finally:
            self._waiting -= 1
        self.timeouts += 1
        raise NotReplicated(self._words(self._blocking_seq(keys, own), keys is None))

    def _look(self) -> tuple[int, bytes]:
        """What a held read's answer depends on besides this worker's own
        events (which set ``_changed``): the followers' ACKs and, with
        workers, the other workers' words in the shared table (their slots
        only grow: a newer write makes no read readable)."""
        table = self._table
        return self._acked_now(), b"" if table is None else table.header()

    def _words(self, seq: int, any_key: bool = False) -> str:
        """Why a read gave up: the acks it was missing."""
        ms = f"{self._timeout * 1000:g}"
        if any_key:
            # Not one write's fault: something was held all along.
            return (
                f"its keys were still arriving, so it waited for every write to reach "
                f"--min-replica-acks {self._count} followers, and some write was always "
                f"short of them for {ms} ms; nothing was read"
            )
        if seq >= PENDING:
            return f"a write this read would see was not committed within {ms} ms; nothing was read"
        return (
            f"only {self._hub.acks_for(seq)} of --min-replica-acks {self._count} followers "
            f"acknowledged within {ms} ms a write this read would see; nothing was read"
        )
