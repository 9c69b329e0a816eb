"""Replication state the whole server shares: followers seen by a primary, a follower's progress.

A primary (any server whose log is on) counts the followers connected to it
(:class:`ReplicaHub`): what each has acknowledged as applied and on its
disk, so that ``--min-replica-acks`` can hold replies until enough have
(:meth:`ReplicaHub.wait_acks`) and hold reads of what they lack
(stig/engine/replica_hold.py, told through ``on_ack``), and so that
``stats`` shows their lag.  The
promoter tells the hub of each commit (:meth:`ReplicaHub.committed`): the
streams to the followers (stig/replication/sender.py) wake on it.

A follower (``--replica-of``) keeps its progress in a :class:`FollowerState`
(stig/replication/follower.py fills it; ``stats`` shows it).

Everything here runs on the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs
import trio


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


class ReplicaHub:
    """The followers connected to this server and what they acknowledged."""

    def __init__(self) -> None:
        self.replicas: list[Replica] = []
        self._commit = trio.Event()
        self._ack = trio.Event()
        #: Replies that gave up waiting for ``--min-replica-acks`` (``stats``).
        self.ack_timeouts = 0
        self.snapshots_sent = 0
        #: Called on the event loop whenever what the followers acknowledged
        #: may have changed (an ACK, a follower gone): the read hold of
        #: ``--min-replica-acks`` (stig/engine/replica_hold.py) moves on.
        self.on_ack: Callable[[], None] | None = None

    @property
    def commit_event(self) -> trio.Event:
        """Set at the next commit: take it *before* reading the log, then wait."""
        return self._commit

    def committed(self) -> None:
        """A group committed (the promoter calls this, on the event loop)."""
        self._commit.set()
        self._commit = trio.Event()

    def connect(self, peer: str) -> Replica:
        replica = Replica(peer)
        self.replicas.append(replica)
        return replica

    def disconnect(self, replica: Replica) -> None:
        if replica in self.replicas:
            self.replicas.remove(replica)
        self._wake_ack_waiters()

    def acked(self, replica: Replica, seq: int) -> None:
        if seq > replica.acked_seq:
            replica.acked_seq = seq
            self._wake_ack_waiters()

    def _wake_ack_waiters(self) -> None:
        self._ack.set()
        self._ack = trio.Event()
        if self.on_ack is not None:
            self.on_ack()

    def acks_for(self, seq: int) -> int:
        """How many connected followers have group ``seq`` on disk."""
        return sum(1 for replica in self.replicas if replica.acked_seq >= seq)

    def acked_by(self, count: int) -> int:
        """The newest group at least ``count`` connected followers have on
        disk (0: fewer than ``count`` followers are connected)."""
        acked = sorted((replica.acked_seq for replica in self.replicas), reverse=True)
        return acked[count - 1] if 0 < count <= len(acked) else 0

    async def wait_acks(self, seq: int, count: int, timeout: float) -> bool:
        """Wait until ``count`` followers have group ``seq`` on disk, at most
        ``timeout`` seconds; whether they have."""
        with trio.move_on_after(timeout):
            while self.acks_for(seq) < count:
                await self._ack.wait()
            return True
        self.ack_timeouts += 1
        return False


@attrs.define
class FollowerState:
    """A follower's view of its primary (``--replica-of``), for ``stats``."""

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

    def stop(self) -> None:
        """Stop following (a promotion); :attr:`stopped` is set once it has."""
        self.stop_requested = True
        if self.scope is not None:
            self.scope.cancel()
