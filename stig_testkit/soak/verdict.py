"""Did the soak hold?  Nothing grew without bound, and no well-behaved client saw an error.

Growth is judged by comparing the **last third** of the run with the
**middle third** (the first third holds the ramp-up and the warming of
caches and the LMDB file, which may grow and then level off).  A figure's
level in a third is, for what is held (memory, fds, threads, the LMDB file,
items), the peak of its samples there, so a step up late in the run counts;
for what flows (lag, pending bytes, connections, latency), the median, so
one slow sample (a neighbour's burst on a shared machine) does not decide
it.  It has grown without bound when

    level(last third) > level(middle third) × (1 + relative) + absolute

with the tolerances of :data:`TOLERANCES`: a leak of a steady rate shows in
a 30-minute run as a last third about a tenth above its middle third plus
the leak of ten minutes, so the tolerances are what a flat figure on a
busy shared 2-core box was seen to wander (docs/soak.md).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import attrs


@attrs.frozen
class Tolerance:
    relative: float
    absolute: float
    unit: str
    held: bool = False  # judged by its peak in each third, not its median

    def level(self, values: list[float]) -> float:
        return max(values) if self.held else statistics.median(values)


TOLERANCES: dict[str, Tolerance] = {
    "rss_mib": Tolerance(0.10, 16, "MiB", held=True),
    "rss_anon_mib": Tolerance(0.10, 16, "MiB", held=True),
    "server_fds": Tolerance(0.05, 20, "", held=True),
    "server_threads": Tolerance(0.0, 4, "", held=True),
    "curr_connections": Tolerance(0.05, 20, ""),
    "commit_lag_ms": Tolerance(1.00, 50, "ms"),
    "uncommitted_mib": Tolerance(0.50, 8, "MiB"),
    "pending_promotion_mib": Tolerance(0.50, 8, "MiB"),
    "open_run_mib": Tolerance(0.50, 8, "MiB"),
    "held_snapshots": Tolerance(0.50, 16, ""),
    "keys_in_flight": Tolerance(0.50, 64, ""),
    "disk_mib": Tolerance(0.10, 16, "MiB", held=True),
    "curr_items": Tolerance(0.05, 100, "", held=True),
    "probe_p50_ms": Tolerance(1.00, 5, "ms"),
    "probe_p99_ms": Tolerance(2.00, 50, "ms"),
}


@attrs.frozen
class Figure:
    """One judged column: its first sample, middle and last third levels, peak."""

    name: str
    start: float
    middle: float
    end: float
    peak: float
    bound: float

    @property
    def grew(self) -> bool:
        return self.end > self.bound


def thirds(rows: Sequence[dict[str, float]]) -> tuple[list[dict[str, float]], ...]:
    """The rows of the first, middle and last third of the run's time."""
    if not rows:
        return [], [], []
    t0, t1 = rows[0]["t_s"], rows[-1]["t_s"]
    cut1, cut2 = t0 + (t1 - t0) / 3, t0 + 2 * (t1 - t0) / 3
    return (
        [r for r in rows if r["t_s"] < cut1],
        [r for r in rows if cut1 <= r["t_s"] < cut2],
        [r for r in rows if r["t_s"] >= cut2],
    )


def figures(rows: Sequence[dict[str, float]]) -> list[Figure]:
    """Each judged column of ``rows`` (at least three samples a third are needed to judge)."""
    _first, middle, last = thirds(rows)
    out = []
    for name, tol in TOLERANCES.items():
        mid = tol.level([r[name] for r in middle])
        end = tol.level([r[name] for r in last])
        out.append(
            Figure(
                name,
                rows[0][name],
                mid,
                end,
                max(r[name] for r in rows),
                mid * (1 + tol.relative) + tol.absolute,
            )
        )
    return out


@attrs.frozen
class Verdict:
    ok: bool
    reasons: list[str]
    figures: list[Figure]

    def line(self, summary: str) -> str:
        """The soak's last line."""
        if self.ok:
            return f"SOAK OK {summary}"
        return "SOAK FAILED: " + "; ".join(self.reasons)


def judge(
    rows: Sequence[dict[str, float]],
    wb_errors: int,
    violations: int,
    server_exit: int | None,
    tracebacks: int,
) -> Verdict:
    """The verdict on a finished soak."""
    reasons: list[str] = []
    _first, middle, last = thirds(rows)
    if len(middle) < 3 or len(last) < 3:
        return Verdict(False, [f"too few samples to judge ({len(rows)})"], [])
    found = figures(rows)
    for fig in found:
        if fig.grew:
            tol = TOLERANCES[fig.name]
            reasons.append(
                f"{fig.name} grew: last third {fig.end:g} > middle third {fig.middle:g}"
                f" × {1 + tol.relative:g} + {tol.absolute:g}{tol.unit}"
            )
    if violations:
        reasons.append(f"{violations} torn or aborted transaction reads")
    if wb_errors:
        reasons.append(f"{wb_errors} errors reached well-behaved clients")
    for part, name in ((middle, "middle"), (last, "last")):
        if not any(r["wb_ops_per_s"] > 0 for r in part):
            reasons.append(f"no well-behaved operation completed in the {name} third")
    if server_exit != 0:
        reasons.append(f"server did not stop cleanly (exit status {server_exit})")
    if tracebacks:
        reasons.append(f"server log holds {tracebacks} tracebacks")
    return Verdict(not reasons, reasons, found)
