"""Failures always surface: a real server whose commits fail on demand.

The server runs through stig_testkit/fault_server.py, which makes
``Store.apply`` fail with a real ``lmdb.Error`` or a Python bug when the
test says so (see that module).  Every path a failed commit can take is
checked for the exact error the client sees, and for the server going on
serving other connections.
"""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pytest

from stig_protocol.binary_codes import Opcode, Status
from stig_testkit.certs import self_signed_cert
from stig_testkit.connections import BinaryConnection, RawConnection
from stig_testkit.faulty import FaultyStig, faulty_servers
from stig_testkit.waiting import wait_for, wait_for_stats

LMDB_ERROR = (
    b"commit failed: mdb_put: MDB_BAD_VALSIZE: Unsupported size of key/DB name/data, "
    b"or wrong DUPFIXED size"
)
BUG_ERROR = b"commit failed: internal error (see the server log)"
LOST = b"; acknowledged writes were lost"
ERRORS = {"lmdb": LMDB_ERROR, "bug": BUG_ERROR}


@pytest.fixture
def faulty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    yield from faulty_servers(tmp_path, monkeypatch)


def _wait_held(server: FaultyStig, timeout: float = 10.0) -> None:
    held = Path(str(server.faults) + ".held")
    wait_for(held.exists, bool, timeout, what="a held commit")


def _others_still_served(server: FaultyStig) -> None:
    server.set_fault("")
    with server.connect() as other:
        assert other.send_recv(b"set other 0 0 2\r\nok\r\n", b"\r\n") == b"STORED\r\n"
        assert other.send_recv(b"mn\r\n", b"\r\n") == b"MN\r\n"
    assert server.send_recv(b"get other\r\n") == b"VALUE other 0 2\r\nok\r\nEND\r\n"


@pytest.mark.parametrize("kind", ["lmdb", "bug"])
def test_loud_conditional_write_answers_the_error(faulty, kind):
    server = faulty()
    server.set_fault(kind)
    with server.connect() as conn:
        reply = conn.send_recv(b"add k 0 0 1\r\nx\r\n", b"\r\n")
        assert reply == b"SERVER_ERROR " + ERRORS[kind] + b"\r\n"
        # Reported once: the next barrier has nothing more to say.
        server.set_fault("")
        assert conn.send_recv(b"mn\r\n", b"\r\n") == b"MN\r\n"
        assert conn.send_recv(b"get k\r\n") == b"END\r\n"
    _others_still_served(server)
    if kind == "bug":
        assert "Traceback" in server.stderr and "ZeroDivisionError" in server.stderr


@pytest.mark.parametrize("kind", ["lmdb", "bug"])
@pytest.mark.parametrize(
    "run",
    [b"ms q1 1 q ME\r\nx\r\n", b"add q1 0 0 1 noreply\r\nx\r\n"],
    ids=["meta-quiet-add", "text-noreply-add"],
)
def test_quiet_conditional_run_then_mn_answers_the_error(faulty, kind, run):
    server = faulty()
    server.set_fault(kind)
    with server.connect() as conn:
        reply = conn.send_recv(run + b"mn\r\n", b"\r\n")
        assert reply == b"SERVER_ERROR " + ERRORS[kind] + b"\r\n"
        server.set_fault("")
        # Up to the next MN, only that MN: the first mn's MN, or any stray
        # line after the error, would come before it.
        assert conn.send_recv(b"mn\r\n", b"MN\r\n") == b"MN\r\n"
    _others_still_served(server)


@pytest.mark.parametrize("kind", ["lmdb", "bug"])
def test_quiet_failure_reported_by_a_read_keeps_the_stream_in_step(faulty, kind):
    """A quiet conditional whose run is closed by a run of ``mg`` (which reads
    the ``mn`` behind it ahead): the failure is written in the quiet write's
    place, before the ``mg`` replies, and the ``mn`` is still answered
    (before, the error came after the replies and the ``mn`` was dropped:
    the client waited for its ``MN`` forever)."""
    server = faulty()
    server.set_fault(f"{kind} q1")
    with server.connect() as conn:
        reply = conn.send_recv(b"ms q1 1 q ME\r\nx\r\nmg a v\r\nmg b v\r\nmn\r\n", b"MN\r\n")
        assert reply == b"SERVER_ERROR " + ERRORS[kind] + b"\r\nEN\r\nEN\r\nMN\r\n"
        server.set_fault("")
        assert conn.send_recv(b"mn\r\n", b"\r\n") == b"MN\r\n"  # reported once
    _others_still_served(server)


def test_each_quiet_write_of_a_failed_run_gets_its_line(faulty):
    """Two quiet conditionals in one run that fails to commit, closed by a
    read: each gets a ``SERVER_ERROR`` line in its place (as each binary
    quiet write gets its EINTERNAL), then the read's reply; reported once."""
    server = faulty()
    server.set_fault("lmdb q1")
    with server.connect() as conn:
        reply = conn.send_recv(b"ms q1 1 q ME\r\nx\r\nms q2 1 q ME\r\ny\r\nmg a v\r\n", b"EN\r\n")
        assert reply == (b"SERVER_ERROR " + LMDB_ERROR + b"\r\n") * 2 + b"EN\r\n"
        server.set_fault("")
        assert conn.send_recv(b"mn\r\n", b"\r\n") == b"MN\r\n"  # reported once
    _others_still_served(server)


def test_meta_quiet_failure_of_a_run_closed_by_silence_comes_before_the_next_reply(faulty):
    """The run is closed by --batch-idle-ms (the connection, not a command):
    its quiet write is still owed its verdict, written before the next reply."""
    server = faulty("--batch-idle-ms", "1")
    server.set_fault("lmdb q1")
    with server.connect() as conn:
        conn.send(b"ms q1 1 q ME\r\nx\r\n")
        wait_for_stats(server, lambda stats: stats["stig_failed_commits"] != "0")
        server.set_fault("")
        reply = conn.send_recv(b"mg a v\r\n", b"EN\r\n")
        assert reply == b"SERVER_ERROR " + LMDB_ERROR + b"\r\nEN\r\n"
        assert conn.send_recv(b"mn\r\n", b"\r\n") == b"MN\r\n"  # reported once
    _others_still_served(server)


def test_meta_quiet_failure_comes_before_a_text_get_reply(faulty):
    """A text get closes the quiet meta run (or finds it closed by silence):
    the failure is written before the get's reply, which may be sent in parts,
    and the plain get's no-wait path does not skip it."""
    server = faulty("--batch-idle-ms", "1")
    server.set_fault("lmdb q1")
    with server.connect() as conn:
        conn.send(b"ms q1 1 q ME\r\nx\r\n")
        wait_for_stats(server, lambda stats: stats["stig_failed_commits"] != "0")
        server.set_fault("lmdb q2")
        reply = conn.send_recv(b"get a\r\n", b"END\r\n")
        assert reply == b"SERVER_ERROR " + LMDB_ERROR + b"\r\nEND\r\n"
        reply = conn.send_recv(b"ms q2 1 q ME\r\ny\r\nget a b c\r\n", b"END\r\n")
        assert reply == b"SERVER_ERROR " + LMDB_ERROR + b"\r\nEND\r\n"
        server.set_fault("")
        assert conn.send_recv(b"mn\r\n", b"\r\n") == b"MN\r\n"  # reported once
    _others_still_served(server)


def test_meta_quiet_failure_comes_before_a_run_of_mg_each_answered(faulty):
    """A run of mg closing a failed quiet meta run: the failure in the quiet
    write's place, then each mg's own reply (before: one SERVER_ERROR for
    the whole run, the client waiting for the other mg replies forever)."""
    server = faulty()
    server.set_fault("lmdb q1")
    with server.connect() as conn:
        reply = conn.send_recv(
            b"ms q1 1 q ME\r\nx\r\nmg q1 v\r\nmg q1 v\r\nmg x v\r\n", b"EN\r\n" * 3
        )
        assert reply == b"SERVER_ERROR " + LMDB_ERROR + b"\r\n" + b"EN\r\n" * 3
        server.set_fault("")
        assert conn.send_recv(b"mn\r\n", b"\r\n") == b"MN\r\n"  # reported once
    _others_still_served(server)


def test_two_failed_binary_quiet_runs_closed_by_silence_each_get_their_failure(faulty):
    """Two AddQ runs, each closed by --batch-idle-ms, each failed to commit,
    then a loud Get: each AddQ gets its EINTERNAL, with its own opaque
    (before: only the first did; the second's failure was never reported,
    and the quiet silence told the client it had succeeded)."""
    server = faulty("--batch-idle-ms", "1")
    server.set_fault("lmdb")
    conn: BinaryConnection = server.connect_binary()
    conn.request(Opcode.AddQ, b"q1", b"1", b"\x00" * 8, opaque=1)
    wait_for_stats(server, lambda s: s["stig_failed_commits"] == "1", what="a failed commit")
    conn.request(Opcode.AddQ, b"q2", b"2", b"\x00" * 8, opaque=2)
    wait_for_stats(server, lambda s: s["stig_failed_commits"] == "2", what="two failed commits")
    server.set_fault("")
    conn.request(Opcode.Get, b"q1", opaque=3)
    replies = [conn.response(), conn.response(), conn.response()]
    assert [(r.opcode, r.status, r.opaque) for r in replies] == [
        (Opcode.AddQ, Status.EINTERNAL, 1),
        (Opcode.AddQ, Status.EINTERNAL, 2),
        (Opcode.Get, Status.KEY_ENOENT, 3),
    ]
    assert replies[0].value == replies[1].value == LMDB_ERROR
    conn.request(Opcode.Noop, opaque=4)  # reported once
    assert conn.response().status == Status.NO_ERROR
    _others_still_served(server)


@pytest.mark.parametrize("kind", ["lmdb", "bug"])
def test_conditional_alone_closed_by_silence_fails_the_next_barrier(faulty, kind):
    """A noreply add alone, its run closed by --batch-idle-ms: the next mn says it failed."""
    server = faulty("--batch-idle-ms", "1")
    server.set_fault(kind)
    with server.connect() as conn:
        conn.send(b"add alone 0 0 1 noreply\r\nx\r\n")
        wait_for_stats(server, lambda s: s["stig_failed_commits"] != "0", what="a failed commit")
        server.set_fault("")
        assert conn.send_recv(b"mn\r\n", b"\r\n") == b"SERVER_ERROR " + ERRORS[kind] + b"\r\n"
        assert conn.send_recv(b"mn\r\n", b"\r\n") == b"MN\r\n"
    _others_still_served(server)


@pytest.mark.parametrize("kind", ["lmdb", "bug"])
def test_binary_quiet_run_then_noop_answers_the_error(faulty, kind):
    server = faulty()
    server.set_fault(kind)
    conn: BinaryConnection = server.connect_binary()
    extras = b"\x00" * 8
    conn.request(Opcode.AddQ, b"bq", b"1", extras, opaque=1)
    conn.request(Opcode.Noop, opaque=2)
    reply = conn.response()
    assert (reply.opcode, reply.status, reply.opaque) == (Opcode.Noop, Status.EINTERNAL, 2)
    assert reply.value == ERRORS[kind]
    server.set_fault("")
    conn.request(Opcode.Noop, opaque=3)
    reply = conn.response()
    assert (reply.opcode, reply.status, reply.opaque) == (Opcode.Noop, Status.NO_ERROR, 3)
    _others_still_served(server)


@pytest.mark.parametrize("kind", ["lmdb", "bug"])
def test_binary_quiet_failure_does_not_fail_the_next_loud_write(faulty, kind):
    """An AddQ whose run (closed by --batch-idle-ms) failed to commit, then a
    loud Increment of another key that commits: the failure is answered with
    the AddQ's opaque, and the Increment with its own success (before, the
    Increment was answered EINTERNAL although it was counted: a client that
    retries it counts it twice)."""
    server = faulty("--batch-idle-ms", "1")
    conn: BinaryConnection = server.connect_binary()
    conn.request(Opcode.Set, b"n", b"10", b"\x00" * 8, opaque=1)
    assert conn.response().status == Status.NO_ERROR
    server.set_fault(f"{kind} bq")
    conn.request(Opcode.AddQ, b"bq", b"1", b"\x00" * 8, opaque=2)
    wait_for_stats(server, lambda s: s["stig_failed_commits"] != "0", what="a failed commit")
    server.set_fault("")
    conn.request(
        Opcode.Increment, b"n", extras=(1).to_bytes(8, "big") + bytes(8) + bytes(4), opaque=3
    )
    failed = conn.response()
    assert (failed.opcode, failed.status, failed.opaque) == (Opcode.AddQ, Status.EINTERNAL, 2)
    assert failed.value == ERRORS[kind]
    counted = conn.response()
    assert (counted.opcode, counted.status, counted.opaque) == (
        Opcode.Increment,
        Status.NO_ERROR,
        3,
    )
    assert int.from_bytes(counted.value, "big") == 11
    conn.request(Opcode.Noop, opaque=4)  # reported once
    assert conn.response().status == Status.NO_ERROR
    _others_still_served(server)


@pytest.mark.parametrize("kind", ["lmdb", "bug"])
def test_idle_acknowledged_writer_is_told_at_once(faulty, kind):
    server = faulty()
    server.set_fault("hold")
    with server.connect() as conn:
        assert conn.send_recv(b"set acked 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
        _wait_held(server)
        server.set_fault(kind)  # the held commit fails; the client sends nothing more
        assert conn.recv_until(None, timeout=10) == b"SERVER_ERROR " + ERRORS[kind] + LOST + b"\r\n"
    _others_still_served(server)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_idle_acknowledged_writer_over_tls_is_told_at_once(faulty, tmp_path):
    """The same over TLS (before, waking the connection called a ``shutdown``
    the TLS socket did not have: the error was logged as a failed callback
    and the idle client never heard of its lost write)."""
    self_signed_cert(tmp_path)
    server = faulty(
        "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem")
    )
    context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    context.check_hostname = False
    server.set_fault("hold")
    with server.connect() as conn:
        conn.sock = context.wrap_socket(conn.sock, server_hostname="127.0.0.1")
        assert conn.send_recv(b"set acked 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
        _wait_held(server)
        server.set_fault("lmdb")
        assert (
            conn.recv_until(b"\r\n", timeout=10) == b"SERVER_ERROR " + LMDB_ERROR + LOST + b"\r\n"
        )
    assert "completion callback failed" not in server.stderr


@pytest.mark.parametrize("kind", ["lmdb", "bug"])
def test_writer_waiting_on_backpressure_is_told(faulty, kind):
    server = faulty("--max-pending-bytes", "256k")
    server.set_fault("hold")
    value = b"v" * 1000
    with server.connect(timeout=10) as conn:
        assert conn.send_recv(b"set first 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
        _wait_held(server)
        # Far more than the budget: the server stops reading this connection.
        conn.send(b"".join(b"set k%d 0 0 1000\r\n%b\r\n" % (i, value) for i in range(300)))
        conn.send(b"set last 0 0 1\r\nx\r\n")
        wait_for_stats(server, lambda s: s["stig_paused_connections"] != "0", what="a pause")
        server.set_fault(kind)
        reply = conn.recv_until(None, timeout=10)
        assert reply.endswith(b"SERVER_ERROR " + ERRORS[kind] + LOST + b"\r\n"), reply[-200:]
    _others_still_served(server)


def test_a_run_lmdb_refuses_fails_alone(faulty):
    """One bad run in a group commit fails alone: the group is retried without it."""
    server = faulty()
    server.set_fault("hold")
    with server.connect() as first, server.connect() as bad, server.connect() as good:
        assert first.send_recv(b"set first 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
        _wait_held(server)
        # These two queue behind the held commit: the next group holds both.
        assert bad.send_recv(b"set poison 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
        assert good.send_recv(b"set fine 0 0 1\r\ny\r\n", b"\r\n") == b"STORED\r\n"
        server.set_fault("lmdb poison")
        assert bad.recv_until(None, timeout=10) == b"SERVER_ERROR " + LMDB_ERROR + LOST + b"\r\n"
        assert good.send_recv(b"mn\r\n", b"\r\n") == b"MN\r\n"
    assert server.send_recv(b"get fine first poison\r\n") == (
        b"VALUE fine 0 1\r\ny\r\nVALUE first 0 1\r\nx\r\nEND\r\n"
    )


@pytest.mark.parametrize("kind", ["lmdb", "bug"])
def test_writer_paused_by_commit_lag_is_told_without_sending_more(faulty, kind):
    """The loss lands while the connection waits on the lag brake, with no input behind it."""
    server = faulty("--max-commit-lag-ms", "50")
    server.set_fault("hold")
    with server.connect(timeout=10) as conn:
        assert conn.send_recv(b"set first 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
        _wait_held(server)
        wait_for_stats(server, lambda s: int(s["stig_commit_lag_ms"]) > 50, what="a lag > 50 ms")
        assert conn.send_recv(b"set second 0 0 1\r\ny\r\n", b"\r\n") == b"STORED\r\n"
        wait_for_stats(server, lambda s: s["stig_paused_connections"] != "0", what="a pause")
        server.set_fault(kind)
        assert conn.recv_until(None, timeout=10) == b"SERVER_ERROR " + ERRORS[kind] + LOST + b"\r\n"
    _others_still_served(server)


@pytest.mark.parametrize("kind", ["lmdb", "bug"])
def test_writer_waiting_for_room_is_told_at_once(faulty, kind):
    """A connection whose open run waits for room under --max-pending-bytes
    (another run holds the budget: docs/pov.md, "The barrier") is told of its
    lost acknowledged write at once, as a braked one is — not once the other
    client's run ends (here: after a minute of its silence)."""
    server = faulty("--max-pending-bytes", "1m", "--batch-idle-ms", "60000")
    value = b"v" * 100_000
    sets = lambda prefix, count: b"".join(  # noqa: E731
        b"set %b%d 0 0 %d noreply\r\n%b\r\n" % (prefix, j, len(value), value) for j in range(count)
    )
    opener, holder = server.connect(timeout=60), server.connect(timeout=60)
    opener.send(sets(b"o", 6))
    wait_for_stats(server, lambda s: int(s["stig_open_run_bytes"]) >= 600_000)
    holder.send(sets(b"h", 5))  # passes the budget: holds it
    wait_for_stats(server, lambda s: int(s["stig_open_run_bytes"]) > 1 << 20)
    server.set_fault("hold")
    with server.connect(timeout=10) as conn:
        # One receive: the loud set is answered (and submitted), the quiet
        # one right behind it finds the budget full and waits for room.
        conn.send(b"set acked 0 0 1\r\nx\r\nset quiet 0 0 1 noreply\r\ny\r\n")
        assert conn.recv_until(b"\r\n") == b"STORED\r\n"
        _wait_held(server)
        wait_for_stats(server, lambda s: s["stig_open_run_waiting"] == "1", what="a wait")
        server.set_fault(kind)
        assert conn.recv_until(None, timeout=10) == b"SERVER_ERROR " + ERRORS[kind] + LOST + b"\r\n"
    wait_for_stats(server, lambda s: s["stig_open_run_waiting"] == "0", what="no wait left")
    _others_still_served(server)
    assert holder.send_recv(b"mn\r\n", b"MN\r\n") == b"MN\r\n"
    assert server.send_recv(b"get quiet h0\r\n") == (  # nothing after the loss
        b"VALUE h0 0 100000\r\n" + value + b"\r\nEND\r\n"
    )


# -- a disk that refuses commits: writes refused until a probe commits ------------

#: fault -> (how the cause is said, LMDB's words for the errno, stats kind)
DISK_FAULTS = {
    "enospc": (b"out of disk space", b"No space left on device", "disk_full"),
    "edquot": (b"out of disk space", b"Disk quota exceeded", "disk_full"),
    "eio": (b"disk I/O error", b"Input/output error", "io_error"),
}
NOT_STORED = b"; unacknowledged writes were not stored"
INCR_EXTRAS = (1).to_bytes(8, "big") + bytes(8) + bytes(4)


def _commit_failed(fault: str) -> bytes:
    words, strerror, _kind = DISK_FAULTS[fault]
    return b"commit failed: %b (mdb_txn_commit: %b)" % (words, strerror)


def _refused(fault: str) -> bytes:
    return DISK_FAULTS[fault][0] + b"; writes refused"


def _writes_are_refused(server: FaultyStig, fault: str) -> None:
    """Every kind of write, in every protocol, is refused at once in the
    cause's words; reads and stats go on."""
    refused = b"SERVER_ERROR " + _refused(fault) + b"\r\n"
    with server.connect() as conn:
        for write in (
            b"set k 0 0 1\r\nx\r\n",
            b"add n 0 0 1\r\nx\r\n",
            b"append a 0 0 1\r\nx\r\n",
            b"incr a 1\r\n",
            b"ms k 1\r\nx\r\n",
            b"ms k 1 q\r\nx\r\n",  # quiet mode hides HD, never an error
            b"ma a\r\n",
            b"md a I\r\n",  # marks stale: a write, not a delete
        ):
            assert conn.send_recv(write, b"\r\n") == refused, write
        # noreply: silent, as memcached's errors under noreply; the barrier says it once
        assert conn.send_recv(b"set q 0 0 1 noreply\r\nx\r\nmn\r\n", b"\r\n") == refused
        assert conn.send_recv(b"mn\r\n", b"\r\n") == b"MN\r\n"
        assert conn.send_recv(b"get a\r\n") == b"VALUE a 0 1\r\n1\r\nEND\r\n"
    binary: BinaryConnection = server.connect_binary()
    for opcode, value, extras in (
        (Opcode.Set, b"x", bytes(8)),
        (Opcode.SetQ, b"x", bytes(8)),
        (Opcode.Increment, b"", INCR_EXTRAS),
        (Opcode.AppendQ, b"x", b""),
    ):
        binary.request(opcode, b"a", value, extras, opaque=opcode)
        response = binary.response()
        assert (response.opcode, response.status, response.opaque) == (
            opcode,
            Status.ENOMEM,
            opcode,
        ), response
        assert response.value == _refused(fault)
    assert binary.call(Opcode.Get, b"a").value == b"1"
    binary.close()
    stats = server.stats()
    assert stats["stig_writes_refused"] == "1"
    assert stats["stig_writes_refused_cause"] == DISK_FAULTS[fault][2]
    assert int(stats["stig_write_refusals"]) >= 13
    assert stats["stig_last_commit_error"] == "mdb_txn_commit:_" + DISK_FAULTS[fault][
        1
    ].decode().replace(" ", "_")


def _writes_come_back(server: FaultyStig) -> None:
    server.set_fault("")
    wait_for_stats(server, lambda s: s["stig_writes_refused"] == "0", what="writes accepted")
    with server.connect() as conn:
        assert conn.send_recv(b"set back 0 0 1\r\nb\r\n", b"\r\n") == b"STORED\r\n"
        assert conn.send_recv(b"mn\r\n", b"\r\n") == b"MN\r\n"
    assert server.send_recv(b"get back\r\n") == b"VALUE back 0 1\r\nb\r\nEND\r\n"


@pytest.mark.parametrize("fault", sorted(DISK_FAULTS))
def test_an_acknowledged_write_lost_to_the_disk_is_reported_then_writes_are_refused(faulty, fault):
    server = faulty()
    assert server.send_recv(b"set a 0 0 1\r\n1\r\nmn\r\n", b"MN\r\n") == b"STORED\r\nMN\r\n"
    server.set_fault("hold")
    with server.connect() as conn:
        assert conn.send_recv(b"set acked 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
        _wait_held(server)
        server.set_fault(fault)  # the held commit fails: STORED was a promise broken
        lost = conn.recv_until(None, timeout=10)
        assert lost == b"SERVER_ERROR " + _commit_failed(fault) + LOST + b"\r\n"
    _writes_are_refused(server, fault)
    _writes_come_back(server)


@pytest.mark.parametrize("fault", sorted(DISK_FAULTS))
def test_under_durable_acks_the_failed_write_is_never_called_acknowledged(faulty, fault):
    server = faulty("--durable-acks")
    assert server.send_recv(b"set a 0 0 1\r\n1\r\nmn\r\n", b"MN\r\n") == b"STORED\r\nMN\r\n"
    server.set_fault(fault)
    with server.connect() as conn:
        reply = conn.send_recv(b"set k 0 0 1\r\nx\r\n", None)
        assert reply == b"SERVER_ERROR " + _commit_failed(fault) + NOT_STORED + b"\r\n"
    _writes_are_refused(server, fault)
    _writes_come_back(server)


def test_a_binary_write_that_fails_on_a_full_disk_is_not_called_acknowledged(faulty):
    """A loud binary Set answers after its commit: never acknowledged before it."""
    server = faulty()
    server.set_fault("enospc")
    conn: BinaryConnection = server.connect_binary()
    response = conn.call(Opcode.Set, b"k", b"x", bytes(8), opaque=5)
    assert (response.status, response.opaque) == (Status.EINTERNAL, 5)
    # Its own failure, reported by its own response: nothing acknowledged was
    # lost, so the connection goes on (a write answered after its commit fails
    # alone, docs/pov.md "When a commit fails"); its next write is refused.
    assert response.value == _commit_failed("enospc")
    refused = conn.call(Opcode.Set, b"k", b"x", bytes(8))
    assert (refused.status, refused.value) == (Status.ENOMEM, _refused("enospc"))


@pytest.mark.parametrize("durable", [False, True], ids=["pov-acks", "durable-acks"])
def test_deletes_go_on_while_writes_are_refused_and_bring_them_back(faulty, monkeypatch, durable):
    """A delete frees space, but needs pages of its own: it answers once
    committed — its error if the disk refuses it too, and the connection goes
    on; once one commits, a probe follows at once and writes come back (no
    periodic probe here: once an hour)."""
    monkeypatch.setenv("STIG_FAULT_PROBE_SECONDS", "3600")
    server = faulty(*(["--durable-acks"] if durable else []))
    with server.connect() as conn:
        for key in (b"a", b"b", b"c"):
            assert conn.send_recv(b"set %b 0 0 1\r\n1\r\n" % key, b"\r\n") == b"STORED\r\n"
        assert conn.send_recv(b"mn\r\n", b"\r\n") == b"MN\r\n"
    server.set_fault("enospc")
    server.send_recv(b"set k 0 0 1\r\nx\r\nmn\r\n", None)  # fails: writes refused
    with server.connect() as conn:
        reply = conn.send_recv(b"delete a\r\n", b"\r\n")
        assert reply == b"SERVER_ERROR " + _commit_failed("enospc") + b"\r\n"
        assert conn.send_recv(b"get a\r\n") == b"VALUE a 0 1\r\n1\r\nEND\r\n"
        # A quiet one: its barrier answers the error instead of MN (docs/pov.md).
        assert conn.send_recv(b"md b q\r\nmn\r\n", b"\r\n") == (
            b"SERVER_ERROR " + _commit_failed("enospc") + b"\r\n"
        )
        # The disk has room again: deletes commit, answered as memcached
        # does, and the probe behind them brings writes back.
        server.set_fault("")
        assert server.stats()["stig_writes_refused"] == "1"  # no probe yet
        assert conn.send_recv(b"delete a\r\n", b"\r\n") == b"DELETED\r\n"
        assert conn.send_recv(b"delete a\r\n", b"\r\n") == b"NOT_FOUND\r\n"
        assert conn.send_recv(b"md b q\r\nmn\r\n", b"MN\r\n") == b"MN\r\n"
        assert conn.send_recv(b"get a b c\r\n") == b"VALUE c 0 1\r\n1\r\nEND\r\n"
    _writes_come_back(server)


def test_a_map_that_cannot_grow_refuses_writes_as_map_full(faulty):
    """The map fills (1 MiB) and growing it fails (no address space): writes
    are refused as 'database map full'; once it can grow, a probe grows it."""
    server = faulty("--map-size", "1m")
    server.set_fault("nogrow")
    value = b"v" * 100_000
    replies = []
    with server.connect() as conn:
        for index in range(40):
            replies.append(_set_and_barrier(conn, b"k%d" % index, value))
            if replies[-1] != b"STORED\r\nMN\r\n":
                break
    assert replies[-1].startswith(b"STORED\r\nSERVER_ERROR commit failed: database map full (")
    assert replies[-1].endswith(LOST + b"\r\n"), replies[-1]
    refused = b"SERVER_ERROR database map full; writes refused\r\n"
    assert server.send_recv(b"set x 0 0 1\r\nx\r\n", b"\r\n") == refused
    stats = server.stats()
    assert (stats["stig_writes_refused"], stats["stig_writes_refused_cause"]) == ("1", "map_full")
    _writes_come_back(server)
    assert int(server.stats()["limit_maxbytes"]) > 1 << 20


def _set_and_barrier(conn: RawConnection, key: bytes, value: bytes) -> bytes:
    """``set`` (STORED from the POV), then ``mn``: MN, or what the loss says
    (which may come right behind the STORED, before the ``mn`` is sent)."""
    reply = conn.send_recv(b"set %b 0 0 %d\r\n%b\r\n" % (key, len(value), value), b"\r\n")
    if reply != b"STORED\r\n":
        return reply
    try:
        conn.send(b"mn\r\n")
    except OSError:
        pass  # closed after telling of the loss: its line is still to be read
    return reply + conn.recv_until(b"\r\n")


def test_once_writes_are_refused_a_run_accepted_before_is_acknowledged_only_on_disk(faulty):
    """A quiet run recorded before the disk filled, closed after: in the
    default mode the reply that closes it would acknowledge it at once; once
    writes are refused it waits for the run's commit instead (as under
    --durable-acks), so its failure is never an acknowledged write lost.

    ``--batch-idle-ms`` is long, so that only the test's ``mg`` closes the run
    (with 50 ms the run closed by itself before the disk filled, whenever the
    ``stats`` that waits for it came later: on another worker, whose first
    connection imported the text front end, it always did)."""
    server = faulty("--batch-idle-ms", "600000")
    with server.connect() as quiet:
        assert quiet.send_recv(b"ms early 1 q\r\nx\r\nmn\r\n", b"MN\r\n") == b"MN\r\n"
        quiet.send(b"ms early 1 q\r\ny\r\n")  # recorded, its run left open
        wait_for_stats(server, lambda s: s["stig_open_run_bytes"] != "0", what="an open run")
        server.set_fault("hold")
        with server.connect() as loud:
            assert loud.send_recv(b"set k 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
            _wait_held(server)
            server.set_fault("enospc")  # k's commit fails: writes refused
            assert loud.recv_until(None, timeout=10).endswith(LOST + b"\r\n")
        assert server.stats()["stig_writes_refused"] == "1"
        reply = quiet.send_recv(
            b"mg other v\r\n", None
        )  # closes the run: no EN before it is on disk
        assert reply == b"SERVER_ERROR " + _commit_failed("enospc") + NOT_STORED + b"\r\n"
    _writes_come_back(server)
    assert server.send_recv(b"mg early v\r\n", b"\r\n") == b"VA 1\r\nx\r\n"


# -- pipelined writes answered after their commit share one; a failure fails alone ----

BURST_KEYS = [b"pb%d" % i for i in range(60)]
POISON = 30  # BURST_KEYS[POISON] is written as b"poison"


def _burst_keys() -> list[bytes]:
    return [b"poison" if i == POISON else key for i, key in enumerate(BURST_KEYS)]


def test_a_failed_add_in_a_pipelined_burst_fails_alone(faulty):
    """60 adds in one send share a group commit; the one LMDB refuses gets its
    SERVER_ERROR, every other its STORED, and the connection goes on."""
    server = faulty()
    server.set_fault("lmdb poison")
    with server.connect() as conn:
        request = b"".join(b"add %s 0 0 1\r\nx\r\n" % key for key in _burst_keys())
        conn.send(request)
        replies = b""
        while replies.count(b"\r\n") < len(BURST_KEYS):
            replies += conn.recv_until(b"\r\n")
        lines = replies.split(b"\r\n")[:-1]
        assert lines[POISON] == b"SERVER_ERROR " + LMDB_ERROR
        assert lines[:POISON] + lines[POISON + 1 :] == [b"STORED"] * (len(BURST_KEYS) - 1)
        server.set_fault("")
        assert conn.send_recv(b"mn\r\n", b"\r\n") == b"MN\r\n"  # reported once
    found = server.client().get_many([key.decode() for key in _burst_keys()])
    assert sorted(found) == sorted(k.decode() for k in _burst_keys() if k != b"poison")


@pytest.mark.parametrize("opcode", [Opcode.Set, Opcode.Add], ids=["Set", "Add"])
def test_a_failed_binary_write_in_a_pipelined_burst_fails_alone(faulty, opcode):
    """60 loud binary writes in one send: the one LMDB refuses answers
    EINTERNAL, every other success with its committed cas, and the connection
    goes on — nothing it was told succeeded was lost (before, a failed Set
    closed the connection as if acknowledged writes were lost, and the
    replies of the burst were dropped)."""
    from stig_protocol.binary import encode_request

    server = faulty()
    server.set_fault("lmdb poison")
    conn: BinaryConnection = server.connect_binary()
    conn.send(
        b"".join(
            encode_request(opcode, key, b"x", b"\x00" * 8, opaque=i)
            for i, key in enumerate(_burst_keys())
        )
    )
    responses = [conn.response() for _ in BURST_KEYS]
    assert [r.opaque for r in responses] == list(range(len(BURST_KEYS)))
    failed = responses[POISON]
    assert (failed.status, failed.value) == (Status.EINTERNAL, LMDB_ERROR)
    others = responses[:POISON] + responses[POISON + 1 :]
    assert all(r.status == Status.NO_ERROR and r.cas for r in others)
    server.set_fault("")
    conn.request(Opcode.Noop, opaque=99)
    noop = conn.response()
    assert (noop.status, noop.opaque) == (Status.NO_ERROR, 99)  # reported once
    _others_still_served(server)
