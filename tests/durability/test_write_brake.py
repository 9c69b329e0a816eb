"""The lag brake pauses a connection for its own closed runs only (docs/pov.md, "Bounds").

While the promoter lags more than ``--max-commit-lag-ms``, a connection with
closed runs not yet committed reads nothing more until they are committed.
An *open* run (noreply/quiet writes not closed yet) is not handed
over: no commit can end it, so a brake that waited for it waited for the
promoter to go idle, which under a steady load of other writers never
happens.  The soak (docs/soak.md, finding 4) saw hundreds of connections
paused so, transaction writers silent for over a minute and clients that
had left still holding their slots.

Here the server's every commit takes 150 ms (stig_testkit/fault_server.py's
``slow``: a box that gives the server a sliver of a core), above the 100 ms
bound, and writers keep the promoter busy; a connection that stopped inside
a run must still get its barrier answered, and one whose client leaves
there must close.  Each test waits for an event (a reply, a stat) with a
generous deadline, while the writers run (without the fix: no reply, no
close, for as long as they run).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from stig_testkit.process import StigProcess
from stig_testkit.waiting import wait_for_stats

#: Each commit's extra time: above the default --max-commit-lag-ms (100).
SLOW_COMMIT = "slow 0.15"
#: A reply that never comes fails here; one that comes, comes after a few commits.
PATIENCE = 30.0


class FaultyStig(StigProcess):
    """``stig serve`` through stig_testkit.fault_server (its commits obey a file)."""

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "stig_testkit.fault_server", *super().command[3:]]


@pytest.fixture
def slow_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StigProcess]:
    faults = tmp_path / "faults"
    faults.write_text(SLOW_COMMIT)
    monkeypatch.setenv("STIG_FAULT_FILE", str(faults))
    (tmp_path / "logs").mkdir()
    server = FaultyStig(tmp_path / "data", tmp_path / "logs", ())
    server.start()
    yield server
    server.kill()
    server.close_clients()


#: Writers and the pause between two of their writes: each connection writes
#: every 20 × 20 ms, long after its last write's commit has ended its brake,
#: so a few write during every commit and the promoter is never idle — as
#: under a thousand clients writing at random times.
WRITERS = 20
PACE = 0.02


def _write_steadily(server: StigProcess, stop: threading.Event) -> None:
    """One loud set at a time, every ``PACE`` seconds, on each connection in turn."""
    conns = [server.connect(timeout=PATIENCE) for _ in range(WRITERS)]
    n = 0
    while not stop.wait(PACE):
        n += 1
        conn = conns[n % WRITERS]
        assert conn.send_recv(b"set w%d 0 0 2\r\nok\r\n" % n, b"\r\n", PATIENCE) == b"STORED\r\n"
    for conn in conns:
        conn.close()


@pytest.fixture
def loaded(slow_server: StigProcess) -> Iterator[StigProcess]:
    """The slow server with writers running; the brake is engaged once they are."""
    stop = threading.Event()
    writer = threading.Thread(target=_write_steadily, args=(slow_server, stop))
    writer.start()
    try:
        wait_for_stats(slow_server, lambda s: int(s["stig_pauses"]) >= 10, PATIENCE, "pauses")
        yield slow_server
    finally:
        stop.set()
        writer.join(PATIENCE + 5)


def _open_run(server: StigProcess, key: bytes):  # -> RawConnection
    """A connection that has sent one noreply set (its run stays open), once
    the server has read it: the open run is counted."""
    conn = server.connect(timeout=PATIENCE)
    conn.send(b"set %b 0 0 1 noreply\r\nx\r\n" % key)
    wait_for_stats(server, lambda s: int(s["stig_open_run_bytes"]) > 0, PATIENCE, "the open run")
    return conn


def test_a_run_left_open_under_a_lagging_promoter_gets_its_barrier_answered(loaded):
    """The barrier that closes the run is read and answered while the others
    still write (it waited for the loaders to stop: after the deadline)."""
    conn = _open_run(loaded, b"victim")
    assert conn.send_recv(b"mn\r\n", b"\r\n", timeout=PATIENCE) == b"MN\r\n"
    reply = conn.send_recv(b"get victim\r\n", timeout=PATIENCE)
    assert reply == b"VALUE victim 0 1\r\nx\r\nEND\r\n"


def test_a_client_that_leaves_inside_an_open_run_frees_its_connection(loaded):
    """Its end of input is read (the run is committed, as on any clean
    disconnect) while the others still write, and its slot is free again."""
    before = int(loaded.stats()["curr_connections"])
    conn = _open_run(loaded, b"leaver")
    conn.close()
    wait_for_stats(
        loaded,
        lambda s: int(s["curr_connections"]) <= before,
        PATIENCE,
        "the connection closed",
    )
    with loaded.connect(timeout=PATIENCE) as other:
        reply = other.send_recv(b"get leaver\r\n", timeout=PATIENCE)
    assert reply == b"VALUE leaver 0 1\r\nx\r\nEND\r\n"
