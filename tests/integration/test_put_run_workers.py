"""Runs of plain sets crossing to the writer as columns (``PutRun``, ``--workers 2``)
store and answer what the op path does (review of wbatch).

The same commands go to a server with ``--workers 2`` (runs of four sets
or more cross as :class:`~stig.storage.ops.PutRun`) and to one process (no
writer link: every run is ops): every record (value, flags, cas), the
``bytes`` and ``total_items`` stats and the cas each reply reports (binary
``Set`` closing a run of ``SetQ``, meta ``ms`` with ``c`` closing a run of
quiet ``ms``) must be the same, and a follower of the worker server must
decode the replication log into the same records.
"""

from __future__ import annotations

import struct
from pathlib import Path

import lmdb
import pytest

from stig_testkit.process import StigProcess
from stig_testkit.replicas import caught_up

OPEN = "--replication-open"


def _records(data_dir: Path) -> dict[bytes, bytes]:
    env = lmdb.open(str(data_dir), readonly=True, lock=True, max_dbs=4, create=False)
    try:
        with env.begin() as txn:
            db = env.open_db(b"items", txn=txn, create=False)
            return {bytes(k): bytes(v) for k, v in txn.cursor(db=db)}
    finally:
        env.close()


def _drive(server: StigProcess) -> list[bytes]:
    """The commands, on one connection of each protocol; what the replies said."""
    from stig_protocol.binary import Opcode

    said: list[bytes] = []
    conn = server.connect()
    run = b"".join(
        b"set t%d %d 0 %d noreply\r\n%b\r\n" % (i, i, i + 1, b"v" * (i + 1)) for i in range(6)
    )
    conn.send(run)
    assert conn.barrier() == b""
    # Overwrites, larger and smaller, and a new key: a second run.
    run = b"".join(
        b"set t%d 7 0 %d noreply\r\n%b\r\n" % (i, 9 - i, b"w" * (9 - i)) for i in range(5)
    )
    conn.send(run + b"set t9 0 0 0 noreply\r\n\r\n")
    assert conn.barrier() == b""
    # Meta: quiet sets, closed by one with the c flag (its cas in the reply).
    conn.send(b"".join(b"ms m%d 2 F%d q\r\nmm\r\n" % (i, i) for i in range(4)))
    said.append(conn.send_recv(b"ms m4 2 F4 c\r\nmm\r\n", b"\r\n"))
    said.append(conn.send_recv(b"mg m4 c v\r\n", b"mm\r\n"))
    conn.close()
    binary = server.connect_binary()
    extras = struct.pack(">II", 3, 0)
    for i in range(4):
        binary.request(Opcode.SetQ, b"b%d" % i, b"x" * (i + 1), extras)
    response = binary.call(Opcode.Set, b"b4", b"last", extras)
    said.append(b"binary set cas %d" % response.cas)
    response = binary.call(Opcode.Get, b"b4")
    said.append(b"binary get cas %d" % response.cas)
    binary.close()
    return said


@pytest.mark.parametrize("acks", [(), ("--durable-acks",)], ids=["pov-acks", "durable-acks"])
def test_runs_of_sets_as_columns_store_and_answer_what_ops_do(
    stig_factory, acks: tuple[str, ...]
) -> None:
    workers = stig_factory("--workers", "2", OPEN, *acks)
    follower = stig_factory("--replica-of", f"{workers.host}:{workers.port}")
    one = stig_factory("--workers", "0", *acks)
    said_workers = _drive(workers)
    said_one = _drive(one)
    assert said_workers == said_one
    workers.settle()
    one.settle()
    for name in ("bytes", "total_items", "curr_items"):
        assert workers.stats()[name] == one.stats()[name], name
    assert _records(workers.data_dir) == _records(one.data_dir)
    caught_up(follower, workers)
    assert _records(follower.data_dir) == _records(workers.data_dir)
    assert follower.stats()["bytes"] == workers.stats()["bytes"]


def _grow_runs(server: StigProcess, conns: list) -> None:
    """Runs of 40 sets of 20 kB on each connection, sent at once (the group
    passes the 1 MiB map: the writer grows it in the middle and retries)."""
    value = b"g" * 20_000
    for index, conn in enumerate(conns):
        conn.send(
            b"".join(
                b"set g%d_%d %d 0 %d noreply\r\n%b\r\n" % (index, j, j, len(value), value)
                for j in range(40)
            )
        )
    for conn in conns:
        assert conn.barrier(timeout=30) == b""


def _values(data_dir: Path) -> dict[bytes, bytes]:
    """Each record without its cas (the workers' runs commit in either order)."""
    return {key: record[:4] + record[12:] for key, record in _records(data_dir).items()}


def test_runs_as_columns_survive_a_map_grown_in_their_middle(stig_factory) -> None:
    from stig_testkit.workers import on_worker

    small = ("--map-size", "1m", "--max-item-size", "1m")
    workers = stig_factory("--workers", "2", OPEN, *small)
    follower = stig_factory("--replica-of", f"{workers.host}:{workers.port}")
    one = stig_factory("--workers", "0", *small)
    _grow_runs(workers, [on_worker(workers, 0), on_worker(workers, 1)])
    _grow_runs(one, [one.connect(), one.connect()])
    workers.settle()
    one.settle()
    for name in ("bytes", "total_items", "curr_items"):
        assert workers.stats()[name] == one.stats()[name], name
    assert int(workers.stats()["curr_items"]) == 80
    assert "LMDB map grown" in workers.stderr  # the writer grew it under the runs
    assert _values(workers.data_dir) == _values(one.data_dir)
    caught_up(follower, workers)
    assert _records(follower.data_dir) == _records(workers.data_dir)
