"""``stig serve --workers 1``: the writer in a process of its own (docs/workers.md).

The whole integration, durability and model suites also run in this shape
with ``STIG_TEST_SERVE_ARGS="--workers 1"``; these tests are about what only
this shape has: the writer process, its restart after SIGKILL, and its end
with the server's.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from stig_testkit.faulty import faulty_servers
from stig_testkit.process import StigProcess
from stig_testkit.waiting import wait_for

DIED_AFTER = (
    b"SERVER_ERROR commit failed: the writer process died during the commit "
    b"(the run may be stored)\r\n"
)


@pytest.fixture
def faulty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    yield from faulty_servers(tmp_path, monkeypatch, "--workers", "1")


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def _writer_pid(server: StigProcess) -> int:
    pid = int(server.stats()["stig_writer_pid"])
    assert pid and pid != server.proc.pid  # type: ignore[union-attr]
    return pid


def test_the_writer_is_a_process_of_its_own_and_commits(stig_factory):
    server = stig_factory("--workers", "1")
    stats = server.stats()
    assert stats["stig_workers"] == "1" and stats["stig_writer_restarts"] == "0"
    assert _alive(_writer_pid(server))
    with server.connect() as conn:
        assert conn.send_recv(b"set a 0 0 1\r\n1\r\n", b"\r\n") == b"STORED\r\n"
        assert conn.send_recv(b"add a 0 0 1\r\n2\r\n", b"\r\n") == b"NOT_STORED\r\n"
        assert conn.send_recv(b"incr n 1\r\n", b"\r\n") == b"NOT_FOUND\r\n"
        assert conn.send_recv(b"add n 0 0 1\r\n5\r\n", b"\r\n") == b"STORED\r\n"
        assert conn.send_recv(b"incr n 2\r\n", b"\r\n") == b"7\r\n"
    server.restart()  # SIGTERM: the writer commits what is queued and stops
    assert server.send_recv(b"get a n\r\n") == b"VALUE a 0 1\r\n1\r\nVALUE n 0 1\r\n7\r\nEND\r\n"


def test_a_writer_killed_before_it_commits_is_replaced_and_the_group_committed(faulty):
    server = faulty()
    first = _writer_pid(server)
    server.set_fault("kill")
    with server.connect() as conn:
        # The add waits for its commit: its answer comes from the new writer.
        assert conn.send_recv(b"add k 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
        assert conn.send_recv(b"add k 0 0 1\r\ny\r\n", b"\r\n") == b"NOT_STORED\r\n"
    stats = server.stats()
    assert stats["stig_writer_restarts"] == "1" and stats["stig_failed_commits"] == "0"
    assert int(stats["stig_writer_pid"]) != first and not _alive(first)
    assert server.send_recv(b"get k\r\n") == b"VALUE k 0 1\r\nx\r\nEND\r\n"
    assert "writer process" in server.stderr and "SIGKILL" in server.stderr


def test_a_writer_killed_after_it_commits_fails_the_run_loudly(faulty):
    """The group reached the disk; its outcomes died with the writer: the
    client is told, never silently, and the run is in fact stored."""
    server = faulty()
    server.set_fault("kill-after")
    with server.connect() as conn:
        assert conn.send_recv(b"add k 0 0 1\r\nx\r\n", b"\r\n") == DIED_AFTER
        assert conn.send_recv(b"mn\r\n", b"\r\n") == b"MN\r\n"  # reported once
        assert conn.send_recv(b"get k\r\n") == b"VALUE k 0 1\r\nx\r\nEND\r\n"
        assert conn.send_recv(b"add j 0 0 1\r\ny\r\n", b"\r\n") == b"STORED\r\n"
    assert server.stats()["stig_writer_restarts"] == "1"


def test_sigterm_stops_the_writer_with_the_server(stig_factory):
    server = stig_factory("--workers", "1")
    writer = _writer_pid(server)
    assert server.send_recv(b"set a 0 0 1 noreply\r\n1\r\nmn\r\n", b"MN\r\n") == b"MN\r\n"
    assert server.terminate() == 0
    assert not _alive(writer)  # the server waits for it before it exits


def test_sigkill_of_the_server_ends_the_writer(stig_factory):
    server = stig_factory("--workers", "1")
    writer = _writer_pid(server)
    server.kill()
    wait_for(lambda: not _alive(writer), bool, 10.0, what="the writer's end")
    server.start()  # the data directory is free again
    assert server.send_recv(b"version\r\n", b"\r\n").startswith(b"VERSION ")


def test_readers_adopt_the_map_the_writer_grew(stig_factory):
    """A small map, grown by the writer many times: the server's readers see
    every value (MDB_MAP_RESIZED adopted), from other connections at once."""
    server = stig_factory("--workers", "1", "--map-size", "1m", "--max-item-size", "1m")
    value = os.urandom(200_000).hex().encode()[:300_000]
    with server.connect() as writer, server.connect() as reader:
        for index in range(40):
            key = b"big%d" % index
            reply = writer.send_recv(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value), b"\r\n")
            assert reply == b"STORED\r\n"
            got = reader.send_recv(b"get %s\r\n" % key, b"END\r\n")
            assert got == b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(value), value)
    assert int(server.stats()["limit_maxbytes"]) >= 8 << 20
    assert server.stats()["stig_failed_commits"] == "0"


def test_a_writer_that_dies_while_idle_is_replaced(stig_factory):
    server = stig_factory("--workers", "1")
    os.kill(_writer_pid(server), signal.SIGKILL)
    with server.connect() as conn:
        # The death is seen with the next job: the group is not applied, so
        # it goes to the new writer.
        assert conn.send_recv(b"add k 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
    assert server.stats()["stig_writer_restarts"] == "1"


def test_a_writer_ended_by_a_signal_python_has_no_name_for_is_replaced(stig_factory):
    """A real-time signal (SIGRTMIN+6; its default action ends the process)
    has no member in ``signal.Signals``: the writer is replaced as for any
    death, the server never dies of a ValueError wording its log line."""
    server = stig_factory("--workers", "1")
    os.kill(_writer_pid(server), signal.SIGRTMIN + 6)
    with server.connect() as conn:
        assert conn.send_recv(b"add k 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
    assert server.stats()["stig_writer_restarts"] == "1"
