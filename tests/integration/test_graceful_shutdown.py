"""SIGTERM is graceful: stop accepting, answer what was received, commit, exit 0.

README ("`stig serve` options", ``--shutdown-grace-ms``) and
stig/server/listeners.py: the first SIGINT/SIGTERM closes the listeners and
gives every connection ``--shutdown-grace-ms`` to answer the commands it has
received; an idle connection closes at once; when the grace ends (or at a
second signal) the rest are closed — a torn command discarded — and
everything acknowledged is committed before the process exits 0.
"""

from __future__ import annotations

import signal
import socket
import subprocess

from stig_testkit.waiting import wait_for


def _refuses_connections(server) -> bool:  # type: ignore[no-untyped-def]
    try:
        socket.create_connection((server.host, server.port), timeout=1).close()
    except OSError:
        return True
    return False


def _signal(server, signum: int = signal.SIGTERM) -> None:  # type: ignore[no-untyped-def]
    server.proc.send_signal(signum)
    wait_for(lambda: _refuses_connections(server), bool, what="listeners closed")


def _exit_code(server, timeout: float = 15.0) -> int:  # type: ignore[no-untyped-def]
    try:
        return server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        server.kill()
        raise AssertionError(f"stig still running {timeout}s after the signal") from None


def test_a_command_half_received_at_sigterm_is_finished_and_answered(stig_factory) -> None:
    server = stig_factory("--shutdown-grace-ms", "30000")
    conn = server.connect()
    conn.send(b"set greeting 0 0 5\r\nhel")  # in flight when the signal comes
    other = server.connect()
    assert other.send_recv(b"version\r\n", b"\r\n").startswith(b"VERSION")
    _signal(server)
    assert other.is_closed_by_peer(), "an idle connection closes at once"
    assert server.running, "the half-received command holds the shutdown"
    assert conn.send_recv(b"lo\r\n", b"STORED\r\n") == b"STORED\r\n"
    assert conn.is_closed_by_peer(), "then its connection closes at the boundary"
    assert _exit_code(server) == 0
    server.start()
    assert server.send_recv(b"get greeting\r\n") == b"VALUE greeting 0 5\r\nhello\r\nEND\r\n"


def test_an_open_noreply_run_is_committed_whole_at_sigterm(stig_factory) -> None:
    server = stig_factory("--shutdown-grace-ms", "30000", "--batch-idle-ms", "60000")
    conn = server.connect()
    # A run left open (no barrier), then a complete command boundary.
    conn.send(b"".join(b"set k%d 0 0 1 noreply\r\n%d\r\n" % (i, i % 10) for i in range(50)))
    wait_for(server.stats, lambda s: int(s["cmd_set"]) >= 50, what="the run was read")
    _signal(server)
    assert conn.is_closed_by_peer()
    assert _exit_code(server) == 0
    server.start()
    keys = b" ".join(b"k%d" % i for i in range(50))
    reply = server.send_recv(b"get " + keys + b"\r\n")
    assert reply.count(b"VALUE ") == 50


def test_when_the_grace_ends_a_torn_command_is_discarded(stig_factory) -> None:
    server = stig_factory("--shutdown-grace-ms", "300")
    conn = server.connect()
    conn.send(b"set torn 0 0 5\r\nhel")  # never finished
    assert server.send_recv(b"version\r\n", b"\r\n").startswith(b"VERSION")
    _signal(server)
    assert _exit_code(server) == 0
    assert conn.is_closed_by_peer()
    server.start()
    assert server.send_recv(b"get torn\r\n") == b"END\r\n"


def test_a_second_signal_ends_the_grace_at_once(stig_factory) -> None:
    server = stig_factory("--shutdown-grace-ms", "600000")
    conn = server.connect()
    conn.send(b"set torn 0 0 5\r\nhel")
    assert server.send_recv(b"version\r\n", b"\r\n").startswith(b"VERSION")
    _signal(server)
    assert server.running
    server.proc.send_signal(signal.SIGTERM)
    assert _exit_code(server) == 0
    assert conn.is_closed_by_peer()


def test_stats_settings_show_the_grace(stig_factory) -> None:
    server = stig_factory("--shutdown-grace-ms", "1234")
    assert server.stats("settings")["stig_shutdown_grace_ms"] == "1234.0"
