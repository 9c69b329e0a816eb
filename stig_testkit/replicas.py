"""What replication tests ask of a primary and its follower: has the
follower applied everything the primary committed, and does a follower's
data directory (read straight from LMDB) hold a key."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb

from stig_testkit.process import StigProcess, descendants
from stig_testkit.waiting import wait_for, wait_for_stats


def caught_up(follower: StigProcess, primary: StigProcess) -> dict[str, str]:
    """Wait until ``follower`` has applied the primary's newest group; its stats."""
    primary.settle()
    target = int(primary.stats()["replication_seq"])
    return wait_for_stats(
        follower,
        lambda s: int(s["replication_applied_seq"]) >= target,
        what=f"the follower applying group {target}",
    )


def fenced(old: StigProcess, new: StigProcess, timeout: float = 30.0) -> None:
    """Wait until the former primary ``old`` is fenced by the promoted ``new``
    and ``new`` has heard its answer (its ``replication_fences_due`` is 0).

    ``replication_fenced`` alone is read from LMDB: with ``--workers N`` it
    shows the stored fence up to a role poll (20 ms) before every worker
    refuses writes; the answer to ``stig_fence`` comes once every worker
    has adopted it (docs/workers.md, "Promote and fence"), and ``new``
    forgets the fence due only on that answer."""
    wait_for_stats(old, lambda s: s["replication_fenced"] == "1", timeout, "the old primary fenced")
    wait_for_stats(new, lambda s: s["replication_fences_due"] == "0", timeout, "the fence heard")


def data_dir_has(data_dir: Path, key: bytes) -> bool:
    """Whether the LMDB environment in ``data_dir`` holds ``key`` now."""
    env = lmdb.open(str(data_dir), readonly=True, lock=True, max_dbs=4, create=False)
    try:
        with env.begin() as txn:
            items = env.open_db(b"items", txn=txn, create=False)
            return txn.get(key, db=items) is not None
    finally:
        env.close()


@contextmanager
def stopped(follower: StigProcess) -> Iterator[None]:
    """The follower SIGSTOPped — every process of it — so that it receives,
    applies and acks nothing; continued however the block ends.

    With ``--workers N`` the follower is a supervisor, a writer and N
    workers (worker 0 holds the stream, docs/workers.md): stopping the
    supervisor alone would leave worker 0 streaming.  The order:

    * stop the supervisor first, then list and stop its descendants: a
      stopped supervisor starts no child meanwhile, so the list is whole;
      a stopped child is no event to it (it watches its children's pidfds,
      which signal only an exit, and ``PR_SET_PDEATHSIG`` fires only on a
      death), nor to the others (a stopped process keeps its sockets open);
    * continue the descendants first, the supervisor last: when it runs
      again every process of its group runs.

    The writer's hung-worker watch (stig/engine/hung_workers.py) cannot
    fire on a stopped follower: it times a worker's client run that the
    writer waits for, and a follower's workers commit no client runs (its
    writes are refused); the stream's batches are worker 0's own jobs.
    """
    assert follower.proc is not None
    supervisor = follower.proc.pid
    os.kill(supervisor, signal.SIGSTOP)
    pids = [supervisor]
    try:
        pids.extend(descendants(supervisor))
        for pid in pids[1:]:
            _signal(pid, signal.SIGSTOP)
        # The signal is delivered asynchronously: the block begins once
        # every process is stopped (none finishes a batch in the block).
        wait_for(lambda: [_state(pid) for pid in pids], _all_stopped, what="the follower stopped")
        yield
    finally:
        for pid in reversed(pids):
            _signal(pid, signal.SIGCONT)


def _state(pid: int) -> str:
    """The state letter of ``pid`` in ``/proc`` (``T``: stopped, ``Z``: ended),
    ``gone`` once reaped."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return "gone"


def _all_stopped(states: list[str]) -> bool:
    return all(state in ("T", "Z", "gone") for state in states)


def _signal(pid: int, signum: signal.Signals) -> None:
    """Send ``signum`` to ``pid`` unless it has ended already."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
