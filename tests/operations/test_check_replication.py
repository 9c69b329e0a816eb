"""``stig check`` on the replication databases (``repl``, ``replog``): a copy of
a follower's data directory (a follower keeps a log) is clean, and each
deliberately damaged copy is reported with a message naming the damage and
exit status 1.  The damage is written with LMDB itself, so the file stays a
valid environment and only Stig's own invariants are broken."""

from __future__ import annotations

import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import lmdb
from opstools import run_stig

from stig_testkit.process import StigProcess
from stig_testkit.waiting import wait_for_stats

U64 = struct.Struct(">Q")


def _damage(data_dir: Path, change: Callable[[lmdb.Transaction, object, object], None]) -> None:
    env = lmdb.open(str(data_dir), max_dbs=4, create=False)
    try:
        with env.begin(write=True) as txn:
            repl = env.open_db(b"repl", txn=txn, create=False)
            log = env.open_db(b"replog", txn=txn, create=False)
            change(txn, repl, log)
    finally:
        env.close()


def _middle(txn: lmdb.Transaction, log: object) -> int:
    seqs = [U64.unpack(k)[0] for k in txn.cursor(db=log).iternext(values=False)]
    assert len(seqs) >= 5
    return seqs[len(seqs) // 2]


def _drop_group(txn: lmdb.Transaction, repl: object, log: object) -> None:
    txn.delete(U64.pack(_middle(txn, log)), db=log)


def _tear_group(txn: lmdb.Transaction, repl: object, log: object) -> None:
    key = U64.pack(_middle(txn, log))
    txn.put(key, txn.get(key, db=log)[:-3], db=log)


def _repeat_last_seq(txn: lmdb.Transaction, repl: object, log: object) -> None:
    seq = U64.unpack(txn.get(b"seq", db=repl))[0]
    txn.put(b"seq", U64.pack(seq + 1), db=repl)


def _future_epoch_start(txn: lmdb.Transaction, repl: object, log: object) -> None:
    txn.put(b"epoch_start:" + struct.pack(">I", 7), U64.pack(3), db=repl)


def _wrong_epoch(txn: lmdb.Transaction, repl: object, log: object) -> None:
    key = U64.pack(_middle(txn, log))
    entry = txn.get(key, db=log)
    txn.put(key, struct.pack(">I", 5) + entry[4:], db=log)


DAMAGES = {
    "gap": (_drop_group, b"expected, found"),
    "torn": (_tear_group, b"does not decode"),
    "seq-past-log": (_repeat_last_seq, b"the stored seq is"),
    "epoch-history": (_future_epoch_start, b"epoch history names epoch 7"),
    "entry-epoch": (_wrong_epoch, b"is of epoch 5, the epoch history says 1"),
}


def test_check_reports_each_damage_to_the_replication_log(
    stig_factory: Callable[..., StigProcess], tmp_path: Path
) -> None:
    primary = stig_factory("--durable-acks", "--replication-open")  # a group per set
    follower = stig_factory("--replica-of", f"{primary.host}:{primary.port}")
    wait_for_stats(primary, lambda s: s["connected_replicas"] == "1")  # groups, not a snapshot
    conn = primary.connect()
    for i in range(20):
        assert conn.send_recv(b"set k%d 0 0 2\r\nv%d\r\n" % (i, i % 10), b"\r\n") == b"STORED\r\n"
    primary.settle()
    target = int(primary.stats()["replication_seq"])
    wait_for_stats(follower, lambda s: int(s["replication_applied_seq"]) >= target)
    clean = tmp_path / "clean"
    run_stig("backup", "-q", str(clean), "--data-dir", str(follower.data_dir))
    checked = run_stig("check", "-q", "--data-dir", str(clean))
    assert b"ok: no problems found" in checked.stdout
    assert b"of epoch 1, " in checked.stdout and b" in the replication log" in checked.stdout
    for name, (change, message) in DAMAGES.items():
        copy = tmp_path / name
        shutil.copytree(clean, copy)
        _damage(copy, change)
        proc = run_stig("check", "-q", "--data-dir", str(copy), check=False)
        assert proc.returncode == 1, (name, proc)
        assert b"problem: repl" in proc.stderr and message in proc.stderr, (name, proc.stderr)
