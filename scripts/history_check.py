"""The history checker's long form: a list-append history against Stig (or
memcached), with crashes, checked; prints the verdict.

    python scripts/history_check.py [--target stig|memcached] [--mode default|durable]
        [--txns 100000] [--crashes 50] [--crash sigkill|powercut] [--seed N]
        [--closers all|replies|barriers|LIST] [--workers 8] [--examples 1]
        [--max-pending-bytes 64k] [--max-commit-lag-ms 5] [--keep DIR] [--save FILE]
    python scripts/history_check.py --recheck FILE [--mode default|durable|memcached]

``--closers replies`` uses only the runs closed by a reply that is not a
write's own nor a barrier (issue 19 item 1), ``barriers`` all the others;
LIST is comma-separated (``text:version,meta:mg``).  ``--crash powercut``
runs Stig on lazyfs (stig_testkit.lazyfs; needs FUSE and root) and cuts
the power after each SIGKILL.  Exits 0 when the verdict is valid (every
finding allowed by the mode), 1 otherwise.  ``--save`` keeps the history
(JSON lines); ``--recheck`` checks a kept one again, without a server.
See docs/history.md.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from stig_testkit.history.checker import check
from stig_testkit.history.model import dump, load
from stig_testkit.history.powercut import LazyMount, cut_under, fuse_unavailable
from stig_testkit.history.run import MODES, run_history
from stig_testkit.history.servers import Memcached
from stig_testkit.history.workload import ALL_CLOSERS, REPLY_CLOSERS
from stig_testkit.process import StigProcess


def closers_from(text: str) -> frozenset[str]:
    if text == "all":
        return ALL_CLOSERS
    if text == "replies":
        return REPLY_CLOSERS
    if text == "barriers":
        return ALL_CLOSERS - REPLY_CLOSERS
    chosen = frozenset(text.split(","))
    unknown = chosen - ALL_CLOSERS
    if unknown:
        raise SystemExit(f"unknown closers {sorted(unknown)}; known: {sorted(ALL_CLOSERS)}")
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("stig", "memcached"), default="stig")
    parser.add_argument("--mode", choices=tuple(MODES), default="default")
    parser.add_argument("--txns", type=int, default=100_000)
    parser.add_argument("--crashes", type=int, default=50)
    parser.add_argument("--crash", choices=("sigkill", "powercut"), default="sigkill")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--closers", default="all")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--examples", type=int, default=1, help="examples shown per anomaly")
    parser.add_argument("--max-pending-bytes", default="64k")
    parser.add_argument("--max-commit-lag-ms", default="5")
    parser.add_argument("--keep", type=Path, default=None, help="keep data and logs here")
    parser.add_argument("--save", type=Path, default=None, help="write the history here")
    parser.add_argument("--recheck", type=Path, default=None, help="check a saved history")
    args = parser.parse_args()
    # SIGTERM unwinds like an exception, so the servers are stopped below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.recheck is not None:
        verdict = check(load(args.recheck.read_text()), MODES[args.mode])
        print(verdict.render(args.examples))
        return 0 if verdict.valid else 1
    closers = closers_from(args.closers)
    workdir = Path(tempfile.mkdtemp(prefix="history-", dir=args.keep))
    started = time.monotonic()
    fs: LazyMount | None = None
    kill = None
    if args.target == "memcached":
        server: StigProcess | Memcached = Memcached().start()
        mode, crashes = "memcached", 0
    elif args.mode == "memcached":
        raise SystemExit("--mode memcached is for --target memcached and --recheck")
    else:
        options = ["--max-pending-bytes", args.max_pending_bytes]
        options += ["--max-commit-lag-ms", args.max_commit_lag_ms]
        if args.mode == "durable":
            options.append("--durable-acks")
        data = workdir / "data"
        if args.crash == "powercut":
            reason = fuse_unavailable()
            if reason:
                print(f"cannot cut the power: {reason}", file=sys.stderr)
                return 2
            fs = LazyMount(workdir / "backing", workdir / "mount", workdir / "lazyfs")
            fs.start(args.seed)
            data = workdir / "mount" / "data"
        (workdir / "logs").mkdir()
        stig = StigProcess(data, workdir / "logs", tuple(options)).start()
        server, mode, crashes = stig, args.mode, args.crashes
        if fs is not None:
            kill = cut_under(fs, stig)
    try:
        outcome = run_history(
            server,
            mode,
            args.txns,
            crashes=crashes,
            seed=args.seed,
            workers=args.workers,
            closers=closers,
            kill=kill,
            log=lambda line: print(f"[{time.monotonic() - started:7.1f}s] {line}", flush=True),
        )
    finally:
        server.kill()  # its data is checked, nothing more to keep
        if fs is not None:
            fs.kill()
    verdict = outcome.verdict
    if args.save is not None:
        args.save.write_text(dump(outcome.history))
    closed = collections.Counter(
        t.closer for t in outcome.history.txns if t.kind == "run" and t.status == "ok"
    )
    print(
        f"target={args.target} mode={mode} crash={args.crash if crashes else 'none'} "
        f"seed={args.seed} closers={args.closers} seconds={time.monotonic() - started:.0f}"
    )
    print(
        "acknowledged runs by closer: " + ", ".join(f"{k}={v}" for k, v in sorted(closed.items()))
    )
    print(verdict.render(args.examples))
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if verdict.valid else 1


if __name__ == "__main__":
    sys.exit(main())
