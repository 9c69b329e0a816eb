"""A pause in the middle of a command does not close the open run (found by the soak).

A client sends a noreply run and the first bytes of one more write, pauses
longer than ``--batch-idle-ms``, and drops the connection: the run ended
with a connection dropped in the middle of a command, so none of it may be
applied (docs/pov.md, "What forms a run").  The idle timer used to close and
commit the run's complete writes during the pause, leaving the aborted
transaction torn and visible (the soak's readers saw 7 of 8 keys of such
runs).

The pause is proved, not slept: a second connection sends a complete
noreply write after the first's bytes were read, and the test waits until
the idle timer has committed that one; the first connection's timer, armed
earlier, has then run out too.
"""

from __future__ import annotations

import socket
import struct

import pytest

from stig_testkit.waiting import wait_for, wait_for_stats, wait_until_read


def bin_set(key: bytes, value: bytes) -> bytes:
    """A binary SetQ request (flags 0, exptime 0)."""
    header = struct.pack(
        ">BBHBBHIIQ", 0x80, 0x11, len(key), 8, 0, 0, 8 + len(key) + len(value), 0, 0
    )
    return header + bytes(8) + key + value


RUNS = {
    "text": (
        b"".join(b"set cut%d 0 0 5 noreply\r\nABORT\r\n" % i for i in range(3)),
        b"set cut3 0 0 5 noreply\r\nAB",
    ),
    "meta": (
        b"".join(b"ms cut%d 5 q\r\nABORT\r\n" % i for i in range(3)),
        b"ms cut3 5 q\r\nAB",
    ),
    "binary": (
        b"".join(bin_set(b"cut%d" % i, b"ABORT") for i in range(3)),
        bin_set(b"cut3", b"ABORT")[:30],
    ),
}


@pytest.mark.parametrize("protocol", ["text", "meta", "binary"])
@pytest.mark.parametrize("leave", ["fin", "rst"])
def test_a_run_cut_mid_command_after_a_pause_is_discarded(stig_server, protocol, leave):
    run, partial = RUNS[protocol]
    before = int(stig_server.stats()["curr_connections"])
    cut = stig_server.connect()
    cut.send(run + partial)
    wait_until_read(stig_server, 3)

    other = stig_server.connect()
    other.send(b"set witness 0 0 1 noreply\r\nw\r\n")  # closed by the idle timer only
    reader = stig_server.connect()
    wait_for(
        lambda: reader.send_recv(b"get witness\r\n"),
        lambda reply: reply.startswith(b"VALUE witness"),
        what="the idle timer committing the later run",
    )

    if leave == "rst":
        cut.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    cut.sock.close()
    wait_for_stats(
        stig_server,
        lambda s: int(s["curr_connections"]) <= before + 2,  # `other` and `reader` remain
        what="the server ending the cut connection",
    )
    assert reader.send_recv(b"get cut0 cut1 cut2 cut3\r\n") == b"END\r\n"
