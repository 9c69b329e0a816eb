"""A connection that ends gives its unsent replies back at once (found by the soak).

A client that asks for big values and stops reading leaves up to
``--max-reply-bytes`` plus an item of replies in the server.  When it goes,
that memory must go too.  A protocol handler is a reference cycle (its
dispatch table holds its own bound methods), so without help only a full
cyclic garbage collection frees it, and those are rare: in the soak, the
replies of never-reading clients long gone held the server's anonymous
memory above 1 GB.

Here 60 such clients stall together, then all reset their connections; once
the server has ended them, its anonymous RSS must be back within 48 MiB of
where it was before they came (they held ~2 MiB each, ~120 MiB).
"""

from __future__ import annotations

import socket
import struct

import pytest

from stig_testkit.flood import wait_until_sending_stops
from stig_testkit.waiting import wait_for_stats

CLIENTS = 60
VALUE = b"v" * 1_000_000


def _rss_anon_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon")


class _PatientStats:
    """``stats`` with a long timeout: rendering the clients' replies (~120 MB of
    copies) takes the server seconds on a busy shared machine."""

    def __init__(self, server) -> None:
        self.server = server

    def stats(self) -> dict[str, str]:
        reply = self.server.send_recv(b"stats\r\n", timeout=60)
        return {
            line.split(b" ", 2)[1].decode(): line.split(b" ", 2)[2].decode()
            for line in reply.split(b"\r\n")
            if line.startswith(b"STAT ")
        }


@pytest.mark.single_process("measures the memory (RSS) of the server's one process")
def test_the_replies_of_clients_that_left_are_freed_at_once(stig_server):
    assert stig_server.proc is not None
    pid = stig_server.proc.pid
    with stig_server.connect() as conn:
        request = b"set big 0 0 %d\r\n%b\r\n" % (len(VALUE), VALUE)
        assert conn.send_recv(request, b"\r\n") == b"STORED\r\n"
    connections = int(stig_server.stats()["curr_connections"])
    base = _rss_anon_mib(pid)

    clients = []
    for _ in range(CLIENTS):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.connect((stig_server.host, stig_server.port))
        sock.sendall(b"get big\r\n" * 20)
        clients.append(sock)
    wait_until_sending_stops(_PatientStats(stig_server))
    held = _rss_anon_mib(pid)
    assert held - base > CLIENTS, "the clients' replies were not held: nothing to free"

    for sock in clients:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    wait_for_stats(
        _PatientStats(stig_server),
        lambda s: int(s["curr_connections"]) <= connections,
        what="the server ending the clients' connections",
    )
    assert _rss_anon_mib(pid) - base < 48, (base, held, _rss_anon_mib(pid))
