"""Hostile review of "open runs take turns" (fbce0df): a connection whose
open run waits for room under ``--max-pending-bytes`` (docs/pov.md, "The
barrier", end) must still behave as every other connection does — its
replies so far are sent, a lost acknowledged write is reported at once —
and the waiting must end.

Each test builds the same scene on a 1 MiB budget: an *opener* whose run
holds 600 kB, a *holder* whose 500 kB run passes the budget (and holds it:
``--batch-idle-ms`` is long, so it ends only when the test says so), and a
*waiter* whose run grows while the budget is full."""

from __future__ import annotations

import pytest

from stig_testkit.waiting import wait_for, wait_for_stats

VALUE = b"w" * 100_000
BUDGET = ("--max-pending-bytes", "1m")


def _noreply_sets(prefix: str, start: int, stop: int) -> bytes:
    return b"".join(
        b"set %b%d 0 0 %d noreply\r\n%b\r\n" % (prefix.encode(), j, len(VALUE), VALUE)
        for j in range(start, stop)
    )


def _tiny_noreply_sets(prefix: str, count: int) -> bytes:
    return b"".join(b"set %b%d 0 0 1 noreply\r\ny\r\n" % (prefix.encode(), j) for j in range(count))


def _open_bytes(at_least: int):
    return lambda s: int(s["stig_open_run_bytes"]) >= at_least


def _fill_the_budget(server):
    """The opener's 600 kB run, then the holder's 500 kB one that passes the
    budget: the holder holds.  Returns both connections."""
    opener = server.connect(timeout=60)
    opener.send(_noreply_sets("o", 0, 6))
    wait_for_stats(server, _open_bytes(600_000), what="the opener's run")
    holder = server.connect(timeout=60)
    holder.send(_noreply_sets("h", 0, 5))
    wait_for_stats(server, _open_bytes((1 << 20) + 1), what="the holder past the budget")
    return opener, holder


def _waiting(count: int):
    return lambda s: s["stig_open_run_waiting"] == str(count)


@pytest.mark.parametrize("acks", [(), ("--durable-acks",)], ids=["pov-acks", "durable-acks"])
def test_a_waiter_sends_its_replies_so_far_before_it_waits(stig_factory, acks):
    """docs/pov.md: a connection whose run waits "reads nothing more (its
    replies so far are sent)".  The loud set's STORED in front of the quiet
    sets that wait must reach the client while the holder still holds —
    also when the waiting happens inside a burst of plain sets (the text
    fast path, which waited with the reply still buffered)."""
    server = stig_factory(*BUDGET, "--batch-idle-ms", "60000", *acks)
    _opener, holder = _fill_the_budget(server)
    waiter = server.connect(timeout=60)
    # One small send (one receive): the budget is already full, so the first
    # quiet set waits, right behind the loud one.
    waiter.send(b"set a 0 0 1\r\nx\r\n" + _tiny_noreply_sets("w", 3))
    wait_for_stats(server, _waiting(1), what="the waiter waiting")
    assert waiter.recv_until(b"STORED\r\n", timeout=10) == b"STORED\r\n"
    assert server.stats()["stig_open_run_waiting"] == "1"  # the holder still holds
    assert holder.send_recv(b"mn\r\n", b"MN\r\n") == b"MN\r\n"
    assert waiter.send_recv(b"mn\r\n", b"MN\r\n", timeout=30) == b"MN\r\n"
    server.settle()
    assert len(server.client().get_many(["a", "w0", "w1", "w2", "h0"])) == 5


def test_a_binary_waiter_sends_its_replies_so_far_before_it_waits(stig_factory):
    """The same on the binary SetQ fast path: the Noop's response before the
    SetQ burst that waits reaches the client while the holder holds."""
    from stig_protocol.binary_codes import Opcode, Status

    server = stig_factory(*BUDGET, "--batch-idle-ms", "60000")
    _opener, holder = _fill_the_budget(server)
    from stig_protocol.binary import encode_request

    waiter = server.connect_binary(timeout=60)
    burst = encode_request(Opcode.Noop, opaque=7) + b"".join(
        encode_request(Opcode.SetQ, b"w%d" % j, b"y", b"\0" * 8, opaque=j) for j in range(3)
    )
    waiter.send(burst)
    wait_for_stats(server, _waiting(1), what="the waiter waiting")
    response = waiter.response(timeout=10)
    assert (response.opcode, response.status, response.opaque) == (Opcode.Noop, Status.NO_ERROR, 7)
    assert server.stats()["stig_open_run_waiting"] == "1"
    assert holder.send_recv(b"mn\r\n", b"MN\r\n") == b"MN\r\n"
    waiter.request(Opcode.Noop, opaque=99)
    assert waiter.response(timeout=30).opaque == 99
    server.settle()
    assert len(server.client().get_many(["w0", "w1", "w2"])) == 3


REFUSED_AFTER_WAIT = (
    b"SERVER_ERROR transaction waited --max-run-wait-ms for room under "
    b"--max-pending-bytes; discarded\r\n"
)


def test_a_holder_that_never_ends_does_not_hold_the_waiters_forever(stig_factory):
    """The holder's run need not end: a client that does not read its replies
    blocks its connection in a send (no --batch-idle-ms there), with its run
    open and the turn held.  Here a binary holder keeps sending DeleteQ of a
    missing key (each answers KEY_ENOENT and leaves the run open) and reads
    nothing.  A run that then waits for room must not wait forever, silent:
    after --max-run-wait-ms it is refused as a run past the budget was
    before turns (discarded, told, closed); everyone else goes on."""
    import socket

    from stig_protocol.binary import encode_request
    from stig_protocol.binary_codes import Opcode

    server = stig_factory(*BUDGET, "--batch-idle-ms", "60000", "--max-run-wait-ms", "1000")
    opener = server.connect(timeout=60)
    opener.send(_noreply_sets("o", 0, 6))
    wait_for_stats(server, _open_bytes(600_000), what="the opener's run")
    holder = server.connect_binary(timeout=60)
    holder.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    holder.send(
        b"".join(encode_request(Opcode.SetQ, b"h%d" % j, VALUE, b"\0" * 8) for j in range(5))
    )
    wait_for_stats(server, _open_bytes((1 << 20) + 1), what="the holder past the budget")
    # The holder's replies pile up unread until its connection blocks sending.
    holder.sock.setblocking(False)
    junk = encode_request(Opcode.DeleteQ, b"missing") * 10_000
    sent = 0
    while sent < 8 << 20:
        try:
            sent += holder.sock.send(junk)
        except BlockingIOError:
            break  # the server no longer reads it: blocked in its send
    waiter = server.connect(timeout=60)
    waiter.send(_tiny_noreply_sets("w", 3))  # the budget is full: waits for the holder
    wait_for_stats(server, lambda s: s["stig_open_run_waits"] == "1", what="the waiter waiting")
    assert waiter.recv_until(None, timeout=30) == REFUSED_AFTER_WAIT
    stats = wait_for_stats(server, _waiting(0), what="no waiter left")
    assert stats["stig_open_run_wait_refusals"] == "1"
    assert int(stats["stig_open_run_wait_max_ms"]) >= 1000
    assert server.stats("settings")["stig_max_run_wait_ms"] == "1000.0"
    assert opener.send_recv(b"mn\r\n", b"MN\r\n") == b"MN\r\n"  # everyone else goes on
    assert server.send_recv(b"get w0 o0\r\n") == (  # the refused run left nothing
        b"VALUE o0 0 100000\r\n" + VALUE + b"\r\nEND\r\n"
    )
    with server.connect() as other:  # a run that fits goes on
        assert other.send_recv(_tiny_noreply_sets("x", 3) + b"mn\r\n", b"MN\r\n") == b"MN\r\n"


def _one_write_waits(server, waiter, burst: bytes) -> None:
    """``burst`` (small quiet sets: one receive) finds the budget full: the
    waiter keeps its first set only, then waits (docs/pov.md: open runs hold
    at most twice the budget "plus the one write each waiting connection had
    received")."""
    before = int(server.stats()["stig_open_run_bytes"])
    waiter.send(burst)
    stats = wait_for_stats(server, _waiting(1), what="the waiter waiting")
    grown = int(stats["stig_open_run_bytes"]) - before
    assert grown == 1 + 2 + 384, grown  # one write: value, key, its memory cost


def test_a_text_burst_that_finds_the_budget_full_keeps_one_write(stig_factory):
    server = stig_factory(*BUDGET, "--batch-idle-ms", "60000")
    _opener, holder = _fill_the_budget(server)
    waiter = server.connect(timeout=60)
    _one_write_waits(server, waiter, _tiny_noreply_sets("w", 3))
    assert holder.send_recv(b"mn\r\n", b"MN\r\n") == b"MN\r\n"
    assert waiter.send_recv(b"mn\r\n", b"MN\r\n", timeout=30) == b"MN\r\n"
    server.settle()
    assert len(server.client().get_many(["w0", "w1", "w2"])) == 3


def test_a_binary_setq_burst_that_finds_the_budget_full_keeps_one_write(stig_factory):
    from stig_protocol.binary import encode_request
    from stig_protocol.binary_codes import Opcode

    server = stig_factory(*BUDGET, "--batch-idle-ms", "60000")
    _opener, holder = _fill_the_budget(server)
    waiter = server.connect_binary(timeout=60)
    burst = b"".join(
        encode_request(Opcode.SetQ, b"w%d" % j, b"y", b"\0" * 8, opaque=j) for j in range(3)
    )
    _one_write_waits(server, waiter, burst)
    assert holder.send_recv(b"mn\r\n", b"MN\r\n") == b"MN\r\n"
    waiter.request(Opcode.Noop, opaque=99)
    assert waiter.response(timeout=30).opaque == 99
    server.settle()
    assert len(server.client().get_many(["w0", "w1", "w2"])) == 3


def test_sigterm_while_a_run_waits_for_room_stops_cleanly_and_keeps_what_was_answered(
    stig_factory,
):
    """A clean stop cancels the waiting connection: the server exits 0 at
    once (not after the holder's run), the waiter's answered write is kept."""
    server = stig_factory(*BUDGET, "--batch-idle-ms", "60000")
    _opener, _holder = _fill_the_budget(server)
    waiter = server.connect(timeout=60)
    waiter.send(b"set a 0 0 1\r\nx\r\n" + _tiny_noreply_sets("w", 3))
    wait_for_stats(server, _waiting(1), what="the waiter waiting")
    assert waiter.recv_until(b"STORED\r\n", timeout=10) == b"STORED\r\n"
    server.terminate()
    server.start()
    assert server.send_recv(b"get a\r\n") == b"VALUE a 0 1\r\nx\r\nEND\r\n"


def test_a_waiter_whose_client_leaves_cleanly_commits_its_run_once_it_may(stig_factory):
    """A clean disconnect at a command boundary closes a run (docs/pov.md):
    also one whose connection was waiting for room — once it may, its run
    is read to the end and lands whole; no wait is left counted."""
    server = stig_factory(*BUDGET, "--batch-idle-ms", "60000")
    _opener, holder = _fill_the_budget(server)
    waiter = server.connect(timeout=60)
    waiter.send(_noreply_sets("w", 0, 3))
    wait_for_stats(server, _waiting(1), what="the waiter waiting")
    waiter.close()
    assert holder.send_recv(b"mn\r\n", b"MN\r\n") == b"MN\r\n"
    client = server.client()
    keys = ["w0", "w1", "w2", "h4"]
    wait_for(lambda: len(client.get_many(keys)), lambda n: n == 4, what="the runs landing")
    assert server.stats()["stig_open_run_waiting"] == "0"


def test_a_hold_ends_when_the_open_runs_are_back_within_the_budget(stig_factory):
    """The holder holds while the open runs are past the budget.  Once they
    are back within it (here the opener's run ends), a run that passes the
    budget later takes the turn itself, and does not wait for the old
    holder's run — which may stay open for long (a client streaming quiet
    writes without a pause of --batch-idle-ms)."""
    server = stig_factory(*BUDGET, "--batch-idle-ms", "60000")
    opener, holder = _fill_the_budget(server)
    assert opener.send_recv(b"mn\r\n", b"MN\r\n") == b"MN\r\n"  # back within: 500 kB open
    later = server.connect(timeout=60)
    assert later.send_recv(_noreply_sets("l", 0, 6) + b"mn\r\n", b"MN\r\n", timeout=10) == b"MN\r\n"
    assert holder.send_recv(b"mn\r\n", b"MN\r\n") == b"MN\r\n"
    server.settle()
    assert len(server.client().get_many(["l0", "l5", "h4"])) == 3
