"""LMDB read snapshots held across awaits, and the two reasons to end one early.

A read transaction that outlives an ``await`` — a multi-key reply sent as
it is read, a run of quiet gets waiting for its end, a key listing — pins
every page that commits free after it began: LMDB cannot reuse them until
it ends, so the data file grows by what is rewritten meanwhile, and never
shrinks.  Each such snapshot is registered here, with its *holder* (who to
tell) and its *owner* (the session whose reply it feeds).  Two things end
one before its reader is done:

* the map must grow (:meth:`stig.storage.store.Store.grow`): LMDB cannot
  remap the file under an open transaction — every held snapshot ends;
* its client has taken none of its reply for ``--max-read-stall-ms``
  (:meth:`HeldReads.end_stalled`, called by the server's watchdog): it
  reads nothing, so the snapshot would otherwise pin pages for as long as
  the client likes (docs/soak.md, finding 5).

Ending aborts the transaction; the reader's next LMDB call raises
``lmdb.Error``, and it ends its reply with the reason the holder kept
(:func:`read_interrupted`).  Everything here runs on the event loop thread.
"""

from __future__ import annotations

from typing import Protocol

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


class HeldReads:
    """The snapshots held across awaits now (``stig_held_snapshots``)."""

    __slots__ = ("_held", "stalled_ends")

    def __init__(self) -> None:
        self._held: dict[lmdb.Transaction, tuple[Holder, Owner | None]] = {}
        #: Snapshots ended because their client did not read (``stig_stalled_reads``).
        self.stalled_ends = 0

    def add(self, txn: lmdb.Transaction, holder: Holder, owner: Owner | None) -> None:
        self._held[txn] = (holder, owner)

    def discard(self, txn: lmdb.Transaction) -> None:
        self._held.pop(txn, None)

    def __len__(self) -> int:
        return len(self._held)

    def end_all(self, why: str) -> None:
        """End every held snapshot (the map is about to grow)."""
        held, self._held = self._held, {}
        for holder, _owner in held.values():
            holder.end(why)

    def end_stalled(self, now: float, seconds: float) -> int:
        """End the snapshots whose owner's replies have made no progress for
        ``seconds`` by ``now``; returns how many."""
        ended = 0
        for txn, (holder, owner) in list(self._held.items()):
            since = None if owner is None else owner.replies_blocked_since
            if since is not None and now - since >= seconds:
                del self._held[txn]
                holder.end(stalled(seconds))
                ended += 1
        self.stalled_ends += ended
        return ended
