"""Writes refused is the server's state with workers (docs/workers.md,
stig/engine/shared_refusal.py): once a commit of worker 0 fails for a full
disk, worker 1 — which has not seen any commit fail — refuses writes with
the same words and the same ``stats`` lines, and a probe brings writes back
on both.  Connections are pinned to a worker by its ``stig_worker_id``."""

from __future__ import annotations

from pathlib import Path

import pytest

from stig_testkit.faulty import faulty_servers
from stig_testkit.waiting import wait_for
from stig_testkit.workers import on_worker, stats_of

LOST = b"; acknowledged writes were lost\r\n"
REFUSED = b"SERVER_ERROR out of disk space; writes refused\r\n"
#: The ``stats`` lines of the refusal that every worker must show alike.
REFUSAL_LINES = (
    "stig_writes_refused",
    "stig_writes_refused_cause",
    "stig_writes_refused_episodes",
    "stig_last_commit_error_kind",
    "stig_last_commit_error",
)


@pytest.fixture
def faulty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    yield from faulty_servers(tmp_path, monkeypatch)


def _refusal(conn) -> dict[str, str]:
    stats = stats_of(conn)
    return {name: stats[name] for name in REFUSAL_LINES}


def test_a_worker_that_saw_no_failure_refuses_writes_and_both_come_back(faulty):
    server = faulty("--workers", "2")
    zero, one = on_worker(server, 0), on_worker(server, 1)
    for conn in (zero, one):
        assert conn.send_recv(b"set a 0 0 1\r\n1\r\nmn\r\n", b"MN\r\n") == b"STORED\r\nMN\r\n"

    server.set_fault("enospc")
    # STORED from its POV; its commit fails: it is told, and closed (the
    # loss may come in the same packet as the STORED, read past it here).
    reply = zero.send_recv(b"set k 0 0 1\r\nx\r\n", b"\r\n")
    assert reply.startswith(b"STORED\r\n"), reply
    lost = reply[len(b"STORED\r\n") :] + zero.recv_until(None, timeout=10)
    assert lost.startswith(b"SERVER_ERROR commit failed: out of disk space (") and lost.endswith(
        LOST
    ), lost

    # Worker 1 committed nothing since: its stats already say writes are
    # refused, as worker 0's do, and its next write is refused, never STORED.
    expected = {
        "stig_writes_refused": "1",
        "stig_writes_refused_cause": "disk_full",
        "stig_writes_refused_episodes": "1",
        "stig_last_commit_error_kind": "disk_full",
        "stig_last_commit_error": "mdb_txn_commit:_No_space_left_on_device",
    }
    assert _refusal(one) == expected
    assert one.send_recv(b"set x 0 0 1\r\nx\r\n", b"\r\n") == REFUSED
    assert one.send_recv(b"get a k x\r\n") == b"VALUE a 0 1\r\n1\r\nEND\r\n"
    zero = on_worker(server, 0)
    assert zero.send_recv(b"set y 0 0 1\r\nx\r\n", b"\r\n") == REFUSED
    assert _refusal(zero) == _refusal(one) == expected

    # Room again: a probe (either worker's) brings writes back on both.
    server.set_fault("")
    wait_for(lambda: _refusal(one), lambda got: got["stig_writes_refused"] == "0", what="back")
    assert _refusal(zero)["stig_writes_refused"] == "0"
    for conn in (one, zero):
        assert conn.send_recv(b"set b 0 0 1\r\nb\r\nmn\r\n", b"MN\r\n") == b"STORED\r\nMN\r\n"
    assert one.send_recv(b"get b\r\n") == b"VALUE b 0 1\r\nb\r\nEND\r\n"


def _failed_run(faulty, sets: int) -> tuple[bytes, dict[str, str], bytes]:
    """A quiet run of ``sets`` plain sets on a full disk (``--durable-acks``):
    what its barrier answers, the refusal's stats, what a read finds after."""
    server = faulty("--workers", "2", "--durable-acks")
    conn = on_worker(server, 0)
    assert conn.send_recv(b"set a 0 0 1\r\n1\r\nmn\r\n", b"MN\r\n") == b"STORED\r\nMN\r\n"
    server.set_fault("enospc")
    run = b"".join(b"set r%d 0 0 2 noreply\r\nrr\r\n" % i for i in range(sets))
    said = conn.send_recv(run + b"mn\r\n", b"\r\n", timeout=10)
    refusal = _refusal(on_worker(server, 1))
    server.set_fault("")
    keys = b" ".join(b"r%d" % i for i in range(sets))
    return said, refusal, on_worker(server, 1).send_recv(b"get a %b\r\n" % keys)


def test_a_run_crossing_as_columns_fails_on_a_full_disk_as_a_short_run_does(faulty):
    """Review of wbatch: four sets or more cross to the writer as columns
    (``PutRun``), three as ops; on a full disk both fail with the same
    words and cause, and neither leaves a key behind."""
    ops = _failed_run(faulty, 3)
    columns = _failed_run(faulty, 5)
    assert columns == ops
    assert columns[0].startswith(b"SERVER_ERROR commit failed: out of disk space ("), columns
    assert columns[1]["stig_writes_refused_cause"] == "disk_full"
    assert columns[2] == b"VALUE a 0 1\r\n1\r\nEND\r\n"
