"""The replication log in the storage layer (stig/storage/replog.py), on a
real LMDB environment: numbered with each commit, trimmed to its bounds in
the same transaction, off with ``--replication-log-bytes 0``."""

from __future__ import annotations

from pathlib import Path

from stig.storage import replog
from stig.storage.ops import Add, Put, Remove
from stig.storage.store import Store


def _logged(store: Store) -> list[int]:
    with store.log_txn() as txn:
        return [seq for seq, _ in store.log_entries(txn, 0, 1 << 30)]


def test_each_commit_gets_the_next_number_and_its_effects_logged(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        store.apply([[Put(b"a", b"1", 5)], [Add(b"a", b"2", 0)]])  # the add does nothing
        store.apply([[Remove(b"a")]])
        assert store.log_state.seq == 2
        with store.log_txn() as txn:
            groups = store.log_entries(txn, 0, 1 << 20)
        first = replog.decode(groups[0][1])
        assert [(e.kind, e.key) for e in first.effects] == [(replog.PUT, b"a")]
        assert first.effects[0].record[4:12] == (1).to_bytes(8, "big")  # its cas
        assert first.last_cas == 1 and first.epoch == replog.FIRST_EPOCH
        assert [(e.kind, e.key) for e in replog.decode(groups[1][1]).effects] == [
            (replog.DELETE, b"a")
        ]
    finally:
        store.close()
    reopened = Store(tmp_path)  # the numbers are on disk, with the items
    try:
        assert reopened.log_state.seq == 2 and _logged(reopened) == [1, 2]
    finally:
        reopened.close()


def test_the_log_is_trimmed_to_its_bytes_keeping_the_newest(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.log_bounds.max_bytes = 1000
    try:
        for i in range(20):
            store.apply([[Put(b"k%d" % i, bytes(300), 0)]])
        state = store.log_state
        assert state.seq == 20
        assert _logged(store) == list(range(state.log_first, 21))
        assert state.log_bytes <= 1000 and state.log_groups == 2  # 343 B each: a third passes it
        store.apply([[Put(b"big", bytes(5000), 0)]])  # alone past the bound: kept
        assert _logged(store) == [21]
    finally:
        store.close()


def test_the_log_is_trimmed_by_age_in_the_same_transaction(tmp_path: Path) -> None:
    env_store = Store(tmp_path)
    try:
        env_store.apply([[Put(b"a", b"1", 0)]])
        env_store.apply([[Put(b"b", b"1", 0)]])
        bounds = replog.LogBounds(max_bytes=0, max_seconds=60)
        with env_store.env.begin(write=True) as txn:
            state = env_store.read_log_state(txn)
            later = replog.now_ms() + 61_000  # a commit a minute later
            replog.append(txn, env_store._replog, state, 3, b"x" * 20, bounds, later)
            assert state.log_first == 3  # both older groups went
            replog.write_state(txn, env_store._repl, state)
    finally:
        env_store.close()


def test_with_the_log_off_groups_are_numbered_and_nothing_is_logged(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        store.apply([[Put(b"a", b"1", 0)]])
        store.log_enabled = False
        store.apply([[Put(b"b", b"1", 0)]])
        assert store.log_state.seq == 2
        assert _logged(store) == []
        assert store.log_state.log_first == 3 and store.log_state.log_bytes == 0
    finally:
        store.close()
