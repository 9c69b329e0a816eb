"""Where a request's microseconds go in the real server: the event loop's share
and the commit thread's.

Starts the real server (``python -m stig_testkit.profiled_server serve``:
``stig serve`` with a profiler switch, nothing else changed) on a fresh data
directory, opens ``--conns`` connections and drives rounds of bursts for
``--seconds``: each round sends one burst of ``depth`` commands on every
connection, then reads every reply (so the writes of one round share group
commits, as pipelining clients' do) and compares it byte for byte with the
answer expected: a profile of wrong work is worth nothing.

Reported per item, the server's CPU time (user + system) over the measured
rounds, read from ``/proc``:

* ``loop``: the event loop's thread (the server's main thread) — receive,
  parse, execute, record in the POV, submit, reply, send;
* ``commit``: every other thread of the server, that is the commit thread's
  LMDB write transactions (their fsyncs wait, they cost little CPU);
* ``w/commit``: writes per group commit (``stig_promotions`` over
  ``stig_commits`` in the same rounds).

    python3 scripts/profile_writes.py                 # set, ms, get at d=1/d=16, mget
    python3 scripts/profile_writes.py --only mget     # one row: get of 100 keys, per key
    python3 scripts/profile_writes.py --profile set   # + cProfile of the set rows' event loop
    python3 scripts/profile_writes.py --depth 16 --seconds 5
    PYTHONPATH=/work/main python3 scripts/profile_writes.py  # another tree's code, A/B

Rows: ``set`` (text ``set``, each answered), ``ms`` (``ms … q`` then one
answered ``ms`` per burst: one run per burst, closed by its last write),
``get`` and ``mget`` (``get`` of 100 keys; figures per key).  The read rows'
keys are loaded first, outside the measured rounds.

``--profile ROW`` profiles the event loop (cProfile, on the server's main
thread) during that row's measured rounds only (the figures of a profiled row
include the profiler's cost) and prints its top functions by own time;
py-spy, where installed, can attach to the server as well (``py-spy record
--pid``).  The client runs in this process, so the 2 cores are shared as in
``scripts/bench.py`` (which has the throughput); what is here is the
server's CPU per request, measured the same way before and after a change.

It profiles whichever ``stig`` it imports, and runs the server from the same
tree (:func:`stig_testkit.process.child_env`): the installed one (``pip install
-e '.[test]'`` in a clone), or the tree named by ``PYTHONPATH`` (which comes
first), as in the A/B line above; ``PYTHONPATH=.`` from a clone's root runs
without installing.
"""

from __future__ import annotations

import argparse
import os
import pstats
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from stig_testkit.connections import IO_TIMEOUT, RawConnection
from stig_testkit.process import StigProcess
from stig_testkit.procstat import cpu_seconds
from stig_testkit.waiting import wait_for

VALUE = b"v" * 100
KEYS = 10_000
MGET_KEYS = 100


def _key(index: int) -> bytes:
    return b"key:%06d" % (index % KEYS)


def _hit(index: int) -> bytes:
    return b"VALUE %s 0 %d\r\n%s\r\n" % (_key(index), len(VALUE), VALUE)


@attrs.frozen
class Row:
    """One kind of burst: its bytes, the exact reply, and items per command."""

    burst: Callable[[int, int], bytes]
    reply: Callable[[int, int], bytes]
    per_command: int = 1


ROWS = {
    "set": Row(
        lambda start, depth: b"".join(
            b"set %s 0 0 %d\r\n%s\r\n" % (_key(start + i), len(VALUE), VALUE) for i in range(depth)
        ),
        lambda start, depth: b"STORED\r\n" * depth,
    ),
    "ms": Row(
        lambda start, depth: b"".join(
            b"ms %s %d%s\r\n%s\r\n"
            % (_key(start + i), len(VALUE), b" q" if i < depth - 1 else b"", VALUE)
            for i in range(depth)
        ),
        lambda start, depth: b"HD\r\n",
    ),
    "get": Row(
        lambda start, depth: b"".join(b"get %s\r\n" % _key(start + i) for i in range(depth)),
        lambda start, depth: b"".join(_hit(start + i) + b"END\r\n" for i in range(depth)),
    ),
    "mget": Row(
        lambda start, depth: b"".join(
            b"get %s\r\n" % b" ".join(_key(start + i * MGET_KEYS + j) for j in range(MGET_KEYS))
            for i in range(depth)
        ),
        lambda start, depth: b"".join(
            b"".join(_hit(start + i * MGET_KEYS + j) for j in range(MGET_KEYS)) + b"END\r\n"
            for i in range(depth)
        ),
        MGET_KEYS,
    ),
}

#: The rows whose keys must be there first.
READS = {"get", "mget"}


class ProfiledStig(StigProcess):
    """The real server, started by :mod:`stig_testkit.profiled_server`: its
    event loop is profiled between :meth:`profile_on` and :meth:`profile_off`."""

    def __init__(self, data_dir: Path, log_dir: Path) -> None:
        super().__init__(data_dir, log_dir, ())
        self.stats_file = log_dir / "loop.prof"
        os.environ["STIG_PROFILE_FILE"] = str(self.stats_file)  # the child's environment

    @property
    def command(self) -> list[str]:
        # One process, whatever the default or $STIG_TEST_SERVE_ARGS: the
        # figures are its event loop's thread and its commit thread.
        serve = [*super().command[3:], "--workers", "0"]
        return [sys.executable, "-m", "stig_testkit.profiled_server", *serve]

    def _signal(self, signum: int, appears: Path) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)
        wait_for(appears.exists, bool, what=f"{appears.name} from the server")

    def profile_on(self) -> None:
        self._signal(signal.SIGUSR1, Path(f"{self.stats_file}.on"))

    def profile_off(self) -> pstats.Stats:
        self._signal(signal.SIGUSR2, self.stats_file)
        return pstats.Stats(str(self.stats_file), stream=sys.stdout)


def preload(server: StigProcess) -> None:
    """Every key, in quiet runs of 1,000 closed by a ``version``, then committed."""
    with server.connect() as conn:
        for start in range(0, KEYS, 1000):
            conn.send(
                b"".join(
                    b"set %s 0 0 %d noreply\r\n%s\r\n" % (_key(i), len(VALUE), VALUE)
                    for i in range(start, start + 1000)
                )
            )
            assert conn.barrier() == b"", "a preload set was refused"
    server.settle()


def round_trip(conns: list[RawConnection], row: Row, start: int, depth: int) -> int:
    """One burst on every connection, then every reply read and checked;
    returns where the next round starts."""
    expected = []
    for conn in conns:
        conn.send(row.burst(start, depth))
        expected.append(row.reply(start, depth))
        start += depth * row.per_command
    for conn, reply in zip(conns, expected, strict=True):
        got = conn.recv_exact(len(reply), IO_TIMEOUT)
        if got != reply:
            raise SystemExit(f"wrong reply: expected {reply[:80]!r}…, got {got[:80]!r}…")
    return start


@attrs.frozen
class Figures:
    loop_us: float
    commit_us: float
    writes_per_commit: float


def _commits(server: StigProcess) -> tuple[int, int]:
    stats = server.stats()
    return int(stats["stig_commits"]), int(stats["stig_promotions"])


def measure(
    server: ProfiledStig, kind: str, depth: int, seconds: float, conns_n: int, profile: bool
) -> tuple[Figures, pstats.Stats | None]:
    """Server CPU µs per item on its main thread and on the others, over
    rounds for ``seconds``; and the event loop's profile of those rounds."""
    row = ROWS[kind]
    per_round = conns_n * depth * row.per_command
    assert server.proc is not None
    pid = server.proc.pid
    conns = [server.connect() for _ in range(conns_n)]
    stats = None
    try:
        start = 0
        warm_until = time.monotonic() + seconds / 10
        while time.monotonic() < warm_until:  # warm-up, not measured
            start = round_trip(conns, row, start, depth)
        server.settle()
        commits0, promotions0 = _commits(server)
        if profile:
            server.profile_on()
        loop0, total0 = cpu_seconds(pid, thread=pid), cpu_seconds(pid)
        rounds = 0
        until = time.monotonic() + seconds
        while rounds == 0 or time.monotonic() < until:
            start = round_trip(conns, row, start, depth)
            rounds += 1
        loop1, total1 = cpu_seconds(pid, thread=pid), cpu_seconds(pid)
        if profile:
            stats = server.profile_off()
        server.settle()
        commits1, promotions1 = _commits(server)
    finally:
        for conn in conns:
            conn.close()
    if loop0 is None or total0 is None or loop1 is None or total1 is None:
        raise SystemExit("the server went away")
    loop = loop1 - loop0
    other = max((total1 - total0) - loop, 0.0)  # two reads, 10 ms ticks: never below 0
    measured = rounds * per_round
    commits = commits1 - commits0
    figures = Figures(
        loop / measured * 1e6,
        other / measured * 1e6,
        (promotions1 - promotions0) / commits if commits else 0.0,
    )
    return figures, stats


def run_row(
    kind: str, depth: int, seconds: float, conns: int, profile: bool
) -> tuple[Figures, pstats.Stats | None]:
    """A fresh server on a fresh data directory (preloaded for reads), one row."""
    with tempfile.TemporaryDirectory(prefix="stig-prof-") as tmp:
        server = ProfiledStig(Path(tmp) / "data", Path(tmp))
        try:
            server.start()
            if kind in READS:
                preload(server)
            result = measure(server, kind, depth, seconds, conns, profile)
            server.terminate()
        finally:
            server.kill()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depth", type=int, action="append", help="commands per burst")
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="measured seconds per run (CPU ticks are 10 ms)"
    )
    parser.add_argument("--conns", type=int, default=50, help="connections, one burst each a round")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the best is shown")
    parser.add_argument("--profile", choices=list(ROWS), help="cProfile these rows")
    parser.add_argument(
        "--only", choices=list(ROWS), action="append", help="these rows only (default: all)"
    )
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(f"{'row':<10} {'loop µs':>8} {'commit µs':>9} {'total µs':>8} {'w/commit':>8}")
    for kind in args.only or list(ROWS):
        for depth in args.depth or {"mget": [1], "ms": [100]}.get(kind, [1, 16]):
            profile = args.profile == kind
            runs = [
                run_row(kind, depth, args.seconds, args.conns, profile) for _ in range(args.repeat)
            ]
            best = min((figures for figures, _ in runs), key=lambda f: f.loop_us + f.commit_us)
            print(
                f"{kind} d={depth:<4} {best.loop_us:8.2f} {best.commit_us:9.2f}"
                f" {best.loop_us + best.commit_us:8.2f} {best.writes_per_commit:8.1f}",
                flush=True,
            )
            stats = runs[-1][1]
            if stats is not None:  # the last run's
                stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
