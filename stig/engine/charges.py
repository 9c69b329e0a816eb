"""What one session charges to the engine-wide write budget (``--max-pending-bytes``).

The budget (:class:`~stig.engine.budget.WriteBudget`) sums every session's
uncommitted bytes; this object is one session's account in it, and the only
writer of the budget's figures on the session's behalf.  It keeps the
session's own two figures and moves the budget's with them:

* ``pending``: every byte the session recorded that is not committed yet
  (its open run and its closed runs): ``budget.used`` holds them;
* ``open``: the bytes of its open run: ``budget.open`` holds them.

A run is charged as it grows (:meth:`charge`), then either closes
(:meth:`close_run`: its bytes leave ``open``, and a run of its own pays its
promotion's bookkeeping, :data:`RUN_OVERHEAD`) or is discarded
(:meth:`discard_run`: its bytes are given back); a closed run's bytes are
released when its promotion finishes (:meth:`release`).  Past the limit,
:meth:`hold` says whether the open run goes on (it holds), waits for room
(:meth:`wait_for_room`) or is refused, by the budget's rules (its module
docstring).

Sizes are at about their real memory cost, measured with tracemalloc on
CPython 3.11: :data:`OP_OVERHEAD` per write on top of its key and value,
:data:`RUN_OVERHEAD` per closed run.

A plain class with slots, like :class:`~stig.engine.open_run.OpenRun`: its
methods do what the session's hot path did inline, one call each.
"""

from __future__ import annotations

from collections.abc import Callable

from stig.engine.budget import WriteBudget

#: Bytes of bookkeeping counted per pending write (op, overlay entry, dict
#: slots) and per closed run (its Promotion and per-key map), on top of the
#: key and value: tracemalloc measured ~380 and ~480 on CPython 3.11.
OP_OVERHEAD = 384
RUN_OVERHEAD = 512


class Charges:
    """One session's account in the write budget; see the module docstring."""

    __slots__ = ("budget", "open", "owner", "pending")

    def __init__(self, budget: WriteBudget, owner: object) -> None:
        self.budget = budget
        #: Who the budget sees hold or wait (the session; None once it is
        #: closed: :meth:`Session.close`, which breaks the cycle it makes).
        self.owner: object | None = owner
        #: Bytes recorded and not committed yet: the open run's and the closed runs'.
        self.pending = 0
        #: Bytes of the open run.
        self.open = 0

    @property
    def closed(self) -> int:
        """Bytes of the closed runs not committed yet: what their commits will free."""
        return self.pending - self.open

    def charge(self, size: int) -> bool:
        """The open run grew by ``size`` bytes.  True when the open runs of all
        sessions are now past the limit: the caller asks :meth:`hold`."""
        self.open += size
        self.pending += size
        budget = self.budget
        used = budget.used = budget.used + size
        if used > budget.peak:
            budget.peak = used
        budget.open += size
        return budget.open > budget.limit

    def room(self) -> int:
        """How many bytes the open run may still grow by before :meth:`charge`
        would pass the limit (or, while this run holds, before it alone would)."""
        budget = self.budget
        return budget.limit - (self.open if budget.holder is self.owner else budget.open)

    def hold(self) -> bool | None:
        """After a :meth:`charge` past the limit: True when the open run goes on
        (it holds the room past the limit), False when it must wait for room
        before it grows again (:meth:`wait_for_room`), None when it alone is
        past the limit and is refused (the caller discards it)."""
        return self.budget.may_grow(self.owner, self.open)

    async def wait_for_room(self, give_up: Callable[[], bool]) -> bool:
        """Wait until the open run may grow (:meth:`WriteBudget.wait_for_room`);
        False when it waited too long (the caller refuses it)."""
        return await self.budget.wait_for_room(self.owner, give_up)

    def close_run(self, joined: bool) -> int:
        """The open run closed: its bytes leave the budget's ``open`` (they stay
        pending until committed), and the runs waiting for room look again.
        A run that becomes a promotion of its own (not ``joined`` to the one
        closed before it) is charged :data:`RUN_OVERHEAD` too.  Returns the
        bytes its promotion releases when it finishes (:meth:`release`)."""
        nbytes = self.open
        self.open = 0
        budget = self.budget
        budget.open -= nbytes
        if budget.holder is not None or budget.waiting:
            budget.run_ended(self.owner)
        if joined:
            return nbytes
        self.pending += RUN_OVERHEAD
        budget.add(RUN_OVERHEAD)
        return nbytes + RUN_OVERHEAD

    def discard_run(self) -> None:
        """The open run was discarded (a dropped connection, a truncated
        command, a run refused): its bytes are given back."""
        nbytes = self.open
        self.open = 0
        self.pending -= nbytes
        budget = self.budget
        budget.used -= nbytes
        budget.open -= nbytes
        if budget.holder is not None or budget.waiting:
            budget.run_ended(self.owner)

    def release(self, nbytes: int) -> None:
        """A promotion of ``nbytes`` (as :meth:`close_run` returned them) finished."""
        self.pending -= nbytes
        self.budget.used -= nbytes

    def wake_waiters(self) -> None:
        """Let every run waiting for room look again (its session's loss ends its wait)."""
        if self.budget.waiting:
            self.budget.wake()
