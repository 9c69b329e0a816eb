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

from typing import Sequence

from stig.engine import Engine
from stig.ops import Adjust, Cas, Clear, Concat, Op, Outcome, Remove
from stig.records import Item
from stig.session import Session
from stig.settings import TtlPolicy


#: Why a non-zero TTL is refused (``--ttl-policy reject``), in every protocol.
TTL_REFUSED = "exptime must be 0: Stig is a database and items never expire (see --ttl-policy)"
#: memcached's words for incr/decr of a value that is not a number.
NON_NUMERIC = "cannot increment or decrement non-numeric value"


class Core:
    """One connection's command core; see the module docstring."""

    def __init__(self, engine: Engine, session: Session) -> None:
        self.engine = engine
        self.session = session
        self.stats = engine.stats
        self._reject_ttl = engine.settings.ttl_policy is TtlPolicy.REJECT

    def ttl_refused(self, exptime: int) -> bool:
        """A non-zero exptime under ``--ttl-policy reject``: store nothing."""
        return exptime != 0 and self._reject_ttl

    @property
    def flush_enabled(self) -> bool:
        return not self.engine.settings.disable_flush_all

    async def _resolve(self, keys: Sequence[bytes]) -> None:
        """Wait for this session's conditional writes that may change ``keys``."""
        session = self.session
        if session.unresolved and session.is_unresolved(keys):
            await session.promote_pending()

    def as_intent(self, key: bytes, quiet: bool = True) -> bool:
        """Whether a quiet write of ``key`` must become an intent: the verdict
        its POV answer needs is in the open run, and waiting for it would
        split the run.  (A write expecting a reply ends the run anyway: it
        waits for the verdict, as before.)"""
        session = self.session
        return quiet and bool(session.unresolved) and session.verdict_in_open_run(key)

    # -- reads -----------------------------------------------------------------

    async def read(
        self, keys: Sequence[bytes], *, with_cas: bool = False, touch: bool = False
    ) -> list[Item | None]:
        """Every key as of one snapshot, with this session's writes laid over it.

        ``with_cas`` promotes this session's pending writes to those keys
        first, so that every cas returned is a committed one.
        """
        session = self.session
        session.close_run()
        if (with_cas and session.has_pending(keys)) or session.is_unresolved(keys):
            await session.promote_pending()
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
        return items

    # -- unconditional writes: answered from the POV ---------------------------

    def set(self, key: bytes, value: bytes, flags: int) -> None:
        self.stats.cmd_set += 1
        self.session.set(key, value, flags)

    async def concat(
        self, key: bytes, data: bytes, prepend: bool, vivify_flags: int | None = None,
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
        self, key: bytes, delta: int, incr: bool, initial: int | None = None, flags: int = 0,
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
        if isinstance(op, Cas):
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
        elif hasattr(op, "value"):
            self.stats.cmd_set += 1

    async def flush_all(self) -> None:
        """Delete every item in one transaction, answered after its commit."""
        await self.conditional(Clear(), None)
