"""Smoke test of the benchmark harness, not a benchmark: no speed is asserted.

Runs ``scripts/bench.py --smoke`` (4 connections, 1k keys, 0.3 s rows) against
Stig and the bare trio server, with memcached and Redis hidden from ``PATH``
so the harness must report them skipped rather than fail or fake them (also
the memcached side of the fixed-rate ``p99`` comparison, while Stig's own
fixed-rate row still runs).  It
checks that the harness itself works: it exits 0, prints the table, every
row is present with its status, every reply was verified without error, and
no process it started and no temporary directory it made outlives it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from stig_testkit.process import child_env

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "scripts" / "bench.py"
OUR_PROCESSES = ("bench.py", "bare_trio_server", "stig", "memcached", "redis", "lmdb_reference")


def _running(pid: int) -> str | None:
    """The command line of ``pid`` if it is one of ours and still running (not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        return None
    return cmd if any(name in cmd for name in OUR_PROCESSES) else None


def test_bench_smoke(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out_json = tmp_path / "bench.json"
    env = child_env(
        # Only the interpreter's own directory: memcached and redis-server are
        # not found, whether or not this machine has them.
        PATH=str(Path(sys.executable).parent),
        TMPDIR=str(tmp),
    )
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--smoke",
            "--servers",
            "stig,bare-trio,memcached,redis-always",
            "--json",
            str(out_json),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| server" in proc.stdout and "vs reference" in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]

    data = json.loads(out_json.read_text())
    rows = data["rows"]
    by = {(r["server"], r["workload"], r["depth"]): r for r in rows}
    for server in ("memcached", "redis-always"):
        status = by[(server, "*", 1)]["status"]
        assert status.startswith("skipped (") and "not installed" in status, status
    for row in rows:
        assert row["label"] in proc.stdout or row["server"] not in proc.stdout
        if row["status"] == "ok":
            assert row["errors"] == 0, row  # every reply verified and correct
            assert row["items_per_s"] and row["items_per_s"] > 0, row
    for workload, depth in (("get", 1), ("get", 4), ("set", 1), ("mget", 1), ("batch", 1)):
        assert by[("bare-trio", workload, depth)]["status"] == "ok", by[
            ("bare-trio", workload, depth)
        ]
    for workload, depth in (("get", 1), ("get", 4), ("set", 1), ("mget", 1)):
        assert by[("stig", workload, depth)]["status"] == "ok", by[("stig", workload, depth)]
    # The pooled visibility row: a write answered on one connection, read on
    # another, never stale; only for servers that store (not bare-trio).
    pooled = by[("stig", "pooled", 1)]
    assert pooled["status"] == "ok" and pooled["extra"]["stale"] == 0, pooled
    assert "stale reads: 0" in proc.stdout, proc.stdout
    assert ("bare-trio", "pooled", 1) not in by
    assert any(
        r["server"] == "stig" and r["depth"] == 1 and r["ratio"] > 0
        for r in data["cpu_set_over_get"]
    ), data["cpu_set_over_get"]
    # p99 at half of Stig's peak: the peak (a closed-loop mix row), Stig's own
    # open-loop row at half that rate, and memcached's, skipped here, so the
    # comparison says why it is missing instead of showing a ratio.
    peak = by[("stig", "mix", 1)]
    assert peak["status"] == "ok" and peak["extra"]["peak_for"] == "p99", peak
    p99 = by[("stig", "p99", 1)]
    assert p99["status"] == "ok", p99
    assert p99["extra"]["offered_per_s"] == peak["items_per_s"] / 2, (p99, peak)
    assert p99["client"].startswith("loadgen fixed "), p99
    assert "from its scheduled send time" in p99["latency_unit"], p99
    assert p99["p50_us"] is not None and p99["p99_us"] >= p99["p50_us"], p99
    assert p99["ratio"] is None and "not installed" in p99["extra"]["vs_memcached"], p99
    mc = by[("memcached", "p99", 1)]["status"]
    assert mc.startswith("skipped (") and "not installed" in mc, mc
    assert "vs memcached: skipped (" in proc.stdout, proc.stdout
    assert p99["extra"]["peak_of"] == "stig" == by[("memcached", "p99", 1)]["extra"]["peak_of"]
    # Issue 20's targets, from the run's rows: here only the pooled one has its rows.
    assert "Issue 20's targets" in proc.stdout, proc.stdout
    assert "| 0 stale reads (pooled) | stig 0 | **yes** |" in proc.stdout, proc.stdout
    assert "Not measured in this run: get d=1: `--workers 1` CPU" in proc.stdout, proc.stdout
    # Batches use Stig's meta and binary protocols, which work: a failed row fails.
    batch = by[("stig", "batch", 1)]["status"]
    assert batch == "ok", batch
    assert any(r["server"] == "lmdb_reference" and r["status"] == "ok" for r in rows)
    scale = next(r for r in rows if r["server"] == "stig" and r["workload"] == "scale-load")
    assert scale["status"] == "ok", scale
    assert scale["extra"]["readback_after_restart"] == "ok"
    assert scale["extra"]["loaded"] == data["plan"]["scale_keys"]

    # Transport rows: Stig over TCP, TLS and a unix socket, the same client;
    # TLS needs openssl, hidden here, so it says so.  (The run's time budget
    # may skip them on a slow machine: then they say that instead.)
    for transport in ("tcp", "tls", "unix"):
        for workload in ("get", "set"):
            row = by[(f"stig {transport}", workload, 16)]
            assert row["status"] == "ok" or row["status"].startswith("skipped ("), row
    tls = by[("stig tls", "get", 16)]["status"]
    assert "openssl not installed" in tls or "time budget" in tls, tls

    # Replicated writes: Stig alone (and durable), with a follower, with --min-replica-acks 1.
    for mode in ("alone", "durable", "async", "sync"):
        for depth in (1, 16):
            row = by[(f"stig {mode}", f"repl text set d={depth} 100B", depth)]
            assert row["status"] == "ok" or row["status"].startswith("skipped ("), row
            assert row["status"] != "ok" or row["errors"] == 0, row

    started = data["started_pids"]
    assert started, "the harness reported no processes"
    left = {pid: cmd for pid in started if (cmd := _running(pid))}
    assert not left, f"still running after the bench exited: {left}"
    assert not list(tmp.iterdir()), f"temporary files left behind: {list(tmp.iterdir())}"
