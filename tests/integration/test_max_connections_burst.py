"""``--max-connections`` under a burst: connections that wait in the backlog
and are accepted back to back are counted as each is accepted, so one
process never admits more than the limit (issue #20 review: the count was
bumped in the connection's own task, after the accept loop had already
admitted the next one)."""

from __future__ import annotations

import os
import signal
import socket

from stig_testkit.waiting import wait_for
from stig_testkit.workers import stats_of

LIMIT = 10
BURST = 40
ROUNDS = 6


def _served_after_a_burst(server) -> int:
    """Queue ``BURST`` connections while the server is stopped, let it take
    them all at once; how many are served (the others are refused)."""
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(BURST)]
        for sock in socks:
            sock.sendall(b"version\r\n")
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    served = 0
    for sock in socks:
        sock.settimeout(10)
        reply = sock.recv(100)
        served += reply.startswith(b"VERSION ")
        assert reply.startswith((b"VERSION ", b"ERROR Too many open connections"))
    for sock in socks:
        sock.close()
    return served


def test_a_burst_of_accepts_never_admits_past_the_limit(stig_factory):
    server = stig_factory("--max-connections", str(LIMIT))
    watcher = server.connect()  # one of the LIMIT, open throughout
    for _ in range(ROUNDS):
        assert _served_after_a_burst(server) == LIMIT - 1
        wait_for(  # the burst's connections are gone, the watcher's remains
            lambda: stats_of(watcher)["curr_connections"],
            lambda n: n == "1",
            10,
            "the burst closed",
        )
