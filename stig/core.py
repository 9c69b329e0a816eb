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
Conditional writes answer after their commit.  Commit failures surface as
:class:`~stig.session.CommitFailed`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from stig.engine import Engine
from stig.ops import (
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
)
from stig.records import Item
from stig.session import Session
from stig.settings import TtlPolicy
from stig.snapshot import Snapshot

#: Why a non-zero TTL is refused (``--ttl-policy reject``), in every protocol.
TTL_REFUSED = "exptime must be 0: Stig is a database and items never expire (see --ttl-policy)"
#: memcached's words for incr/decr of a value that is not a number.
NON_NUMERIC = "cannot increment or decrement non-numeric value"
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

    def __init__(self, engine: Engine, session: Session) -> None:
        self.engine = engine
        self.session = session
        self.stats = engine.stats
        self._reject_ttl = engine.settings.ttl_policy is TtlPolicy.REJECT
        self.prefixes = engine.prefixes

    # -- exptimes: never a future TTL (docs/pov.md) ------------------------------

    def ttl_refused(self, exptime: int) -> bool:
        """A future exptime under ``--ttl-policy reject``: store nothing.

        An exptime already past is never refused: see :meth:`expired`.
        """
        return exptime != 0 and self._reject_ttl and not already_expired(exptime, time.time())

    @staticmethod
    def expired(exptime: int | None) -> bool:
        """An exptime already past, under either ``--ttl-policy``: the write
        happens as memcached's does, then the item is gone at once."""
        return exptime is not None and exptime != 0 and already_expired(exptime, time.time())

    def set_expired(self, key: bytes) -> None:
        """A set whose exptime is past: memcached stores an item already
        expired, so the key is simply gone (from this POV at once)."""
        self.stats.cmd_set += 1
        self.remove(key)

    def remove(self, key: bytes) -> None:
        """Drop ``key`` whether this POV sees it or not (its promotion removes
        whatever is there then); no counter moves: it is a side effect."""
        self.session.record(Remove(key), key, None, 0)

    def expire_found(self, keys: Sequence[bytes], items: Sequence[object]) -> None:
        """After a touch or gat with an exptime already past: the items found go."""
        for key, item in zip(keys, items, strict=True):
            if item is not None:
                self.remove(key)

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

    @property
    def flush_enabled(self) -> bool:
        return not self.engine.settings.disable_flush_all

    async def _resolve(self, keys: Sequence[bytes]) -> None:
        """Wait for this session's conditional writes that may change ``keys``,
        and for other sessions' writes to them that are in flight (acknowledged
        writes are visible everywhere: docs/pov.md)."""
        session = self.session
        if session.unresolved and session.is_unresolved(keys):
            await session.promote_pending()
        if not session.sees_acked(keys):
            await session.await_acked(keys)

    def as_intent(self, key: bytes, quiet: bool = True) -> bool:
        """Whether a quiet write of ``key`` must become an intent: the verdict
        its POV answer needs is in the open run, and waiting for it would
        split the run.  (A write expecting a reply ends the run anyway: it
        waits for the verdict, as before.)"""
        session = self.session
        return quiet and bool(session.unresolved) and session.verdict_in_open_run(key)

    # -- reads -----------------------------------------------------------------

    async def prepare_read(self, keys: Sequence[bytes], with_cas: bool = False) -> None:
        """What a read of ``keys`` waits for before its snapshot: this
        session's run closes; its pending writes to them are promoted when
        cas is asked (every cas returned is a committed one) or a conditional
        write may change them; other sessions' writes in flight to them are
        committed."""
        session = self.session
        session.close_run()
        if (with_cas and session.has_pending(keys)) or session.is_unresolved(keys):
            await session.promote_pending()
        if not session.sees_acked(keys):
            await session.await_acked(keys)

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
        stats = self.stats
        stats.cmd_get += len(keys)
        stats.get_hits += hits
        stats.get_misses += len(keys) - hits
        if touch:
            stats.cmd_touch += len(keys)
            stats.touch_hits += hits
            stats.touch_misses += len(keys) - hits
        if detail and self.prefixes.enabled:
            self.prefixes.record_gets(keys, [item is not None for item in items])
        return items

    # -- streamed reads: one snapshot, the reply sent as it grows (reads) -------

    async def snapshot(self, keys: Sequence[bytes], with_cas: bool = False) -> Snapshot:
        """What :meth:`read` waits for (:meth:`prepare_read`), then its snapshot,
        held: the caller reads ``keys`` from it one by one, counting each with
        :meth:`count_read`, may send its reply and wait as it grows
        (docs/pov.md, "Bounds"), and closes it."""
        await self.prepare_read(keys, with_cas)
        snapshot = self.session.snapshot()
        snapshot.hold(keys)
        return snapshot

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

    def set(self, key: bytes, value: bytes, flags: int) -> None:
        self.stats.cmd_set += 1
        self.session.set(key, value, flags)

    async def concat(
        self,
        key: bytes,
        data: bytes,
        prepend: bool,
        vivify_flags: int | None = None,
        quiet: bool = False,
    ) -> bool:
        """append/prepend; False if the key is absent from this POV.

        With ``vivify_flags`` (meta ``ms MA N``) an absent key is created
        with the data and these flags instead.
        """
        self.stats.cmd_set += 1
        session = self.session
        if self.as_intent(key, quiet):
            session.add_intent(Concat(key, data, prepend, vivify_flags), key, len(data))
            return True  # nobody is told
        await self._resolve((key,))
        if vivify_flags is not None and session.get(key) is None:
            op = Concat(key, data, prepend, vivify_flags)
            session.record(op, key, Item(data, vivify_flags), len(data))
            return True
        return session.concat(key, data, prepend)

    async def delete(self, key: bytes, quiet: bool = False) -> bool:
        session = self.session
        if self.as_intent(key, quiet):
            session.add_intent(Remove(key), key, 0)
            return True  # nobody is told
        await self._resolve((key,))
        found = session.delete(key)
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
    ) -> int | Outcome:
        """incr/decr: the value this POV sees afterwards, or NOT_FOUND / NON_NUMERIC.

        ``initial`` (if not None) creates a missing counter with that value.
        A quiet one that becomes an intent (see :meth:`as_intent`) answers 0.
        """
        session = self.session
        if self.as_intent(key, quiet):
            session.add_intent(Adjust(key, delta, incr, initial, flags), key, 8)
            return 0  # nobody is told
        await self._resolve((key,))
        result = session.adjust(key, delta, incr, initial, flags)
        hit = not isinstance(result, Outcome)
        stats = self.stats
        if incr:
            stats.incr_hits += hit
            stats.incr_misses += not hit
        else:
            stats.decr_hits += hit
            stats.decr_misses += not hit
        return result

    async def touch(self, key: bytes) -> bool:
        """Whether the key exists: touch changes nothing, items never expire."""
        self.stats.cmd_touch += 1
        await self._resolve((key,))
        found = self.session.get(key) is not None
        self.count_touch(found)
        return found

    def count_touch(self, found: bool) -> None:
        """Count a touch hit or miss (``cmd_touch`` is counted by the caller)."""
        if found:
            self.stats.touch_hits += 1
        else:
            self.stats.touch_misses += 1

    # -- conditional writes: checked against the global state at promotion ----

    def queue_conditional(self, op: Op, key: bytes | None, size: int = 0) -> None:
        """A conditional write whose client wants no answer: it joins the open run."""
        self._count_write(op)
        self.session.add_conditional(op, key, size)

    async def conditional(self, op: Op, key: bytes | None, size: int = 0) -> Outcome:
        """A conditional write, answered with its outcome after its commit."""
        return (await self.conditional_result(op, key, size))[0]

    async def conditional_result(
        self, op: Op, key: bytes | None, size: int = 0
    ) -> tuple[Outcome, Item | None]:
        """A conditional write's outcome and the item it stored, after its commit."""
        self._count_write(op)
        self.session.add_conditional(op, key, size)
        outcome, item = await self.committed()
        if isinstance(op, Cas) or (isinstance(op, ExpiredStore) and op.mode is ExpiredMode.CAS):
            self.count_cas(outcome)
        return outcome, item

    async def committed(self) -> tuple[Outcome, Item | None]:
        """Commit the open run, whose last member is the write just made.

        Its outcome at promotion and the item it stored (None if it stored
        nothing), after the commit: for replies that must carry the cas a
        write got, which only the commit assigns (the binary protocol).
        """
        promotion = await self.session.commit_run()
        return promotion.outcomes[-1], promotion.written  # type: ignore[index]

    async def barrier(self) -> None:
        """Wait until everything this connection sent so far is committed on disk.

        Closes the open run first: the binary No-op's guarantee (docs/pov.md).
        """
        await self.session.promote_pending()

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
        elif hasattr(op, "value") or isinstance(op, ExpiredStore):
            self.stats.cmd_set += 1

    async def flush_all(self) -> None:
        """Delete every item in one transaction, answered after its commit."""
        await self.conditional(Clear(), None)
