"""Issue 20's targets, computed from the rows of one benchmark run.

``scripts/bench.py`` prints them after its table (``targets_table``), so the
figures of docs/performance.md's "Issue 20's targets" come straight from a
run instead of being divided by hand.  Every target is a ratio of two rows
of the same run (or, for the writer, a CPU figure of one row); a target
whose rows the run does not have says which row is missing instead of
guessing.  The rows each target needs: ``--only get --only set --only batch
--only pooled --only p99`` over ``--servers
memcached,redis-always,bare-trio,stig,stig-durable,stig-w1,stig-w2,stig-w2-durable``.

The write ceiling: the writer process is the one serial part of ``--workers``
(everything else is spread over the workers), so with a core of its own it
commits at most 1 / (its CPU per committed set) sets per second, on a box
with cores to spare (16, say) for the workers around it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from report import Row

SIZE = 100  # the targets are stated for 100-byte values
#: (workload, depth, the most ``--workers 1`` may cost per item, times bare trio's CPU)
CPU_TARGETS = (("get", 1, 1.4), ("get", 16, 1.8), ("set", 1, 2.0), ("set", 16, 3.0))
#: (workload, depth, the least ``--workers 2`` must serve, times ``--workers 1``)
SCALING_TARGETS = (("get", 16, 1.6), ("set", 16, 1.4))
WRITER_US_PER_SET = 5.0  # the most the writer process may spend per committed set
BATCH_VS_LMDB = 1.0  # batch items/s at least py-lmdb alone's
DURABLE_VS_REDIS = 0.5  # durable set d=16 at least Redis appendfsync always's
P99_VS_MEMCACHED = 5.0  # p99 at half a shape's peak at most memcached's at the same rate
SHAPES = ("stig", "stig-w1", "stig-w2")


@dataclass(frozen=True)
class Target:
    """One line of the targets table: what is asked, what was measured, and whether it holds."""

    asked: str
    measured: str  # the figures and their ratio, or which row is missing
    met: bool | None  # None: not measured in this run


def _row(rows: list[Row], server: str, workload: str, depth: int) -> Row | None:
    """The run's ok row of ``server`` for ``workload`` at ``depth`` and 100 B, or None."""
    return next(
        (
            r
            for r in rows
            if r.server == server
            and r.workload == workload
            and r.depth == depth
            and r.value_size == SIZE
            and r.status == "ok"
            and r.items_per_s
            and r.client.startswith("loadgen")
        ),
        None,
    )


def _missing(asked: str, *needed: str) -> Target:
    return Target(asked, "not measured (no ok row: " + ", ".join(needed) + ")", None)


def _per_set_writer_us(row: Row) -> float | None:
    extra = row.extra or {}
    items, writer_s = extra.get("items"), extra.get("writer_cpu_s")
    return writer_s * 1e6 / items if items and writer_s is not None else None


def targets(rows: list[Row]) -> Iterator[Target]:
    """Every target of issue 20 that this run's rows can answer, in the issue's order."""
    for workload, depth, limit in CPU_TARGETS:
        asked = f"{workload} d={depth}: `--workers 1` CPU ≤ {limit}× bare trio"
        w1, bare = _row(rows, "stig-w1", workload, depth), _row(rows, "bare-trio", workload, depth)
        w1_us = w1.cpu_us_per_item() if w1 else None
        bare_us = bare.cpu_us_per_item() if bare else None
        if not w1_us or not bare_us:
            yield _missing(asked, f"stig-w1 and bare-trio {workload} d={depth}")
            continue
        ratio = w1_us / bare_us
        yield Target(asked, f"{w1_us:.1f} ÷ {bare_us:.1f} µs = {ratio:.2f}×", ratio <= limit)
    for workload, depth, limit in SCALING_TARGETS:
        asked = f"{workload} d={depth}: `--workers 2` ÷ `--workers 1` ≥ {limit}×"
        w1, w2 = _row(rows, "stig-w1", workload, depth), _row(rows, "stig-w2", workload, depth)
        if not w1 or not w2 or not w1.items_per_s or not w2.items_per_s:
            yield _missing(asked, f"stig-w1 and stig-w2 {workload} d={depth}")
            continue
        ratio = w2.items_per_s / w1.items_per_s
        yield Target(
            asked,
            f"{w2.items_per_s / 1e3:,.1f}k ÷ {w1.items_per_s / 1e3:,.1f}k = {ratio:.2f}×",
            ratio >= limit,
        )
    yield from _writer(rows)
    yield from _vs_reference(rows, ("batch", 1), SHAPES, BATCH_VS_LMDB, "batch", "py-lmdb alone")
    yield from _vs_reference(
        rows,
        ("set", 16),
        ("stig-durable", "stig-w2-durable"),
        DURABLE_VS_REDIS,
        "durable set d=16",
        "Redis `appendfsync always`",
    )
    yield from _p99(rows)
    pooled = [r for r in rows if r.workload == "pooled" and r.status == "ok"]
    if not pooled:
        yield _missing("0 stale reads (pooled)", "pooled")
    else:
        stale = {r.server: (r.extra or {}).get("stale") for r in pooled}
        yield Target(
            "0 stale reads (pooled)",
            ", ".join(f"{server} {n}" for server, n in stale.items()),
            all(n == 0 for n in stale.values()),
        )


def _writer(rows: list[Row]) -> Iterator[Target]:
    asked = f"writer CPU per committed set ≤ {WRITER_US_PER_SET:g} µs (set d=16)"
    for shape in ("stig-w1", "stig-w2"):
        row = _row(rows, shape, "set", 16)
        us = _per_set_writer_us(row) if row else None
        if us is None:
            yield _missing(f"{asked}, {shape}", f"{shape} set d=16 with its writer's CPU")
            continue
        yield Target(
            f"{asked}, {shape}",
            f"{us:.2f} µs: a write ceiling of {1e6 / us / 1e3:,.0f}k sets/s with the writer "
            "on a core of its own (16 cores: the workers on the other 15)",
            us <= WRITER_US_PER_SET,
        )


def _vs_reference(
    rows: list[Row],
    row_key: tuple[str, int],
    servers: tuple[str, ...],
    limit: float,
    what: str,
    reference: str,
) -> Iterator[Target]:
    """Targets on the ratio ``report.assign_ratios`` gave a row (items/s ÷ its
    reference's): ``row_key`` is the rows' (workload, depth)."""
    for server in servers:
        asked = f"{what}: {server} ≥ {limit:.1f}× {reference}"
        row = _row(rows, server, *row_key)
        if row is None or row.ratio is None or not row.items_per_s:
            yield _missing(asked, f"{server} {what} and its reference")
            continue
        reference_per_s = row.items_per_s / row.ratio
        yield Target(
            asked,
            f"{row.items_per_s / 1e3:,.1f}k ÷ {reference_per_s / 1e3:,.1f}k = {row.ratio:.2f}×",
            row.ratio >= limit,
        )


def _p99(rows: list[Row]) -> Iterator[Target]:
    """p99 at half of each shape's own peak against memcached's at the same rate,
    with each server's CPU per request in those rows."""
    for shape in SHAPES:
        asked = f"p99 at ½ {shape}'s peak ≤ {P99_VS_MEMCACHED:g}× memcached's"
        row = _row(rows, shape, "p99", 1)
        mc = next(
            (
                r
                for r in rows
                if r.server == "memcached"
                and r.workload == "p99"
                and r.status == "ok"
                and (r.extra or {}).get("peak_of") == shape
            ),
            None,
        )
        if row is None or mc is None or row.ratio is None or not row.p99_us or not mc.p99_us:
            yield _missing(asked, f"{shape} p99 and memcached's at its rate")
            continue
        rate = (row.extra or {}).get("offered_per_s") or 0
        cpu, mc_cpu = row.cpu_us_per_item(), mc.cpu_us_per_item()
        # The target times each request from its scheduled send; a starved
        # client sends late and charges its lag to both servers alike, which
        # flatters the ratio: timed from the actual send, beside it.
        sent, mc_sent = (r.extra.get("p99_from_send_us") if r.extra else None for r in (row, mc))
        from_send = (
            f" (from the actual send {sent:,.0f} ÷ {mc_sent:,.0f} µs = {sent / mc_sent:.2f}×)"
            if sent and mc_sent
            else ""
        )
        yield Target(
            asked,
            f"at {rate:,.0f}/s: {row.p99_us:,.0f} ÷ {mc.p99_us:,.0f} µs = {row.ratio:.2f}×"
            f"{from_send}; server CPU per request {cpu or 0:.1f} µs (memcached {mc_cpu or 0:.1f})",
            row.ratio <= P99_VS_MEMCACHED,
        )


def targets_table(rows: list[Row]) -> str:
    """The targets as a Markdown table (only the targets this run measured)."""
    lines = ["| target | measured | met? |", "|---|---|---|"]
    unmeasured = []
    for t in targets(rows):
        if t.met is None:
            unmeasured.append(t.asked)
            continue
        lines.append(f"| {t.asked} | {t.measured} | {'**yes**' if t.met else 'no'} |")
    if len(lines) == 2:
        return ""
    if unmeasured:
        lines.append(f"\nNot measured in this run: {'; '.join(unmeasured)}.")
    return "\n".join(lines)
