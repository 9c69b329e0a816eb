"""Where a write's microseconds go: the event loop's share and the commit thread's.

Drives the server's real code in one process, without sockets: a
:class:`~stig.frontends.text.TextHandler` on a :class:`~stig.engine.session.Session`
is fed bursts of ``set`` (or ``get``) lines exactly as the connection loop
feeds them (feed, handle every event, submit, clear the replies), then the
promoter's one commit function commits what was submitted in groups of
``--group`` bursts, as the commit thread would (``Promoter.commit_queued_now``
runs ``_apply_group`` and ``_settle`` on the calling thread).

Reported per item, CPU time (``time.thread_time``):

* ``loop``: the event loop's part — parse, execute, record in the POV,
  close the run, submit, publish for visibility, reply;
* ``commit``: the commit thread's part — one LMDB write transaction per
  group (with its fsync: the data directory is a real one) — and the event
  loop's part of finishing it (``_settle``: releasing, dropping the POV);
* memory blocks and bytes held per write while it is pending (the live
  ``tracemalloc`` blocks allocated since its group began): what the write
  budget counts.

    python3 scripts/profile_writes.py                 # set and get d=1/d=16, mget
    python3 scripts/profile_writes.py --only mget     # one row: get of 100 keys, per key
    python3 scripts/profile_writes.py --profile set   # + cProfile of the set rows
    python3 scripts/profile_writes.py --depth 16 --bursts 2000
    PYTHONPATH=/work/main python3 scripts/profile_writes.py  # another tree's code, A/B

Rows: ``set`` (text ``set``, each answered), ``ms`` (``ms … q`` then one
answered ``ms`` per burst, the shape of a batch closed by its last write:
one run per burst) and ``get``.

Sockets, the scheduler and the GIL hand-offs between the two threads are
not in these figures (``scripts/bench.py`` has them); what is here is the
Python a write costs, measured the same way before and after a change.

It profiles whichever ``stig`` it imports: the installed one (``pip install
-e '.[test]'`` in a clone), or the tree named by ``PYTHONPATH`` (which comes
first), as in the A/B line above; ``PYTHONPATH=.`` from a clone's root runs
without installing.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import tempfile
import time
import tracemalloc
from pathlib import Path

import trio

from protocol.events import NEED_DATA
from stig.engine.engine import Engine
from stig.engine.session import Session
from stig.engine.settings import Settings
from stig.frontends.text import TextHandler

VALUE = b"v" * 100
KEYS = 10_000


def _set_burst(start: int, depth: int) -> bytes:
    return b"".join(
        b"set key:%06d 0 0 %d\r\n%s\r\n" % ((start + i) % KEYS, len(VALUE), VALUE)
        for i in range(depth)
    )


def _ms_burst(start: int, depth: int) -> bytes:
    return b"".join(
        b"ms key:%06d %d%s\r\n%s\r\n"
        % ((start + i) % KEYS, len(VALUE), b" q" if i < depth - 1 else b"", VALUE)
        for i in range(depth)
    )


def _get_burst(start: int, depth: int) -> bytes:
    return b"".join(b"get key:%06d\r\n" % ((start + i) % KEYS) for i in range(depth))


def _mget_burst(start: int, depth: int) -> bytes:
    """``depth`` multi-gets of 100 distinct keys each (bench.py's mget row)."""
    return b"".join(
        b"get %s\r\n" % b" ".join(b"key:%06d" % ((start + i * 100 + j) % KEYS) for j in range(100))
        for i in range(depth)
    )


#: Each row's burst maker and items (keys) per command.
_ROWS = {
    "set": (_set_burst, 1),
    "ms": (_ms_burst, 1),
    "get": (_get_burst, 1),
    "mget": (_mget_burst, 100),
}


async def _feed(handler: TextHandler, session: Session, data: bytes) -> None:
    """What Connection._serve does with one receive (minus the socket)."""
    parser = handler.parser
    parser.feed(data)
    handle = handler.handle
    while True:
        event = parser.next_event()
        if event is NEED_DATA:
            break
        pending = handle(event)
        if pending is not None:
            await pending
    session.submit()
    handler.out.clear()


class Rig:
    """An engine on a fresh data directory, and sessions with text handlers."""

    def __init__(self, data_dir: Path) -> None:
        self.engine = Engine(Settings(data_dir=data_dir))
        self.sessions = [Session(self.engine) for _ in range(50)]
        self.handlers = [TextHandler(self.engine, s) for s in self.sessions]

    def preload(self) -> None:
        for session in self.sessions[:1]:
            for i in range(KEYS):
                session.set(b"key:%06d" % i, VALUE, 0)
                session.close_run()
            session.submit()
        self.engine.promoter.commit_queued_now()


def measure(kind: str, depth: int, bursts: int, group: int, prof: cProfile.Profile | None):
    """CPU µs per item on the loop and in commits, and objects/bytes per pending write."""
    with tempfile.TemporaryDirectory(prefix="stig-prof-") as tmp:
        rig = Rig(Path(tmp) / "data")
        rig.preload()
        make, per_command = _ROWS[kind]
        datas = [make(i * depth, depth) for i in range(bursts)]
        promoter = rig.engine.promoter
        loop_cpu = 0.0
        commit_cpu = 0.0
        held_objects = held_bytes = 0

        async def main() -> None:
            nonlocal loop_cpu, commit_cpu, held_objects, held_bytes
            handlers, sessions = rig.handlers, rig.sessions
            n = len(sessions)
            gc.collect()
            for start in range(0, bursts, group):
                chunk = range(start, min(start + group, bursts))
                if start == 0:  # warm-up, not measured
                    for i in chunk:
                        await _feed(handlers[i % n], sessions[i % n], datas[i])
                    promoter.commit_queued_now()
                    continue
                if start == group:
                    # Memory held per pending write (this group is not timed).
                    gc.collect()
                    tracemalloc.start()
                    before = tracemalloc.get_traced_memory()[0]
                    for i in chunk:
                        await _feed(handlers[i % n], sessions[i % n], datas[i])
                    held_bytes = tracemalloc.get_traced_memory()[0] - before
                    snapshot = tracemalloc.take_snapshot()
                    held_objects = sum(stat.count for stat in snapshot.statistics("filename"))
                    tracemalloc.stop()
                    promoter.commit_queued_now()
                    continue
                if prof is not None:
                    prof.enable()
                t0 = time.thread_time()
                for i in chunk:
                    await _feed(handlers[i % n], sessions[i % n], datas[i])
                t1 = time.thread_time()
                promoter.commit_queued_now()
                t2 = time.thread_time()
                if prof is not None:
                    prof.disable()
                loop_cpu += t1 - t0
                commit_cpu += t2 - t1

        trio.run(main)
        measured = (bursts - 2 * group) * depth * per_command
        per_write = group * depth
        rig.engine.store.close()
    return (
        loop_cpu / measured * 1e6,
        commit_cpu / measured * 1e6,
        held_objects / per_write,
        held_bytes / per_write,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depth", type=int, action="append", help="commands per burst")
    parser.add_argument("--bursts", type=int, default=0, help="bursts per row (~20k items)")
    parser.add_argument("--group", type=int, default=50, help="bursts per group commit")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the best is shown")
    parser.add_argument("--profile", choices=list(_ROWS), help="cProfile these rows")
    parser.add_argument(
        "--only", choices=list(_ROWS), action="append", help="these rows only (default: all)"
    )
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    gc.freeze()
    print(f"{'row':<10} {'loop µs':>8} {'commit µs':>9} {'total µs':>8} {'blk/w':>7} {'B/w':>6}")
    for kind in args.only or list(_ROWS):
        for depth in args.depth or {"mget": [1], "ms": [100]}.get(kind, [1, 16]):
            per_command = _ROWS[kind][1]
            bursts = max(args.bursts or 20_000 // (depth * per_command), 3 * args.group)
            prof = cProfile.Profile() if args.profile == kind else None
            runs = [measure(kind, depth, bursts, args.group, prof) for _ in range(args.repeat)]
            loop, commit, objs, nbytes = min(runs, key=lambda r: r[0] + r[1])
            print(
                f"{kind} d={depth:<4} {loop:8.2f} {commit:9.2f} {loop + commit:8.2f}"
                f" {objs:7.1f} {nbytes:6.0f}"
            )
            if prof is not None:
                stats = pstats.Stats(prof)
                stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
