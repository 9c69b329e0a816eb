"""Each commit reads the cas counter inside its own write transaction (issue 8, item 3).

A cached copy would let cas values repeat if anything else ever advanced the
stored counter; here another process does exactly that between two commits.
"""

from __future__ import annotations

import subprocess
import sys

from stig.storage.ops import Put
from stig.storage.store import Store

BUMP = """
import lmdb, struct, sys
env = lmdb.open(sys.argv[1], max_dbs=2)
meta = env.open_db(b"meta")
with env.begin(write=True) as txn:
    txn.put(b"cas", struct.pack(">Q", 5000), db=meta)
env.close()
"""


def test_commit_reads_the_stored_counter_not_a_cached_copy(tmp_path):
    store = Store(tmp_path)
    try:
        store.apply([[Put(b"a", b"1", 0)]])
        assert store.get(b"a").cas == 1
        subprocess.run([sys.executable, "-c", BUMP, str(tmp_path)], check=True, timeout=60)
        store.apply([[Put(b"b", b"2", 0)]])
        assert store.get(b"b").cas == 5001
    finally:
        store.close()
