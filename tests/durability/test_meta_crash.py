"""Meta quiet runs are transactions, and ``mn`` is their commit barrier, under SIGKILL.

* a run of quiet ``ms`` closed by ``mn``: once ``MN`` has arrived, all of it
  survives a SIGKILL;
* the same run with no ``mn`` sent yet (and a batch idle time far longer
  than the test) is still open when the server dies: none of it survives.
"""

from __future__ import annotations

from stig_testkit.waiting import wait_until_read

RUN = 200


def _quiet_run(prefix: str) -> bytes:
    return b"".join(b"ms %b-%d 5 q F3\r\nv%04d\r\n" % (prefix.encode(), i, i) for i in range(RUN))


def _read_back(server, prefix: str) -> bytes:
    conn = server.connect()
    # quiet: a miss says nothing, a hit still answers
    request = b"".join(b"mg %b-%d v k f q\r\n" % (prefix.encode(), i) for i in range(RUN))
    return conn.send_recv(request + b"mn\r\n", b"MN\r\n")


def test_quiet_run_closed_by_mn_survives_sigkill_once_mn_is_answered(stig_factory):
    server = stig_factory()
    conn = server.connect()
    assert conn.send_recv(_quiet_run("run") + b"mn\r\n", b"MN\r\n") == b"MN\r\n"
    server.kill()
    server.restart()
    reply = _read_back(server, "run")
    expected = b"".join(b"VA 5 krun-%d f3\r\nv%04d\r\n" % (i, i) for i in range(RUN))
    assert reply == expected + b"MN\r\n"


def test_quiet_run_without_mn_is_gone_after_sigkill(stig_factory):
    server = stig_factory("--batch-idle-ms", "60000")
    conn = server.connect()
    # Something committed before, to show the store itself survived.
    assert conn.send_recv(b"ms before 2\r\nok\r\nmn\r\n", b"MN\r\n") == b"HD\r\nMN\r\n"
    conn.send(_quiet_run("open"))
    # The server has executed the whole run (it is open, not waiting in a buffer)...
    wait_until_read(server, RUN + 1)
    server.kill()
    # ...and, quiet, said nothing (all it sent before it died): the run was open.
    assert conn.recv_until(None) == b""
    server.restart()
    assert _read_back(server, "open") == b"MN\r\n"  # not one of them
    check = server.connect()
    assert check.send_recv(b"mg before v\r\nmn\r\n", b"MN\r\n") == b"VA 2\r\nok\r\nMN\r\n"


def test_meta_writes_acknowledged_with_durable_acks_survive_sigkill(stig_factory):
    server = stig_factory("--durable-acks")
    conn = server.connect()
    replies = conn.send_recv(
        b"ms a 1\r\n1\r\nms b 1 MA N0\r\n2\r\nma n N0 J9\r\nmd gone\r\n", b"NF\r\n"
    )
    assert replies == b"HD\r\nHD\r\nHD\r\nNF\r\n"
    server.kill()  # no mn: the replies alone promised durability
    server.restart()
    check = server.connect()
    assert check.send_recv(b"mg a v\r\nmg b v\r\nmg n v\r\nmn\r\n", b"MN\r\n") == (
        b"VA 1\r\n1\r\nVA 1\r\n2\r\nVA 1\r\n9\r\nMN\r\n"
    )
