"""Run ``stig`` with a commit that fails on demand: a test-support launcher only.

Fault-injection tests start a real server as ``python -m stig_testkit.fault_server
serve …`` instead of ``python -m stig serve …``.  :func:`main` patches
:meth:`stig.storage.store.Store.apply` before handing over to the normal command
line, so no fault hook ships in the ``stig`` package itself (importing this
module patches nothing).  Each commit first reads the file named by
``STIG_FAULT_FILE``:

* empty (or missing): commit normally;
* ``hold``: block (on the commit thread) until the file says something else;
  while blocked, the file named ``<STIG_FAULT_FILE>.held`` exists, so a test
  knows a commit is being held;
* ``lmdb``: fail with a real ``lmdb.Error`` raised by LMDB itself (a put of
  an empty key, which LMDB refuses with ``MDB_BAD_VALSIZE``) — nothing applied;
* ``bug``: fail with a ``ZeroDivisionError``, as a bug in the commit path would;
* ``lmdb <key>`` / ``bug <key>``: fail that way only transactions that write ``<key>``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from stig.storage.store import Store


def _fault(faults: Path) -> str:
    try:
        return faults.read_text().strip()
    except FileNotFoundError:
        return ""


def install(faults: Path) -> None:
    """Make every :meth:`Store.apply` in this process obey the file ``faults``."""
    held = Path(str(faults) + ".held")
    apply = Store.apply

    def faulty_apply(self: Store, batches, before_commit=None):  # type: ignore[no-untyped-def]
        batches = list(batches)
        fault = _fault(faults)
        if fault == "hold":
            held.touch()
            while fault == "hold":
                time.sleep(0.01)
                fault = _fault(faults)
            held.unlink()
        kind, _, key = fault.partition(" ")
        if kind in ("lmdb", "bug") and (
            not key
            or any(getattr(op, "key", None) == key.encode() for ops in batches for op in ops)
        ):
            if kind == "bug":
                return 1 // 0
            with self.env.begin(write=True) as txn:
                txn.put(b"", b"refused")  # LMDB raises BadValsizeError: a real lmdb.Error
        return apply(self, batches, before_commit)

    Store.apply = faulty_apply  # type: ignore[method-assign]


def main() -> None:
    """``stig`` with the faults of ``$STIG_FAULT_FILE`` installed."""
    install(Path(os.environ["STIG_FAULT_FILE"]))
    from stig.tools.cli import main as stig_main

    stig_main()


if __name__ == "__main__":
    main()
