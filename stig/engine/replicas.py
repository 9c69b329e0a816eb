"""Replication state the whole server shares: followers seen by a primary, a follower's progress.

A primary (any server whose log is on) counts the followers connected to it
(:class:`ReplicaHub`): what each has acknowledged as applied and on its
disk, so that ``--min-replica-acks`` can hold replies until enough have
(:meth:`ReplicaHub.wait_acks`) and hold reads of what they lack
(stig/engine/replica_hold.py, told through ``on_ack``), and so that
``stats`` shows their lag.  The
promoter tells the hub of each commit (:meth:`ReplicaHub.committed`): the
streams to the followers (stig/replication/sender.py) wake on it.

With ``--workers N`` a follower streams from whichever worker its
connection landed on: the hub mirrors each of its followers into a slot of
the shared block (stig/engine/shared_replicas.py), and counts, waits and
reports over every worker's slots; a sender also learns there of the
groups other workers committed (:meth:`ReplicaHub.wait_commit`).

A follower (``--replica-of``) keeps its progress in a :class:`FollowerState`
(stig/replication/follower.py fills it; ``stats`` shows it).

Everything here runs on the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

from stig.engine import shared_replicas
from stig.engine.shared_follower import SharedFollower
from stig.engine.shared_inflight import SharedInFlight
from stig.engine.shared_replicas import POLL_SECONDS, SharedReplicas


@attrs.define(eq=False)
class Replica:
    """One follower connected to this server."""

    peer: str
    #: The last group it said it applied and synced (its ``ACK``).
    acked_seq: int = 0
    #: The last group sent to it, or being sent (its ACKs may not go past it).
    sent_seq: int = 0
    connected_at: float = attrs.field(factory=time.monotonic)
    snapshots: int = 0  #: snapshots sent on this connection
    #: Its slot in the shared block (``--workers N``); -1: none.
    slot: int = -1


class TooManyFollowers(Exception):
    """Every follower slot of this worker is taken (``--workers N``)."""


class ReplicaHub:
    """The followers connected to this server and what they acknowledged."""

    def __init__(
        self, shared: SharedReplicas | None = None, signals: SharedInFlight | None = None
    ) -> None:
        #: The followers streaming from this process.
        self.replicas: list[Replica] = []
        #: Every worker's followers and the writer's sequence number
        #: (``--workers N``); None: this process has them all.
        self.shared = shared
        if shared is not None:
            shared.clear_mine()
        #: The writer's commit signals (its eventfd for this worker), which
        #: the senders wait on (:meth:`wait_commit`).
        self._signals = signals
        self._commit = trio.Event()
        self._ack = trio.Event()
        self._ack_timeouts = 0
        self._snapshots_sent = 0
        self._polling = False  # a waiter looks at the shared slots (_next_ack)
        #: Called on the event loop whenever what the followers acknowledged
        #: may have changed (an ACK, a follower gone): the read hold of
        #: ``--min-replica-acks`` (stig/engine/replica_hold.py) moves on.
        #: With workers, ACKs heard by other workers call nothing here: the
        #: hold looks at the shared slots itself (:attr:`shared`).
        self.on_ack: Callable[[], None] | None = None

    @property
    def ack_timeouts(self) -> int:
        """Replies that gave up waiting for ``--min-replica-acks`` (every worker's)."""
        if self.shared is not None:
            return self.shared.total(shared_replicas.ACK_TIMEOUTS)
        return self._ack_timeouts

    @property
    def snapshots_sent(self) -> int:
        """Snapshots sent to followers (every worker's)."""
        if self.shared is not None:
            return self.shared.total(shared_replicas.SNAPSHOTS_SENT)
        return self._snapshots_sent

    @property
    def workers_killed_hung(self) -> int:
        """Workers the writer had killed as hung (``--workers N``; 0 without workers)."""
        if self.shared is not None:
            return self.shared.total(shared_replicas.KILLED_HUNG)
        return 0

    def snapshot_sent(self) -> None:
        self._snapshots_sent += 1
        if self.shared is not None:
            self.shared.count(shared_replicas.SNAPSHOTS_SENT)

    @property
    def commit_event(self) -> trio.Event:
        """Set at the next commit: take it *before* reading the log, then wait."""
        return self._commit

    def committed(self) -> None:
        """A group committed (the promoter calls this, on the event loop)."""
        self._commit.set()
        self._commit = trio.Event()

    async def wait_commit(self, event: trio.Event, after: int) -> None:
        """Return once ``event`` (:attr:`commit_event`, taken before the
        log was read) is set or, with workers, once the writer has committed
        a group after ``after`` (any worker's: the writer sets the shared
        ``seq`` word, then signals every worker's eventfd).  The caller
        bounds the wait."""
        shared = self.shared
        if shared is None:
            await event.wait()
            return
        signals = self._signals
        while not event.is_set() and shared.seq <= after:
            if signals is None:  # no eventfd (a table opened by hand)
                with trio.move_on_after(POLL_SECONDS):
                    await event.wait()
            else:
                await signals.next_signal(lambda: shared.seq > after)

    def connect(self, peer: str) -> Replica:
        """A follower starts streaming from this process; raises
        :class:`TooManyFollowers` when this worker has no slot left."""
        replica = Replica(peer)
        if self.shared is not None:
            slot = self.shared.claim()
            if slot is None:
                raise TooManyFollowers()
            replica.slot = slot
        self.replicas.append(replica)
        return replica

    def disconnect(self, replica: Replica) -> None:
        if replica in self.replicas:
            self.replicas.remove(replica)
            if self.shared is not None:
                self.shared.release(replica.slot)
        self._wake_ack_waiters()

    def acked(self, replica: Replica, seq: int) -> None:
        if seq > replica.acked_seq:
            replica.acked_seq = seq
            if self.shared is not None:
                self.shared.set_acked(replica.slot, seq)
            self._wake_ack_waiters()

    def acked_seqs(self) -> list[int]:
        """What every connected follower acknowledged (every worker's, with workers)."""
        if self.shared is not None:
            return self.shared.acked()
        return [replica.acked_seq for replica in self.replicas]

    async def _next_ack(self) -> None:
        """Return once what the followers acknowledged may have changed.

        With workers, one waiter of this worker at a time looks at the
        shared slots every :data:`POLL_SECONDS` and wakes the others when
        they changed (or when it stops waiting: another takes its place);
        the rest wait for that, as for their own followers' ACKs."""
        shared = self.shared
        if shared is None or self._polling:
            await self._ack.wait()
            return
        self._polling = True
        event = self._ack
        before = shared.acked()
        try:
            while not event.is_set() and shared.acked() == before:
                with trio.move_on_after(POLL_SECONDS):
                    await event.wait()
        finally:
            self._polling = False
            self._wake_ack_waiters()

    def _wake_ack_waiters(self) -> None:
        self._ack.set()
        self._ack = trio.Event()
        if self.on_ack is not None:
            self.on_ack()

    def acks_for(self, seq: int) -> int:
        """How many connected followers (on every worker) have group ``seq`` on disk."""
        return sum(1 for acked in self.acked_seqs() if acked >= seq)

    def acked_by(self, count: int) -> int:
        """The newest group at least ``count`` connected followers have on
        disk (0: fewer than ``count`` followers are connected)."""
        acked = sorted(self.acked_seqs(), reverse=True)
        return acked[count - 1] if 0 < count <= len(acked) else 0

    async def wait_acks(self, seq: int, count: int, timeout: float) -> bool:
        """Wait until ``count`` followers have group ``seq`` on disk, at most
        ``timeout`` seconds; whether they have.  With workers, the ACKs
        heard by other workers are looked at every :data:`POLL_SECONDS`."""
        with trio.move_on_after(timeout):
            while self.acks_for(seq) < count:
                await self._next_ack()
            return True
        self._ack_timeouts += 1
        if self.shared is not None:
            self.shared.count(shared_replicas.ACK_TIMEOUTS)
        return False


def _publish(state: FollowerState, field: attrs.Attribute[Any], value: Any) -> Any:
    """Mirror a field set into the shared block (``--workers N``: the other
    workers' ``stats``), if this state is the stream's."""
    mirror = state.mirror
    if mirror is not None:
        mirror.publish(field.name, value)
    return value


@attrs.define(on_setattr=_publish)
class FollowerState:
    """A follower's view of its primary (``--replica-of``), for ``stats``.

    With workers, the state of the worker holding the stream is mirrored in
    shared memory (:attr:`mirror`, stig/engine/shared_follower.py) as each
    field is set; the other workers load it (:meth:`load`) for ``stats``."""

    primary: str
    connected: bool = False
    #: The last group applied and on disk, as the follower task saw its commit
    #: end (the counters below change with it, on the event loop).
    applied_seq: int = 0
    #: The primary's newest sequence number, as last heard.
    primary_seq: int = 0
    #: Bytes of groups received and not yet applied.
    pending_bytes: int = 0
    #: The primary's commit time (ms since the epoch) of the last group applied.
    applied_time_ms: int = 0
    connects: int = 0  #: connections made to the primary
    snapshots: int = 0  #: snapshots loaded
    groups_applied: int = 0
    last_error: str = ""
    #: Groups of its own discarded after diverging from the primary (an old
    #: primary rejoining), and how many of them were saved to a file.
    groups_discarded: int = 0
    groups_saved: int = 0
    #: Ask for a snapshot next (its own groups diverged and were discarded).
    snapshot_needed: bool = False
    #: The follower task's scope (``stig_promote`` cancels it) and when it ended.
    scope: trio.CancelScope | None = None
    stop_requested: bool = False
    stopped: trio.Event = attrs.field(factory=trio.Event)
    #: Set once a promotion that stopped it has ended (done or failed).
    promoted: trio.Event = attrs.field(factory=trio.Event)
    #: Where this state is published (the worker holding the stream).
    mirror: SharedFollower | None = None

    def load(self, shared: SharedFollower) -> None:
        """Take the stream's progress as the worker holding it published it."""
        for name, value in shared.load().items():
            setattr(self, name, value)

    def stop(self) -> None:
        """Stop following (a promotion); :attr:`stopped` is set once it has."""
        self.stop_requested = True
        if self.scope is not None:
            self.scope.cancel()
