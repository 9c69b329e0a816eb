"""Run ``stig`` with a commit that fails on demand: a test-support launcher only.

Fault-injection tests start a real server as ``python tests/support/fault_server.py
serve …`` instead of ``python -m stig serve …``.  This wrapper patches
:meth:`stig.storage.store.Store.apply` before handing over to the normal command line,
so no fault hook ships in the ``stig`` package itself.  Each commit first reads
the file named by ``STIG_FAULT_FILE``:

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
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stig.storage.store import Store

_FAULTS = Path(os.environ["STIG_FAULT_FILE"])
_HELD = Path(str(_FAULTS) + ".held")
_apply = Store.apply


def _fault() -> str:
    try:
        return _FAULTS.read_text().strip()
    except FileNotFoundError:
        return ""


def _faulty_apply(self: Store, batches, before_commit=None):  # type: ignore[no-untyped-def]
    batches = list(batches)
    fault = _fault()
    if fault == "hold":
        _HELD.touch()
        while fault == "hold":
            time.sleep(0.01)
            fault = _fault()
        _HELD.unlink()
    kind, _, key = fault.partition(" ")
    if kind in ("lmdb", "bug") and (
        not key or any(getattr(op, "key", None) == key.encode() for ops in batches for op in ops)
    ):
        if kind == "bug":
            return 1 // 0
        with self.env.begin(write=True) as txn:
            txn.put(b"", b"refused")  # LMDB raises BadValsizeError: a real lmdb.Error
    return _apply(self, batches, before_commit)


Store.apply = _faulty_apply  # type: ignore[method-assign]

from stig.tools.cli import main  # noqa: E402

main()
