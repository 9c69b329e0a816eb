"""The disk-space probe's ballast (stig/engine/refusal.py) leaves no trace.

A probe commits its ballast into the meta table and deletes it in a second
transaction; a crash between the two leaves the ballast behind, which
``stig check`` accepts and the next start drops.
"""

from __future__ import annotations

import subprocess
import sys

from stig.storage.ops import Put
from stig.storage.store import PROBE_PREFIX, Store
from stig.tools.envtools import check

CUT_SHORT = """
import lmdb, sys
env = lmdb.open(sys.argv[1], max_dbs=2)
meta = env.open_db(b"meta")
with env.begin(write=True) as txn:
    for index in range(3):
        txn.put(b"probe:%d" % index, bytes(4000), db=meta)
env.close()
"""


def _probe_keys(store: Store) -> list[bytes]:
    with store.env.begin() as txn:
        return store._probe_keys(txn)


def test_a_probe_commits_its_ballast_and_leaves_the_pages_free(tmp_path):
    store = Store(tmp_path)
    # The replication log would write the 1 MB below a second time (its own
    # pages, docs/replication.md): the bound here is about the items alone.
    store.log_enabled = False
    try:
        store.apply([[Put(b"a", b"1", 0)]])
        store.probe(300_000, 1 << 20)
        assert _probe_keys(store) == []
        grown = store.disk_bytes()
        assert grown > 1 << 20  # the ballast was written to the file...
        store.apply([[Put(b"big%d" % i, bytes(100_000), 0)] for i in range(10)])
        assert store.disk_bytes() < grown + 200_000  # ...and its pages serve the next writes
        assert store.get(b"a").value == b"1"
    finally:
        store.close()
    assert check(tmp_path).problems == []


def test_a_ballast_left_by_a_crash_is_allowed_by_check_and_dropped_at_start(tmp_path):
    Store(tmp_path).close()
    subprocess.run([sys.executable, "-c", CUT_SHORT, str(tmp_path)], check=True, timeout=60)
    assert check(tmp_path).problems == []
    store = Store(tmp_path)
    try:
        assert _probe_keys(store) == []
        with store.env.begin() as txn:
            assert txn.get(PROBE_PREFIX + b"0", db=store._meta) is None
    finally:
        store.close()
