"""The engine-wide budget of uncommitted write bytes (``--max-pending-bytes``).

Two figures, both at about their real memory cost (see :mod:`stig.engine.session`):

* ``used``: every write recorded and not yet committed — open runs and
  queued promotions, conditional writes included.  While it is over the
  limit, connections with uncommitted writes stop reading until the
  promoter has committed some (the brake, :mod:`stig.server.connection`).
* ``open``: the part held by open runs (noreply/quiet transactions not yet
  closed).  No brake can shrink it: an open run is never committed before it
  closes.  So while ``open`` is over the limit, **one** open run at a time —
  the *holder*, the first that grew past it — may go on growing until it
  closes or ``open`` is back within the limit; every other run that grows
  waits for room (its connection reads nothing more) until the open runs
  are back under the limit or the holder's run has ended, and then one of
  them holds.  The holder usually ends soon (its client's own barrier,
  ``--batch-idle-ms``, a disconnect, or its run alone passing the limit,
  which refuses it) but need not (a client that trickles input, or does not
  read its replies): so a run waits at most ``max_wait``
  (``--max-run-wait-ms``), then is refused.  Open runs together hold at most
  twice the limit, plus the write each waiting connection had just received
  (docs/pov.md, "Bounds").
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs
import trio


class WaitCounts(Protocol):
    """Where waits for room are counted: the budget itself, or with
    ``--workers N`` the worker's words in the shared region."""

    waiting: int
    room_waits: int
    wait_max: float
    wait_refusals: int


@attrs.frozen
class BudgetFigures:
    """The budget's figures for ``stats`` (with ``--workers N``: every worker's)."""

    used: int
    peak: int
    limit: int
    open: int
    waiting: int
    room_waits: int
    wait_max: float
    wait_refusals: int


class WriteBudget:
    """The budget; sessions add and remove their bytes (see the module docstring)."""

    __slots__ = (
        "_room",
        "holder",
        "limit",
        "max_wait",
        "open",
        "peak",
        "room_waits",
        "used",
        "wait_max",
        "wait_refusals",
        "waiting",
    )

    def __init__(self, limit: int, max_wait: float = float("inf")) -> None:
        self.limit = limit
        #: Seconds a run waits for room before it is refused (``--max-run-wait-ms``).
        self.max_wait = max_wait
        self.used = 0
        self.peak = 0
        self.open = 0
        #: The session whose open run may grow while ``open`` is over the limit.
        self.holder: object | None = None
        #: Sessions waiting for room now; how many times one waited.
        self.waiting = 0
        self.room_waits = 0
        #: The longest wait for room so far (seconds); runs refused for waiting too long.
        self.wait_max = 0.0
        self.wait_refusals = 0
        self._room: trio.Event | None = None

    def add(self, nbytes: int) -> None:
        used = self.used = self.used + nbytes
        if used > self.peak:
            self.peak = used

    @property
    def over(self) -> bool:
        return self.used > self.limit

    def committing_elsewhere(self) -> bool:
        """Whether another process holds closed runs not committed yet (their
        commits will free room that this process's promoter does not see).
        One process: never; with ``--workers N``, the other workers' words
        (:class:`~stig.engine.shared_budget.SharedWriteBudget`)."""
        return False

    def figures(self) -> BudgetFigures:
        """The figures ``stats`` shows."""
        return BudgetFigures(
            self.used,
            self.peak,
            self.limit,
            self.open,
            self.waiting,
            self.room_waits,
            self.wait_max,
            self.wait_refusals,
        )

    def may_grow(self, session: object, run_bytes: int) -> bool | None:
        """After an open run of ``session`` grew to ``run_bytes``: True when it
        may go on, False when it must wait for room first
        (:meth:`wait_for_room`), None when it alone is over the limit (it is
        refused)."""
        if self.open <= self.limit:
            return True
        if run_bytes > self.limit:
            return None
        holder = self.holder
        if holder is None:
            self.holder = session
            return True
        return holder is session

    def run_ended(self, session: object) -> None:
        """``session``'s open run closed or was discarded (its bytes have left
        ``open``): it holds no more, and the waiters look again.  Nor does
        the holder once the open runs are back within the limit: the turn is
        for while they are past it, and the next run to pass it takes it —
        else that run would wait for the end of a run that may stay open
        long (a client streaming quiet writes without a pause)."""
        if self.holder is session or self.open <= self.limit:
            self.holder = None
        self.wake()

    def wake(self) -> None:
        """Let every waiter look again (one of them may have to give up:
        :meth:`wait_for_room`'s ``give_up``)."""
        if self._room is not None:
            self._room.set()
            self._room = None

    async def wait_for_room(self, session: object, give_up: Callable[[], bool]) -> bool:
        """Wait until ``session``'s open run may grow: the open runs are under
        the limit, or no other run holds (then ``session`` holds) — or until
        ``give_up()`` holds (looked at whenever :meth:`wake` is called: its
        acknowledged writes were lost, which its connection must report at
        once, not after another client's run).

        Returns False when ``max_wait`` passed first: the holder's run need
        not end (its client may trickle input, or not read its replies, which
        blocks its connection in a send), and a wait without end would hold
        this run, its connection and its client, silent; the caller refuses
        the run instead (counted in ``wait_refusals``)."""

        async def until_room() -> None:
            while self.open > self.limit and self.holder not in (None, session) and not give_up():
                await self.woken()

        if not await self.bounded_wait(self, until_room):
            return False
        if self.open > self.limit and not give_up():
            self.holder = session
        return True

    async def woken(self, at_most: float = math.inf) -> None:
        """Wait for the next :meth:`wake` (at most ``at_most`` seconds)."""
        if self._room is None:
            self._room = trio.Event()
        with trio.move_on_after(at_most):
            await self._room.wait()

    async def bounded_wait(
        self, counts: WaitCounts, until_room: Callable[[], Awaitable[None]]
    ) -> bool:
        """Await ``until_room()`` for at most ``max_wait``, counted in ``counts``
        (``waiting`` meanwhile, ``room_waits``, ``wait_max``, and
        ``wait_refusals`` when ``max_wait`` passed first: then False)."""
        counts.waiting += 1
        counts.room_waits += 1
        start = trio.current_time()
        try:
            with trio.move_on_after(self.max_wait) as timer:
                await until_room()
        finally:
            counts.waiting -= 1
            waited = trio.current_time() - start
            if waited > counts.wait_max:
                counts.wait_max = waited
        if timer.cancelled_caught:
            counts.wait_refusals += 1
            return False
        return True
