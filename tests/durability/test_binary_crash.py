"""Binary quiet runs are transactions, and No-op is their durability barrier.

The server runs with a 60 s ``--batch-idle-ms``, so nothing but the
protocol closes a run during the test: a run of SetQ cut by SIGKILL before
its closing command is entirely absent after the restart; one closed by a
No-op is entirely present as soon as the No-op has answered.
"""

from __future__ import annotations

import struct

from stig_protocol.binary import Opcode
from stig_testkit.waiting import wait_until_read

RUN = 200


def setq_run(prefix: str) -> bytes:
    from stig_protocol.binary import encode_request

    extras = struct.pack(">II", 0, 0)
    return b"".join(
        encode_request(Opcode.SetQ, b"%s-%d" % (prefix.encode(), i), b"v%d" % i, extras, opaque=i)
        for i in range(RUN)
    )


def present(server, prefix: str) -> dict[str, bytes]:
    client = server.client()
    found: dict[str, bytes] = {}
    keys = [f"{prefix}-{i}" for i in range(RUN)]
    for start in range(0, RUN, 100):
        found.update(client.get_many(keys[start : start + 100]))
    return found


def test_setq_run_cut_by_sigkill_before_its_closing_command_is_absent(stig_factory):
    server = stig_factory("--batch-idle-ms", "60000")
    conn = server.connect_binary()
    conn.send(setq_run("open"))
    wait_until_read(server, RUN)
    assert present(server, "open") == {}  # open: nobody else sees any of it
    server.kill()
    server.start()
    assert present(server, "open") == {}


def test_setq_run_closed_by_noop_is_entirely_present_after_sigkill(stig_factory):
    server = stig_factory("--batch-idle-ms", "60000")
    conn = server.connect_binary()
    conn.send(
        setq_run("closed") + struct.pack(">BBHBBHIIQ", 0x80, Opcode.Noop, 0, 0, 0, 0, 0, 99, 0)
    )
    rsp = conn.response()
    assert (rsp.opcode, rsp.status, rsp.opaque) == (Opcode.Noop, 0, 99)
    server.kill()  # right after the No-op's reply: the barrier says it is all on disk
    server.start()
    assert present(server, "closed") == {f"closed-{i}": b"v%d" % i for i in range(RUN)}


def test_a_closed_run_survives_and_the_open_one_after_it_does_not(stig_factory):
    server = stig_factory("--batch-idle-ms", "60000")
    conn = server.connect_binary()
    assert conn.call(Opcode.Noop).status == 0
    conn.send(setq_run("first"))
    assert conn.call(Opcode.Noop, opaque=1).opaque == 1
    conn.send(setq_run("second"))
    wait_until_read(server, 2 * RUN)
    server.kill()
    server.start()
    assert len(present(server, "first")) == RUN
    assert present(server, "second") == {}
