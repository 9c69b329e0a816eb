"""One write budget for every worker (``--workers N``, ``--max-pending-bytes``).

:class:`~stig.engine.budget.WriteBudget`'s rules, unchanged, over figures
that live in the shared region (:mod:`stig.engine.shared_region`):

* each worker writes its own ``used`` and ``open`` words
  (:class:`~stig.engine.shared_stats.BudgetWords`, in its slot), with plain stores and no lock
  (:class:`SharedCharges`, a session's account); the budget's figures are
  the sums over every worker's words, read when a rule needs them (a run's
  growth: two stores and 2 × (N − 1) loads, no system call);
* the *holder* (the one open run that may grow while the open runs are past
  the limit) is one word of the region's header: a token made of the
  session's identity and its worker's number, 0 for none.  It is taken and
  given back under the region's lock (a record lock, two system calls), only
  on the rare path: a run past the limit;
* a run that waits for room is woken at once by a run ending in its own
  worker and looks again every :data:`POLL_SECONDS` × the worker's waiters
  (one look per :data:`POLL_SECONDS` per worker) for the other workers'
  (their words are in shared memory; there is no cross-process wake-up).

The bound is then the one of docs/pov.md for the whole server: open runs
together hold at most twice ``--max-pending-bytes`` (plus a write per waiting
connection), whichever workers they are on.
"""

from __future__ import annotations

from collections.abc import Callable

from stig.engine.budget import BudgetFigures, WriteBudget
from stig.engine.charges import RUN_OVERHEAD, Charges
from stig.engine.shared_region import Region, budget_word

#: How often a run waiting for room looks at the other workers' words again.
POLL_SECONDS = 0.0005


class SharedWriteBudget(WriteBudget):
    """The write budget of one worker, over the shared region's words.

    Its own ``used`` and ``open`` stay plain attributes (what
    :class:`SharedCharges` moves, as :class:`~stig.engine.charges.Charges`
    does), each change stored into its words too (``words[used_at]``,
    ``words[used_at + 1]``, a memoryview over the region: cheaper than a
    ctypes field); the figures the rules compare are the sums with the
    other workers' words (``others_at``)."""

    __slots__ = ("_header", "_me", "_region", "_slots", "mine", "others_at", "used_at", "words")

    def __init__(self, region: Region, limit: int, max_wait: float = float("inf")) -> None:
        super().__init__(limit, max_wait)
        self._region = region
        self._header = region.header
        self._me = region.me + 1
        #: The region's words; this worker's ``used`` word (``open`` follows
        #: it) and the other workers'; word 0 is the holder.
        self.words = region.words
        self.used_at = budget_word(region.me)
        self.others_at = tuple(budget_word(w) for w in range(region.workers) if w != region.me)
        #: This worker's block (its cold figures: peak, waits).
        self.mine = region.mine.budget
        self._slots = [slot.budget for slot in region.slots]

    def token(self, session: object) -> int:
        """``session``'s holder word: its identity and its worker's number."""
        return 0 if session is None else ((id(session) >> 4) << 8) | self._me

    def open_total(self) -> int:
        words = self.words
        opened = self.open
        for at in self.others_at:
            opened += words[at + 1]
        return opened

    def used_total(self) -> int:
        words = self.words
        used = self.used
        for at in self.others_at:
            used += words[at]
        return used

    def add(self, nbytes: int) -> None:
        used = self.used = self.used + nbytes
        self.words[self.used_at] = used
        if used > self.peak:  # this worker's part alone: its run's bookkeeping
            self.peak = self.mine.peak = used

    @property
    def over(self) -> bool:
        return self.used_total() > self.limit

    def committing_elsewhere(self) -> bool:
        """Whether another worker has closed runs not committed yet (its
        ``used`` word past its ``open`` word): bytes in this budget that only
        that worker's commits free, so a brake here waits for them too."""
        words = self.words
        return any(words[at] > words[at + 1] for at in self.others_at)

    def holds(self, session: object) -> bool:
        """Whether ``session``'s open run holds the turn."""
        return bool(self._header[0] == self.token(session))

    def contended(self) -> bool:
        """Whether some run holds, or one of this worker waits (a run's end tells them)."""
        return self.words[0] != 0 or self.waiting > 0

    def _take(self, token: int) -> bool:
        """Hold the turn if no other run does (under the lock); whether this run holds."""
        header = self._header
        with self._region.lock():
            if header[0] == 0:
                header[0] = token
            return bool(header[0] == token)

    def may_grow(self, session: object, run_bytes: int) -> bool | None:
        if self.open_total() <= self.limit:
            return True
        if run_bytes > self.limit:
            return None
        token = self.token(session)
        holder = self._header[0]
        if holder == token:
            return True
        if holder != 0:
            return False
        return self._take(token)

    def run_ended(self, session: object) -> None:
        header = self._header
        token = self.token(session)
        if header[0] != 0 and (header[0] == token or self.open_total() <= self.limit):
            with self._region.lock():
                if header[0] == token or (header[0] != 0 and self.open_total() <= self.limit):
                    header[0] = 0
        self.wake()

    async def wait_for_room(self, session: object, give_up: Callable[[], bool]) -> bool:
        header = self._header
        token = self.token(session)

        async def until_room() -> None:
            while not give_up() and self.open_total() > self.limit:
                if header[0] in (0, token) and self._take(token):
                    return
                # One look per POLL_SECONDS for the whole worker, not per
                # waiter (100 waiters polling each 0.5 ms took a core); a
                # waiter that finds room wakes the others when its run ends.
                await self.woken(POLL_SECONDS * self.waiting)

        # ``waiting``: this worker's waiters (the polls' interval, contended());
        # the counts of stats are in its words.
        self.waiting += 1
        try:
            return await self.bounded_wait(self.mine, until_room)
        finally:
            self.waiting -= 1

    def figures(self) -> BudgetFigures:
        slots = self._slots
        return BudgetFigures(
            sum(slot.used for slot in slots),
            max(slot.peak for slot in slots),
            self.limit,
            sum(slot.open for slot in slots),
            sum(slot.waiting for slot in slots),
            sum(slot.room_waits for slot in slots),
            max(slot.wait_max for slot in slots),
            sum(slot.wait_refusals for slot in slots),
        )


class SharedCharges(Charges):
    """A session's account in a :class:`SharedWriteBudget`: what
    :class:`~stig.engine.charges.Charges` does, with each change of the
    worker's figures stored into its words and the limit compared with the
    sums (one class for each, so that one process pays nothing for this)."""

    __slots__ = ()

    budget: SharedWriteBudget

    def charge(self, size: int) -> bool:
        self.open += size
        self.pending += size
        budget = self.budget
        used = budget.used = budget.used + size
        opened = budget.open = budget.open + size
        words = budget.words
        at = budget.used_at
        words[at] = used
        words[at + 1] = opened
        for at in budget.others_at:
            used += words[at]
            opened += words[at + 1]
        if used > budget.peak:
            budget.peak = budget.mine.peak = used
        return opened > budget.limit

    def room(self) -> int:
        budget = self.budget
        return budget.limit - (self.open if budget.holds(self.owner) else budget.open_total())

    def close_run(self, joined: bool) -> int:
        nbytes = self.open
        self.open = 0
        budget = self.budget
        words = budget.words
        words[budget.used_at + 1] = budget.open = budget.open - nbytes
        if words[0] or budget.waiting:  # a run holds, or one waits (word 0: the holder)
            budget.run_ended(self.owner)
        if joined:
            return nbytes
        self.pending += RUN_OVERHEAD
        # budget.add(RUN_OVERHEAD), inline (once per run: the hot path).
        used = budget.used = budget.used + RUN_OVERHEAD
        words[budget.used_at] = used
        if used > budget.peak:
            budget.peak = budget.mine.peak = used
        return nbytes + RUN_OVERHEAD

    def discard_run(self) -> None:
        nbytes = self.open
        self.open = 0
        self.pending -= nbytes
        budget = self.budget
        words = budget.words
        at = budget.used_at
        words[at] = budget.used = budget.used - nbytes
        words[at + 1] = budget.open = budget.open - nbytes
        if budget.contended():
            budget.run_ended(self.owner)

    def release(self, nbytes: int) -> None:
        self.pending -= nbytes
        budget = self.budget
        budget.words[budget.used_at] = budget.used = budget.used - nbytes


def charges_for(budget: WriteBudget, owner: object) -> Charges:
    """The account of ``owner`` (a session) in ``budget``, of the budget's kind."""
    if isinstance(budget, SharedWriteBudget):
        return SharedCharges(budget, owner)
    return Charges(budget, owner)
