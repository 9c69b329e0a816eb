"""A read whose client does not read gives its snapshot up (docs/pov.md, "Bounds").

A multi-key read sends its reply as it is read, from one LMDB snapshot held
meanwhile; a client that asks for megabytes and reads none of them kept that
snapshot for as long as it stayed connected, and LMDB could reuse none of
the pages later commits freed: under a soak's writes the data file grew to
~1 GiB for 12 MB of data (docs/soak.md, finding 5).  Now a read whose reply
has made no progress for ``--max-read-stall-ms`` is ended: its snapshot is
released at once (``stig_held_snapshots`` drops, ``stig_stalled_reads``
counts it) and, when the client reads at last, its reply ends with the
reason where the rest would have been — in each protocol's form, every
request answered once and in order, and the connection goes on.

Each test waits for a stat or a reply, with generous deadlines.
"""

from __future__ import annotations

import socket

import pytest

from stig_protocol.binary import Opcode, Status, decode_response, encode_request
from stig_testkit.process import StigProcess
from stig_testkit.waiting import wait_for_stats

STALL_MS = "300"
WHY = b"the reply was not read for 0.3 s"
SIZE = 100_000
KEYS = [b"k%02d" % i for i in range(20)]
#: 10 MB of reply: far more than the socket buffers and --max-reply-bytes hold.
WANTED = KEYS * 5


def _server(stig_factory) -> StigProcess:
    server = stig_factory("--max-read-stall-ms", STALL_MS, "--max-reply-bytes", "128k")
    value = b"v" * SIZE
    with server.connect(timeout=60) as conn:
        for key in KEYS:
            conn.send(b"set %b 0 0 %d noreply\r\n%b\r\n" % (key, SIZE, value))
        assert conn.send_recv(b"mn\r\n", b"MN\r\n") == b"MN\r\n"
    return server


def _binary_request() -> bytes:
    quiet = b"".join(encode_request(Opcode.GetKQ, k, opaque=i) for i, k in enumerate(WANTED))
    return quiet + encode_request(Opcode.Noop, opaque=0xABCD)


#: Each read, and how its reply ends once its snapshot was given up.
REQUESTS = {
    "text multi-get": (b"get " + b" ".join(WANTED) + b"\r\n", b"; read again\r\n"),
    "meta mg run": (b"".join(b"mg %b v k q\r\n" % k for k in WANTED) + b"mn\r\n", b"MN\r\n"),
    "binary GetKQ run": (_binary_request(), bytes(4) + bytes.fromhex("0000abcd") + bytes(8)),
    "key listing": (b"lru_crawler metadump all\r\n", b"; list again\r\n"),
}


def _stall(server: StigProcess, request: bytes, end: bytes) -> bytes:
    """Send ``request``, read nothing until the server gave its snapshot up,
    then the whole reply (up to ``end``); check that the connection goes on."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((server.host, server.port))
    sock.settimeout(60)
    try:
        sock.sendall(request)
        reply = sock.recv(4096)
        assert reply  # the read has begun
        wait_for_stats(
            server,
            lambda s: int(s["stig_held_snapshots"]) == 0,
            30,
            "the stalled read's snapshot released",
        )
        assert int(server.stats()["stig_stalled_reads"]) == 1
        while not reply.endswith(end):
            chunk = sock.recv(1 << 20)
            assert chunk, reply[-200:]
            reply += chunk
        # The connection goes on: a new read, from a new snapshot.
        if request.startswith(b"\x80"):
            sock.sendall(encode_request(Opcode.GetK, KEYS[0], opaque=7))
            size = 24 + 4 + len(KEYS[0]) + SIZE
        else:
            sock.sendall(b"mg %b s\r\n" % KEYS[0])
            size = len(b"HD s%d\r\n" % SIZE)
        after = b""
        while len(after) < size:
            after += sock.recv(1 << 20)
        assert after[:2] == b"\x81\x0c" or after == b"HD s%d\r\n" % SIZE, after[:60]
    finally:
        sock.close()
    return reply


@pytest.mark.parametrize("name", list(REQUESTS))
def test_a_read_whose_client_does_not_read_releases_its_snapshot(stig_factory, name: str):
    server = _server(stig_factory)
    request, end = REQUESTS[name]
    if name == "key listing":  # enough keys for a listing of megabytes
        with server.connect(timeout=60) as conn:
            long = b"l" * 200
            conn.send(
                b"".join(b"set %b%05d 0 0 1 noreply\r\nx\r\n" % (long, i) for i in range(30_000))
            )
            assert conn.send_recv(b"mn\r\n", b"MN\r\n", timeout=60) == b"MN\r\n"
    reply = _stall(server, request, end)
    error = b"read interrupted: " + WHY + b"; read again"
    if name == "text multi-get":
        assert reply.endswith(b"\r\nSERVER_ERROR " + error + b"\r\n")
        assert reply.count(b"VALUE ") < len(WANTED)
        assert b"END\r\n" not in reply
    elif name == "meta mg run":
        lines = [line for line in reply.split(b"\r\n") if not line.startswith(b"v")]
        answered = sum(line.startswith(b"VA ") for line in lines)
        assert 0 < answered < len(WANTED)
        errors = [line for line in lines if line.startswith(b"SERVER_ERROR")]
        assert errors == [b"SERVER_ERROR " + error] * (len(WANTED) - answered)
        assert reply.endswith(b"MN\r\n")
    elif name == "binary GetKQ run":
        responses, offset = [], 0
        while (decoded := decode_response(reply, offset)) is not None:
            response, offset = decoded
            responses.append(response)
        assert offset == len(reply)
        assert responses[-1].opcode == Opcode.Noop
        statuses = [r.status for r in responses[:-1]]
        answered = statuses.index(Status.EINTERNAL)
        assert [r.opaque for r in responses[:-1]] == list(range(len(WANTED)))
        assert statuses[answered:] == [Status.EINTERNAL] * (len(WANTED) - answered)
        assert responses[answered].value == error
    else:
        assert reply.endswith(b"\nSERVER_ERROR listing interrupted: " + WHY + b"; list again\r\n")
        assert b"\r\nEND\r\n" not in reply
