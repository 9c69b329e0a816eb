"""Edges of the set-burst fast paths (review of issue #9): a burst cut by
``--max-pending-bytes`` in its middle, and the commands that end a stretch
(an exptime, a quiet write owed its verdict) must give exactly what the
commands handled one by one give."""

from __future__ import annotations

BIG = b"v" * 3000


def test_a_loud_burst_cut_by_the_write_budget_keeps_the_sets_answered(stig_factory) -> None:
    """Each loud set closes its own run: the one too large for the budget is
    refused and the connection closes; every set answered before it stays."""
    server = stig_factory("--max-pending-bytes", "50000")
    burst = (
        b"set s1 0 0 1\r\n1\r\nset s2 0 0 60000\r\n" + b"z" * 60000 + b"\r\nset s3 0 0 1\r\n3\r\n"
    )
    with server.connect() as conn:
        reply = conn.send_recv(burst, None)
    assert reply == (
        b"STORED\r\nSERVER_ERROR transaction larger than --max-pending-bytes; discarded\r\n"
    )
    assert server.send_recv(b"get s1 s2 s3\r\n") == b"VALUE s1 0 1\r\n1\r\nEND\r\n"


def test_a_quiet_burst_cut_by_the_write_budget_applies_none_of_its_run(stig_factory) -> None:
    """Quiet sets share one open run: the set that outgrows the budget
    discards the whole run, those recorded in one loop before it too."""
    server = stig_factory("--max-pending-bytes", "50000")
    burst = b"".join(b"set q%d 0 0 3000 noreply\r\n%b\r\n" % (i, BIG) for i in range(40))
    with server.connect() as conn:
        reply = conn.send_recv(burst, None)
    assert reply == b"SERVER_ERROR transaction larger than --max-pending-bytes; discarded\r\n"
    assert server.send_recv(b"get q0 q1 q12 q39\r\n") == b"END\r\n"


def test_an_exptime_and_an_owed_verdict_in_a_burst_answer_in_order(stig_server) -> None:
    """A quiet append owed its NS (its key awaits a cas verdict: an intent),
    sets with an exptime (refused) and one
    past (stored, gone) in the middle of plain sets: replies in order."""
    burst = (
        b"cas nokey 0 0 1 999 noreply\r\n1\r\nms nokey 1 MA q\r\nx\r\n"
        b"set a1 0 0 1 noreply\r\n1\r\nms a2 1 q\r\n2\r\n"
        b"set a3 0 0 1\r\n3\r\n"
        b"set a4 0 100 1\r\n4\r\n"
        b"set a5 0 -1 1\r\n5\r\n"
        b"ms a6 1 T100\r\n6\r\n"
        b"ms a7 1\r\n7\r\n"
        b"get a1 a2 a3 a4 a5 a6 a7\r\n"
    )
    refused = (
        b"CLIENT_ERROR exptime must be 0: Stig is a database and items never expire"
        b" (see --ttl-policy)\r\n"
    )
    assert stig_server.send_recv(burst) == (
        b"NS\r\nSTORED\r\n" + refused + b"STORED\r\n" + refused + b"HD\r\n"
        b"VALUE a1 0 1\r\n1\r\nVALUE a2 0 1\r\n2\r\nVALUE a3 0 1\r\n3\r\n"
        b"VALUE a7 0 1\r\n7\r\nEND\r\n"
    )
