"""Another worker's held reads show in ``stats`` at once (docs/workers.md,
"The shared region"; stig/storage/held.py).

A read that holds an LMDB snapshot on worker 0 — a multi-get whose client
reads none of its reply, a get line still arriving — is counted in
``stig_held_snapshots``, its end for a stalled client in
``stig_stalled_reads``, its new snapshot after the age bound in
``stig_snapshot_renewals``.  Worker 0 keeps them in its block of the shared
region as they change, so worker 1 shows them at once although worker 0
commits nothing meanwhile (they used to reach the region only at worker 0's
next commit or ``stats``).  Every look is at worker 1 only: a ``stats``
answered by worker 0 would publish its figures itself.
"""

from __future__ import annotations

from stig_testkit.connections import RawConnection
from stig_testkit.process import StigProcess
from stig_testkit.waiting import wait_for
from stig_testkit.workers import on_worker, stats_of

SIZE = 100_000
KEYS = [b"k%02d" % i for i in range(20)]


def _figures(conn: RawConnection) -> tuple[int, int, int]:
    """held snapshots, stalled reads, renewals, as ``conn``'s worker answers."""
    stats = stats_of(conn)
    names = ("stig_held_snapshots", "stig_stalled_reads", "stig_snapshot_renewals")
    held, stalled, renewed = (int(stats[name]) for name in names)
    return held, stalled, renewed


def _load(server: StigProcess) -> None:
    value = b"v" * SIZE
    with server.connect(timeout=60) as conn:
        for key in KEYS:
            conn.send(b"set %b 0 0 %d noreply\r\n%b\r\n" % (key, SIZE, value))
        assert conn.send_recv(b"mn\r\n", b"MN\r\n") == b"MN\r\n"


def test_a_stalled_read_on_one_worker_shows_on_the_other_as_it_holds_and_ends(stig_factory):
    server = stig_factory(
        "--workers",
        "2",
        "--max-read-stall-ms",
        "3000",
        "--max-snapshot-age-ms",
        "600000",
        "--max-reply-bytes",
        "128k",
    )
    _load(server)
    reader, observer = on_worker(server, 0, 60), on_worker(server, 1, 60)
    assert _figures(observer) == (0, 0, 0)
    # 10 MB of reply, none of it read: the read holds its snapshot, stalls
    # once the socket buffers are full, and is ended after 3 s.
    reader.send(b"get " + b" ".join(KEYS * 5) + b"\r\n")
    wait_for(lambda: _figures(observer), lambda f: f == (1, 0, 0), 30, "the held read seen")
    wait_for(lambda: _figures(observer), lambda f: f == (0, 1, 0), 30, "its end seen")
    reply = reader.recv_until(b"; read again\r\n", 60)
    assert reply.endswith(
        b"\r\nSERVER_ERROR read interrupted: the reply was not read for 3 s; read again\r\n"
    )


def test_a_renewed_snapshot_on_one_worker_shows_on_the_other(stig_factory):
    # The age bound leaves the look at worker 1 a second to see the read held.
    server = stig_factory("--workers", "2", "--max-snapshot-age-ms", "1000")
    key = b"s" * 200  # long keys, a tiny value: few keys a window, small replies
    with server.connect() as conn:
        assert conn.send_recv(b"ms %b 1\r\nv\r\n" % key, b"\r\n") == b"HD\r\n"
    reader, observer = on_worker(server, 0, 60), on_worker(server, 1, 60)
    # A get line that goes on arriving: its first 64 KiB window of keys is
    # read from a snapshot held until the line ends or the snapshot is old.
    window = b" " + key
    keys = (64 << 10) // len(window) + 1
    reader.send(b"get" + window * keys)
    wait_for(lambda: _figures(observer), lambda f: f == (1, 0, 0), 30, "the held read seen")
    # Released for its age; the next key takes a new snapshot, counted.
    wait_for(lambda: _figures(observer), lambda f: f == (0, 0, 0), 30, "its release seen")
    reader.send(window * keys)
    wait_for(lambda: _figures(observer), lambda f: f == (1, 0, 1), 30, "the renewal seen")
    reply = reader.send_recv(b"\r\n", b"END\r\n", 60)
    assert reply.count(b"VALUE %b 0 1\r\nv\r\n" % key) == 2 * keys
