"""Stig, broken on purpose, to prove the power-cut suite can fail.

    python -m stig_testkit.broken_stig MODE serve [stig serve options...]

MODE says what is broken before ``stig.tools.cli`` runs:

* ``nosync`` — LMDB is opened with ``sync=False``: commits return without
  fdatasync, so acknowledgements are sent for data only in the page cache;
* ``nometasync`` — LMDB is opened with ``metasync=False``: a commit's data
  pages are synced but its meta page is not, so the last commit before a
  power cut is lost (a subtle break: the suite must still see it);
* ``ackearly`` — ``--durable-acks`` is dropped from the command line while
  the clients still count on it: replies are sent before the commit.

Nothing in ``stig/`` changes: ``lmdb.open`` is wrapped, or the options
edited, in this process only.
"""

from __future__ import annotations

import sys

import lmdb

BREAKS = {"nosync": {"sync": False}, "nometasync": {"metasync": False}, "ackearly": {}}


def main() -> None:
    mode = sys.argv.pop(1)
    overrides = BREAKS[mode]
    if mode == "ackearly" and "--durable-acks" in sys.argv:
        sys.argv.remove("--durable-acks")
    real_open = lmdb.open

    def broken_open(path: str, **options: object) -> lmdb.Environment:
        options.update(overrides)
        return real_open(path, **options)

    lmdb.open = broken_open
    from stig.tools.cli import main as stig_main

    sys.argv[0] = "stig"
    stig_main()


if __name__ == "__main__":
    main()
