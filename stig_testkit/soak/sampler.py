"""One row of the soak's CSV every few seconds: the server from /proc and ``stats``,
the load processes' tallies, the probe's latencies.

Counters that only grow (commands, bytes, commits) are written as rates over
the sample; levels (memory, lag, connections, pending bytes) as they are.
"""

from __future__ import annotations

import os
import time
from typing import Any

from stig_testkit.procstat import cpu_seconds, status_kib, system_busy_seconds
from stig_testkit.soak.wire import Wire

MIB = 1024 * 1024

COLUMNS = (
    "t_s",
    "rss_mib",
    "rss_anon_mib",
    "rss_file_mib",
    "server_fds",
    "server_threads",
    "server_cpu_pct",
    "loadgen_cpu_pct",
    "others_cpu_pct",
    "curr_connections",
    "total_connections",
    "rejected_connections",
    "commit_lag_ms",
    "uncommitted_mib",
    "pending_promotion_mib",
    "open_run_mib",
    "open_run_waiting",
    "paused_connections",
    "held_snapshots",
    "keys_in_flight",
    "disk_mib",
    "curr_items",
    "commits_per_s",
    "cmds_per_s",
    "read_mib_per_s",
    "written_mib_per_s",
    "probe_p50_ms",
    "probe_p99_ms",
    "probe_max_ms",
    "probe_ops",
    "wb_ops_per_s",
    "wb_errors",
    "violations",
    "atomic_checks",
    "hostile_lives",
    "read_waits",
    "pauses",
    "open_run_waits",
    "wait_refusals",
    "failed_commits",
)


def parse_stats(data: bytes) -> dict[str, str]:
    """The ``STAT name value`` lines of a ``stats`` reply, as a dict."""
    return {
        parts[1].decode(): parts[2].decode()
        for parts in (line.split(b" ", 2) for line in data.split(b"\r\n"))
        if len(parts) == 3 and parts[0] == b"STAT"
    }


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def read_stats(wire: Wire) -> dict[str, str]:
    """``stats`` over an open connection."""
    await wire.send(b"stats\r\n")
    lines = []
    while (line := await wire.line()) != b"END":
        lines.append(line)
    return parse_stats(b"\r\n".join(lines))


def proc_figures(pid: int) -> dict[str, float]:
    """Resident memory (all, anonymous, file-backed: LMDB's map is a file), open fds,
    threads and CPU seconds of ``pid``."""
    return {
        "rss_mib": (status_kib(pid, "VmRSS") or 0) / 1024,
        "rss_anon_mib": (status_kib(pid, "RssAnon") or 0) / 1024,
        "rss_file_mib": (status_kib(pid, "RssFile") or 0) / 1024,
        "server_fds": len(os.listdir(f"/proc/{pid}/fd")),
        "server_threads": status_kib(pid, "Threads") or 0,  # a count, not kB
        "cpu_s": cpu_seconds(pid) or 0.0,
    }


class Sampler:
    """Turns successive readings into CSV rows (rates need the previous reading)."""

    def __init__(self) -> None:
        self._last: dict[str, float] | None = None

    def row(
        self,
        t: float,
        proc: dict[str, float],
        stats: dict[str, str],
        load: dict[str, Any],
        probe_ms: list[float],
        probe_errors: int,
    ) -> dict[str, float]:
        def stat(name: str) -> float:
            return float(stats.get(name, 0))

        totals = {
            "t": t,
            "server_cpu": proc["cpu_s"],
            "loadgen_cpu": load["cpu_s"] + time.process_time(),
            "machine_busy": system_busy_seconds(),
            "commits": stat("stig_commits"),
            "cmds": stat("cmd_get") + stat("cmd_set") + stat("cmd_touch"),
            "read": stat("bytes_read"),
            "written": stat("bytes_written"),
            "wb_ops": float(sum(load["ops"].values())),
        }
        last = self._last or totals
        span = max(t - last["t"], 1e-9)
        self._last = totals

        def rate(name: str, scale: float = 1.0) -> float:
            return (totals[name] - last[name]) / span / scale

        return {
            "t_s": round(t, 1),
            "rss_mib": round(proc["rss_mib"], 1),
            "rss_anon_mib": round(proc["rss_anon_mib"], 1),
            "rss_file_mib": round(proc["rss_file_mib"], 1),
            "server_fds": proc["server_fds"],
            "server_threads": proc["server_threads"],
            "server_cpu_pct": round(rate("server_cpu") * 100, 1),
            "loadgen_cpu_pct": round(rate("loadgen_cpu") * 100, 1),
            "others_cpu_pct": round(
                (rate("machine_busy") - rate("server_cpu") - rate("loadgen_cpu")) * 100, 1
            ),
            "curr_connections": stat("curr_connections"),
            "total_connections": stat("total_connections"),
            "rejected_connections": stat("rejected_connections"),
            "commit_lag_ms": stat("stig_commit_lag_ms"),
            "uncommitted_mib": round(stat("stig_uncommitted_bytes") / MIB, 2),
            "pending_promotion_mib": round(stat("stig_pending_promotion_bytes") / MIB, 2),
            "open_run_mib": round(stat("stig_open_run_bytes") / MIB, 2),
            "open_run_waiting": stat("stig_open_run_waiting"),
            "paused_connections": stat("stig_paused_connections"),
            "held_snapshots": stat("stig_held_snapshots"),
            "keys_in_flight": stat("stig_keys_in_flight"),
            "disk_mib": round(stat("stig_disk_bytes") / MIB, 1),
            "curr_items": stat("curr_items"),
            "commits_per_s": round(rate("commits"), 1),
            "cmds_per_s": round(rate("cmds"), 1),
            "read_mib_per_s": round(rate("read", MIB), 2),
            "written_mib_per_s": round(rate("written", MIB), 2),
            "probe_p50_ms": round(percentile(probe_ms, 0.50), 2),
            "probe_p99_ms": round(percentile(probe_ms, 0.99), 2),
            "probe_max_ms": round(max(probe_ms, default=0.0), 2),
            "probe_ops": len(probe_ms),
            "wb_ops_per_s": round(rate("wb_ops"), 1),
            "wb_errors": sum(load["errors"].values()) + probe_errors,
            "violations": load["violations"],
            "atomic_checks": load["atomic_checks"],
            "hostile_lives": load["hostile_lives"],
            "read_waits": stat("stig_read_waits"),
            "pauses": stat("stig_pauses"),
            "open_run_waits": stat("stig_open_run_waits"),
            "wait_refusals": stat("stig_open_run_wait_refusals"),
            "failed_commits": stat("stig_failed_commits"),
        }
