"""Floods and hostile clients against a real Stig server: memory, commit lag, loss window.

    python3 scripts/flood.py noreply --repo /work/main --kill
    python3 scripts/flood.py add --repo . --conns 8 --seconds 4
    python3 scripts/flood.py unread --repo . --clients 1 --gets 300

Each scenario starts ``python -m stig serve`` from the checkout ``--repo``
(default: this one), so that two versions can be compared in one run, and
prints one JSON line of numbers; the scenarios are
:mod:`stig_testkit.flood`'s (its docstring says what each measures), the same
functions the tests in tests/durability/test_flood_bounds.py call.

Needs ``stig_testkit`` importable: ``pip install -e '.[test]'`` in the
clone, or run it as ``PYTHONPATH=. python3 scripts/flood.py ...`` from the
clone's root.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from stig_testkit.flood import flood, unread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=["noreply", "add", "unread"])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--conns", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--kill", action="store_true")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--gets", type=int, default=300)
    parser.add_argument("--idle", type=int, default=0)
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="an extra 'stig serve' option (repeat; e.g. --server-arg=--max-pending-bytes=8m)",
    )
    args = parser.parse_args()
    if args.scenario == "unread":
        result = unread(args.repo.resolve(), args.clients, args.gets, args.idle)
    else:
        command = "set" if args.scenario == "noreply" else "add"
        result = flood(
            args.repo.resolve(),
            args.conns,
            args.seconds,
            args.kill,
            command,
            tuple(args.server_arg),
        )
    result["repo"] = str(args.repo)
    print(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
