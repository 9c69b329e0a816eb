"""Power-cut runner: many cuts per protocol on lazyfs, beyond what CI runs.

    python scripts/powercut.py --cuts 500 [--protocol text|meta|binary|all]
                               [--broken nosync|nometasync|ackearly] [--seed N] [--keep DIR]
                               [--window N] [--dirs journal|strict]

Each cut: Stig on a lazyfs mount under load, SIGKILL, unsynced pages dropped
or torn, remount, restart, and every client's acknowledged writes checked
(see stig_testkit/crashrig.py and docs/powercut.md).  Prints one line per
cut and a JSON summary per protocol; exits 1 if any check failed.  With
``--broken`` it runs a Stig whose LMDB does not sync, and is expected to fail.

Needs ``stig_testkit`` importable: ``pip install -e '.[test]'`` in the
clone, or ``PYTHONPATH=. python scripts/powercut.py ...`` from its root.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from stig_testkit.crashrig import PROTOCOLS, PowerCutRun, fuse_unavailable


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=int, default=500, help="power cuts per protocol")
    parser.add_argument("--protocol", choices=(*PROTOCOLS, "all"), default="all")
    parser.add_argument("--broken", choices=("nosync", "nometasync", "ackearly"), default=None)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument(
        "--window",
        type=int,
        default=50,
        help="check keys written in the last N cuts (0: all, as CI does; grows quadratically)",
    )
    parser.add_argument(
        "--dirs",
        choices=("journal", "strict"),
        default="journal",
        help="lazyfs directory model: strict = a new name is durable only after fsync of its dir",
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="work directory to keep (default: a temporary one)"
    )
    parser.add_argument("--quiet", action="store_true", help="no line per cut")
    args = parser.parse_args()
    reason = fuse_unavailable()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    protocols = PROTOCOLS if args.protocol == "all" else (args.protocol,)
    failed = False
    for index, protocol in enumerate(protocols):
        workdir = Path(tempfile.mkdtemp(prefix=f"powercut-{protocol}-", dir=args.keep))
        run = PowerCutRun(
            workdir,
            protocol,
            args.seed + index,
            clients=args.clients,
            broken=args.broken,
            window=args.window,
            dirs=args.dirs,
            log=(lambda _: None) if args.quiet else print,
        )
        started = time.monotonic()
        try:
            for _ in range(args.cuts):
                run.cycle()
            run.finish()
        finally:
            run.close()
        summary = run.summary()
        summary["seconds"] = round(time.monotonic() - started, 1)
        summary["workdir"] = str(workdir)
        for failure in run.failures[:20]:
            print("FAIL", failure)
        print(json.dumps(summary), flush=True)
        failed |= bool(run.failures)
        if not run.failures and args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
