"""One command for Stig's benchmark suite: references and Stig, one table.

    python scripts/bench.py --quick            # < 2 minutes, 100-byte values
    python scripts/bench.py                    # full: ~15-20 minutes
    python scripts/bench.py --only batch --json out.json

For every server present (memcached, Redis with ``appendfsync always`` and
``everysec``, the bare trio server, Stig with POV acks and with
``--durable-acks``) it starts the server on 127.0.0.1 on a free port with a
fresh temporary data directory, preloads the key space, drives every workload
with the same load generator (:mod:`loadgen`: 50 connections over 2 worker
processes, every reply verified), stops the server and prints one table.
Absent servers, servers that fail to start and workloads a server does not
speak are reported as ``skipped (reason)``, never estimated.

The ``pooled`` workload checks what a connection pool relies on: connections
in pairs, one sets a key and reads ``STORED``, the other then gets it; a get
that misses the answered write is a stale read, counted in the row's note
(must be 0; a run with any exits 1).  After the table, the server CPU per set
is divided by the CPU per get of the same server and depth.

The ``p99`` workload drives each Stig shape of the run (``stig``, and
``stig-w1``/``stig-w2`` when ``--servers`` names them) open-loop (``loadgen
--rate``) at half of its own closed-loop ``mix d=1`` peak, and memcached
right after it at the same rate, and compares their p99 latencies (measured
from each request's scheduled send time); the server CPU per request of
both is in the rows.  After the table, issue 20's targets that the run's
rows measure are printed as ratios (:mod:`targets`).

It also runs :mod:`lmdb_reference` (the ceiling for durable batch writes), the
scale workload on Stig (bulk load, bytes per key on disk, RSS,
restart-to-first-reply; 10M keys in full mode, 100k with ``--quick``) and, in
full mode, memcaslap and redis-benchmark as second-opinion clients.

The ``transport`` rows run :mod:`transport_bench`: Stig over TCP, TLS and a
unix socket with the same client (``stig tcp|tls|unix``, get and set at
d=16), each compared with ``stig tcp``.

The ``cond`` rows run :mod:`cond_bench`: pipelined bursts of writes that
answer after their commit (loud binary Sets, text ``add`` of fresh keys, 16
per burst) on memcached, Stig and Stig ``--durable-acks``, each Stig row
compared with memcached's; Stig's rows note its group commits per 1,000
writes (a burst shares one).

The ``repl`` rows run :mod:`repl_bench`: plain sets (d=1 and d=16) on Stig
alone, alone with ``--durable-acks``, with an asynchronous follower and
with ``--min-replica-acks 1`` (``stig alone|durable|async|sync``), each
compared with ``stig alone``.

All figures come from one run on one machine whose 2 cores are shared by the
server, the Python client and anything else running: read them as ratios
(the "vs reference" column), and check "other CPU s" for interference.

It imports ``stig_testkit`` (through :mod:`transport_bench`): run it from a
clone after ``pip install -e '.[test]'``, or as ``PYTHONPATH=. python
scripts/bench.py ...`` from the clone's root without installing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cond_bench
import extra_clients
import loadgen
import repl_bench
import servers
import transport_bench
from loadgen import LoadSpec, connect, exchange_once, preload, probe, run
from report import Row, assign_ratios, table
from servers import SCRIPTS, SERVERS, RunningServer, ServerSpec, StartError
from targets import targets_table
from wire import Exchange, codec, key_for
from workloads import build_exchange

from stig_testkit.procstat import peak_rss_mib, rss_mib, status_kib, wait_quiet

WORKLOAD_CHOICES = (
    "get", "set", "mix", "mget", "batch", "p99", "scale", "lmdb", "pooled", "transport", "cond",
    "repl",
)  # fmt: skip
P99_BASE = "mix"  # the p99 row's workload: Stig's closed-loop peak of it, then half that rate
#: The Stig shapes whose p99 is measured at half of their own peak, each with
#: memcached at the same rate right after it (those of them in --servers).
P99_SHAPES = ("stig", "stig-w1", "stig-w2")
P99_REFERENCE = "memcached"
#: Servers run only when --servers names them (the --workers shapes, docs/workers.md).
OPT_IN = ("stig-w1", "stig-w2", "stig-w2-durable")
#: Seconds: the shortest measured window of a batch row (not in smoke).  Every
#: connection's batch is served round-robin with all the others', so they all
#: finish together, 50,000 items after they began: on a loaded box one round
#: took 3.1 s (--workers 1 at 15.9k items/s), and a 3 s row counted nothing.
#: 6 s counts at least one round there, 10+ on a quiet box.
BATCH_MIN_WINDOW = 6.0


@dataclass
class Plan:
    """What one invocation runs; ``--quick`` and full mode differ only here."""

    mode: str  # "smoke", "quick" or "full"
    duration: float
    warmup: float
    sizes: list[int]
    workloads: list[tuple[str, int]]  # (workload, pipeline depth)
    keyspace: int
    scale_keys: int
    lmdb_txn_sizes: list[int]
    extra_clients: bool
    max_server_rss_mib: float = 4096.0  # the scale load stops a server growing past this
    quiet_wait: float = 0.0  # max seconds to wait before a row for other work to stop
    connections: int = 50
    processes: int = 2
    batch_size: int = 1000
    budget_s: float = 3600.0  # no row starts after this many seconds; the rest are skipped
    deadline: float = float("inf")
    only: set[str] = field(default_factory=set)
    servers: list[str] = field(default_factory=list)

    @classmethod
    def make(cls, mode: str) -> Plan:
        """``smoke`` (harness check, seconds), ``quick`` (< 2 minutes) or ``full``."""
        if mode == "smoke":
            # Correctness of the harness only: every code path, tiny and short.
            return cls(
                mode="smoke",
                duration=0.3,
                warmup=0.1,
                sizes=[100],
                workloads=[
                    ("get", 1),
                    ("get", 4),
                    ("set", 1),
                    ("pooled", 1),
                    ("mget", 1),
                    ("p99", 1),
                    ("batch", 1),
                    ("cond", 16),
                ],
                keyspace=1_000,
                scale_keys=2_000,
                lmdb_txn_sizes=[100],
                extra_clients=False,
                quiet_wait=0.0,
                connections=4,
                batch_size=100,
                budget_s=25.0,
                servers=[name for name in SERVERS if name not in OPT_IN],
            )
        if mode == "quick":
            return cls(
                mode="quick",
                duration=1.5,
                warmup=0.3,
                sizes=[100],
                workloads=[
                    ("get", 1),
                    ("get", 16),
                    ("set", 1),
                    ("set", 16),
                    ("pooled", 1),
                    ("mget", 1),
                    ("p99", 1),
                    ("batch", 1),
                    ("cond", 16),
                ],
                keyspace=10_000,
                scale_keys=100_000,
                lmdb_txn_sizes=[1000],
                extra_clients=False,
                quiet_wait=0.5,
                budget_s=115.0,
                servers=[name for name in SERVERS if name not in OPT_IN],
            )
        return cls(
            mode="full",
            duration=5.0,
            warmup=1.0,
            sizes=[100, 4096],
            workloads=[
                ("get", 1),
                ("get", 16),
                ("set", 1),
                ("set", 16),
                ("pooled", 1),
                ("mix", 1),
                ("mix", 16),
                ("p99", 1),
                ("mget", 1),
                ("batch", 1),
                ("cond", 16),
            ],
            keyspace=100_000,
            scale_keys=10_000_000,
            lmdb_txn_sizes=[1, 100, 1000],
            extra_clients=True,
            quiet_wait=3.0,
            budget_s=3600.0,
            servers=[name for name in SERVERS if name not in OPT_IN],
        )

    @property
    def quick(self) -> bool:
        return self.mode != "full"

    def start_clock(self) -> None:
        self.deadline = time.monotonic() + self.budget_s

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def out_of_time(self) -> str | None:
        """Why no further row may start (the run's time budget is spent), or None."""
        if self.remaining() > 0:
            return None
        return f"skipped (time budget of {self.budget_s:g}s spent)"

    def wants(self, workload: str) -> bool:
        return not self.only or workload in self.only


def machine_info() -> dict:
    """What the figures were measured on."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
        "stig": stig_version(),
    }


def stig_version() -> str:
    """The commit Stig was measured at, marked ``+uncommitted`` if stig/ or protocol/ differ."""

    def git(*args: str) -> str:
        try:
            proc = subprocess.run(
                ["git", *args], cwd=servers.REPO, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--", "stig", "protocol")
    return commit + (" +uncommitted changes in stig/ or protocol/" if dirty else "")


def _server_applies(spec: ServerSpec, workload: str) -> bool:
    """Redis everysec is only interesting for writes; the pooled visibility
    check needs a memcached-protocol server that stores; everything else runs all."""
    if workload == "pooled":
        return spec.protocol == "text" and spec.hit
    return not (spec.name == "redis-everysec" and workload in ("get", "mget"))


def _loadgen_row(
    spec: ServerSpec,
    srv: RunningServer,
    plan: Plan,
    workload: str,
    depth: int,
    size: int,
    protocol: str,
    batch_style: str = "meta",
    rate: float = 0.0,
    label: str | None = None,
) -> Row:
    """Probe, then run one timed load-generator row against a running server.

    ``rate`` > 0 runs it open-loop at that many requests/s (see loadgen);
    ``label`` is the row's workload name if it differs from ``workload``.
    """
    client = (
        "loadgen"
        if workload != "batch"
        else f"loadgen {protocol}"
        + ("" if protocol != "text" else (" meta" if batch_style == "meta" else " set"))
    )
    if rate:
        client = f"loadgen fixed {rate:,.0f}/s"
    row = Row(spec.name, label or workload, depth, size, client, durable=spec.durable)
    duration = plan.duration
    if workload == "batch" and plan.mode != "smoke":
        # one batch can take a second under load: a short window would count
        # only a handful of completions per connection
        duration = max(duration, BATCH_MIN_WINDOW)
    ls = LoadSpec(
        port=srv.port,
        protocol=protocol,
        workload=workload,
        connections=plan.connections,
        processes=plan.processes,
        depth=depth,
        value_size=size,
        keyspace=plan.keyspace,
        duration=duration,
        warmup=plan.warmup,
        hit=spec.hit,
        batch_size=plan.batch_size,
        batch_style=batch_style,
        rate=rate,
        server_pids=srv.pids,
        writer_pids=srv.writer_pids,
    )
    err = probe(ls)
    if err:
        row.status = f"skipped (probe: {err[:90]})"
        return row
    if plan.quiet_wait:
        wait_quiet(plan.quiet_wait)
    res = run(ls)
    if res["fatal"]:
        row.status = f"failed ({'; '.join(res['fatal'])[:100]})"
        return row
    if not res["items"]:
        sample = (
            res["error_samples"]
            or [f"{res['stalled']} of {plan.connections} connections had a request outstanding"]
        )[0]
        row.status = f"failed (no reply completed in the {duration:g}s window: {sample[:80]})"
        return row
    row.items_per_s, row.p50_us, row.p99_us = res["items_per_s"], res["p50_us"], res["p99_us"]
    row.latency_unit = res["latency_unit"]
    row.server_cpu_s, row.client_cpu_s = res["server_cpu_s"], res["client_cpu_s"]
    row.other_cpu_s, row.errors, row.seconds = res["other_cpu_s"], res["errors"], res["seconds"]
    row.peak_rss_mib = peak_rss_mib(srv.pid)
    row.extra = {
        k: res[k]
        for k in (
            "batches",
            "items",
            "stalled",
            "reconnects",
            "error_samples",
            "p999_us",
            "max_us",
            "other_top",
        )
    }
    if res.get("writer_cpu_s") is not None:
        row.extra["writer_cpu_s"] = res["writer_cpu_s"]
    if workload == "pooled":
        row.extra["stale"] = res["stale"]  # reads that missed an answered write: must be 0
    if rate:
        row.extra.update(
            {
                k: res[k]
                for k in (
                    "offered_per_s",
                    "scheduled_per_s",
                    "unfinished",
                    "send_lag_p50_us",
                    "send_lag_p99_us",
                    "p50_from_send_us",
                    "p99_from_send_us",
                )
            }
        )
    return row


def bench_p99(
    fleet: Fleet,
    specs: list[ServerSpec],
    plan: Plan,
    size: int,
    earlier: list[Row],
    say: Callable[[str], None],
) -> list[Row]:
    """Latency at half of each Stig shape's peak, against memcached at the same rate.

    For every Stig shape of the run (``P99_SHAPES``: ``stig``, and the
    ``--workers`` shapes when ``--servers`` names them) in turn: its peak is
    its closed-loop ``mix d=1`` row of this size from earlier in the run, or,
    if the plan has none (quick, smoke), one measured here and reported as
    its own row.  Then that shape and memcached are driven open-loop, back to
    back, at half that many requests/s; both rows name the shape
    (``peak_of``), and ``assign_ratios`` divides the shape's p99 by the
    memcached row of the same shape (issue 20's target: at most 5).
    """
    names = {s.name: s for s in specs}
    rows: list[Row] = []

    def add(row: Row) -> None:
        rows.append(row)
        say(f"{row.server:<15}" + _oneline(row))

    for shape in (names[n] for n in P99_SHAPES if n in names):
        peak = _p99_peak(fleet, shape, plan, size, earlier, add)
        if isinstance(peak, str):
            add(_p99_row(shape.name, shape.name, size, status=peak))
            continue
        rate = peak / 2
        for spec in (shape, names.get(P99_REFERENCE)):
            if spec is None:
                add(_p99_row(P99_REFERENCE, shape.name, size, status="skipped (not in --servers)"))
                continue
            late = plan.out_of_time()
            srv = late or fleet.ready(spec, size)
            if isinstance(srv, str):
                add(_p99_row(spec.name, shape.name, size, status=srv))
                continue
            row = _loadgen_row(
                spec, srv, plan, P99_BASE, 1, size, spec.protocol, rate=rate, label="p99"
            )
            fleet.check(spec, row)
            row.extra = {**(row.extra or {}), "peak_per_s": peak, "peak_of": shape.name}
            add(row)
    return rows


def _p99_row(server: str, shape: str, size: int, status: str) -> Row:
    """A p99 row that did not run, saying why; ``shape`` is whose half-peak it was for."""
    return Row(server, "p99", 1, size, "-", status=status, extra={"peak_of": shape})


def _p99_peak(
    fleet: Fleet,
    spec: ServerSpec,
    plan: Plan,
    size: int,
    earlier: list[Row],
    add: Callable[[Row], None],
) -> float | str:
    """The shape's closed-loop ``mix d=1`` requests/s, or why there is none.

    Taken from the run's own row if it has one; else measured now and
    reported as a row of its own (note ``Stig's peak for the p99 rows``).
    """
    if late := plan.out_of_time():
        return late
    peak = next(
        (
            r
            for r in reversed(earlier)
            if r.server == spec.name
            and r.workload == P99_BASE
            and r.depth == 1
            and r.value_size == size
            and r.client == "loadgen"
            and r.status == "ok"
            and r.items_per_s
        ),
        None,
    )
    if peak is None:
        srv = fleet.ready(spec, size)
        if isinstance(srv, str):
            return srv
        peak = _loadgen_row(spec, srv, plan, P99_BASE, 1, size, spec.protocol)
        fleet.check(spec, peak)
        peak.extra = {**(peak.extra or {}), "peak_for": "p99"}
        add(peak)
    if peak.status != "ok" or not peak.items_per_s:
        return f"skipped (no peak {P99_BASE} d=1 to halve: {peak.status[:80]})"
    return peak.items_per_s


class Fleet:
    """Every server of the run, all kept up at once.

    Rows are run workload by workload, each workload against every server
    back to back, so a reference and the Stig row it is divided by are
    measured seconds apart: slow drifts in other load on the shared machine
    hit both alike.  Idle servers cost nothing.  A server that dies is
    restarted (fresh data directory, preloaded again) for the next row.
    """

    def __init__(self, specs: list[ServerSpec], plan: Plan, say: Callable[[str], None]) -> None:
        self.plan, self.say = plan, say
        self.specs = specs
        self.up: dict[str, RunningServer] = {}
        self.preloaded: dict[str, int] = {}  # server -> value size currently stored
        self.broken: dict[str, str] = {}  # server -> why it cannot run rows

    def start(self, spec: ServerSpec) -> RunningServer | None:
        reason = spec.missing()
        if reason:
            self.broken[spec.name] = f"skipped ({reason})"
            self.say(f"{spec.name}: skipped ({reason})")
            return None
        srv = RunningServer(spec)
        try:
            srv.start()
        except StartError as exc:
            srv.stop()
            srv.cleanup()
            self.broken[spec.name] = f"skipped (did not start: {str(exc)[:100]})"
            self.say(f"{spec.name}: failed to start: {exc}")
            return None
        self.say(f"{spec.name}: pid {srv.pid} port {srv.port}, answered after {srv.ready_s:.2f}s")
        self.up[spec.name] = srv
        self.preloaded.pop(spec.name, None)
        return srv

    def ready(self, spec: ServerSpec, size: int) -> RunningServer | str:
        """The running server with ``size``-byte values preloaded, or why not."""
        if spec.name in self.broken:
            return self.broken[spec.name]
        srv = self.up.get(spec.name) or self.start(spec)
        if srv is None:
            return self.broken[spec.name]
        if spec.hit and self.preloaded.get(spec.name) != size:
            try:
                took = preload("127.0.0.1", srv.port, spec.protocol, self.plan.keyspace, size)
                seen_s, err = wait_visible(srv.port, self.plan.keyspace, size, spec.protocol)
                if err:
                    raise RuntimeError(f"not readable {seen_s:.1f}s after preload: {err}")
            except (RuntimeError, OSError) as exc:
                return f"failed (preload: {str(exc)[:100]})"
            self.say(
                f"{spec.name}: preloaded {self.plan.keyspace} x {size} B in {took:.2f}s, "
                f"readable from another connection after {seen_s:.2f}s"
            )
            self.preloaded[spec.name] = size
        return srv

    def check(self, spec: ServerSpec, row: Row) -> None:
        """After a row: if the server died, say so in the row and drop it."""
        srv = self.up[spec.name]
        died = _died(srv, 0.0 if row.status == "ok" else 0.5)
        if died:
            row.status = f"failed ({died})"
            srv.stop()
            srv.cleanup()
            del self.up[spec.name]

    def stop_all(self) -> None:
        for srv in self.up.values():
            srv.stop()
            srv.cleanup()
        self.up.clear()


def bench_servers(specs: list[ServerSpec], plan: Plan, say: Callable[[str], None]) -> list[Row]:
    """Every planned row against every server, workload by workload."""
    rows: list[Row] = []
    said: set[tuple[str, str]] = set()
    fleet = Fleet(specs, plan, say)
    try:
        for size in plan.sizes:
            for workload, depth in plan.workloads:
                if not plan.wants(workload):
                    continue
                if workload == "p99":
                    rows += bench_p99(fleet, specs, plan, size, rows, say)
                    continue
                if workload == "cond":  # fresh servers of its own; Stig vs memcached
                    if size != plan.sizes[0]:
                        continue  # small values: the commits, not the bytes, are measured
                    names = [s.name for s in specs]
                    if plan.quick:  # the reference and POV Stig; durable in full runs
                        names = [n for n in names if n != "stig-durable"]
                    rows += cond_bench.bench_rows(
                        plan.duration, names, say, plan.out_of_time, depth, size
                    )
                    continue
                if workload == "batch" and not plan.out_of_time():
                    rows += bench_lmdb(plan, say, [size])  # its reference, right before it
                for spec in specs:
                    if not _server_applies(spec, workload):
                        continue
                    protocols = spec.batch_protocols if workload == "batch" else (spec.protocol,)
                    for proto in protocols[:1] if plan.quick else protocols:
                        late = plan.out_of_time()
                        # (re)started lazily: a server that died in the last row
                        # is only brought back if a row still needs it
                        srv = late or fleet.ready(spec, size)
                        if isinstance(srv, str):
                            if (spec.name, srv) in said and not late:
                                continue  # one row per server says it is missing
                            said.add((spec.name, srv))
                            missing = srv.startswith("skipped") and not late
                            row = Row(
                                spec.name,
                                "*" if missing else workload,
                                depth,
                                size,
                                "-",
                                status=srv,
                            )
                        else:
                            row = _loadgen_row(spec, srv, plan, workload, depth, size, proto)
                            fleet.check(spec, row)
                        rows.append(row)
                        say(f"{spec.name:<15}" + _oneline(row))
            if plan.extra_clients and size == 100:
                for spec in specs:
                    if plan.out_of_time():
                        break
                    srv = fleet.ready(spec, size)
                    if isinstance(srv, str):
                        continue
                    for row in extra_clients.rows_for(spec, srv, plan.duration, plan.keyspace):
                        rows.append(row)
                        say(f"{spec.name:<15}" + _oneline(row))
    finally:
        fleet.stop_all()
    return rows


def _died(srv: RunningServer, grace: float = 0.0) -> str | None:
    """Why the server is gone (it crashed during the row), or None if it runs."""
    assert srv.proc is not None
    try:
        srv.proc.wait(grace)  # a crash caused by the last request may take a moment
    except subprocess.TimeoutExpired:
        return None
    return f"server exited with {srv.proc.returncode}: {srv.log_tail(1)[-120:]}"


def _oneline(r: Row) -> str:
    if r.status != "ok":
        return f"{r.label:<18} {r.client:<16} {r.status}"

    def us(x: float | None) -> str:
        return "       -" if x is None else f"{x:>8.0f}"

    return (
        f"{r.label:<18} {r.client:<16} {r.items_per_s:>12,.0f} items/s  p50 {us(r.p50_us)} µs"
        f"  p99 {us(r.p99_us)} µs  srv cpu {r.server_cpu_s}  errors {r.errors}"
    )


def bench_lmdb(plan: Plan, say: Callable[[str], None], sizes: list[int]) -> list[Row]:
    """py-lmdb alone, in a child process, for each transaction size and value size."""
    rows = []
    for size in sizes:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        cmd = [
            sys.executable,
            str(SCRIPTS / "lmdb_reference.py"),
            "--json",
            "--value-size",
            str(size),
            "--keyspace",
            str(plan.keyspace),
            "--duration",
            str(plan.duration),
            "--txn-size",
            *map(str, plan.lmdb_txn_sizes),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            rows.append(
                Row(
                    "lmdb_reference",
                    "lmdb",
                    0,
                    size,
                    "py-lmdb",
                    status=f"failed ({proc.stderr.strip()[-100:]})",
                )
            )
            continue
        data = json.loads(proc.stdout)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        total_s = sum(r["seconds"] for r in data["runs"])
        for r in data["runs"]:
            row = Row(
                "lmdb_reference",
                f"lmdb txn={r['txn_size']}",
                r["txn_size"],
                size,
                "py-lmdb",
                items_per_s=r["puts_per_s"],
                p50_us=r["txn_ms"] * 1000,
                latency_unit="mean per txn",
                seconds=r["seconds"],
                server_cpu_s=round(cpu * r["seconds"] / total_s, 3),
                extra={"fdatasync_us": data["fdatasync_us"]},
            )
            rows.append(row)
            say(
                f"lmdb_reference txn={r['txn_size']} {size} B: {r['puts_per_s']:,.0f} puts/s, "
                f"{r['txn_ms']:.2f} ms/txn (fdatasync {data['fdatasync_us']:.0f} µs)"
            )
    return rows


def _disk_bytes(path: str) -> tuple[int, int]:
    """(allocated bytes, apparent bytes) of every file under ``path``."""
    alloc = apparent = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            st = os.stat(os.path.join(root, name))
            alloc += st.st_blocks * 512
            apparent += st.st_size
    return alloc, apparent


def _sample_ok(
    port: int, keys: int, size: int, n: int = 100, protocol: str = "text", last: bool = False
) -> str | None:
    """Read ``n`` loaded keys back with one multi-get; None if all correct.

    ``last`` reads the ``n`` most recently written keys instead of random ones.
    """
    if last:
        ids = range(max(0, keys - n), keys)
        pair = codec(protocol).mget([key_for(i) for i in ids], size, True)
        ex = Exchange(pair[0], pair[1], (len(pair[1]),), len(ids))
    else:
        ex = build_exchange("mget", protocol, random.Random(7), keys, 1, size, True, mget_keys=n)
    with connect("127.0.0.1", port) as sock:
        return exchange_once(sock, ex)


def wait_visible(
    port: int, keys: int, size: int, protocol: str = "text", timeout: float = 10.0
) -> tuple[float, str | None]:
    """Poll from a fresh connection until freshly written keys read back.

    Acknowledged writes should be visible to every connection at once (Stig
    waits for their commit before answering such a read: docs/pov.md), but
    the harness does not assume it of any server: it checks, and reports how
    long it took (0.00 s expected).  Returns (seconds waited, last error or None).
    """
    t0 = time.monotonic()
    while True:
        err = _sample_ok(port, keys, size, protocol=protocol, last=True) or _sample_ok(
            port, keys, size, protocol=protocol
        )
        if err is None or time.monotonic() - t0 > timeout:
            return time.monotonic() - t0, err
        time.sleep(0.02)


def bench_scale(plan: Plan, say: Callable[[str], None], server: str = "stig") -> list[Row]:
    """Bulk-load ``plan.scale_keys`` keys into Stig, measure disk, RSS and restart."""
    spec = SERVERS[server]
    reason = spec.missing()
    if reason:
        return [Row(server, "scale-load", 0, 100, "-", status=f"skipped ({reason})")]
    if late := plan.out_of_time():
        return [Row(server, "scale-load", 0, 100, "-", status=late)]
    n, size = plan.scale_keys, 100
    row = Row(server, "scale-load", plan.batch_size, size, "loadgen bulk", durable=spec.durable)
    srv = RunningServer(spec, start_timeout=30)
    data_dir = srv.data_dir
    try:
        try:
            srv.start()
        except StartError as exc:
            row.status = f"skipped (did not start: {str(exc)[:100]})"
            return [row]
        style = "meta"
        ls = LoadSpec(
            port=srv.port,
            protocol="text",
            workload="batch",
            keyspace=n,
            connections=plan.connections,
            processes=plan.processes,
            value_size=size,
            batch_size=plan.batch_size,
            batch_style=style,
            server_pids=srv.pids,
            # a safety deadline only: the load ends when every key is written
            duration=max(5.0, min(1800.0, plan.remaining())),
        )
        if meta_err := probe(ls):  # no meta protocol yet: pipelined classic sets instead
            say(f"scale: meta batches refused ({meta_err[:80]}); using pipelined sets")
            if _died(srv, 0.5):  # the refusal killed it: start afresh
                srv.stop()
                srv.cleanup()
                srv = RunningServer(spec, start_timeout=30)
                data_dir = srv.data_dir
                srv.start()
                ls.port, ls.server_pids = srv.port, srv.pids
            style = ls.batch_style = "set"
            if err := probe(ls):
                row.status = f"skipped (probe: {err[:90]})"
                return [row]
        row.client = f"loadgen bulk {style}"
        say(
            f"scale: loading {n:,} keys x {size} B into {server} ({style} batches of "
            f"{plan.batch_size})"
        )
        guard = RssGuard(srv, plan.max_server_rss_mib)
        guard.start()
        try:
            res = run(ls, bulk_keys=n)
        finally:
            guard.stop()
        if guard.tripped:
            row.status = (
                f"failed ({guard.tripped} after {res['items']:,} keys at "
                f"{res['items_per_s']:,.0f} keys/s)"
            )
            return [row]
        if res["fatal"]:
            row.status = f"failed ({'; '.join(res['fatal'])[:100]})"
            return [row]
        row.items_per_s, row.p50_us, row.p99_us = res["items_per_s"], res["p50_us"], res["p99_us"]
        row.latency_unit, row.seconds = res["latency_unit"], res["seconds"]
        row.server_cpu_s, row.errors = res["server_cpu_s"], res["errors"]
        row.client_cpu_s, row.other_cpu_s = res["client_cpu_s"], res["other_cpu_s"]
        loaded = res["items"]
        rss_loaded, row.peak_rss_mib = rss_mib(srv.pid), peak_rss_mib(srv.pid)
        anon_loaded = (status_kib(srv.pid, "RssAnon") or 0) / 1024
        visible_s, check_before = wait_visible(srv.port, n, size)
        t = time.monotonic()
        srv.stop(timeout=60)
        stop_s = time.monotonic() - t
        alloc, apparent = _disk_bytes(data_dir)
        srv2 = RunningServer(spec, data_dir=data_dir, start_timeout=120)
        try:
            srv2.start()
            restart_s = srv2.ready_s
            t = time.monotonic()
            check_after = _sample_ok(srv2.port, n, size)
            first_hit_s = restart_s + (time.monotonic() - t)
            rss_restarted = rss_mib(srv2.pid)
        finally:
            srv2.stop()
        row.extra = {
            "keys": n,
            "loaded": loaded,
            "load_s": res["seconds"],
            "disk_bytes": alloc,
            "disk_apparent_bytes": apparent,
            "disk_bytes_per_key": alloc / max(1, loaded),
            "rss_after_load_mib": rss_loaded,
            "rss_anon_after_load_mib": anon_loaded,
            "rss_after_restart_mib": rss_restarted,
            "stop_s": stop_s,
            "restart_to_first_reply_s": restart_s,
            "restart_to_first_hit_s": first_hit_s,
            "visible_to_other_connections_s": visible_s,
            "readback_before_restart": check_before or "ok",
            "readback_after_restart": check_after or "ok",
        }
        if check_before or check_after:
            row.errors += 1
        say(
            "scale: "
            + ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.extra.items()
            )
        )
        return [row]
    finally:
        srv.stop()
        srv.cleanup()


class RssGuard(threading.Thread):
    """Kill the server if its RSS passes ``limit_mib`` (protects a shared machine).

    A bulk load of millions of keys into a server that keeps per-key memory
    could otherwise exhaust the machine; the row then fails with the reason.
    """

    def __init__(self, srv: RunningServer, limit_mib: float) -> None:
        super().__init__(daemon=True)
        self.srv, self.limit = srv, limit_mib
        self.tripped: str | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.25):
            rss = rss_mib(self.srv.pid)
            if rss is not None and rss > self.limit:
                self.tripped = f"server RSS {rss:.0f} MiB passed the {self.limit:.0f} MiB guard"
                self.srv.stop(timeout=2)
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def scale_table(rows: list[Row]) -> str:
    lines = [
        "| server | keys | load s | keys/s | disk B/key | RSS after load MiB (anon) | "
        "peak RSS MiB | restart→first reply s | read-back |",
        "|" + "---|" * 9,
    ]
    for r in rows:
        if r.status != "ok" or not r.extra:
            lines.append(f"| {r.server} | {r.status} |" + " |" * 7)
            continue
        e = r.extra
        lines.append(
            f"| {r.server} | {e['loaded']:,} | {e['load_s']:.1f} | {r.items_per_s:,.0f} | "
            f"{e['disk_bytes_per_key']:.0f} | {e['rss_after_load_mib']:.0f} "
            f"({e['rss_anon_after_load_mib']:.0f}) | "
            f"{r.peak_rss_mib:.0f} | {e['restart_to_first_reply_s']:.2f} | "
            f"{'ok' if e['readback_after_restart'] == 'ok' else 'FAILED'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short rows, 100 B only: < 2 minutes")
    mode.add_argument(
        "--smoke",
        action="store_true",
        help="the harness's own check: tiny rows (4 connections, 1k keys, 0.3 s), "
        "every code path once, < 30 s; its figures mean nothing",
    )
    ap.add_argument(
        "--only",
        action="append",
        choices=WORKLOAD_CHOICES,
        default=[],
        help="run only these workloads (repeatable)",
    )
    ap.add_argument(
        "--servers", default=None, help=f"comma-separated subset of: {','.join(SERVERS)}"
    )
    ap.add_argument("--duration", type=float, default=None, help="seconds per row")
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="before each row wait up to this long for other work on the machine "
        "to stop (default 0 smoke, 0.5 quick, 3 full)",
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="S",
        help="start no row after S seconds; later rows are reported skipped "
        "(default 25 smoke, 115 quick, 3600 full)",
    )
    ap.add_argument("--scale-keys", type=int, default=None, help="keys for the scale workload")
    ap.add_argument(
        "--max-server-rss-mib",
        type=float,
        default=4096.0,
        help="scale workload: stop the server if its RSS passes this",
    )
    ap.add_argument("--json", metavar="FILE", help="also write every row as JSON")
    a = ap.parse_args(argv)

    plan = Plan.make("smoke" if a.smoke else "quick" if a.quick else "full")
    plan.only = set(a.only)
    if a.servers:
        plan.servers = [s.strip() for s in a.servers.split(",") if s.strip()]
        unknown = set(plan.servers) - set(SERVERS)
        if unknown:
            ap.error(f"unknown servers: {', '.join(sorted(unknown))}")
    if a.duration:
        plan.duration = a.duration
    plan.max_server_rss_mib = a.max_server_rss_mib
    if a.quiet_wait is not None:
        plan.quiet_wait = a.quiet_wait
    if a.scale_keys:
        plan.scale_keys = a.scale_keys
    if a.budget is not None:
        plan.budget_s = a.budget
    # A plain `kill` of the bench must still stop its servers (they run in
    # sessions of their own): turn SIGTERM into the KeyboardInterrupt that
    # every `finally` below already handles.
    signal.signal(signal.SIGTERM, _terminate)

    t0 = time.monotonic()
    plan.start_clock()
    info = machine_info()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    say(
        f"{plan.mode} run on {info['nproc']} x {info['cpu']}, "
        f"kernel {info['kernel']}, load {info['loadavg'][0]:.2f}"
    )
    rows: list[Row] = []
    if (plan.wants("lmdb") or plan.wants("scale")) and not plan.wants("batch"):
        sizes = plan.sizes if plan.wants("lmdb") else [100]  # scale loads 100-byte values
        rows += bench_lmdb(plan, say, sizes)  # otherwise it runs just before batch rows
    if any(plan.wants(w) for w, _ in plan.workloads):
        rows += bench_servers([SERVERS[n] for n in plan.servers], plan, say)
    scale_rows: list[Row] = []
    if plan.wants("scale") and "stig" in plan.servers:
        scale_rows = bench_scale(plan, say)
        rows += scale_rows
    assign_ratios(rows, plan.batch_size)
    if plan.wants("transport") and "stig" in plan.servers:  # compared with stig tcp, not refs
        rows += transport_bench.bench_rows(plan.duration, say, plan.out_of_time)
    if plan.wants("repl") and "stig" in plan.servers:  # compared with stig alone, not refs
        rows += repl_bench.bench_rows(plan.duration, say, plan.out_of_time)
    info["loadavg_end"] = os.getloadavg()
    info["wall_s"] = round(time.monotonic() - t0, 1)

    print(
        f"\nStig benchmark ({plan.mode}, {time.strftime('%Y-%m-%d')}): {info['nproc']} cores "
        f"{info['cpu']}, kernel {info['kernel']}, Python {info['python']}; "
        f"Stig {info['stig']}; "
        f"{plan.connections} connections, {plan.processes} client processes, "
        f"{plan.duration:g}s per row after {plan.warmup:g}s warm-up; wall {info['wall_s']}s"
    )
    print(
        "items/s: keys read or written per second (a multi-get of 100 keys is 100 items); "
        f"p50/p99 per request at d=1, per pipeline batch otherwise, per {plan.batch_size}-item "
        "batch for batch rows; bare-trio gets are misses.\n"
    )
    print(table(rows))
    ratios = cpu_ratios(rows)
    if ratios:
        print("\nServer CPU per item, set ÷ get (same run, 100 B unless noted):\n")
        for line in ratios:
            print(
                f"- {line['server']} d={line['depth']} {line['value_size']}B: "
                f"{line['ratio']:.2f}× ({line['set_us']:.1f} µs per set, "
                f"{line['get_us']:.1f} µs per get)"
            )
    writers = [r for r in rows if r.status == "ok" and (r.extra or {}).get("writer_cpu_s")]
    if writers:
        print("\nThe writer process's CPU per item (its share of the server CPU above):\n")
        for r in writers:
            items = (r.extra or {}).get("items") or 0
            writer_s = (r.extra or {})["writer_cpu_s"]
            print(
                f"- {r.server} {r.workload} d={r.depth} {r.value_size}B: "
                f"{writer_s * 1e6 / items:.2f} µs per item ({writer_s} s over {items} items)"
                if items
                else f"- {r.server} {r.workload}: {writer_s} s"
            )
    if issue20 := targets_table(rows):
        print("\nIssue 20's targets (docs/performance.md), from this run's rows:\n")
        print(issue20)
    stale = [r for r in rows if r.workload == "pooled" and r.status == "ok"]
    if stale:
        print(
            "\nStale reads (pooled: set, then get on another connection; must be 0): "
            + ", ".join(f"{r.server} {(r.extra or {}).get('stale', '?')}" for r in stale)
        )
    if scale_rows:
        print("\nScale (100-byte values):\n")
        print(scale_table(scale_rows))
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {
                    "machine": info,
                    "plan": {
                        k: (sorted(v) if isinstance(v, set) else v)
                        for k, v in plan.__dict__.items()
                    },
                    "rows": [r.to_json() for r in rows],
                    "cpu_set_over_get": ratios,
                    # every process the run started (servers, load-generator workers),
                    # so a caller can check that none outlived it
                    "started_pids": sorted(
                        set(servers.STARTED_PIDS)
                        | set(loadgen.STARTED_PIDS)
                        | set(transport_bench.STARTED_PIDS)
                        | set(cond_bench.STARTED_PIDS)
                        | set(repl_bench.STARTED_PIDS)
                    ),
                },
                indent=2,
            )
        )
        say(f"wrote {a.json}")
    bad = [r for r in rows if r.status == "ok" and (r.errors or (r.extra or {}).get("stale"))]
    return 1 if bad else 0


def cpu_ratios(rows: list[Row]) -> list[dict]:
    """Server CPU per set divided by CPU per get, per server, depth and size.

    The cost of a write relative to a read on the same server in the same
    run: the machine's noise hits both rows alike.
    """
    per_item = {
        (r.server, r.workload, r.depth, r.value_size): r.cpu_us_per_item()
        for r in rows
        if r.status == "ok" and r.client == "loadgen"
    }
    out = []
    for (server, workload, depth, size), set_us in per_item.items():
        if workload != "set" or not set_us:
            continue
        get_us = per_item.get((server, "get", depth, size))
        if get_us:
            out.append(
                {
                    "server": server,
                    "depth": depth,
                    "value_size": size,
                    "set_us": set_us,
                    "get_us": get_us,
                    "ratio": set_us / get_us,
                }
            )
    return out


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; every server the run started has been stopped", file=sys.stderr)
        sys.exit(130)
