"""A session's private point of view (POV) over the committed state.

Each connection owns one :class:`Session`.  Its writes land in a private
overlay first, so the session always sees them; they are recorded as
operations (:mod:`stig.storage.ops`) and handed to the promoter, which applies them
to the global state.  When a promotion commits, the overlay entries it
covered are dropped and the session sees the global state again, which now
holds its writes and everyone else's.

Transactions: writes accumulate in an open *run*.  The protocol layer
decides where a run ends (:meth:`Session.close_run`) — after every write that
expects a reply, or at the end of a run of noreply/quiet writes — and when
closed runs are handed over (:meth:`Session.submit`, once per burst of input,
so that pipelined writes share one group commit).  A run is applied
atomically: all its operations land in one LMDB transaction.  A quiet write
whose client is owed its verdict is marked in its run
(:meth:`Session.owe_verdict`); the run carries the mark into :attr:`Session.owed`
when it closes, whoever closes it, and the core reports it after the commit.

Memory: every write recorded and not yet committed is counted, at about
its real memory cost, in the session's ``pending_bytes`` and in the
engine-wide :class:`~stig.engine.budget.WriteBudget` that the connections'
brakes read; the session's account in it is its
:class:`~stig.engine.charges.Charges` (stig/engine/charges.py).

Failures: a promotion that fails is reported exactly once — by the reply of
the write waiting for it, or else by the session's next barrier or next
command that waits for a commit (:meth:`Session.wait_committed`).  Writes
answered from the POV that fail set :attr:`Session.failure`: the
connection then reports the loss and closes, at once even when idle
(:attr:`Session.on_failure` wakes it) — as a loss of acknowledged writes
only if a reply was sent after them (:meth:`Session.replies_sent`,
:meth:`Session.loss_message`).  The session's
:class:`~stig.engine.failure_ledger.FailureLedger` keeps these facts
(stig/engine/failure_ledger.py).

Writes refused (stig/engine/refusal.py): while the disk is full, every write
but a delete raises :class:`WritesRefused` before anything is recorded.

The exact rules are in docs/pov.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple, NoReturn

from stig.engine.charges import OP_OVERHEAD
from stig.engine.engine import Engine
from stig.engine.errors import (
    CommitFailed,
    NotReplicated,
    ReadOnlyReplica,
    RunTooLarge,
    RunWaitedTooLong,
    WritesRefused,
)
from stig.engine.failure_ledger import FailureLedger
from stig.engine.open_run import OpenRun
from stig.engine.promoter import Promotion
from stig.engine.replica_hold import ReplicaHold
from stig.engine.shared_budget import charges_for
from stig.engine.visibility import InFlight
from stig.storage.ops import (
    Adjust,
    Clear,
    CompareRemove,
    Concat,
    Op,
    Outcome,
    Put,
    Remove,
    adjust_counter,
    parse_counter,
)
from stig.storage.records import Item
from stig.storage.snapshot import Snapshot

#: What :meth:`Session._put_all` is given as room when nothing bounds it.
_UNBOUNDED = 1 << 62

__all__ = ["CommitFailed", "RunTooLarge", "RunWaitedTooLong", "Session", "WritesRefused"]


class _Pending(NamedTuple):
    """A key's newest write in this POV (one per write: a tuple, which
    :meth:`Session.set` builds with ``tuple.__new__``, in C)."""

    seq: int
    item: Item | None  # None: deleted in this POV


# The hot path builds these tuples with tuple.__new__ directly: a NamedTuple's
# own __new__ is a Python function, one frame per write each.
_tuple_new = tuple.__new__


class Session:
    """One connection's point of view.  Synchronous except where it waits for commits."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._store = engine.store
        self._overlay: dict[bytes, _Pending] = {}
        # Keys (None: every key) with a conditional write not yet committed:
        # the POV cannot know their state until the promoter has decided.
        self.unresolved: dict[bytes | None, int] = {}
        self._seq = 0
        #: The open run (stig/engine/open_run.py): its ops, keys and undo; its bytes
        #: are in ``_charges``.
        self._open: OpenRun[_Pending] = OpenRun()
        self._closed: list[Promotion] = []
        # Whether the newest closed, unsubmitted run holds only writes answered
        # from the POV: a run like it may join its promotion (close_run).
        self._closed_pure = False
        self._last: Promotion | None = None
        # Verdicts a quiet client is owed (Core.queue_conditional): those of
        # the open run in ``_open.owed``; with their promotion once it closes.
        self.owed: list[tuple[Promotion, list[tuple[object, int]]]] = []
        #: This session's account in the write budget (stig/engine/charges.py).
        self._charges = charges_for(engine.promoter.budget, self)
        #: Since when (trio's clock) a send of this session's replies has made
        #: no progress (None: none under way); set by its connection, read by
        #: the watchdog that ends the snapshots of reads whose client does not
        #: read (``--max-read-stall-ms``, stig/storage/held.py).
        self.replies_blocked_since: float | None = None
        #: The open run passed the write budget and may not grow before
        #: :meth:`wait_for_room` (the connection waits before its next command).
        self.wants_room = False
        self._max_value = engine.settings.limits.max_item_size
        #: The failed promotions this session must report (stig/engine/failure_ledger.py).
        self.ledger = FailureLedger()
        #: A run has closed since the last wait for every commit: the replies
        #: written since acknowledge it, so under ``--durable-acks`` they wait
        #: for its commit (set by :meth:`close_run`, the one place a run
        #: closes, whatever closes it; stig/server/connection.py waits).
        self.unacked_writes = False
        #: The same, for ``--min-replica-acks``: a run has closed since the
        #: followers last acknowledged every commit.  Cleared only by that
        #: wait (stig/server/connection.py), never by a wait for the local
        #: commit — which a read, a barrier or a conditional write may do
        #: first, and which is not enough to acknowledge under it.
        self.unreplicated_writes = False
        #: What a read of other sessions' writes waits for: the in-flight
        #: registry, or under ``--min-replica-acks`` the read hold around it.
        hold = engine.promoter.hold
        self._in_flight: InFlight | ReplicaHold = (
            engine.promoter.in_flight if hold is None else hold
        )
        self._refusal = engine.promoter.refusal
        # Acknowledged: the writes up to ``acked_seq`` (a reply was sent after
        # their run closed, which ``_closed_seq`` marks).
        self.acked_seq = 0
        self._closed_seq = 0

    # -- the parts' figures the connection reads -----------------------------

    @property
    def pending_bytes(self) -> int:
        """Bytes recorded and not committed yet (:attr:`Charges.pending`)."""
        return self._charges.pending

    @property
    def failure(self) -> str | None:
        """Why a commit of writes answered from the POV failed (None: none
        did): the connection reports the loss and closes (:meth:`loss_message`)."""
        return self.ledger.failure

    @property
    def on_failure(self) -> Callable[[], None] | None:
        """Called once when :attr:`failure` is set: the connection wakes up to say so."""
        return self.ledger.on_failure

    @on_failure.setter
    def on_failure(self, callback: Callable[[], None] | None) -> None:
        self.ledger.on_failure = callback

    # -- writes refused (stig/engine/refusal.py) --------------------------------

    @property
    def writes_refused(self) -> str | None:
        """What a write is told while writes are refused; None while they are accepted."""
        return self._refusal.message

    def _refuse(self) -> NoReturn:
        """Refuse a write: count it and raise :class:`WritesRefused`."""
        refusal = self._refusal
        refusal.refused += 1
        if refusal.read_only is not None:
            raise ReadOnlyReplica(refusal.read_only)
        raise WritesRefused(refusal.message)

    def refused_quietly(self) -> None:
        """A write whose client wants no reply (text ``noreply``) was refused:
        count it, and let the next barrier (or reply waiting for a commit) say so."""
        refusal = self._refusal
        refusal.refused += 1
        if refusal.message is not None:
            self.ledger.refused_quietly(refusal.message)

    def replies_sent(self) -> None:
        """Replies are leaving (the connection calls this as it sends them): every
        run closed so far is acknowledged from now on."""
        self.acked_seq = self._closed_seq

    @property
    def commits_awaited(self) -> bool:
        """Whether a run this session handed over is not committed yet."""
        last = self._last
        return last is not None and not last.finished

    def fail_unreplicated(self, words: str) -> None:
        """The writes are committed here, but too few followers acknowledged
        them (``--min-replica-acks``): the replies that would acknowledge
        them are not sent; the connection says ``words`` and closes."""
        self.ledger.fail_with(words)

    def loss_message(self) -> str:
        """What the connection says before it closes, once :attr:`failure` is set:
        a loss of acknowledged writes only if it was one."""
        return self.ledger.loss_message()

    # -- reads ---------------------------------------------------------------

    @property
    def overlay(self) -> dict[bytes, _Pending]:
        """This session's writes not yet committed, by key (``.item`` None:
        deleted); readers lay them over a snapshot of the store.  Read only."""
        return self._overlay

    def get(self, key: bytes) -> Item | None:
        pending = self._overlay.get(key)
        if pending is not None:
            return pending.item
        return self._store.get(key)

    def get_many(self, keys: Sequence[bytes]) -> list[Item | None]:
        """Every key as of one snapshot, with this session's writes laid over it."""
        with self.snapshot() as snapshot:
            item = snapshot.item
            return [item(key) for key in keys]

    def snapshot(self) -> Snapshot:
        """The one way to read a run of keys: one LMDB snapshot with this
        session's writes laid over it, giving items or raw values, and kept
        across awaits when its reply is sent as it grows (stig/storage/snapshot.py).
        Close it (``with``) when done."""
        return Snapshot(self._store, self._overlay, self)

    # -- other sessions' acknowledged writes (stig/engine/visibility.py) -------------

    async def await_acked(self, keys: Sequence[bytes] | None = None) -> None:
        """Wait until the writes in flight to ``keys`` (None: any) are committed
        and, under ``--min-replica-acks``, on enough followers
        (stig/engine/replica_hold.py; raises :class:`NotReplicated` after the
        bound).  Returns with no await after its last check: the snapshot
        the caller takes next is the one that was checked.

        Hands this session's closed runs over first, so that they join the
        next group commit instead of waiting behind this read.
        """
        self.submit()
        try:
            await self._in_flight.wait(keys, self._overlay)
        except NotReplicated as exc:
            if self.unreplicated_writes:
                # Its own replies wait for the same followers and would fail
                # after the same bound: the connection fails now, as a writer's.
                self.fail_unreplicated(str(exc))
            raise

    def has_pending(self, keys: Sequence[bytes] | None) -> bool:
        """Whether this session has uncommitted writes to ``keys`` (None: to any key)."""
        overlay = self._overlay
        if keys is None:
            return bool(overlay)
        return bool(overlay) and any(key in overlay for key in keys)

    def is_unresolved(self, keys: Sequence[bytes] | None) -> bool:
        """Whether reading ``keys`` (None: any key) must first wait for a
        conditional write's verdict."""
        unresolved = self.unresolved
        if keys is None:
            return bool(unresolved)
        return bool(unresolved) and (None in unresolved or any(k in unresolved for k in keys))

    # -- unconditional writes: answered from the POV -------------------------

    def record(self, op: Op, key: bytes, after: Item | None, size: int) -> None:
        """Record an unconditional write other than a plain set (those go
        through :meth:`_put_all`) whose POV result the caller computed: ``op``
        in the open run, ``after`` (None: deleted) in the POV, ``size`` bytes
        charged besides the key's."""
        refusal = self._refusal
        if refusal.message is not None and (
            op.__class__ is not Remove or refusal.read_only is not None
        ):
            self._refuse()
        self._seq += 1
        run = self._open
        if key not in run.undo:
            run.undo[key] = self._overlay.get(key)
        self._overlay[key] = _Pending(self._seq, after)
        run.ops.append(op)
        run.keys[key] = self._seq
        run.answered = True
        self._grow_run(size + len(key) + OP_OVERHEAD)

    def set(self, key: bytes, value: bytes, flags: int) -> None:
        """A plain set, recorded as every set is (:meth:`_put_all`); past the
        write budget it then waits for room or is refused (:meth:`_past_limit`)."""
        if self._refusal.message is not None:
            self._refuse()
        self._put_all(((key, value, flags),), False, _UNBOUNDED)

    def set_many(self, items: Sequence[tuple[bytes, bytes, int]], close: bool) -> int:
        """A burst of plain sets ``(key, value, flags)``, in order: exactly
        :meth:`set` for each — followed by :meth:`close_run` when ``close``
        (sets that are answered) — in one loop (:meth:`_put_all`).

        Closed each alone, the sets of a burst join one promotion
        (:meth:`close_run`), so here they are recorded in one run and closed
        once: the same ops, keys, bytes and promotion.  A set that would pass
        the write budget (where :meth:`set` would wait for room or raise
        :class:`RunTooLarge`) is not recorded, nor any after it: the caller
        does it with :meth:`set`.  Returns how many were recorded: none while
        writes are refused (:meth:`set` raises :class:`WritesRefused` for each).
        """
        if self._refusal.message is not None:
            return 0
        done = 0
        if close and self._open.ops and items:
            # The first one closes the open run, whatever that run holds.
            self.set(*items[0])
            self.close_run()
            done = 1
            items = items[1:]
        # The open runs' bytes this burst may add (with ``close``, each set is
        # alone in its run when the budget checks it).
        recorded = self._put_all(items, close, self._charges.room())
        if close and recorded:
            self.close_run()
        return done + recorded

    def _put_all(self, items: Sequence[tuple[bytes, bytes, int]], close: bool, room: int) -> int:
        """Record plain sets ``(key, value, flags)`` in the open run, in order:
        the one place a set is recorded (text, meta and binary, one set or a
        burst).  Each is a ``Put`` in the run, an item in the POV, and its
        bytes (:data:`OP_OVERHEAD` on top of key and value) charged to the
        write budget; its three tuples (op, POV item, overlay entry) are
        built in C, with no Python frame per write — the bulk of every write
        load, where each one shows.

        Sets are recorded while their bytes fit in ``room`` — each alone when
        ``close`` (the caller closes the run after them: each is a run of its
        own, so no undo is kept), else all together — and the first that
        does not fit stops the loop.  Returns how many were recorded.  When
        the open runs of all sessions are past the limit afterwards, the run
        holds, waits for room or is refused (:meth:`_past_limit`), unless
        ``close``: then the caller closes it at once.  (Within ``room`` a
        run that is not closed passes the limit only while it holds, and
        then it goes on: so only :meth:`set`, whose room is unbounded, is
        ever told to wait or refused.)
        """
        seq = start = self._seq
        overlay = self._overlay
        open_run = self._open
        undo = None if close else open_run.undo
        run = open_run.ops
        run_keys = open_run.keys
        total = 0
        for key, value, flags in items:
            size = len(value) + len(key) + OP_OVERHEAD
            if (size if close else total + size) > room:
                break
            seq += 1
            if undo is not None and key not in undo:
                undo[key] = overlay.get(key)
            overlay[key] = _tuple_new(_Pending, (seq, _tuple_new(Item, (value, flags, 0, 0))))
            run.append(_tuple_new(Put, (key, value, flags, None)))
            run_keys[key] = seq
            total += size
        if seq == start:
            return 0
        self._seq = seq
        open_run.answered = True
        if self._charges.charge(total) and not close:
            self._past_limit()
        return seq - start

    def delete(self, key: bytes) -> bool:
        if self.get(key) is None:
            return False
        self.record(Remove(key), key, None, 0)
        return True

    def adjust(
        self, key: bytes, delta: int, incr: bool, initial: int | None = None, flags: int = 0
    ) -> int | Outcome:
        """incr/decr: the new value as this POV sees it, or NOT_FOUND / NON_NUMERIC.

        With ``initial``, a counter missing from this POV is created with that
        value (delta not applied, as memcached does); at promotion the delta
        is applied instead if another session created it meanwhile.
        """
        item = self.get(key)
        if item is None:
            if initial is None:
                return Outcome.NOT_FOUND
            after = Item(b"%d" % initial, flags)
            self.record(Adjust(key, delta, incr, initial, flags), key, after, 8)
            return initial
        current = parse_counter(item.value)
        if current is None:
            return Outcome.NON_NUMERIC
        result = adjust_counter(current, delta, incr)
        after = Item(b"%d" % result, item.flags)
        self.record(Adjust(key, delta, incr), key, after, 8)
        return result

    def concat(self, key: bytes, data: bytes, prepend: bool) -> bool:
        item = self.get(key)
        if item is None or len(item.value) + len(data) > self._max_value:
            return False  # absent, or would outgrow --max-item-size: NOT_STORED
        value = data + item.value if prepend else item.value + data
        self.record(Concat(key, data, prepend), key, Item(value, item.flags), len(value))
        return True

    # -- conditional writes: checked at promotion ----------------------------

    def add_conditional(self, op: Op, key: bytes | None, size: int) -> None:
        """Add a conditional write to the open run (its outcome comes at commit).

        While writes are refused only those that free space (a delete, a
        ``flush_all``) are taken; any other raises :class:`WritesRefused`."""
        refusal = self._refusal
        if refusal.message is not None and (
            refusal.read_only is not None or not isinstance(op, (Remove, CompareRemove, Clear))
        ):
            self._refuse()
        self._seq += 1
        run = self._open
        run.ops.append(op)
        if key not in run.unresolved_undo:
            run.unresolved_undo[key] = self.unresolved.get(key)
        self.unresolved[key] = self._seq
        if key is None:
            run.clears = True
        else:
            # Once this commits, this session's older writes to the key are
            # in the global state: the overlay entry can go.
            run.keys[key] = self._seq
        self._grow_run(size + OP_OVERHEAD + (len(key) if key else 0))

    def _grow_run(self, size: int) -> None:
        """Count ``size`` more bytes of the open run against the write budget.

        Open runs are never committed before they close, so no brake can
        make them shrink.  A run that grows while the open runs of all
        sessions together exceed ``--max-pending-bytes`` goes on if it is the
        one that holds (:mod:`stig.engine.budget`), else waits for room before its
        next write (:meth:`_past_limit`); a run alone past the limit is
        discarded, and :class:`RunTooLarge` raised — the client is told
        "transaction larger than --max-pending-bytes" (docs/pov.md, "Bounds").
        """
        if self._charges.charge(size):
            self._past_limit()

    def _past_limit(self) -> None:
        """The open runs of all sessions just passed ``--max-pending-bytes``
        with this run's last write: it goes on if it holds
        (:meth:`WriteBudget.may_grow`), is refused if it alone is past the
        limit, and otherwise keeps that write and waits for room before the
        next (:attr:`wants_room`, :meth:`wait_for_room`)."""
        verdict = self._charges.hold()
        if verdict is None:
            self.discard_run()
            raise RunTooLarge()
        if not verdict:
            self.wants_room = True

    async def wait_for_room(self) -> None:
        """Before this session's open run grows again: wait until it may
        (docs/pov.md, "Bounds"); at once when the run has closed meanwhile,
        and no longer once acknowledged writes are lost (:attr:`failure`:
        the connection reports that instead).  Raises :class:`RunWaitedTooLong`
        (the run discarded) after ``--max-run-wait-ms``."""
        self.wants_room = False
        if self._open.ops and self.failure is None:
            # Closed runs go to the promoter before the wait (a quiet miss
            # closes a run with no reply to send them): with --workers N a
            # connection of another worker braked for them waits for their
            # commits, which must not wait for this run's room in turn.
            self.submit()
            if not await self._charges.wait_for_room(self._lost):
                self.discard_run()
                raise RunWaitedTooLong()

    async def make_room(self, send: Callable[[], Awaitable[None]] | None) -> bool:
        """What a connection does when :attr:`wants_room` is set after a
        command: the replies so far go first (``send``, which raises
        :class:`CommitFailed` when acknowledged writes were lost), then
        :meth:`wait_for_room`.  False when acknowledged writes were lost
        meanwhile: the caller stops, and the connection loop reports it."""
        if send is not None:
            try:
                await send()
            except CommitFailed:
                return False
        await self.wait_for_room()
        return self.failure is None

    def _lost(self) -> bool:
        """Whether acknowledged writes of this session failed to commit."""
        return self.failure is not None

    def add_intent(self, op: Op, key: bytes, size: int) -> None:
        """Record a write whose POV answer would need a verdict still pending in
        the open run: its intent is applied at promotion, inside the same run.

        Until that commit the POV cannot know the key's state, exactly as
        after a conditional write: later reads of it wait for the commit.
        """
        self.add_conditional(op, key, size)

    def owe_verdict(self, tag: object) -> None:
        """The write just added to the open run owes ``tag`` its verdict:
        :attr:`owed` holds it with its promotion once the run closes
        (whoever closes it), for :meth:`stig.core.command_core.Core.verdicts`."""
        run = self._open
        run.owed.append((tag, len(run.ops) - 1))

    def owe_reply(self, tag: object, size: int) -> None:
        """A reply a quiet write got at once while the open run owes an
        earlier quiet write its verdict: :attr:`owed` holds ``tag`` right
        after that one (index -1: no write of the run), so the client is told
        in the order of its writes.  Its ``size`` (its memory) grows the run
        against the write budget, as a write does: a run cannot hold more
        of them than ``--max-pending-bytes``."""
        self._open.owed.append((tag, -1))
        self._grow_run(size)

    def verdict_in_open_run(self, key: bytes) -> bool:
        """Whether the open run holds a write whose verdict ``key``'s state awaits."""
        if not self._open.ops:
            return False
        unresolved = self.unresolved
        undo = self._open.unresolved_undo
        return (key in unresolved and key in undo) or (None in unresolved and None in undo)

    async def commit_run(self) -> Promotion:
        """Close the open run, submit it and wait for its commit.

        The write just recorded is the run's last member: the promotion's
        ``outcomes[-1]`` and ``written`` are its verdict and the item (with
        its cas) it stored.  The run must not be empty.
        """
        promotion = self.close_run()
        assert promotion is not None, "commit_run() of an empty run"
        self.submit()
        await promotion.done.wait()
        if promotion.error is not None or promotion.outcomes is None:
            self.reported()  # this reply reports it
            raise CommitFailed(promotion.error or "commit failed")
        return promotion

    # -- transaction boundaries ---------------------------------------------

    @property
    def run_open(self) -> bool:
        return bool(self._open.ops)

    @property
    def closed_bytes(self) -> int:
        """Bytes of this session's closed runs not committed yet: what its
        commits will free.  Not the open run, which no commit can end before
        its client closes it (the write brake waits only for these)."""
        return self._charges.closed

    @property
    def run_owes_verdicts(self) -> bool:
        """Whether the open run holds quiet writes owed their verdicts: closing
        it makes them due (:meth:`owe_verdict`)."""
        return bool(self._open.owed)

    def close_run(self) -> Promotion | None:
        """End the open run: it becomes one atomic promotion, queued for submit.

        A run of writes all answered from the POV (no conditional, no
        intent, no flush_all) that closes right behind another such run not
        submitted yet joins that run's promotion instead (a pipelined burst
        of sets is one promotion, not one per set): its atomicity holds —
        both commit in one transaction, as every run of a group does — and
        nothing waits on the verdict of either.  The returned promotion is
        then the one it joined.
        """
        open_run = self._open
        run = open_run.ops
        if not run:
            return None
        self._closed_seq = self._seq
        self.unacked_writes = True  # every reply from now on acknowledges it
        self.unreplicated_writes = True
        pure = open_run.pure
        if pure and self._closed_pure:
            promotion = self._closed[-1]
            promotion.ops.extend(run)  # type: ignore[attr-defined]
            promotion.key_seqs.update(open_run.keys)
            promotion.nbytes += self._charges.close_run(joined=True)
            promotion.last_seq = self._seq
            promotion.answered_early = promotion.answered_early or open_run.answered
            self._new_run()
            return promotion
        promotion = Promotion(
            run,
            open_run.keys,
            self._charges.close_run(joined=False),
            self._promoted,
            open_run.answered,
            last_seq=self._seq,
            first_seq=self._seq - len(run) + 1,
            clears_all=open_run.clears,
        )
        self._closed_pure = pure
        self._closed.append(promotion)
        if open_run.owed:
            self.owed.append((promotion, open_run.owed))
        self._new_run()
        return promotion

    def close_for_reply(self) -> Promotion:
        """Close the open run for a reply that waits for its commit: the run's
        last member is the write that reply answers, with the promotion's
        ``outcomes[-1]`` and ``written`` (its verdict, the item and cas it
        stored).  So no later run joins this promotion, and its failure is
        that reply's to report (:attr:`Promotion.held_reply`), not a
        barrier's.  Nothing in the run was acknowledged before that reply
        (a run's writes are acknowledged by the reply that closes it), so
        its failure loses no acknowledged write, unless the run joined a
        promotion of runs already answered from the POV.  The run must not
        be empty."""
        closed = len(self._closed)
        promotion = self.close_run()
        assert promotion is not None, "close_for_reply() of an empty run"
        if len(self._closed) > closed:  # a promotion of its own
            promotion.answered_early = False
        promotion.held_reply = True
        self._closed_pure = False
        return promotion

    def close(self) -> None:
        """Its connection is over (its open run committed or discarded): drop
        the links that make a session a reference cycle — its budget account
        names it, its wake-up is its connection's bound method — so that it
        is freed with its connection, not by a rare full collection
        (tests/model/test_connection_garbage.py).  Its runs in flight still
        finish (:meth:`_promoted` needs neither)."""
        self.ledger.on_failure = None
        self._charges.owner = None

    def discard_run(self) -> None:
        """Forget the open run (a dropped connection, a truncated command)."""
        # Its owed verdicts go with it: nobody is told about writes that never happen.
        run = self._open
        run.restore(self._overlay, self.unresolved)
        self._charges.discard_run()
        self._new_run()

    def _new_run(self) -> None:
        """An empty open run (the caller has handed its owed verdicts over, if they are due).

        A run that ended has nothing to wait for room for: :attr:`wants_room`
        goes too (a loud set while the budget is full closes its own run, and
        its reply is not sent alone)."""
        self.wants_room = False
        # Emptied in place, field by field (a loud set closes a run per write:
        # no call nor object more per run than the fields themselves).
        run = self._open
        run.ops = []
        run.keys = {}
        run.answered = False
        run.clears = False
        run.undo = {}
        run.unresolved_undo = {}
        if run.owed:
            run.owed = []  # handed over with its promotion, or dropped with the run

    def submit(self) -> None:
        """Hand every closed run to the promoter, in order, in one step."""
        if self._closed:
            self.engine.promoter.submit(self._closed)
            self._last = self._closed[-1]
            self._closed = []
            self._closed_pure = False  # a submitted promotion takes no more runs

    async def wait_committed(self, report: bool = True) -> None:
        """Wait until everything submitted so far is committed (a barrier).

        Raises :class:`CommitFailed` if acknowledged writes were lost, and
        (``report``) if any promotion of this session failed that no reply
        has reported yet — conditional or not, quiet or loud: it is then
        reported, once.
        """
        last = self._last
        if last is not None:
            await last.done.wait()
        self.unacked_writes = False
        ledger = self.ledger
        if ledger.failure is not None:
            raise CommitFailed(ledger.failure)
        if report and ledger.unreported is not None:
            message = ledger.unreported
            self.reported()
            raise CommitFailed(message)

    def reported(self) -> None:
        """A reply reports the failures so far: the unreported one, and those
        of the closed runs owing quiet verdicts, which are owed nothing more
        (:meth:`FailureLedger.reported`)."""
        self.ledger.reported(self.owed)

    async def promote_pending(self) -> None:
        """Close the run, submit it and wait until all of it is committed."""
        self.close_run()
        self.submit()
        await self.wait_committed()

    def _promoted(self, promotion: Promotion) -> None:
        """A promotion of this session finished: drop the POV entries it covered."""
        if promotion.last_seq == self._seq:
            self._all_promoted()
        else:
            self._drop_promoted(promotion)
        self._charges.release(promotion.nbytes)
        if promotion.error is not None and self.ledger.record(promotion, self.acked_seq):
            self._charges.wake_waiters()  # a wait for room ends: the loss is reported

    def _all_promoted(self) -> None:
        """The common case: the finished promotion holds this session's newest write.

        A session's promotions finish in the order they were recorded, and
        every write bumps ``_seq``, so every older write has finished too and
        the open run is empty: the whole overlay and every awaited verdict
        can go at once, without a look-up per key.
        """
        self._overlay.clear()
        if self.unresolved:
            self.unresolved = {}

    def _drop_promoted(self, promotion: Promotion) -> None:
        """Drop the overlay entries and verdicts the promotion covered, key by key."""
        if self.unresolved:
            top = promotion.last_seq
            self.unresolved = {k: s for k, s in self.unresolved.items() if s > top}
        overlay = self._overlay
        for key, seq in promotion.key_seqs.items():
            pending = overlay.get(key)
            if pending is not None and pending.seq <= seq:
                del overlay[key]
        # Committed meanwhile: nothing of it for a discarded open run to put back.
        self._open.committed(promotion.key_seqs, promotion.last_seq)
