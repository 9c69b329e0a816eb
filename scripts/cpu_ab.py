"""Server CPU per request of two or more Stig trees, alternated: an A/B of a change.

    PYTHONPATH=. python3 scripts/cpu_ab.py --tree base=/tmp/base --tree new=. --bare
    PYTHONPATH=. python3 scripts/cpu_ab.py --tree a=. --tree b=. --rows set:16 --rounds 8

Each ``--tree NAME=DIR`` is a clone (or ``git archive`` export) whose
``python3 -m stig serve --workers N`` is started from DIR (so that it runs
that tree's code, compiled modules included), preloaded, and driven by
:mod:`loadgen` (50 connections, 100 B values); ``--bare`` adds the bare trio
server as the reference.  Rows run round by round, each round every server
in turn (the order reversed every other round), so that the other load of a
shared machine hits every tree alike.  Per row and server it prints, from
``/proc``, the CPU µs per item of each process (user and system: the worker
first, then the writer) and at the end the median and the minimum of the
total over the rounds: on a busy box quote the ratio of medians, and
believe only differences well beyond the spread of the rounds.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loadgen import LoadSpec, preload, run

SCRIPTS = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> tuple[float, float]:
    """(user, system) seconds of ``pid``; zeros once it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return (0.0, 0.0)
    fields = data[data.rfind(b")") + 2 :].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_answering(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"version\r\n")
                if sock.recv(100).startswith(b"VERSION"):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answers on port {port}")


class Server:
    """One server process group started for the A/B, its pids found after start."""

    def __init__(self, name: str, tree: Path | None, workers: int, scratch: Path) -> None:
        self.name, self.port = name, free_port()
        self.hit = tree is not None
        if tree is None:
            argv = [sys.executable, str(SCRIPTS / "bare_trio_server.py"), "--port", str(self.port)]
            cwd = SCRIPTS
        else:
            data = scratch / f"{name}-data"
            argv = [sys.executable, "-m", "stig", "serve", "--port", str(self.port)]
            argv += ["--data-dir", str(data), "--workers", str(workers)]
            cwd = tree
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.proc = subprocess.Popen(
            [*argv, "--listen", "127.0.0.1"],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_answering(self.port, time.monotonic() + 60)
        children = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True
        ).stdout.split()
        self.pids = [self.proc.pid, *map(int, children)]

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=DIR")
    parser.add_argument("--bare", action="store_true", help="add the bare trio server")
    parser.add_argument("--rows", default="get:1,get:16,set:1,set:16", help="workload:depth,...")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=1.5, help="seconds per row")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    rows = [(w, int(d)) for w, d in (r.split(":") for r in args.rows.split(","))]
    with tempfile.TemporaryDirectory(prefix="cpu-ab-") as scratch:
        servers: list[Server] = []
        try:
            if args.bare:
                servers.append(Server("bare", None, 0, Path(scratch)))
            for spec in args.tree:
                name, _, tree = spec.partition("=")
                servers.append(Server(name, Path(tree).resolve(), args.workers, Path(scratch)))
            for srv in servers:
                if srv.hit:
                    preload("127.0.0.1", srv.port, "text", 10_000, 100)
            totals: dict[tuple[str, str], list[float]] = {}
            for round_ in range(args.rounds):
                for workload, depth in rows:
                    for srv in servers if round_ % 2 == 0 else servers[::-1]:
                        before = [cpu(pid) for pid in srv.pids]
                        spec = LoadSpec(
                            port=srv.port,
                            workload=workload,
                            depth=depth,
                            duration=args.duration,
                            warmup=0.3,
                            hit=srv.hit,
                            server_pids=srv.pids,
                        )
                        res = run(spec)
                        items = max(res["items"], 1)
                        per = [
                            ((a[0] - b[0]) * 1e6 / items, (a[1] - b[1]) * 1e6 / items)
                            for a, b in zip([cpu(pid) for pid in srv.pids], before, strict=True)
                        ]
                        total = sum(u + s for u, s in per)
                        row = f"{workload}:{depth}"
                        totals.setdefault((row, srv.name), []).append(total)
                        procs = " ".join(f"[u {u:5.1f} s {s:4.1f}]" for u, s in per)
                        print(
                            f"round {round_} {row:7} {srv.name:8} {res['items_per_s']:9.0f}/s "
                            f"{procs} total {total:6.2f} other CPU {res['other_cpu_s']:.1f} s "
                            f"errors {res['errors']}",
                            flush=True,
                        )
            print("row      server   CPU µs/item: median (min)   ÷ first server")
            for workload, depth in rows:
                row = f"{workload}:{depth}"
                first = statistics.median(totals[(row, servers[0].name)])
                for srv in servers:
                    got = totals[(row, srv.name)]
                    med = statistics.median(got)
                    ratio = med / first
                    print(f"{row:8} {srv.name:8} {med:7.2f} ({min(got):6.2f})   {ratio:5.2f}×")
        finally:
            for srv in servers:
                srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
