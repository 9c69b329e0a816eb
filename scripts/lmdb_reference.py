"""py-lmdb alone: the ceiling for Stig's durable batch writes on this machine.

Opens an LMDB environment exactly as Stig's store does (``sync=True``,
``metasync=True``, no ``writemap``/``map_async``: every commit is fdatasync'd
before ``commit()`` returns), then, for a fixed time, runs write transactions
that each put ``N`` records of Stig's shape (13-byte header + value) under
random keys of a preloaded key space, and reports puts/s.

No network, no protocol, no event loop: whatever Stig achieves for batch
writes (``ms ... q`` x N then ``mn``) is a fraction of this figure.  It also
times a bare ``fdatasync`` of a small file in the same directory, the cost
every durable acknowledgement pays at least once.

Example: ``python scripts/lmdb_reference.py --txn-size 1 100 1000 --duration 2``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

import lmdb

from stig.storage.records import HEADER
from stig.storage.store import DURABLE_OPTIONS


def fdatasync_us(directory: str, rounds: int = 50) -> float:
    """Median microseconds of write(4 KiB) + fdatasync in ``directory``."""
    path = os.path.join(directory, "fsync-probe")
    times = []
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        for i in range(rounds):
            os.pwrite(fd, os.urandom(4096), (i % 16) * 4096)
            t = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    times.sort()
    return times[len(times) // 2] * 1e6


def open_env(path: str) -> tuple[lmdb.Environment, lmdb._Database]:
    """An environment configured like ``stig.storage.store.Store``."""
    env = lmdb.open(path, map_size=8 << 30, max_dbs=2, **DURABLE_OPTIONS)
    return env, env.open_db(b"items")


def run(
    txn_size: int, value_size: int, keyspace: int, duration: float, directory: str | None = None
) -> dict:
    """Durable transactions of ``txn_size`` puts for ``duration`` seconds."""
    root = tempfile.mkdtemp(prefix="lmdb-ref-", dir=directory)
    try:
        env, db = open_env(root)
        keys = [b"key:%010d" % i for i in range(keyspace)]
        record = HEADER.pack(0, 1, 0) + b"v" * value_size
        with env.begin(write=True, db=db) as txn:  # preload: pages exist, as in Stig
            for k in keys:
                txn.put(k, record)
        rng = random.Random(1)
        puts = txns = 0
        commit_s = 0.0
        t0 = time.perf_counter()
        end = t0 + duration
        cas = 1
        while time.perf_counter() < end:
            batch = [keys[rng.randrange(keyspace)] for _ in range(txn_size)]
            t = time.perf_counter()
            with env.begin(write=True, db=db) as txn:
                for k in batch:
                    cas += 1
                    txn.put(k, HEADER.pack(0, cas, 0) + record[HEADER.size :])
            commit_s += time.perf_counter() - t
            puts += txn_size
            txns += 1
        elapsed = time.perf_counter() - t0
        env.close()
        return {
            "txn_size": txn_size,
            "value_size": value_size,
            "puts": puts,
            "txns": txns,
            "seconds": round(elapsed, 3),
            "puts_per_s": puts / elapsed,
            "txn_ms": commit_s / max(1, txns) * 1e3,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--txn-size", type=int, nargs="+", default=[1000], help="puts per transaction")
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--keyspace", type=int, default=100_000)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per transaction size")
    p.add_argument("--dir", default=None, help="where to make the temporary environment")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    results = {
        "fdatasync_us": fdatasync_us(a.dir or tempfile.gettempdir()),
        "runs": [run(n, a.value_size, a.keyspace, a.duration, a.dir) for n in a.txn_size],
    }
    if a.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"fdatasync (4 KiB write): {results['fdatasync_us']:.0f} us median")
        for r in results["runs"]:
            print(
                f"{r['txn_size']:>6} puts/txn x {r['value_size']} B: "
                f"{r['puts_per_s']:>10,.0f} puts/s"
                f"  ({r['txn_ms']:.2f} ms per txn)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
