"""Second-opinion clients written in C: memcaslap and redis-benchmark.

They are not the primary client (they do not verify replies the way
:mod:`loadgen` does, and they measure slightly different things), but they
show whether the Python load generator, not the server, limits a figure.

* memcaslap (libmemcached-tools): 2 threads, 50 concurrent connections, no
  pipelining, 100-byte values, 20-byte keys; a get-only run (its own warm-up
  stores part of the key space first, so some gets miss: the rate counts them)
  and a set-only run.  Rows are ``cmd_get`` or ``cmd_set`` / run time.
  memcaslap's keys begin with 0x10 bytes, which the protocol forbids; a
  server that rejects them (Stig does) gets a ``failed`` row saying so.
* redis-benchmark: 50 connections, random keys over the key space, 100-byte
  values, ``-P 1`` and ``-P 16``; its CSV gives rps and p50/p99.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from report import Row

from stig_testkit.procstat import cpu_seconds, peak_rss_mib

if TYPE_CHECKING:
    from servers import RunningServer, ServerSpec

MEMCASLAP_CFG = "key\n20 20 1\nvalue\n100 100 1\ncmd\n0 {set}\n1 {get}\n"


def _memcaslap(spec: ServerSpec, srv: RunningServer, duration: float, op: str) -> Row:
    row = Row(spec.name, op, 1, 100, "memcaslap", durable=spec.durable)
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as f:
        f.write(
            MEMCASLAP_CFG.format(
                set="1.0" if op == "set" else "0.0", get="1.0" if op == "get" else "0.0"
            )
        )
        cfg = f.name
    try:
        cpu0 = cpu_seconds(srv.pid) or 0.0
        secs = max(1, round(duration))
        proc = subprocess.run(
            [
                "memcaslap",
                "-s",
                f"127.0.0.1:{srv.port}",
                "-T",
                "2",
                "-c",
                "50",
                "-t",
                f"{secs}s",
                "-F",
                cfg,
            ],
            capture_output=True,
            text=True,
            timeout=secs + 60,
            start_new_session=True,
        )
        cpu1 = cpu_seconds(srv.pid) or 0.0
    except subprocess.TimeoutExpired:
        row.status = "failed (memcaslap timed out)"
        return row
    finally:
        Path(cfg).unlink(missing_ok=True)
    out = proc.stdout + proc.stderr
    rejected = re.search(r"^<?\d*\s*((?:CLIENT|SERVER)_ERROR[^\n]*)", out, re.M)
    if rejected or "didn't set success" in out:
        # memcaslap's keys start with 0x10 bytes; a server that enforces the
        # protocol's "no control characters in keys" rejects all of them.
        why = rejected.group(1).strip() if rejected else "sets not stored"
        row.status = f"failed (memcaslap requests rejected: {why[:60]}; its keys hold 0x10 bytes)"
        return row
    stats = dict(re.findall(r"^(cmd_get|cmd_set|get_misses): (\d+)", out, re.M))
    run_s = re.search(r"Run time: ([\d.]+)s", out)
    if not run_s or f"cmd_{op}" not in stats:
        row.status = f"failed (memcaslap: {out.strip()[-90:]})"
        return row
    seconds = float(run_s.group(1))
    if int(stats[f"cmd_{op}"]) == 0:
        row.status = f"failed (memcaslap did no {op}s: {out.strip()[-80:]})"
        return row
    row.items_per_s = int(stats[f"cmd_{op}"]) / seconds
    row.seconds = seconds
    # CPU covers memcaslap's warm-up too; charge it per op over everything it did.
    total_ops = int(stats.get("cmd_get", 0)) + int(stats.get("cmd_set", 0))
    row.server_cpu_s = round((cpu1 - cpu0) * int(stats[f"cmd_{op}"]) / max(1, total_ops), 3)
    row.peak_rss_mib = peak_rss_mib(srv.pid)
    row.extra = {"get_misses": int(stats.get("get_misses", 0)), "all_ops": total_ops}
    return row


def _redis_benchmark(
    spec: ServerSpec, srv: RunningServer, duration: float, op: str, depth: int, keyspace: int
) -> Row:
    row = Row(spec.name, op, depth, 100, "redis-benchmark", durable=spec.durable)
    # Enough requests for about `duration` seconds at a generous rate; capped by timeout.
    n = int(duration * (60_000 if depth == 1 else 400_000))
    cmd = [
        "redis-benchmark",
        "-h",
        "127.0.0.1",
        "-p",
        str(srv.port),
        "-c",
        "50",
        "-n",
        str(n),
        "-r",
        str(keyspace),
        "-d",
        "100",
        "-P",
        str(depth),
        "-t",
        op,
        "--csv",
    ]
    cpu0 = cpu_seconds(srv.pid) or 0.0
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=duration * 6 + 30, start_new_session=True
        )
    except subprocess.TimeoutExpired:
        row.status = "failed (redis-benchmark timed out)"
        return row
    cpu1 = cpu_seconds(srv.pid) or 0.0
    recs = list(csv.DictReader(io.StringIO(proc.stdout)))
    if proc.returncode != 0 or not recs:
        row.status = f"failed (redis-benchmark: {(proc.stderr or proc.stdout).strip()[-90:]})"
        return row
    r = recs[0]
    row.items_per_s = float(r["rps"])
    row.p50_us = float(r.get("p50_latency_ms") or 0) * 1000 or None
    row.p99_us = float(r.get("p99_latency_ms") or 0) * 1000 or None
    row.latency_unit = "per request"
    row.seconds = n / row.items_per_s
    row.server_cpu_s = round(cpu1 - cpu0, 3)
    row.peak_rss_mib = peak_rss_mib(srv.pid)
    return row


def rows_for(spec: ServerSpec, srv: RunningServer, duration: float, keyspace: int) -> list[Row]:
    """The extra-client rows that apply to ``spec`` (none if the tool is absent)."""
    rows: list[Row] = []
    if spec.protocol == "text" and spec.hit and shutil.which("memcaslap"):
        rows += [_memcaslap(spec, srv, duration, "get"), _memcaslap(spec, srv, duration, "set")]
    if spec.protocol == "resp" and shutil.which("redis-benchmark"):
        ops = ("set",) if spec.name == "redis-everysec" else ("get", "set")
        for op in ops:
            for depth in (1, 16):
                rows.append(_redis_benchmark(spec, srv, duration, op, depth, keyspace))
    return rows
