"""The command core every protocol shares: what a read or write does to a POV.

memcached's text, meta and binary front ends all call one core that knows
nothing of connections; so do Stig's handlers.  A :class:`Core` belongs to one
connection.  It runs each command on the session (docs/pov.md), keeps the
``stats`` counters, and answers with plain values — items, outcomes, numbers
— that each handler turns into its own wire replies.

Reads and unconditional writes are answered from the POV; they first wait
for a pending conditional write of this session when its verdict could change
what they see — except when that verdict is in the session's own open run:
waiting would split the run, so the write joins the run as an *intent*
applied at promotion (:meth:`Core._intent`; docs/pov.md, "Runs stay whole").
Conditional writes (and binary loud writes, meta writes returning a cas)
answer after their commit: their run closes, and the handler's reply for
the commit's result is held in the connection's :class:`ReplyGate` with the
replies of the burst (:meth:`Core.reply_after_commit`), so that a pipelined
burst shares one group commit (stig/core/reply_gate.py).  Commit failures
surface as :class:`~stig.engine.session.CommitFailed`, or, for a held
reply, as the failure its answer words.

The transaction rules every protocol shares live here once, and the
handlers only translate: a write answered from the POV with a reply closes
its own run (``answered=True`` to :meth:`Core.set`, :meth:`Core.concat`,
:meth:`Core.delete`, :meth:`Core.adjust`, :meth:`Core.touch`), one answered
after its commit in :meth:`Core.reply_after_commit`; a quiet conditional write (or intent) owes
its client a verdict, collected for all protocols by :meth:`Core.verdicts`
once its run has committed; the barrier (:meth:`Core.barrier`) waits for
everything and reports a failure since the last barrier; refusals are
:class:`Refusal` values; ``stats <group>`` is :meth:`Core.stats_group`.
"""

from __future__ import annotations

import enum
import functools
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence

import attrs

from stig.core import listing
from stig.core.read_view import ReadView
from stig.core.reply_gate import ReplyGate
from stig.core.stats_report import general_stats, settings_stats
from stig.engine.engine import Engine
from stig.engine.promoter import Promotion
from stig.engine.session import Session
from stig.engine.settings import TtlPolicy
from stig.storage.ops import (
    Add,
    Adjust,
    Cas,
    Clear,
    Concat,
    ExpiredMode,
    ExpiredStore,
    Op,
    Outcome,
    Remove,
    Replace,
    SetState,
    Vivify,
)
from stig.storage.records import WIN_SENT, Item
from stig_protocol.listing import stats_items


class Refusal(enum.Enum):
    """A command Stig refuses, with the words every protocol says it in."""

    #: A future exptime under ``--ttl-policy reject``.
    TTL = "exptime must be 0: Stig is a database and items never expire (see --ttl-policy)"
    #: ``flush_all`` under ``--disable-flush-all``.
    FLUSH_DISABLED = "flush_all not allowed"
    #: ``flush_all`` with a delay: nothing ever expires, so none can be honoured.
    FLUSH_DELAY = "flush_all delay must be 0: Stig items never expire"


#: How often a reader tries to take the win of a stale item that changed meanwhile.
WIN_ATTEMPTS = 3

#: memcached's words for incr/decr of a value that is not a number.
NON_NUMERIC = "cannot increment or decrement non-numeric value"


@attrs.frozen(slots=True)
class Verdict:
    """What a quiet write's client is owed once its run has committed.

    ``tag`` is what the handler gave :meth:`Core.queue_conditional` to word
    the reply with.  ``outcome`` is the write's outcome at promotion, or None
    when its run failed to commit: ``failure`` then says why (reported once,
    to every quiet write of each failed run no reply has reported yet).
    """

    tag: object
    outcome: Outcome | None
    failure: str | None = None
    #: A reply its write got at once, already worded (:meth:`Core.quiet_reply`):
    #: written as it is, in its turn (``tag`` and ``outcome`` are then None).
    reply: bytes | None = None


@attrs.frozen(slots=True)
class _Worded:
    """A quiet write's reply the POV decided at once, owed in its turn behind
    an earlier quiet write's verdict (:meth:`Core.quiet_reply`)."""

    reply: bytes


#: What one reply owed in its turn costs in memory besides its bytes (the
#: owed entry, its :class:`_Worded`, the bytes object's header): measured
#: with tracemalloc, 156 B in all for an 11-byte reply, rounded up.
#: Counted with the open run against the write budget.
WORDED_COST = 192


@attrs.frozen(slots=True)
class Committed:
    """What a write answered after its commit learns from it: its outcome at
    promotion and the item it stored (None: none), or why the commit failed
    (``failure``; ``outcome`` is then None)."""

    outcome: Outcome | None
    item: Item | None
    failure: str | None = None


#: Words a reply after commit from what the commit decided (a handler's).
Answer = Callable[[Committed], bytes]


class StatsKind(enum.Enum):
    """What a ``stats <group>`` request did (:meth:`Core.stats_group`)."""

    LIST = "list"  #: ``pairs`` to list (maybe none)
    RESET = "reset"  #: counters reset (text ``RESET``)
    DETAIL_SWITCHED = "detail switched"  #: ``detail on|off`` done (text ``OK``)
    DETAIL_DUMP = "detail dump"  #: ``dump``: memcached's text dump of the prefixes
    DETAIL_USAGE = "detail usage"  #: ``detail`` without on, off or dump
    UNKNOWN = "unknown"  #: no such group


@attrs.frozen(slots=True)
class StatsAnswer:
    kind: StatsKind
    pairs: Sequence[tuple[str, object]] = ()
    dump: bytes = b""


#: Groups that list nothing: no slab allocator, no LRU.
_EMPTY_STATS_GROUPS = frozenset({b"slabs", b"sizes", b"conns", b"extstore"})
#: memcached's REALTIME_MAXDELTA: a larger exptime is an absolute Unix time.
THIRTY_DAYS = 60 * 60 * 24 * 30


def already_expired(exptime: int, now: float) -> bool:
    """memcached's rule for an exptime that is past as it arrives: negative,
    or an absolute Unix time (above 30 days) not after ``now``."""
    return exptime < 0 or THIRTY_DAYS < exptime <= now


def expired_variant(op: Op) -> Op:
    """What a conditional store becomes when its exptime is already past."""
    if isinstance(op, Add):
        return ExpiredStore(op.key, ExpiredMode.ADD)
    if isinstance(op, Replace):
        return ExpiredStore(op.key, ExpiredMode.REPLACE)
    if isinstance(op, Cas):
        return ExpiredStore(op.key, ExpiredMode.CAS, op.expected)
    return op


class Core:
    """One connection's command core; see the module docstring."""

    def __init__(self, engine: Engine, session: Session, gate: ReplyGate) -> None:
        self.engine = engine
        self.session = session
        #: The connection's replies, and those held behind their commits.
        self.gate = gate
        gate.settle = self._answered_after_commit  # type: ignore[assignment]
        self.stats = engine.stats
        self._reject_ttl = engine.settings.ttl_policy is TtlPolicy.REJECT
        self.prefixes = engine.prefixes
        # The in-flight registry's check, bound once: the fast paths ask it
        # per get (stig/engine/visibility.py), with this session's overlay;
        # under --min-replica-acks the read hold's, which asks it first
        # (stig/engine/replica_hold.py).
        hold = engine.promoter.hold
        self._clear_for = (engine.promoter.in_flight if hold is None else hold).clear_for
        self._overlay = session.overlay
        #: One snapshot with this session's writes laid over it, for a read
        #: already found ready (:meth:`read_ready`; :meth:`snapshot` waits
        #: first): the session's own method, bound here so that a fast path
        #: pays no call for going through the core.
        self.view: Callable[[], ReadView] = session.snapshot

    # -- exptimes: never a future TTL (docs/pov.md) ------------------------------

    def store_refused(self, *exptimes: int | None) -> bool:
        """Whether a store is refused for its exptime(s) (:meth:`ttl_refused`);
        a refused store still counts in ``cmd_set``, as memcached's do."""
        if self.ttl_refused(*exptimes):
            self.stats.cmd_set += 1
            return True
        return False

    def ttl_refused(self, *exptimes: int | None) -> bool:
        """A future exptime among ``exptimes`` (None: not given) under
        ``--ttl-policy reject``: the command stores or touches nothing.

        An exptime already past is never refused: see :meth:`expired`.
        """
        if not self._reject_ttl:
            return False
        now = time.time()
        return any(exptime and not already_expired(exptime, now) for exptime in exptimes)

    @staticmethod
    def expired(exptime: int | None) -> bool:
        """An exptime already past, under either ``--ttl-policy``: the write
        happens as memcached's does, then the item is gone at once."""
        return exptime is not None and exptime != 0 and already_expired(exptime, time.time())

    def creates(self, exptime: int | None) -> bool:
        """Whether a read or write that may create a missing item (an
        incr/decr's initial value, meta ``N``: a counter, a lease's
        placeholder) creates one with ``exptime`` (None: asked for none):
        not with one already past, whose item would be gone at once."""
        return exptime is not None and not self.expired(exptime)

    def set_expired(self, key: bytes) -> None:
        """A set whose exptime is past: memcached stores an item already
        expired, so the key is simply gone (from this POV at once)."""
        self.stats.cmd_set += 1
        self.remove(key)

    def touched(
        self, key: bytes, found: bool, exptime: int | None, snapshot: ReadView | None = None
    ) -> None:
        """After a touch of ``key`` (``touch``, ``gat``, ``mg T``, binary
        Touch/GAT: every touch ends here, answered first): an item ``found``
        and touched to an exptime already past (:meth:`expired`) is gone
        (memcached), from this POV at once; a later read of it from the same
        ``snapshot`` (a repeated key, a run of mg) misses.  Otherwise nothing:
        items never expire."""
        if found and self.expired(exptime):
            self.remove(key)
            if snapshot is not None:
                snapshot.forget(key)

    def refused_quietly(self) -> None:
        """A write sent ``noreply`` refused while writes are refused (a full
        disk): counted, and reported by the next barrier (or reply waiting
        for a commit), not now."""
        self.session.refused_quietly()

    def remove(self, key: bytes) -> None:
        """Drop ``key`` whether this POV sees it or not (its promotion removes
        whatever is there then); no counter moves: it is a side effect."""
        self.session.record(Remove(key), key, None, 0)

    # -- a write too large for --max-item-size ---------------------------------

    def discard_too_large(self, key: bytes) -> None:
        """memcached drops the key a too-large set failed to replace, so that
        stale data does not outlive the write that was meant to replace it."""
        self.remove(key)

    # -- stats detail ------------------------------------------------------------

    def count_prefix_set(self, key: bytes) -> None:
        if self.prefixes.enabled:
            self.prefixes.record_set(key)

    def count_prefix_delete(self, key: bytes) -> None:
        if self.prefixes.enabled:
            self.prefixes.record_delete(key)

    def stats_group(self, group: bytes, args: Sequence[bytes] = ()) -> StatsAnswer:
        """``stats <group> <args>`` (text ``stats``, binary Stat), the same in
        every protocol; the handler words the answer.  ``detail`` is
        memcached's ``stats detail on|off|dump`` (stig/engine/prefix_stats.py)."""
        engine = self.engine
        if group == b"":
            return StatsAnswer(StatsKind.LIST, general_stats(engine))
        if group == b"settings":
            return StatsAnswer(StatsKind.LIST, list(settings_stats(engine)))
        if group == b"items":
            gauges = engine.store.gauges()  # as committed, on every worker
            return StatsAnswer(StatsKind.LIST, stats_items(gauges.items, gauges.total_bytes))
        if group in _EMPTY_STATS_GROUPS:
            return StatsAnswer(StatsKind.LIST)
        if group == b"reset":
            if engine.region is not None:
                engine.region.reset()  # every worker's counters
            engine.stats.reset()
            engine.promoter_stats.reset()
            engine.promoter.refusal.reset()
            self.prefixes.clear()
            return StatsAnswer(StatsKind.RESET)
        if group == b"detail":
            word = tuple(args[:1])
            if word == (b"on",) or word == (b"off",):
                self.prefixes.enabled = word == (b"on",)
                return StatsAnswer(StatsKind.DETAIL_SWITCHED)
            if word == (b"dump",):
                return StatsAnswer(StatsKind.DETAIL_DUMP, dump=self.prefixes.dump())
            return StatsAnswer(StatsKind.DETAIL_USAGE)
        return StatsAnswer(StatsKind.UNKNOWN)

    def flush_refusal(self, delay: int) -> Refusal | None:
        """Why a ``flush_all`` with ``delay`` is refused, or None: it may go."""
        if self.engine.settings.disable_flush_all:
            return Refusal.FLUSH_DISABLED
        if delay != 0:
            return Refusal.FLUSH_DELAY
        return None

    # -- read readiness: what a read waits for, the one rule for every path -----

    def read_ready(self, keys: Sequence[bytes] | None, with_cas: bool = False) -> bool:
        """Whether a read of ``keys`` (None: any key) waits for nothing: no
        conditional write of this session may change them, no cas is asked of
        a write of this session still pending (every cas returned is a
        committed one), and no other session's write to them is in flight
        (acknowledged writes are visible everywhere: docs/pov.md, "Other
        sessions").  Every read of the store checks this, fast paths too;
        :meth:`_await_ready` waits for what it finds."""
        return not self._promotes(keys, with_cas) and self._clear_for(keys, self._overlay)

    def _promotes(self, keys: Sequence[bytes] | None, with_cas: bool) -> bool:
        """Whether a read of ``keys`` waits for this session's pending writes
        to be promoted: a conditional write's verdict may change them, or a
        cas is asked of a write still pending (:meth:`read_ready`)."""
        session = self.session
        return bool(session.unresolved and session.is_unresolved(keys)) or (
            with_cas and session.has_pending(keys)
        )

    def answers_now(self, keys: Sequence[bytes], with_cas: bool) -> bool:
        """Whether a plain get of ``keys`` (no touch) is answered at once, by
        a handler's fast path, with the answer :meth:`read` would give: no
        open run to close (whose quiet writes could come due), no verdict
        owed before its reply, no ``stats detail`` to count per key, and
        nothing to wait for (:meth:`read_ready`)."""
        session = self.session
        if session.run_open or session.owed or self.prefixes.enabled:
            return False
        return self.read_ready(keys, with_cas)

    async def _await_ready(self, keys: Sequence[bytes] | None, with_cas: bool = False) -> None:
        """Wait for what :meth:`read_ready` finds a read of ``keys`` waits for:
        this session's pending writes are promoted when a conditional write
        may change them or a cas is asked, and other sessions' writes in
        flight to them are committed.  A read (:meth:`prepare_read`) and a
        write answered from the POV that reads ``keys`` first (without a cas)
        both wait here."""
        if self._promotes(keys, with_cas):
            await self.session.promote_pending()
        await self._await_acked(keys)

    async def _await_acked(self, keys: Sequence[bytes] | None) -> None:
        """Wait until the writes of other sessions in flight to ``keys`` (None:
        any key), acknowledged to their clients, are committed: a read sees
        every acknowledged write (docs/pov.md, "Other sessions")."""
        if not self._clear_for(keys, self._overlay):
            await self.session.await_acked(keys)

    async def prepare_listing(self) -> None:
        """Before a key listing's snapshot (``lru_crawler metadump``, ``stats
        cachedump``, ``stats items``): every write in flight (acknowledged to
        some client, or this session's own run the listing closed) is
        committed, so that the listing holds it (docs/pov.md, "Key listings").
        A read sees its own writes in its POV; a listing reads the store, so
        it waits for them too."""
        session = self.session
        session.submit()
        await self._await_acked(None)
        await session.wait_committed(report=False)
        if self.engine.promoter.hold is not None:
            # --min-replica-acks: nothing held when the listing's snapshot
            # is taken, its own writes just committed included.
            await self._await_acked(None)

    def cachedump(self, limit: int) -> Iterator[bytes]:
        """``stats cachedump 1 <limit>``'s key listing (:func:`listing.cachedump`),
        read for this session (after :meth:`prepare_listing`)."""
        return listing.cachedump(self.engine.store, limit, self.stats, self.session)

    def metadump(self) -> Iterator[bytes]:
        """``lru_crawler metadump all``'s key listing (:func:`listing.metadump`),
        read for this session (after :meth:`prepare_listing`)."""
        return listing.metadump(self.engine.store, self.session)

    # -- leases and wins: exactly one reader of any connection gets W ------------

    def lease_due(self, item: Item | None, vivify_exptime: int | None) -> bool:
        """Whether a read that found ``item`` (None: a miss) hands out a win
        (:meth:`lease`): a miss that asks for a lease (meta ``N``, not to an
        exptime already past: that placeholder would be gone at once), or a
        stale item nobody won yet.  Otherwise the read is answered as it is."""
        if item is None:
            return self.creates(vivify_exptime)
        return item.stale and not item.win_sent

    async def lease(
        self, key: bytes, item: Item | None, new_cas: int | None = None
    ) -> tuple[Item | None, bool]:
        """Hand out the win :meth:`lease_due` found due: (the item to answer
        with, whether this reader won)."""
        if item is None:
            return await self.vivify(key, new_cas)
        return await self.take_win(key, item)

    async def vivify(self, key: bytes, new_cas: int | None) -> tuple[Item | None, bool]:
        """A miss that asks for a lease (meta ``mg N``): the placeholder is
        created by a conditional write checked at promotion, so its creator
        alone wins.  (item, won): the placeholder won, or whatever another
        reader (or writer) put there first."""
        outcome, written = await self.conditional_result(Vivify(key, new_cas), key)
        if outcome is Outcome.STORED:
            return written, True
        return self._reread(key), False

    async def take_win(self, key: bytes, item: Item) -> tuple[Item | None, bool]:
        """A stale ``item`` nobody won yet: take its win, checked at promotion
        against the state it was read in.  Changed meanwhile (another reader
        won, a write, a delete), it is read again and, still stale and
        unwon, tried again, :data:`WIN_ATTEMPTS` times in all.  (item, won)."""
        for _ in range(WIN_ATTEMPTS):
            op = SetState(key, item.state | WIN_SENT, item.cas, item.state)
            outcome, written = await self.conditional_result(op, key)
            if outcome is Outcome.STORED:
                return written, True
            current = self._reread(key)
            if current is None or not current.stale or current.win_sent:
                return current, False
            item = current
        return item, False

    def _reread(self, key: bytes) -> Item | None:
        """``key`` read again inside a command, right after this session's own
        write to it committed (a lost lease or win: who has it now).  No wait
        is owed: the command's read waited for every write acknowledged before
        it began (:meth:`prepare_read`), the commit just awaited is newer, and
        a write acknowledged since is concurrent with this command."""
        return self.session.get(key)

    def as_intent(self, key: bytes, quiet: bool = True) -> bool:
        """Whether a quiet write of ``key`` must become an intent: the verdict
        its POV answer needs is in the open run, and waiting for it would
        split the run.  (A write expecting a reply ends the run anyway: it
        waits for the verdict, as before.)"""
        session = self.session
        return quiet and bool(session.unresolved) and session.verdict_in_open_run(key)

    def _intent(self, op: Op, key: bytes, size: int, tag: object | None) -> None:
        """Record ``op`` as an intent; its verdict is owed to ``tag`` (if any),
        as a quiet conditional's is (:meth:`verdicts`)."""
        self.session.add_intent(op, key, size)
        if tag is not None:
            self.session.owe_verdict(tag)

    # -- transaction edges: the rules every protocol shares -----------------------

    # -- the write budget: a run past it grows no more before there is room ---

    @property
    def wants_room(self) -> bool:
        """The open run passed the write budget with its last write: the
        next write waits for room first (:meth:`make_room`; docs/pov.md,
        "Bounds").  A pipelined burst handled in the handler asks it between
        its writes, as the connection loop does between commands."""
        return self.session.wants_room

    async def make_room(self, send: Callable[[], Awaitable[None]] | None) -> bool:
        """Wait for room in the write budget, the replies so far sent first
        (``send``): False when acknowledged writes were lost meanwhile, and
        the caller stops (:meth:`Session.make_room`)."""
        return await self.session.make_room(send)

    def close_run(self) -> None:
        """A command that expects a reply (or ends the conversation) closes the open run."""
        self.session.close_run()

    # -- reads -----------------------------------------------------------------

    async def prepare_read(self, keys: Sequence[bytes] | None, with_cas: bool = False) -> None:
        """What a read of ``keys`` waits for before its snapshot: this
        session's run closes; its pending writes to them are promoted when
        cas is asked (every cas returned is a committed one) or a conditional
        write may change them; other sessions' writes in flight to them are
        committed.  ``keys`` None: a read whose keys are not all known yet
        (a quiet-get run, a get line still arriving) — then for every key."""
        self.session.close_run()
        await self._await_ready(keys, with_cas)

    async def read(
        self,
        keys: Sequence[bytes],
        *,
        with_cas: bool = False,
        touch: bool = False,
        detail: bool = True,
    ) -> list[Item | None]:
        """Every key as of one snapshot, with this session's writes laid over it.

        ``with_cas`` promotes this session's pending writes to those keys
        first, so that every cas returned is a committed one.  Other
        sessions' writes in flight to those keys are waited for first.
        ``detail`` False keeps the read out of ``stats detail`` (meta, as
        memcached).
        """
        await self.prepare_read(keys, with_cas)  # then one snapshot for all keys
        session = self.session
        items = session.get_many(keys) if len(keys) > 1 else [session.get(keys[0])]
        hits = sum(item is not None for item in items)
        self.count_gets(len(keys), hits)
        stats = self.stats
        if touch:
            stats.cmd_touch += len(keys)
            stats.touch_hits += hits
            stats.touch_misses += len(keys) - hits
        if detail and self.prefixes.enabled:
            self.prefixes.record_gets(keys, [item is not None for item in items])
        return items

    # -- streamed reads: one snapshot, the reply sent as it grows (reads) -------

    async def snapshot(self, keys: Sequence[bytes] | None, with_cas: bool = False) -> ReadView:
        """What :meth:`read` waits for (:meth:`prepare_read`), then its snapshot,
        held: the caller reads ``keys`` from it one by one, counting each with
        :meth:`count_read`, may send its reply and wait as it grows
        (docs/pov.md, "Bounds"), and closes it.  ``keys`` None: any key,
        for a read whose keys are still arriving."""
        await self.prepare_read(keys, with_cas)
        snapshot = self.session.snapshot()
        snapshot.hold(keys)
        return snapshot

    def count_gets(self, count: int, hits: int) -> None:
        """Count ``count`` keys read, ``hits`` of them found; ``count`` 0 moves
        ``hits`` keys first counted as misses to the hits."""
        stats = self.stats
        stats.cmd_get += count
        stats.get_hits += hits
        stats.get_misses += count - hits

    def count_read(self, key: bytes, found: bool, touch: bool = False, detail: bool = True) -> None:
        """Count one key read from a :meth:`snapshot`, as :meth:`read` counts its keys."""
        stats = self.stats
        stats.cmd_get += 1
        if found:
            stats.get_hits += 1
        else:
            stats.get_misses += 1
        if touch:
            stats.cmd_touch += 1
            self.count_touch(found)
        if detail and self.prefixes.enabled:
            self.prefixes.record_gets((key,), (found,))

    # -- unconditional writes: answered from the POV ---------------------------

    def set(
        self, key: bytes, value: bytes, flags: int, exptime: int = 0, answered: bool = False
    ) -> None:
        """Store ``value``; with an ``exptime`` already past the key is gone
        instead (:meth:`set_expired`).  Refusals are the caller's first step
        (:meth:`store_refused`).  ``answered``: the set replies now, from the
        POV, and so closes its run, as that run's last member (``--durable-acks``
        then holds the reply until the run is on disk, as every reply after a
        run closes: docs/pov.md, "What forms a run"); else it stays in the
        open run (quiet, or its reply waits for its commit and closes the run
        there: :meth:`reply_after_commit`)."""
        if exptime and already_expired(exptime, time.time()):
            self.set_expired(key)
        else:
            self.stats.cmd_set += 1
            self.session.set(key, value, flags)
        if answered:
            self.session.close_run()

    def set_many(self, items: Sequence[tuple[bytes, bytes, int]], answered: bool) -> int:
        """A burst of plain sets ``(key, value, flags)``, exptime 0, in order:
        each exactly :meth:`set` with ``answered`` (each replies, and closes
        its run; else all stay in the open run), counted in ``cmd_set`` and
        ``stats detail``, in one loop
        (:meth:`~stig.engine.session.Session.set_many`).  Returns how many
        were recorded: the caller does the first one not recorded (and all
        after it) one by one, which raises what :meth:`set` raises.  None
        are when they reply and the run owes quiet writes their verdicts
        (:attr:`owes_verdicts`): those come first, and one by one the
        handler writes them before the first reply."""
        if answered and self.owes_verdicts:
            return 0
        recorded = self.session.set_many(items, answered)
        self.stats.cmd_set += recorded
        if recorded and self.prefixes.enabled:
            for key, _value, _flags in items[:recorded]:
                self.prefixes.record_set(key)
        return recorded

    @property
    def owes_verdicts(self) -> bool:
        """Whether a reply now would come after verdicts owed to quiet writes
        (of closed runs, or of the open run it would close)."""
        session = self.session
        return bool(session.owed) or session.run_owes_verdicts

    async def concat(
        self,
        key: bytes,
        data: bytes,
        prepend: bool,
        vivify_flags: int | None = None,
        quiet: bool = False,
        tag: object | None = None,
        answered: bool = False,
    ) -> bool:
        """append/prepend; False if the key is absent from this POV.

        With ``vivify_flags`` (meta ``ms MA N``) an absent key is created
        with the data and these flags instead.  A quiet one may become an
        intent (:meth:`as_intent`): True, and its verdict is owed to ``tag``.
        ``answered``: it replies now, from the POV, and closes its run (as
        :meth:`set`).
        """
        self.stats.cmd_set += 1
        session = self.session
        if self.as_intent(key, quiet):
            self._intent(Concat(key, data, prepend, vivify_flags), key, len(data), tag)
            return True  # told later, if at all: its verdict is owed
        await self._await_ready((key,))
        if vivify_flags is not None and session.get(key) is None:
            op = Concat(key, data, prepend, vivify_flags)
            session.record(op, key, Item(data, vivify_flags), len(data))
            stored = True
        else:
            stored = session.concat(key, data, prepend)
        if answered:
            session.close_run()
        return stored

    async def delete(
        self, key: bytes, quiet: bool = False, tag: object | None = None, answered: bool = False
    ) -> bool:
        """Whether the key was there; a quiet intent answers True, and
        ``answered`` closes the run of one that replies (see :meth:`concat`).

        While writes are refused (a full disk) a delete is checked at its
        commit instead, as a conditional write: it frees space, but its
        commit needs pages too and may fail, so it answers only once it is
        committed (a quiet one: queued, its verdict owed to ``tag``)."""
        session = self.session
        if session.writes_refused is not None:
            return await self._delete_committed(key, quiet, tag)
        if self.as_intent(key, quiet):
            self._intent(Remove(key), key, 0, tag)
            return True  # told later, if at all: its verdict is owed
        await self._await_ready((key,))
        found = session.delete(key)
        if found:
            self.stats.delete_hits += 1
        else:
            self.stats.delete_misses += 1
        if answered:
            session.close_run()
        return found

    async def _delete_committed(self, key: bytes, quiet: bool, tag: object | None) -> bool:
        """A delete answered after its commit (see :meth:`delete`)."""
        if quiet:
            self.queue_conditional(Remove(key), key, 0, tag)
            return True  # told later, if at all: its verdict is owed
        found = await self.conditional(Remove(key), key) is Outcome.DELETED
        if found:
            self.stats.delete_hits += 1
        else:
            self.stats.delete_misses += 1
        return found

    async def adjust(
        self,
        key: bytes,
        delta: int,
        incr: bool,
        initial: int | None = None,
        flags: int = 0,
        quiet: bool = False,
        tag: object | None = None,
        answered: bool = False,
    ) -> int | Outcome:
        """incr/decr: the value this POV sees afterwards, or NOT_FOUND / NON_NUMERIC.

        ``initial`` (if not None) creates a missing counter with that value.
        A quiet one that becomes an intent (see :meth:`as_intent`) answers 0;
        its verdict is owed to ``tag``.  ``answered``: see :meth:`concat`.
        """
        session = self.session
        if self.as_intent(key, quiet):
            self._intent(Adjust(key, delta, incr, initial, flags), key, 8, tag)
            return 0  # told later, if at all: its verdict is owed
        await self._await_ready((key,))
        result = session.adjust(key, delta, incr, initial, flags)
        hit = not isinstance(result, Outcome)
        stats = self.stats
        if incr:
            stats.incr_hits += hit
            stats.incr_misses += not hit
        else:
            stats.decr_hits += hit
            stats.decr_misses += not hit
        if answered:
            session.close_run()
        return result

    async def touch(self, key: bytes, exptime: int = 0, answered: bool = False) -> bool:
        """Whether the key exists: touch changes nothing, items never expire;
        touched to an ``exptime`` already past, a found item is gone.
        ``answered``: see :meth:`concat`."""
        await self._await_ready((key,))
        found = self.session.get(key) is not None
        self.count_touch(found)
        self.touched(key, found, exptime)
        if answered:
            self.session.close_run()
        return found

    def count_touch(self, found: bool) -> None:
        """Count one touch (``cmd_touch``), a hit or a miss."""
        self.stats.cmd_touch += 1
        if found:
            self.stats.touch_hits += 1
        else:
            self.stats.touch_misses += 1

    # -- conditional writes: checked against the global state at promotion ----

    def queue_conditional(
        self, op: Op, key: bytes | None, size: int = 0, tag: object | None = None
    ) -> None:
        """A conditional write sent quiet (or noreply): it joins the open run.

        With ``tag`` its verdict is owed: :meth:`verdicts` gives it, with
        ``tag``, once the run has closed and committed (text ``noreply``
        owes nothing; meta ``q`` and binary quiet writes report failures).
        """
        self._count_write(op)
        session = self.session
        session.add_conditional(op, key, size)
        if tag is not None:
            session.owe_verdict(tag)

    def quiet_reply(self, reply: bytes) -> bytes:
        """What a handler writes now of ``reply``, the reply a quiet write gets
        at once from the POV (a failure such as ``NF`` of a missing key; quiet
        mode hides the rest) or a refusal: all of it — or nothing, while the
        open run owes an earlier quiet write a verdict that its commit will
        decide.  Then ``reply`` is owed right behind that verdict
        (:meth:`Session.owe_reply`) and :meth:`verdicts` gives it in its
        place: a client is told of its quiet writes in the order it sent them
        (docs/pov.md, "Which replies acknowledge what"), whether the POV or
        the commit decided each."""
        session = self.session
        if not reply or not session.run_owes_verdicts:
            return reply
        session.owe_reply(_Worded(reply), len(reply) + WORDED_COST)
        return b""

    @property
    def verdicts_due(self) -> bool:
        """Whether a closed run owes quiet writes their verdicts (:meth:`verdicts`)."""
        return bool(self.session.owed)

    async def verdicts(self) -> list[Verdict]:
        """The verdicts owed to quiet writes whose runs have closed, in order,
        after those runs' commits; each is given once.

        A run that failed to commit gives its failure to each of its quiet
        writes — unless a barrier or another reply already reported it (a
        failure is reported once:
        :meth:`~stig.engine.failure_ledger.FailureLedger.failure_to_report`); then its
        writes get nothing.  The handler writes them in place of the quiet
        writes' replies, before the reply of the command being served.  The
        replies owed in their turn (:meth:`quiet_reply`) come in their places
        among them, whatever the commit did: they are about writes the POV
        decided, not the run's.
        """
        session = self.session
        if not session.owed:
            return []
        owed, session.owed = session.owed, []
        session.submit()
        verdicts: list[Verdict] = []
        for promotion, tags in owed:
            await promotion.done.wait()
            outcomes = promotion.outcomes
            failed = promotion.error is not None or outcomes is None
            message = session.ledger.failure_to_report(promotion) if failed else None
            for tag, index in tags:
                if isinstance(tag, _Worded):
                    verdicts.append(Verdict(None, None, reply=tag.reply))
                elif not failed:
                    verdicts.append(Verdict(tag, outcomes[index]))  # type: ignore[index]
                elif message is not None:
                    verdicts.append(Verdict(tag, None, message))
        return verdicts

    # -- replies after commit: held in the gate, one group commit per burst ----

    def conditional_reply(
        self,
        op: Op,
        key: bytes | None,
        size: int,
        quiet: bool,
        answer: Answer,
        tag: object | None = None,
        exptime: int | None = None,
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> Awaitable[None] | None:
        """A conditional write as its client sent it: quiet (or noreply), it
        joins the open run, its verdict owed to ``tag`` (:meth:`queue_conditional`);
        else it closes its run and ``answer`` writes its reply once that run
        is committed (:meth:`reply_after_commit`, which ``before`` is for).
        With an ``exptime`` already past it is checked as sent but stores
        nothing (:func:`expired_variant`).  None, or what to await first."""
        if self.expired(exptime):
            op = expired_variant(op)
        if quiet:
            self.queue_conditional(op, key, size, tag)
            return None
        self._count_write(op)
        self.session.add_conditional(op, key, size)
        is_cas = isinstance(op, Cas) or (
            isinstance(op, ExpiredStore) and op.mode is ExpiredMode.CAS
        )
        return self.reply_after_commit(answer, is_cas, before)

    def reply_after_commit(
        self,
        answer: Answer,
        is_cas: bool = False,
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> Awaitable[None] | None:
        """Close the open run, whose last member is the write just recorded;
        its reply — ``answer`` of what the commit decided — goes out once that
        run is committed.

        The reply is held in the gate (stig/core/reply_gate.py) and the
        burst goes on: every such write of a burst shares one group commit,
        and the connection writes the replies in their places before it
        sends (None returned).  Only when the run owes quiet writes their
        verdicts, which come before this reply, does it wait for the commit
        here (the awaitable returned; ``before`` writes those verdicts, as
        the binary handler does; the text handler inserts them afterwards).
        ``is_cas``: the write is a ``cas``, counted in ``cas_*`` by outcome.
        """
        session = self.session
        promotion = session.close_for_reply()
        if is_cas:
            answer = functools.partial(self._counted_cas, answer)
        if not session.owed:
            self.gate.hold(promotion, answer)
            return None
        return self._reply_when_committed(promotion, answer, before)

    async def _reply_when_committed(
        self,
        promotion: Promotion,
        answer: Answer,
        before: Callable[[], Awaitable[None]] | None,
    ) -> None:
        self.session.submit()
        await promotion.done.wait()
        # The reply first: a failure it reports is not the verdicts' to report.
        reply = self._answered_after_commit(promotion, answer)
        if before is not None:
            await before()
        self.gate.out += reply

    def _answered_after_commit(self, promotion: Promotion, answer: Answer) -> bytes:
        """The reply of a write held for its finished ``promotion`` (the
        gate's :attr:`~stig.core.reply_gate.ReplyGate.settle`)."""
        outcomes = promotion.outcomes
        if promotion.error is not None or outcomes is None:
            self.session.reported()  # this reply reports it
            return answer(Committed(None, None, promotion.error or "commit failed"))
        return answer(Committed(outcomes[-1], promotion.written))

    def _counted_cas(self, answer: Answer, committed: Committed) -> bytes:
        """A ``cas`` write's answer, counted in ``cas_*`` by its outcome."""
        if committed.outcome is not None:
            self.count_cas(committed.outcome)
        return answer(committed)

    async def conditional(self, op: Op, key: bytes | None, size: int = 0) -> Outcome:
        """A conditional write, answered with its outcome after its commit."""
        return (await self.conditional_result(op, key, size))[0]

    async def conditional_result(
        self, op: Op, key: bytes | None, size: int = 0
    ) -> tuple[Outcome, Item | None]:
        """A conditional write's outcome and the item it stored, awaited here
        (``flush_all``; the lease and stale wins of a run of ``mg``, read from
        its held snapshot): replies held in the gate use
        :meth:`conditional_reply` instead."""
        self._count_write(op)
        self.session.add_conditional(op, key, size)
        promotion = await self.session.commit_run()
        outcome = promotion.outcomes[-1]  # type: ignore[index]
        if isinstance(op, Cas) or (isinstance(op, ExpiredStore) and op.mode is ExpiredMode.CAS):
            self.count_cas(outcome)
        return outcome, promotion.written

    async def barrier(self) -> list[Verdict]:
        """Wait until everything this connection sent so far is committed on
        disk (meta ``mn``, binary No-op); then the verdicts owed to quiet writes.

        Closes the open run first.  Raises
        :class:`~stig.engine.session.CommitFailed` if a promotion of this connection
        failed since the last barrier, once (docs/pov.md, "The barrier").
        """
        await self.session.promote_pending()
        return await self.verdicts()

    def count_cas(self, outcome: Outcome) -> None:
        stats = self.stats
        if outcome is Outcome.STORED:
            stats.cas_hits += 1
        elif outcome is Outcome.EXISTS:
            stats.cas_badval += 1
        else:
            stats.cas_misses += 1

    def _count_write(self, op: Op) -> None:
        if isinstance(op, Clear):
            self.stats.cmd_flush += 1
        elif hasattr(op, "value") or isinstance(op, (ExpiredStore, Concat)):
            self.stats.cmd_set += 1

    async def flush_all(self, quiet: bool = False, tag: object | None = None) -> None:
        """Delete every item in one transaction, answered after its commit
        (quiet: queued in the open run, its verdict owed to ``tag``)."""
        if quiet:
            self.queue_conditional(Clear(), None, 0, tag)
        else:
            await self.conditional(Clear(), None)
