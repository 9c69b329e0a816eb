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

from support.waiting import wait_for_stats

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


def test_a_waiter_sends_its_replies_so_far_before_it_waits(stig_factory):
    """docs/pov.md: a connection whose run waits "reads nothing more (its
    replies so far are sent)".  The loud set's STORED in front of the quiet
    sets that wait must reach the client while the holder still holds —
    also when the waiting happens inside a burst of plain sets (the text
    fast path, which waited with the reply still buffered)."""
    server = stig_factory(*BUDGET, "--batch-idle-ms", "60000")
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
    from protocol.binary_codes import Opcode, Status

    server = stig_factory(*BUDGET, "--batch-idle-ms", "60000")
    _opener, holder = _fill_the_budget(server)
    from protocol.binary import encode_request

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
