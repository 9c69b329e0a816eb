"""A worker that stalls every other worker's commits (``--workers N``, docs/workers.md).

The writer commits each run after every other worker's run published before
it (stig/engine/shared_inflight.py, ``pending``).  A worker that published a
run and stopped (SIGSTOP, a frozen cgroup, a hung process) before its job
reached the writer would hold every commit of every other worker for as long
as it stays stopped.  :class:`HungWatch` times, per worker, how long a group
held in the writer has waited for one of its runs that is not there (that
worker has no group held in the writer: its run never came); past
:data:`HUNG_SECONDS` the writer asks the supervisor to SIGKILL it, and the
death path (its link's end of file, ``SharedInFlight.release``, a successor)
lets the other workers' commits go on.
"""

from __future__ import annotations

from collections.abc import Iterable

#: How long a group may wait in the writer for a worker's run that is not
#: there before that worker is killed as hung (seconds).
HUNG_SECONDS = 5.0


class HungWatch:
    """Since when each worker has been missing (its run waited for, none of
    its groups held), and which the writer has asked the supervisor to kill."""

    __slots__ = ("bound", "flagged", "since")

    def __init__(self, bound: float = HUNG_SECONDS) -> None:
        self.bound = bound
        self.since: dict[int, float] = {}
        self.flagged: set[int] = set()

    def update(self, missing: Iterable[int], now: float) -> list[int]:
        """``missing``: the workers waited for now.  The workers missing for
        ``bound`` seconds and not yet asked for (the caller asks for them)."""
        missing = set(missing)
        for worker in list(self.since):
            if worker not in missing:
                del self.since[worker]
        hung: list[int] = []
        for worker in sorted(missing):
            since = self.since.setdefault(worker, now)
            if now - since >= self.bound and worker not in self.flagged:
                self.flagged.add(worker)
                hung.append(worker)
        return hung

    def timeout(self, now: float) -> float | None:
        """Seconds until the next worker would be found hung (None: none is missing)."""
        waits = [
            since + self.bound - now
            for worker, since in self.since.items()
            if worker not in self.flagged
        ]
        return max(0.0, min(waits)) if waits else None

    def ended(self, worker: int) -> bool:
        """Worker ``worker``'s link ended: whether it was asked to be killed as hung."""
        self.since.pop(worker, None)
        if worker in self.flagged:
            self.flagged.discard(worker)
            return True
        return False
