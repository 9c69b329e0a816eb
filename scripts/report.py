"""Benchmark rows: the reference each row is compared with, and the table.

Ratios are only meaningful within one run (the machine's 2 cores are shared
by server, client and whatever else runs), so every row is divided by a
reference measured in the same run:

* batch writes           -> ``lmdb_reference`` (py-lmdb alone, same batch size
                            and value size): the ceiling for durable batches;
* sets/mixes on a server that acknowledges only durable writes
                         -> Redis ``appendfsync always``, same workload;
* everything else        -> the bare trio server, same workload (its gets
                            are misses: a slightly cheaper reply);
* ``p99`` rows (open loop at half of a Stig shape's own peak) -> memcached's
                            ``p99`` row driven right after it at the same rate
                            (same value size, same ``peak_of`` shape): the
                            ratio is of **p99 latency** (lower is better;
                            issue 20's target at most 5), not of throughput.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Row:
    """One line of the result table."""

    server: str
    workload: str  # get, set, mix, mget, batch, scale-..., lmdb
    depth: int
    value_size: int
    client: str
    status: str = "ok"  # "ok", "skipped (...)", "failed (...)"
    items_per_s: float | None = None
    p50_us: float | None = None
    p99_us: float | None = None
    latency_unit: str = ""
    server_cpu_s: float | None = None
    client_cpu_s: float | None = None
    other_cpu_s: float | None = None
    peak_rss_mib: float | None = None
    errors: int = 0
    seconds: float | None = None  # the measured window the rates and CPU cover
    durable: bool = False
    ratio: float | None = None
    ref: str = ""
    extra: dict | None = None

    @property
    def label(self) -> str:
        if self.workload == "p99":
            shape = (self.extra or {}).get("peak_of", self.server)
            whose = "" if shape == self.server else f"{shape}'s "
            return f"p99 at ½ {whose}peak mix d=1 {self.value_size}B"
        if self.workload == "pooled":
            return f"pooled set, get elsewhere {self.value_size}B"
        if self.workload in ("get", "set", "mix", "mget"):
            return f"{self.workload} d={self.depth} {self.value_size}B"
        return f"{self.workload} {self.value_size}B" if self.value_size else self.workload

    def cpu_us_per_item(self) -> float | None:
        """Server CPU microseconds per item: what each key read/written cost."""
        if not self.server_cpu_s or not self.items_per_s or not self.seconds:
            return None
        return self.server_cpu_s / (self.items_per_s * self.seconds) * 1e6

    def to_json(self) -> dict:
        d = asdict(self)
        d["label"] = self.label
        d["cpu_us_per_item"] = self.cpu_us_per_item()
        return d


def _key(r: Row) -> tuple[str, int, int]:
    return (r.workload, r.depth, r.value_size)


def _p99_key(r: Row) -> tuple[int, str]:
    """A ``p99`` row's pair: its value size and the Stig shape whose half-peak rate it ran at."""
    return (r.value_size, (r.extra or {}).get("peak_of", r.server))


def assign_ratios(rows: list[Row], batch_size: int = 1000) -> None:
    """Fill ``ratio``/``ref`` of every ok row from references in the same run.

    Batch rows are compared with py-lmdb at ``batch_size`` puts per transaction.
    """
    ok = [r for r in rows if r.status == "ok" and r.items_per_s]
    bare = {_key(r): r for r in ok if r.server == "bare-trio" and r.client == "loadgen"}
    redis = {_key(r): r for r in ok if r.server == "redis-always" and r.client == "loadgen"}
    lmdb = {r.value_size: r for r in ok if r.server == "lmdb_reference" and r.depth == batch_size}
    p99_ref = {_p99_key(r): r for r in rows if r.server == "memcached" and r.workload == "p99"}
    for r in ok:
        ref: Row | None = None
        if r.workload == "p99":
            if r.server == "memcached":
                continue
            mc = p99_ref.get(_p99_key(r))
            if mc is not None and mc.status == "ok" and mc.p99_us and r.p99_us is not None:
                r.ratio, r.ref = r.p99_us / mc.p99_us, "memcached p99"
            else:  # say why the comparison is missing instead of leaving it blank
                why = mc.status if mc is not None else "skipped (no memcached p99 row)"
                r.extra = {**(r.extra or {}), "vs_memcached": why}
            continue
        if r.workload.startswith("batch") or r.workload == "scale-load":
            ref = lmdb.get(r.value_size)
        elif r.workload in ("set", "mix") and r.durable:
            ref = redis.get(_key(r))
        elif r.workload in ("get", "set", "mix", "mget"):
            ref = bare.get(_key(r))
        if ref is not None and ref is not r and ref.items_per_s:
            r.ratio = r.items_per_s / ref.items_per_s
            r.ref = ref.server


def _fmt(x: float | None, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def table(rows: list[Row]) -> str:
    """The result table as aligned plain text (also valid Markdown)."""
    head = [
        "server",
        "workload",
        "client",
        "items/s",
        "p50 µs",
        "p99 µs",
        "srv CPU s",
        "CPU µs/item",
        "peak RSS MiB",
        "vs reference",
        "errors",
        "other CPU s",
        "note",
    ]
    lines = []
    for r in rows:
        if r.status != "ok":
            lines.append([r.server, r.label, r.client] + ["-"] * 9 + [r.status])
            continue
        lines.append(
            [
                r.server,
                r.label,
                r.client,
                _fmt(r.items_per_s),
                _fmt(r.p50_us),
                _fmt(r.p99_us),
                _fmt(r.server_cpu_s, ".2f"),
                _fmt(r.cpu_us_per_item(), ".1f"),
                _fmt(r.peak_rss_mib, ".0f"),
                f"{r.ratio:.2f}× {r.ref}" if r.ratio is not None else "-",
                str(r.errors),
                _fmt(r.other_cpu_s, ".2f"),
                _note(r),
            ]
        )
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
        for i, h in enumerate(head)
    ]
    widths[-1] = len(head[-1])  # the free-text note is not padded
    out = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for line in lines:
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
    return "\n".join(out)


def _note(r: Row) -> str:
    """Free text for an ok row: why errors happened, what the client skipped."""
    notes = []
    extra = r.extra or {}
    if "stale" in extra:
        notes.append(f"stale reads: {extra['stale']}" + (" (must be 0)" if extra["stale"] else ""))
    if r.errors and extra.get("error_samples"):
        notes.append(f"first error: {extra['error_samples'][0][:100]}")
    if (
        r.p50_us
        and r.seconds
        and r.p50_us * 3 > r.seconds * 1e6
        and r.client.startswith("loadgen")
        and r.workload != "scale-load"
    ):
        notes.append("rough: the window was shorter than 3 median latencies")
    if extra.get("stalled"):
        notes.append(f"{extra['stalled']} connection(s) stalled at the end")
    if extra.get("vs_memcached"):
        notes.append(f"vs memcached: {extra['vs_memcached']}")
    offered = extra.get("offered_per_s")
    if offered and r.items_per_s is not None and r.items_per_s < 0.95 * offered * max(1, r.depth):
        notes.append(f"answered {r.items_per_s:,.0f}/s of {offered:,.0f}/s offered")
    if extra.get("unfinished"):
        notes.append(f"{extra['unfinished']} unanswered at the end (counted at their age)")
    if offered and (extra.get("send_lag_p99_us") or 0) > 1000:
        notes.append(f"client sent late: lag p99 {extra['send_lag_p99_us']:,.0f} µs")
    if extra.get("peak_for"):
        notes.append(f"Stig's peak for the {extra['peak_for']} rows")
    if extra.get("commits_per_1000_writes") is not None:
        notes.append(f"{extra['commits_per_1000_writes']} group commits per 1,000 writes")
    if "replication_log_on" in extra:
        notes.append(f"replication log {'on' if extra['replication_log_on'] else 'off'}")
    if extra.get("follower_cpu_s") is not None:
        notes.append(f"follower CPU {extra['follower_cpu_s']:.2f}s")
    if extra.get("get_misses"):
        notes.append(f"{extra['get_misses']} misses")
    if r.other_cpu_s and r.seconds and r.other_cpu_s > 0.1 * r.seconds and extra.get("other_top"):
        notes.append("busy: " + ", ".join(f"{name} {cpu:.1f}s" for name, cpu in extra["other_top"]))
    if r.client == "redis-benchmark":
        notes.append("replies not verified")
    return "; ".join(notes)
