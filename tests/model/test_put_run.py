"""A run of plain sets sent to the writer as columns stores exactly what its ops would.

:class:`stig.storage.ops.PutRun` is how :meth:`WriterLink.commit` frames a
run made only of plain sets (docs/performance.md, "Issue 20's targets"):
three lists instead of a ``Put`` each, put by
:meth:`stig.storage.store.Store.apply` in a loop of its own.  Two real
LMDB stores take the same groups, one as op lists and one with every
plain-set run as columns: the outcomes, the item each run reports, every
record (value, flags, cas), the byte total, the cas counter and the
replication log's entries must be the same.  A run with any other op, or a
set with an explicit cas, is never sent as columns.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from stig.engine.writer import LENGTH
from stig.engine.writer_link import COLUMNS_FROM, _as_sent, frame_group
from stig.storage.ops import Add, Op, Put, PutRun, Remove
from stig.storage.store import Store

GROUPS: list[list[list[Op]]] = [
    [
        [Put(b"a", b"1", 0), Put(b"b", b"22", 5), Put(b"a", b"333", 7)],
        [Remove(b"b"), Put(b"c", b"x", 0)],
        [],
    ],
    [
        [Put(b"b", b"", 2**31), Put(b"c", b"y" * 300, 1)],
        [Add(b"d", b"4", 0), Put(b"a", b"z", 9)],
        [Put(b"d", b"w", 3)],
    ],
]


def _store(path: Path) -> Store:
    store = Store(path, lock=False)
    store.start_logging()
    return store


def _state(store: Store) -> tuple[object, ...]:
    with store.read_txn() as txn:
        records = list(store.item_records(txn))
        log = [(seq, len(entry)) for seq, entry in store.log_entries(txn, 0, 1 << 30)]
    return records, log, store.total_bytes, store.last_cas


def test_columns_store_what_the_op_lists_store(tmp_path: Path) -> None:
    plain, columns = _store(tmp_path / "ops"), _store(tmp_path / "columns")
    sent_as_columns = 0
    try:
        for group in GROUPS:
            runs = [PutRun.of(ops) or ops for ops in group]
            sent_as_columns += sum(isinstance(run, PutRun) for run in runs)
            assert columns.apply(runs) == plain.apply(group)
        assert _state(columns) == _state(plain)
    finally:
        plain.close()
        columns.close()
    assert sent_as_columns == 3  # the non-empty runs of plain sets only


def test_only_plain_sets_become_columns() -> None:
    assert PutRun.of([Put(b"a", b"1", 0), Remove(b"a")]) is None
    assert PutRun.of([Put(b"a", b"1", 0, 42)]) is None  # an explicit cas (meta E)
    run = PutRun.of([Put(b"a", b"1", 0), Put(b"b", b"2", 3)])
    assert run is not None
    assert list(run) == [Put(b"a", b"1", 0), Put(b"b", b"2", 3)]
    assert run[-1] == Put(b"b", b"2", 3) and list(run[1:]) == [Put(b"b", b"2", 3)]


def test_only_long_runs_cross_as_columns() -> None:
    assert _as_sent([Put(b"a", b"1", 0)] * (COLUMNS_FROM - 1)) == [Put(b"a", b"1", 0)] * (
        COLUMNS_FROM - 1
    )
    assert isinstance(_as_sent([Put(b"a", b"1", 0)] * COLUMNS_FROM), PutRun)


def test_columns_cross_the_link_whole() -> None:
    run = PutRun.of([Put(b"k%d" % i, b"v%d" % i, i) for i in range(5)])
    data = frame_group(("g", [run, [Remove(b"k1")]], None, None))
    got = pickle.loads(data[LENGTH.size :])
    assert isinstance(got[1][0], PutRun)
    assert list(got[1][0]) == list(run or ())
    assert got[1][1] == [Remove(b"k1")]


def test_a_failing_run_of_columns_fails_alone_as_its_ops_would(tmp_path: Path) -> None:
    """A run whose put LMDB refuses in its middle (a key past LMDB's 511
    bytes) fails alone, with the same words and cause as its op list, and
    the runs around it commit: the group's retry run by run takes columns."""
    from stig.engine.group_commit import Failed, apply_group

    bad = [Put(b"ok%d" % i, b"v", 0) for i in range(2)] + [Put(b"k" * 600, b"v", 0)]
    bad += [Put(b"after%d" % i, b"v", 0) for i in range(2)]
    group: list[list[Op]] = [
        [Put(b"a%d" % i, b"1", 1) for i in range(COLUMNS_FROM)],
        bad,
        [Put(b"c%d" % i, b"3", 3) for i in range(COLUMNS_FROM)],
    ]
    plain, columns = _store(tmp_path / "ops"), _store(tmp_path / "columns")
    try:
        as_ops, _ = apply_group(plain, group)
        as_columns, _ = apply_group(columns, [_as_sent(run) for run in group])
        assert [type(r) for r in as_columns] == [type(r) for r in as_ops]
        assert isinstance(as_columns[1], Failed)
        assert isinstance(as_ops[1], Failed)
        assert (as_columns[1].cause, str(as_columns[1])) == (as_ops[1].cause, str(as_ops[1]))
        assert as_columns[0] == as_ops[0] and as_columns[2] == as_ops[2]
        assert _state(columns) == _state(plain)
    finally:
        plain.close()
        columns.close()
