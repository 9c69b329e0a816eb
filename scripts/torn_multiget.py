"""Binary multi-gets under load, for minutes: does any read see two versions of a group?

Starts ``python -m stig serve`` from ``--repo`` (port 0, a temporary data
directory) and runs stig_testkit/torn_multiget.py against it: writers rewrite
a group of 8 keys in quiet runs closed by a No-op, readers read the group as
GetKQ…GetK (python-binary-memcached's ``get_multi``) and GetKQ…No-op,
loaders keep the promoter busy.  Prints the reads and torn reads of each
shape as JSON; exits 1 if any read was torn (docs/soak.md, finding 2).

    python3 scripts/torn_multiget.py --seconds 180
    python3 scripts/torn_multiget.py --repo /work/main --readers 8
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import trio

from stig_testkit import torn_multiget
from stig_testkit.flood import Server

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--writers", type=int, default=3)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--loaders", type=int, default=2)
    parser.add_argument("--repo", type=Path, default=REPO, help="the Stig checkout to serve")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="stig-torn-"))
    server = Server(args.repo.resolve(), tmp / "data").start()
    try:
        tally = trio.run(
            torn_multiget.run, server.port, args.seconds, args.writers, args.readers, args.loaders
        )
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(tally.as_dict()))
    return 1 if sum(tally.torn.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
