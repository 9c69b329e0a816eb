"""One write budget for every worker (``--workers N``, ``--max-pending-bytes``).

:class:`~stig.engine.budget.WriteBudget`'s rules, unchanged, over figures
that live in the shared region (:mod:`stig.engine.shared_region`):

* each worker writes its own ``used`` and ``open`` words
  (:class:`BudgetWords`, in its slot), with plain stores and no lock; the
  budget's figures are the sums over every worker's words, read when a rule
  needs them (N loads: a run's growth costs N field reads, no system call);
* the *holder* (the one open run that may grow while the open runs are past
  the limit) is one word of the region's header: a token made of the
  session's identity and its worker's number, 0 for none.  It is taken and
  given back under the region's lock (a record lock, two system calls), only
  on the rare path: a run past the limit;
* a run that waits for room is woken at once by a run ending in its own
  worker and looks again every :data:`POLL_SECONDS` for the other workers'
  (their words are in shared memory; there is no cross-process wake-up).

The bound is then the one of docs/pov.md for the whole server: open runs
together hold at most twice ``--max-pending-bytes`` (plus a write per waiting
connection), whichever workers they are on.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from stig.engine.budget import BudgetFigures, WriteBudget

if TYPE_CHECKING:
    from stig.engine.shared_region import Region

#: How often a run waiting for room looks at the other workers' words again.
POLL_SECONDS = 0.0005


class BudgetWords(ctypes.Structure):
    """One worker's part of the budget, in its slot of the shared region."""

    _fields_ = [
        ("used", ctypes.c_int64),
        ("open", ctypes.c_int64),
        ("peak", ctypes.c_int64),  # the largest sum this worker saw
        ("waiting", ctypes.c_int64),
        ("room_waits", ctypes.c_int64),
        ("wait_max", ctypes.c_double),
        ("wait_refusals", ctypes.c_int64),
    ]


class SharedWriteBudget(WriteBudget):
    """The write budget of one worker, over the shared region's words."""

    __slots__ = ("_header", "_me", "_mine", "_others", "_region", "_slots")

    def __init__(self, region: Region, limit: int, max_wait: float = float("inf")) -> None:
        super().__init__(limit, max_wait)
        self._region = region
        self._header = region.header
        self._me = region.me + 1
        self._mine = region.mine.budget
        self._slots = [slot.budget for slot in region.slots]
        self._others = [slot.budget for w, slot in enumerate(region.slots) if w != region.me]

    def _token(self, session: object) -> int:
        """``session``'s holder word: its identity and its worker's number."""
        return 0 if session is None else ((id(session) >> 4) << 8) | self._me

    def _open(self) -> int:
        opened: int = self._mine.open
        for other in self._others:
            opened += other.open
        return opened

    def _used(self) -> int:
        used: int = self._mine.used
        for other in self._others:
            used += other.used
        return used

    # -- the hot path: own words, the others' read ------------------------------

    def add(self, nbytes: int) -> None:
        mine = self._mine
        mine.used += nbytes
        used = self._used()
        if used > mine.peak:
            mine.peak = used

    def grow(self, nbytes: int) -> bool:
        mine = self._mine
        used: int = mine.used + nbytes
        opened: int = mine.open + nbytes
        mine.used = used
        mine.open = opened
        for other in self._others:
            used += other.used
            opened += other.open
        if used > mine.peak:
            mine.peak = used
        return opened > self.limit

    def close_open(self, nbytes: int) -> None:
        self._mine.open -= nbytes

    def discard(self, nbytes: int) -> None:
        mine = self._mine
        mine.used -= nbytes
        mine.open -= nbytes

    def release(self, nbytes: int) -> None:
        self._mine.used -= nbytes

    @property
    def over(self) -> bool:
        return self._used() > self.limit

    # -- the turns past the limit -----------------------------------------------

    def contended(self) -> bool:
        return self._header[0] != 0 or self.waiting > 0

    def room(self, session: object, run_bytes: int) -> int:
        held = self._header[0] == self._token(session)
        return self.limit - (run_bytes if held else self._open())

    def _take(self, token: int) -> bool:
        """Hold the turn if no other run does (under the lock); whether this run holds."""
        header = self._header
        with self._region.lock():
            if header[0] == 0:
                header[0] = token
            return bool(header[0] == token)

    def may_grow(self, session: object, run_bytes: int) -> bool | None:
        if self._open() <= self.limit:
            return True
        if run_bytes > self.limit:
            return None
        token = self._token(session)
        holder = self._header[0]
        if holder == token:
            return True
        if holder != 0:
            return False
        return self._take(token)

    def run_ended(self, session: object) -> None:
        header = self._header
        token = self._token(session)
        if header[0] != 0 and (header[0] == token or self._open() <= self.limit):
            with self._region.lock():
                if header[0] == token or (header[0] != 0 and self._open() <= self.limit):
                    header[0] = 0
        self.wake()

    async def wait_for_room(self, session: object, give_up: Callable[[], bool]) -> bool:
        mine = self._mine
        header = self._header
        token = self._token(session)
        self.waiting += 1
        mine.waiting += 1
        mine.room_waits += 1
        start = trio.current_time()
        try:
            with trio.move_on_after(self.max_wait) as timer:
                while not give_up() and self._open() > self.limit:
                    if header[0] in (0, token) and self._take(token):
                        break
                    if self._room is None:
                        self._room = trio.Event()
                    with trio.move_on_after(POLL_SECONDS):
                        await self._room.wait()
        finally:
            self.waiting -= 1
            mine.waiting -= 1
            waited = trio.current_time() - start
            if waited > mine.wait_max:
                mine.wait_max = waited
        if timer.cancelled_caught:
            mine.wait_refusals += 1
            return False
        return True

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
