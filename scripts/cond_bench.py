"""Pipelined bursts of writes that answer after their commit, Stig against memcached.

A write whose reply carries what only its commit decides — a binary Set's
cas, a text ``add``'s verdict — cannot be answered from the POV.  Each
connection sends a burst of ``depth`` such writes at once and reads all
their replies before the next burst (closed loop); Stig commits the writes of
one burst together (docs/pov.md, "Conditional writes answer after their
commit"), memcached answers each in memory.  Two workloads:

* ``binary Set`` — loud binary Sets of keys cycling over ``KEYS``; each reply
  is checked (opcode, status 0, its opaque, a non-zero cas);
* ``text add`` — ``add`` of fresh keys (every one new, so every reply is
  ``STORED``, checked byte for byte).

(``text set``, plain sets of keys cycling over ``KEYS``, is not one of
its rows: :mod:`repl_bench` drives it with this client.)

For Stig it also reports the group commits per 1,000 writes (``stats``
``stig_commits`` over the window): a burst should take about one.

    python3 scripts/cond_bench.py --seconds 5 --servers memcached,stig,stig-durable

``scripts/bench.py`` runs it too (its ``cond`` rows, each Stig row compared
with memcached's row of the same workload in the same run).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from servers import SERVERS, RunningServer, StartError, stat  # scripts/ (this script's folder)

WORKLOADS = ("binary Set", "text add")
#: The servers these rows run on: memcached's family that stores.
COND_SERVERS = ("memcached", "stig", "stig-durable")
KEYS = 10_000
HEADER = struct.Struct(">BBHBBHIIQ")
SET = 0x01
SET_EXTRAS = struct.pack(">II", 0, 0)
#: Every client process started, for bench.py's check that none outlives the run.
STARTED_PIDS: list[int] = []


@dataclass
class Shape:
    """The client: processes x connections (a thread each), burst depth, window."""

    seconds: float = 5.0
    procs: int = 2
    conns: int = 4
    depth: int = 16
    value_size: int = 100


def _binary_burst(base: int, depth: int, value: bytes) -> tuple[bytes, int]:
    parts = []
    for i in range(depth):
        key = b"cond:%d" % ((base + i) % KEYS)
        body = len(SET_EXTRAS) + len(key) + len(value)
        parts.append(HEADER.pack(0x80, SET, len(key), len(SET_EXTRAS), 0, 0, body, i, 0))
        parts.append(SET_EXTRAS + key + value)
    return b"".join(parts), HEADER.size * depth


def _check_binary(reply: bytes, depth: int) -> int:
    """Wrong responses in a burst's replies (each must be a Set success, in order)."""
    wrong = 0
    for i in range(depth):
        magic, opcode, _k, _e, _t, status, body, opaque, cas = HEADER.unpack_from(reply, 24 * i)
        wrong += (magic, opcode, status, body, opaque) != (0x81, SET, 0, 0, i) or cas == 0
    return wrong


def _connection(
    port: int,
    workload: str,
    shape: Shape,
    tag: str,
    start_at: float,
    out: list[tuple[int, int, list[float]]],
) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    value = b"v" * shape.value_size
    depth = shape.depth
    done = errors = 0
    latencies: list[float] = []
    sequence = 0
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + shape.seconds
    while time.time() < end:
        if workload == "binary Set":
            request, size = _binary_burst(sequence * depth, depth, value)
        elif workload == "text set":  # plain sets (answered from the POV, as a rule)
            request = b"".join(
                b"set cond:%d 0 0 %d\r\n%s\r\n" % ((sequence * depth + i) % KEYS, len(value), value)
                for i in range(depth)
            )
            size = len(b"STORED\r\n") * depth
        else:
            request = b"".join(
                b"add cond:%s:%d:%d 0 0 %d\r\n%s\r\n"
                % (tag.encode(), sequence, i, len(value), value)
                for i in range(depth)
            )
            size = len(b"STORED\r\n") * depth
        sequence += 1
        sent = time.perf_counter()
        sock.sendall(request)
        reply = bytearray()
        while len(reply) < size:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            reply += chunk
        latencies.append((time.perf_counter() - sent) * 1e6)
        if workload == "binary Set":
            errors += _check_binary(bytes(reply), depth)
        else:
            errors += sum(line != b"STORED" for line in bytes(reply).split(b"\r\n")[:-1])
        done += depth
    sock.close()
    out.append((done, errors, latencies))


def _client(port: int, workload: str, shape: Shape, proc: int, start_at: float, results) -> None:
    out: list[tuple[int, int, list[float]]] = []
    threads = [
        threading.Thread(
            target=_connection,
            args=(port, workload, shape, f"{proc}.{c}.{start_at:.0f}", start_at, out),
        )
        for c in range(shape.conns)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(out)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _commits(port: int) -> int | None:
    """Stig's ``stig_commits`` (None: not a Stig)."""
    commits = stat(port, "stig_commits")
    return None if commits is None else int(commits)


@dataclass
class Figure:
    writes_per_s: float
    p50_us: float
    p99_us: float
    errors: int
    server_cpu_s: float
    commits_per_1000: float | None


def run(port: int, pid: int, workload: str, shape: Shape) -> Figure:
    """One row: ``shape.procs`` x ``shape.conns`` connections bursting for ``shape.seconds``."""
    results: mp.Queue = mp.Queue()
    start_at = time.time() + 0.5
    procs = [
        mp.Process(target=_client, args=(port, workload, shape, p, start_at, results))
        for p in range(shape.procs)
    ]
    for proc in procs:
        proc.start()
        STARTED_PIDS.append(proc.pid)  # type: ignore[arg-type]
    while time.time() < start_at:
        time.sleep(0.001)
    commits_before = _commits(port)
    cpu_before = _cpu_seconds(pid)
    outs = [results.get(timeout=shape.seconds + 60) for _ in procs]
    cpu = _cpu_seconds(pid) - cpu_before
    commits_after = _commits(port)
    for proc in procs:
        proc.join()
    done = sum(d for out in outs for d, _, _ in out)
    errors = sum(e for out in outs for _, e, _ in out)
    latencies = sorted(v for out in outs for _, _, lat in out for v in lat)
    commits = None
    if commits_before is not None and commits_after is not None and done:
        commits = (commits_after - commits_before) / done * 1000
    return Figure(
        writes_per_s=done / shape.seconds,
        p50_us=latencies[len(latencies) // 2] if latencies else 0.0,
        p99_us=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0,
        errors=errors,
        server_cpu_s=cpu,
        commits_per_1000=commits,
    )


def measure(
    names: list[str],
    shape: Shape,
    say: Callable[[str], None] = lambda msg: None,
    out_of_time: Callable[[], str | None] = lambda: None,
) -> dict[tuple[str, str], Figure | str]:
    """Each server in turn, fresh, every workload: a figure or why it was skipped."""
    figures: dict[tuple[str, str], Figure | str] = {}
    for name in names:
        spec = SERVERS[name]
        skip = spec.missing() or out_of_time()
        if skip:
            figures.update({(name, w): skip if skip.startswith("skipped") else f"skipped ({skip})"
                            for w in WORKLOADS})  # fmt: skip
            continue
        server = RunningServer(spec)
        try:
            server.start()
        except StartError as exc:
            server.stop()
            server.cleanup()
            figures.update({(name, w): f"skipped (did not start: {exc})"[:120] for w in WORKLOADS})
            continue
        try:
            for workload in WORKLOADS:
                late = out_of_time()
                if late:
                    figures[name, workload] = late
                    continue
                say(f"cond {name}: {workload} d={shape.depth}")
                figures[name, workload] = run(server.port, server.pid, workload, shape)
        finally:
            server.stop()
            server.cleanup()
    return figures


def bench_rows(
    seconds: float,
    names: list[str],
    say: Callable[[str], None] = lambda msg: None,
    out_of_time: Callable[[], str | None] = lambda: None,
    depth: int = 16,
    value_size: int = 100,
) -> list:  # list[report.Row]
    """bench.py's ``cond`` rows: each workload at ``depth`` on every server of
    ``names`` that speaks memcached and stores, Stig's rows compared with
    memcached's (the same client, the same run)."""
    from report import Row

    shape = Shape(seconds=seconds, depth=depth, value_size=value_size)
    names = [n for n in COND_SERVERS if n in names]
    figures = measure(names, shape, say, out_of_time)
    rows = []
    for name in names:
        for workload in WORKLOADS:
            figure = figures[name, workload]
            row = Row(
                server=name,
                workload=f"{workload} d={shape.depth} {shape.value_size}B",
                depth=shape.depth,
                value_size=0,  # in the label already
                client=f"cond_bench {shape.procs}x{shape.conns} conns",
                durable=SERVERS[name].durable,
            )
            if isinstance(figure, str):
                row.status = figure
            else:
                row.items_per_s, row.seconds = figure.writes_per_s, shape.seconds
                row.p50_us, row.p99_us = figure.p50_us, figure.p99_us
                row.latency_unit = "per burst"
                row.errors, row.server_cpu_s = figure.errors, figure.server_cpu_s
                if figure.commits_per_1000 is not None:
                    row.extra = {"commits_per_1000_writes": round(figure.commits_per_1000, 1)}
                reference = figures.get(("memcached", workload))
                if name != "memcached" and isinstance(reference, Figure):
                    row.ratio, row.ref = figure.writes_per_s / reference.writes_per_s, "memcached"
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--conns", type=int, default=4)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--servers", default=",".join(COND_SERVERS))
    args = parser.parse_args()
    shape = Shape(args.seconds, args.procs, args.conns, args.depth)
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    figures = measure(names, shape, say=lambda msg: print(msg, file=sys.stderr))
    print(
        f"{shape.procs} client process(es) x {shape.conns} connections, bursts of "
        f"{shape.depth}, {shape.value_size}-byte values, {shape.seconds:g} s per figure"
    )
    for (name, workload), figure in figures.items():
        if isinstance(figure, str):
            print(f"{name:<14}{workload:<12} {figure}")
            continue
        reference = figures.get(("memcached", workload))
        ratio = (
            f"{figure.writes_per_s / reference.writes_per_s:.2f}x memcached"
            if isinstance(reference, Figure) and name != "memcached"
            else ""
        )
        commits = (
            f"  {figure.commits_per_1000:.1f} commits/1000 writes"
            if figure.commits_per_1000 is not None
            else ""
        )
        print(
            f"{name:<14}{workload:<12} {figure.writes_per_s:>10,.0f} writes/s  "
            f"p50 {figure.p50_us:>7,.0f} µs  p99 {figure.p99_us:>8,.0f} µs  "
            f"errors {figure.errors}  {ratio}{commits}"
        )


if __name__ == "__main__":
    main()
