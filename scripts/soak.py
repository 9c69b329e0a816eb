"""Soak: a Stig server under many connections, hostile ones among them, for a long time.

Starts ``python -m stig serve`` (its own temporary data directory, port 0,
``--max-connections`` above the soak's total; ``--durable-acks`` and any
``--server-arg`` passed through), preloads a small fixed key space, and runs
``--connections`` connections for ``--minutes`` in ``--workers`` load
processes (trio): well-behaved readers, writers, transaction writers and
transaction readers in the text, meta and binary protocols, idle
connections, and hostile clients that never read, send half a command, cut
a run by disconnecting mid-command, or flood big values and pipelined
requests (stig_testkit/soak/ says exactly what each does).  A probe client
sets and gets at a fixed rate.

Every ``--interval`` seconds it writes a row to ``soak.csv`` in ``--out``:
the server's RSS, fds and CPU (/proc), ``stats`` (commit lag, connections,
uncommitted bytes, held snapshots, …), the probe's p50/p99 latency and the
load's counts; at the end ``soak.png`` plots each over time, and a table
compares the start, the middle third and the last third.

The run holds when nothing grew without bound (last third against middle
third, tolerances in stig_testkit/soak/verdict.py), no well-behaved client
saw an error (or a torn or aborted transaction), and the server stopped
cleanly on SIGTERM with no traceback in its log.  The last line says so:
``SOAK OK …`` (exit 0) or ``SOAK FAILED: reasons`` (exit 1).

    python3 scripts/soak.py                          # 1,000 connections, 30 minutes
    python3 scripts/soak.py --connections 200 --minutes 0.4 --out /tmp/soak
    python3 scripts/soak.py --durable-acks --server-arg=--max-pending-bytes=16m
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import queue
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from stig_testkit.flood import Server
from stig_testkit.soak import fleet, keys
from stig_testkit.soak.probe import Probe
from stig_testkit.soak.sampler import COLUMNS, Sampler, proc_figures, read_stats
from stig_testkit.soak.tally import combine
from stig_testkit.soak.verdict import TOLERANCES, Verdict, judge
from stig_testkit.soak.wire import Wire

REPO = Path(__file__).resolve().parent.parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--rate", type=float, default=1.0, help="ops/s per well-behaved client")
    parser.add_argument("--probe-rate", type=float, default=20.0, help="probe set+get rounds/s")
    parser.add_argument("--workers", type=int, default=2, help="load processes")
    parser.add_argument("--reply-timeout", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="default: ./soak-<time>")
    parser.add_argument("--repo", type=Path, default=REPO, help="the Stig checkout to serve")
    parser.add_argument(
        "--judge",
        type=Path,
        default=None,
        metavar="DIR",
        help="run nothing: judge (and plot) the soak.csv and summary.json a soak left in DIR",
    )
    parser.add_argument("--durable-acks", action="store_true")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="an extra 'stig serve' option (repeat; e.g. --server-arg=--max-pending-bytes=16m)",
    )
    return parser.parse_args()


def preload(port: int) -> None:
    """The fixed key space (stig_testkit/soak/keys.py), each chunk closed by ``mn``."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        for chunk in keys.preload():
            sock.sendall(chunk)
            reply = b""
            while not reply.endswith(b"\r\n"):
                data = sock.recv(4096)
                assert data, "the server closed the preload connection"
                reply += data
            assert reply == b"MN\r\n", reply


def server_pid(server: Server) -> int:
    assert server.proc is not None
    return server.proc.pid


def server_log(server: Server) -> Path:
    """Where stig_testkit.flood.Server sends the server's stderr."""
    return server.data_dir.parent / f"{server.data_dir.name}.log"


def start_workers(args: argparse.Namespace, port: int) -> tuple[list[Any], Any]:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    slots = fleet.mix(args.connections)
    seconds = args.minutes * 60
    processes = []
    for worker in range(args.workers):
        plan = fleet.Plan(
            worker=worker,
            port=port,
            slots=slots[worker :: args.workers],
            seconds=seconds,
            rate=args.rate,
            reply_timeout=args.reply_timeout,
            ramp=min(10.0, seconds / 10),
            seed=args.seed,
        )
        process = ctx.Process(target=fleet.worker_main, args=(plan, results), daemon=True)
        process.start()
        processes.append(process)
    return processes, results


async def observe(
    args: argparse.Namespace, server: Server, workers: list[Any], results: Any, out: Any
) -> tuple[list[dict[str, float]], dict[str, Any], Probe]:
    """Run the probe and sample every interval until the load processes finish."""
    seconds = args.minutes * 60
    probe = Probe(server.port, args.probe_rate, args.reply_timeout)
    latest: dict[int, dict[str, Any]] = {}
    finished: set[int] = set()
    rows: list[dict[str, float]] = []
    sampler = Sampler()
    stats_wire = await Wire.connect(server.port)
    started = trio.current_time()
    give_up = started + seconds + args.reply_timeout + 60
    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe.run, seconds)
        while len(finished) < len(workers) and trio.current_time() < give_up:
            await trio.sleep(args.interval)
            while True:
                try:
                    worker, snap = results.get_nowait()
                except queue.Empty:
                    break
                latest[worker] = snap
                if snap.get("final"):
                    finished.add(worker)
            if server.proc is None or server.proc.poll() is not None:
                break
            if not latest or trio.current_time() - started > seconds + 1:
                continue  # load not reporting yet, or winding down: nothing to judge
            load = combine(list(latest.values()))
            with trio.move_on_after(args.reply_timeout):
                stats = await read_stats(stats_wire)
            row = sampler.row(
                trio.current_time() - started,
                proc_figures(server_pid(server)),
                stats,
                load,
                probe.take(),
                sum(probe.tally.errors.values()),
            )
            rows.append(row)
            out.writerow(row)
            print(_progress(row), flush=True)
        nursery.cancel_scope.cancel()
    await stats_wire.close()
    return rows, combine(list(latest.values())), probe


def _progress(row: dict[str, float]) -> str:
    return (
        f"{row['t_s']:7.0f}s rss {row['rss_mib']:6.1f} MiB  conns {row['curr_connections']:5.0f}"
        f"  lag {row['commit_lag_ms']:4.0f} ms  probe p50/p99 {row['probe_p50_ms']:.2f}/"
        f"{row['probe_p99_ms']:.2f} ms  ops/s {row['wb_ops_per_s']:6.0f}  errors"
        f" {row['wb_errors']:.0f}  server cpu {row['server_cpu_pct']:.0f}%"
        f"  load cpu {row['loadgen_cpu_pct']:.0f}%  others {row['others_cpu_pct']:.0f}%"
    )


def count_tracebacks(log: Path) -> int:
    try:
        return log.read_text(errors="replace").count("Traceback (most recent call last)")
    except OSError:
        return 0


def table(verdict: Verdict) -> str:
    lines = [
        "| figure | first sample | middle third | last third | peak | bound on the last third |",
        "|---|---|---|---|---|---|",
    ]
    for fig in verdict.figures:
        unit = TOLERANCES[fig.name].unit
        lines.append(
            f"| {fig.name} | {fig.start:g} | {fig.middle:g} | {fig.end:g} | {fig.peak:g}"
            f" | {fig.bound:.4g} {unit} |"
        )
    return "\n".join(lines)


def rejudge(out_dir: Path) -> int:
    """The verdict, table and plot of a finished soak, from its files."""
    with open(out_dir / "soak.csv", newline="") as f:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    summary = json.loads((out_dir / "summary.json").read_text())
    verdict = judge(
        rows,
        sum(summary["errors"].values()),
        summary["violations"],
        summary["server_exit"],
        summary["tracebacks"],
    )
    from stig_testkit.soak.plot import plot

    plot(
        rows,
        out_dir / "soak.png",
        f"Stig soak: {summary['connections']} connections, {summary['minutes']:g} min",
    )
    print(table(verdict))
    print(verdict.line(f"(judged again from {out_dir})"))
    return 0 if verdict.ok else 1


def main() -> int:
    args = parse_args()
    if args.judge is not None:
        return rejudge(args.judge)
    out_dir = (args.out or Path(f"soak-{time.strftime('%Y%m%d-%H%M%S')}")).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    hard = fleet.raise_fd_limit()
    needed = args.connections + 200
    if hard < needed:
        print(f"SOAK FAILED: the open-file limit {hard} is below {needed}")
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="stig-soak-"))
    server_args = ["--max-connections", str(args.connections + args.connections // 4 + 100)]
    server_args += ["--durable-acks"] if args.durable_acks else []
    server_args += args.server_arg
    server = Server(args.repo.resolve(), tmp / "data", *server_args).start()
    print(f"stig pid {server_pid(server)} port {server.port}: {' '.join(server_args)}", flush=True)
    workers: list[Any] = []
    began = time.monotonic()
    try:
        preload(server.port)
        workers, results = start_workers(args, server.port)
        with open(out_dir / "soak.csv", "w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=COLUMNS)
            out.writeheader()

            class Flushing:
                def writerow(self, row: dict[str, float]) -> None:
                    out.writerow(row)
                    f.flush()

            rows, load, probe = trio.run(observe, args, server, workers, results, Flushing())
        print(f"load done at {time.monotonic() - began:.0f} s", flush=True)
    finally:
        for process in workers:
            process.join(30)
            if process.is_alive():
                process.kill()
        assert server.proc is not None
        alive = server.proc.poll() is None
        server.stop()  # SIGTERM, then SIGKILL after 30 s
        exit_status = server.proc.returncode if alive else None
        shutil.copy(server_log(server), out_dir / "server.log")
        print(f"server stopped at {time.monotonic() - began:.0f} s", flush=True)
    tracebacks = count_tracebacks(out_dir / "server.log")
    wb_errors = sum(load["errors"].values()) + sum(probe.tally.errors.values())
    messages = load["messages"] + probe.tally.messages
    verdict = judge(rows, wb_errors, load["violations"], exit_status, tracebacks)
    title = (
        f"Stig soak: {args.connections} connections, {args.minutes:g} min"
        f"{', --durable-acks' if args.durable_acks else ''} {' '.join(args.server_arg)}"
    )
    if rows:
        from stig_testkit.soak.plot import plot

        plot(rows, out_dir / "soak.png", title)
    summary = {
        "connections": args.connections,
        "minutes": args.minutes,
        "server_args": server_args,
        "ops": load["ops"] | {"probe": sum(probe.tally.ops.values())},
        "errors": load["errors"] | dict(probe.tally.errors),
        "violations": load["violations"],
        "atomic_checks": load["atomic_checks"],
        "hostile_lives": load["hostile_lives"],
        "server_exit": exit_status,
        "tracebacks": tracebacks,
        "messages": messages,
        "reasons": verdict.reasons,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table(verdict))
    print(json.dumps({k: summary[k] for k in ("ops", "errors", "atomic_checks", "hostile_lives")}))
    for message in messages[:10]:
        print("error:", message)
    wb_ops = sum(load["ops"].values()) + sum(probe.tally.ops.values())
    print(
        verdict.line(
            f"{args.connections} connections, {args.minutes:g} min, {wb_ops} well-behaved ops,"
            f" {load['atomic_checks']} transactions read whole, {load['hostile_lives']} hostile"
            f" connections, nothing grew, no errors; results in {out_dir}"
        )
    )
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
