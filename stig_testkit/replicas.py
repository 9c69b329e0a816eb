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

from stig_testkit.process import StigProcess
from stig_testkit.waiting import wait_for_stats


def caught_up(follower: StigProcess, primary: StigProcess) -> dict[str, str]:
    """Wait until ``follower`` has applied the primary's newest group; its stats."""
    primary.settle()
    target = int(primary.stats()["replication_seq"])
    return wait_for_stats(
        follower,
        lambda s: int(s["replication_applied_seq"]) >= target,
        what=f"the follower applying group {target}",
    )


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
    """The follower SIGSTOPped (it receives, applies and acks nothing), and
    continued however the block ends."""
    assert follower.proc is not None
    os.kill(follower.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(follower.proc.pid, signal.SIGCONT)
