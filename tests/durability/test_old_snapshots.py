"""A read kept going gives its snapshot up at its age bound (docs/pov.md, "Bounds").

A quiet get run (binary GetKQ without a No-op, meta ``mg … q`` without an
``mn``) or a get line too long to parse whole, whose client keeps it going
and reads every reply, held its one LMDB snapshot for as long as it went
on: LMDB could reuse none of the pages the commits meanwhile freed, so the
data file grew with everything other connections rewrote (256 MB in 8 s
beside one writer, in the hostile review).  Neither the idle timer (the
client never pauses) nor ``--max-read-stall-ms`` (it reads) ended it.

Now a snapshot held longer than ``--max-snapshot-age-ms`` is released and
the read goes on from a new one at its next key: here, with a writer
rewriting 1 MB per commit beside such a read, the file stops growing once
the first few bounds have passed, and ``stig_snapshot_renewals`` counts the
renewals.  ``--batch-idle-ms`` is a minute, so that only the age bound can
end a snapshot; every wait is on a stat or a reply.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from stig_protocol.binary import Opcode, Status, encode_request
from stig_testkit.connections import BinaryConnection, RawConnection
from stig_testkit.process import StigProcess

AGE_MS = "100"
BIG = 200_000
#: Big keys the writer rewrites, all in each of its transactions: 1 MB per commit.
BIG_KEYS = [b"big%d" % i for i in range(5)]
#: What the writer rewrites before the file's size is first taken (the file
#: has grown to what one age bound of writes needs by then), then after it.
WARM_UP = 40 << 20
MEASURED = 60 << 20
#: The read's key: small, so that the read costs little; a 200-byte key makes
#: a streamed text line's windows few keys each.
KEY = b"s" * 200
VALUE = b"v"


class Writer:
    """Rewrites :data:`BIG_KEYS` in a loop, one durable transaction each time."""

    def __init__(self, server: StigProcess) -> None:
        self.conn = server.connect(timeout=60)
        self.written = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        value = b"w" * BIG
        batch = b"".join(b"set %b 0 0 %d noreply\r\n%b\r\n" % (key, BIG, value) for key in BIG_KEYS)
        try:
            while not self.stop.is_set():
                assert self.conn.send_recv(batch + b"mn\r\n", b"MN\r\n", 60) == b"MN\r\n"
                self.written += BIG * len(BIG_KEYS)
        except BaseException as exc:  # reported by the test
            self.error = exc


@contextmanager
def writing(server: StigProcess) -> Iterator[Writer]:
    writer = Writer(server)
    writer.thread.start()
    try:
        yield writer
    finally:
        writer.stop.set()
        writer.thread.join(60)
        writer.conn.close()
    assert writer.error is None, writer.error


def _binary_run(server: StigProcess) -> tuple[Callable[[], None], Callable[[], None]]:
    """A GetKQ run: each step 20 GetKQ of the hit, read back; ended by a No-op."""
    conn = BinaryConnection(server.host, server.port, timeout=60)
    batch = b"".join(encode_request(Opcode.GetKQ, KEY, opaque=i) for i in range(20))

    def step() -> None:
        conn.send(batch)
        for i in range(20):
            response = conn.response(60)
            assert (response.status, response.opaque, response.value) == (Status.NO_ERROR, i, VALUE)

    def end() -> None:
        assert conn.barrier(60) == []
        conn.close()

    return step, end


def _meta_run(server: StigProcess) -> tuple[Callable[[], None], Callable[[], None]]:
    """A quiet mg run going on from input to input (each ends on an ``mg … q``)."""
    conn = RawConnection(server.host, server.port, timeout=60)
    hit = b"VA 1\r\nv\r\n"

    def step() -> None:
        assert conn.send_recv(b"mg %b v q\r\n" % KEY * 20, hit * 20, 60) == hit * 20

    def end() -> None:
        assert conn.send_recv(b"mn\r\n", b"MN\r\n", 60) == b"MN\r\n"
        conn.close()

    return step, end


def _text_line(server: StigProcess) -> tuple[Callable[[], None], Callable[[], None]]:
    """One get line that never ends: each step sends 64 KiB more of its keys
    and reads the values of those whose window has arrived (all but the last
    window's, at most)."""
    conn = RawConnection(server.host, server.port, timeout=60)
    window = b" " + KEY
    per_step = (64 << 10) // len(window) + 1
    hit = b"VALUE %b 0 1\r\nv\r\n" % KEY
    sent = [0, 0]  # keys sent, values read
    conn.send(b"get")

    def step() -> None:
        conn.send(window * per_step)
        sent[0] += per_step
        while sent[1] < sent[0] - 2 * per_step:  # keys of windows not complete yet
            sent[1] += conn.recv_until(hit, 60).count(hit)

    def end() -> None:
        rest = conn.send_recv(b"\r\n", b"END\r\n", 60)
        assert sent[1] + rest.count(hit) == sent[0] and rest.endswith(hit + b"END\r\n")
        conn.close()

    return step, end


READS = {
    "binary GetKQ run": _binary_run,
    "meta quiet mg run": _meta_run,
    "text get line": _text_line,
}


def _file_size(server: StigProcess) -> int:
    return (server.data_dir / "data.mdb").stat().st_size


@pytest.mark.parametrize("name", list(READS))
def test_a_read_kept_going_renews_its_snapshot_and_the_file_stops_growing(stig_factory, name):
    # The replication log (docs/replication.md) keeps up to 64 MB of recent
    # writes by default, which would grow the file by itself: bounded small
    # here, what is measured is the read's snapshot.
    server = stig_factory(
        "--max-snapshot-age-ms",
        AGE_MS,
        "--batch-idle-ms",
        "60000",
        "--replication-log-bytes",
        "1m",
    )
    assert server.stats("settings")["stig_max_snapshot_age_ms"] == "100.0"
    with server.connect() as conn:
        assert conn.send_recv(b"ms %b 1\r\nv\r\n" % KEY, b"\r\n") == b"HD\r\n"
    step, end = READS[name](server)
    step()  # the read holds its snapshot from here on
    with writing(server) as writer:
        while writer.written < WARM_UP:
            step()
        stats = server.stats()
        # One snapshot at most (none between a release and the next key).
        assert int(stats["stig_held_snapshots"]) <= 1
        renewed, size, written = (
            int(stats["stig_snapshot_renewals"]),
            _file_size(server),
            writer.written,
        )
        while writer.written < written + MEASURED:
            step()
        stats = server.stats()
        growth = _file_size(server) - size
    end()
    # Without the bound the file grew by about what was rewritten meanwhile
    # (60 MB); with it, by at most what one bound of writes needs, once.
    assert growth < MEASURED // 3, (growth, size)
    assert int(stats["stig_snapshot_renewals"]) > renewed, "the read went on from new snapshots"
    assert int(stats["stig_held_snapshots"]) <= 1 and stats["stig_stalled_reads"] == "0"
