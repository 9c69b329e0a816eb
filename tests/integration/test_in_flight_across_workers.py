"""The workers' runs commit in the order they were published
(stig/engine/shared_inflight.py, ``SharedInFlight.pending``; the writer's
plan, stig/engine/writer.py), over the real shared table.

The history checker found it with ``--workers 2`` (G-single-realtime,
docs/workers.md, "Publish order"): worker 0 acknowledges a write to b (its
slot published, its group not committed yet); a client that saw that
acknowledgement writes c through worker 1, whose group the writer committed
first, as nothing tied it to worker 0's: the two runs share no key.  A read
of b and c between the two commits then held the later write without the
earlier one, whatever it waited for."""

from __future__ import annotations

import os
import socket

from stig.engine import shared_inflight
from stig.engine.shared_inflight import SharedInFlight
from stig.engine.writer import _Group, _Link, _plan


def _submit(table: SharedInFlight, key: bytes, number: int) -> tuple[tuple[int, int], ...]:
    """As the promoter submits one run: its order first, then its slot."""
    after = table.pending()
    table.publish([key], number, False)
    return after


def test_a_run_commits_after_every_run_published_before_it() -> None:
    fd = shared_inflight.create(2)
    socks = socket.socketpair()
    try:
        writer = SharedInFlight(fd, 2, -1)
        first = SharedInFlight(fd, 2, 0)
        second = SharedInFlight(fd, 2, 1)
        b_after = _submit(first, b"b", 1)  # worker 0 acknowledges a write to b
        c_after = _submit(second, b"c", 1)  # a client that saw it writes c
        assert b_after == ()
        assert c_after == ((0, 1),)  # no key in common, after it all the same
        links = [_Link(socks[0], 0), _Link(socks[1], 1)]
        # Worker 1's group reaches the writer first: it waits for worker 0's.
        late = _Group(links[1], ("g", [[]], [1], [c_after]))
        assert _plan([late], writer) == []
        early = _Group(links[0], ("g", [[]], [1], [b_after]))
        assert _plan([late, early], writer) == [(early, 0), (late, 0)]
        # Once worker 0's run is committed, nothing holds worker 1's back.
        writer.set_committed(0, 1)
        assert _plan([late], writer) == [(late, 0)]
        assert second.pending() == ()
    finally:
        for sock in socks:
            sock.close()
        os.close(fd)
