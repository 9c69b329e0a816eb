"""LMDB read snapshots held across awaits, and the two reasons to end one early.

A read transaction that outlives an ``await`` — a multi-key reply sent as
it is read, a run of quiet gets waiting for its end, a key listing — pins
every page that commits free after it began: LMDB cannot reuse them until
it ends, so the data file grows by what is rewritten meanwhile, and never
shrinks.  Each such snapshot is registered here, with its *holder* (who to
tell), its *owner* (the session whose reply it feeds) and when it was
taken.  Two things end one before its reader is done:

* the map must grow (:meth:`stig.storage.store.Store.grow`): LMDB cannot
  remap the file under an open transaction — every held snapshot ends;
* its client has taken none of its reply for ``--max-read-stall-ms``
  (:meth:`HeldReads.end_stalled`, called by the server's watchdog): it
  reads nothing, so the snapshot would otherwise pin pages for as long as
  the client likes (docs/soak.md, finding 5).

Ending aborts the transaction; the reader's next LMDB call raises
``lmdb.Error``, and it ends its reply with the reason the holder kept
(:func:`read_interrupted`).

A third thing *renews* one: a snapshot held longer than
``--max-snapshot-age-ms`` (a quiet get run or a get line whose client keeps
it going and reads every reply: neither bound above ends it) is released
(:meth:`HeldReads.release_old`, by the same watchdog): its transaction is
aborted at once, and the read goes on from a new snapshot taken at its next
key (:meth:`stig.storage.snapshot.Snapshot.release`) — counted in
:attr:`HeldReads.renewals`.  Only holders that can go on so are renewable
(a read of keys; not a key listing, whose cursor is its transaction's).
Everything here runs on the event loop thread.

Its three figures (``stig_held_snapshots``, ``stig_stalled_reads``,
``stig_snapshot_renewals``) are kept in a :class:`ReadCounts` as they
change: a plain record on one process; with ``--workers N`` the worker's
block in the shared region (:meth:`HeldReads.share`), so that ``stats`` on
any worker shows them at once, not as of this worker's next commit.
"""

from __future__ import annotations

import time
from typing import NamedTuple, Protocol

import attrs
import lmdb

#: Why a snapshot ended, as the reader's error says it.
MAP_GREW = "the database map grew"


def read_interrupted(why: str) -> str:
    """The error ending a read whose snapshot ended early (text, meta, binary)."""
    return f"read interrupted: {why}; read again"


def stalled(seconds: float) -> str:
    """Why a snapshot ended whose client read none of its reply for ``seconds``."""
    return f"the reply was not read for {seconds:g} s"


class Owner(Protocol):
    """The session a held snapshot reads for: whether its replies are stuck."""

    @property
    def replies_blocked_since(self) -> float | None:
        """Since when (trio's clock) a send of its replies has made no progress;
        None while it sends nothing."""
        ...


class Holder(Protocol):
    """Who holds a registered snapshot, and is told when it ends early."""

    def end(self, why: str) -> None:
        """Abort the transaction and keep ``why`` for the reader's error."""
        ...


class Renewable(Holder, Protocol):
    """A holder whose read can go on from a new snapshot (a read of keys)."""

    def release(self) -> None:
        """Abort the transaction now; the next read takes a new snapshot."""
        ...


class ReadCounts(Protocol):
    """Where :class:`HeldReads` keeps its figures (the field names are
    ``stats``'): a :class:`LocalReadCounts`, or a worker's block in shared
    memory (stig/engine/shared_stats.py, ``Figures``)."""

    held_snapshots: int
    stalled_reads: int
    snapshot_renewals: int


@attrs.define
class LocalReadCounts:
    """The figures of one process's held reads."""

    held_snapshots: int = 0
    stalled_reads: int = 0
    snapshot_renewals: int = 0


class _Entry(NamedTuple):
    holder: Holder
    owner: Owner | None
    since: float  #: ``time.monotonic()`` when it was registered (taken)
    renewable: Renewable | None  #: the holder, if its read can go on so


class HeldReads:
    """The snapshots held across awaits now (``stig_held_snapshots``)."""

    __slots__ = ("_held", "counts")

    def __init__(self) -> None:
        self._held: dict[lmdb.Transaction, _Entry] = {}
        #: The figures, kept as they change: the snapshots held now, those
        #: ended because their client did not read (``stig_stalled_reads``),
        #: and the reads that went on from a new snapshot after theirs was
        #: released for its age (``stig_snapshot_renewals``; counted by the
        #: reader, :meth:`renewed`).
        self.counts: ReadCounts = LocalReadCounts()

    def share(self, counts: ReadCounts) -> None:
        """Keep the figures in ``counts`` from now on (a worker's block in the
        shared region, ``--workers N``), carrying over those kept so far."""
        old = self.counts
        counts.held_snapshots = len(self._held)
        counts.stalled_reads = old.stalled_reads
        counts.snapshot_renewals = old.snapshot_renewals
        self.counts = counts

    def renewed(self) -> None:
        """A read went on from a new snapshot after its was released for its age."""
        self.counts.snapshot_renewals += 1

    def add(self, txn: lmdb.Transaction, holder: Holder, owner: Owner | None) -> None:
        """Register ``txn``, taken now (a key listing: never renewed)."""
        held = self._held
        held[txn] = _Entry(holder, owner, time.monotonic(), None)
        self.counts.held_snapshots = len(held)

    def add_renewable(self, txn: lmdb.Transaction, holder: Renewable, owner: Owner | None) -> None:
        """Register ``txn``, taken now, for a read that may go on from a new
        snapshot once this one is old (:meth:`release_old`)."""
        held = self._held
        held[txn] = _Entry(holder, owner, time.monotonic(), holder)
        self.counts.held_snapshots = len(held)

    def discard(self, txn: lmdb.Transaction) -> None:
        held = self._held
        if held.pop(txn, None) is not None:
            self.counts.held_snapshots = len(held)

    def __len__(self) -> int:
        return len(self._held)

    def end_all(self, why: str) -> None:
        """End every held snapshot (the map is about to grow)."""
        held, self._held = self._held, {}
        self.counts.held_snapshots = 0
        for entry in held.values():
            entry.holder.end(why)

    def end_stalled(self, now: float, seconds: float) -> int:
        """End the snapshots whose owner's replies have made no progress for
        ``seconds`` by ``now`` (trio's clock, as the owner's); returns how many."""
        ended = 0
        for txn, entry in list(self._held.items()):
            owner = entry.owner
            since = None if owner is None else owner.replies_blocked_since
            if since is not None and now - since >= seconds:
                del self._held[txn]
                self.counts.held_snapshots = len(self._held)
                entry.holder.end(stalled(seconds))
                ended += 1
        self.counts.stalled_reads += ended
        return ended

    def release_old(self, seconds: float, now: float | None = None) -> int:
        """Release the renewable snapshots taken ``seconds`` or more before
        ``now`` (``time.monotonic()``; by default, now): each read goes on
        from a new snapshot at its next key, registered anew.  Returns how
        many were released."""
        if now is None:
            now = time.monotonic()
        released = 0
        for txn, entry in list(self._held.items()):
            renewable = entry.renewable
            if renewable is not None and now - entry.since >= seconds:
                del self._held[txn]
                self.counts.held_snapshots = len(self._held)
                renewable.release()
                released += 1
        return released
