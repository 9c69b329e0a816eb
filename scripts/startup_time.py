"""How long a server takes to start and to stop, and the CPU it costs, by ``--workers``.

Each round starts a server (``python -m stig serve`` through
stig_testkit.process.StigProcess, as the tests do) until it prints
``stig listening``, then stops it with SIGTERM until it has exited, for
``--workers 0``, ``1`` and ``2`` in turn (alternated, so a busy spell of
the shared box hits every shape alike).  The CPU is every process of the
server's (the supervisor reaps its children, so their CPU is in its own
``RUSAGE_CHILDREN``), from its start to its end.

Run it with ``PYTHONPATH=<a tree>`` to measure that tree (the server runs
from the tree its stig_testkit comes from): alternate two trees to
compare them.  docs/workers.md ("How a child is started") has the numbers.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

from stig_testkit.process import CODE_ROOT, StigProcess


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(workers: int, root: Path) -> tuple[float, float, float]:
    """Seconds to start, seconds to stop, CPU seconds of the whole life."""
    directory = Path(tempfile.mkdtemp(dir=root))
    server = StigProcess(directory / "data", directory, ())
    cpu = _children_cpu()
    began = time.monotonic()
    server.start("--workers", str(workers))
    listening = time.monotonic()
    server.terminate()
    ended = time.monotonic()
    return listening - began, ended - listening, _children_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    print(f"tree: {CODE_ROOT}")
    rows: dict[int, list[tuple[float, float, float]]] = {n: [] for n in args.workers}
    with tempfile.TemporaryDirectory() as root:
        for _ in range(args.rounds):
            for workers in args.workers:
                rows[workers].append(measure(workers, Path(root)))
    print("workers  start s (median, min-max)    stop s (median, min-max)     CPU s (median)")
    for workers, runs in rows.items():
        start, stop, cpu = zip(*runs, strict=True)
        print(
            f"{workers:>7}  {statistics.median(start):.3f} ({min(start):.3f}-{max(start):.3f})"
            f"        {statistics.median(stop):.3f} ({min(stop):.3f}-{max(stop):.3f})"
            f"        {statistics.median(cpu):.3f}"
        )


if __name__ == "__main__":
    main()
