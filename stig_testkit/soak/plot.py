"""The soak's PNG: each recorded figure over time, one panel per quantity.

matplotlib is imported here only (the ``bench`` extra), so the rest of the
soak runs without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("server RSS (MiB)", ("rss_mib", "rss_anon_mib", "rss_file_mib")),
    ("commit lag (ms)", ("commit_lag_ms",)),
    ("open connections", ("curr_connections",)),
    ("probe latency (ms)", ("probe_p50_ms", "probe_p99_ms")),
    ("uncommitted bytes (MiB)", ("uncommitted_mib", "pending_promotion_mib", "open_run_mib")),
    ("server fds, threads", ("server_fds", "server_threads")),
    ("LMDB file (MiB)", ("disk_mib",)),
    ("held snapshots, keys in flight", ("held_snapshots", "keys_in_flight")),
    ("paused / waiting connections", ("paused_connections", "open_run_waiting")),
    ("commands/s, well-behaved ops/s", ("cmds_per_s", "wb_ops_per_s")),
    ("CPU (% of a core)", ("server_cpu_pct", "loadgen_cpu_pct", "others_cpu_pct")),
    ("MiB/s read, written", ("read_mib_per_s", "written_mib_per_s")),
)


def plot(rows: Sequence[dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 3
    lines = -(-len(PANELS) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(15, 3 * lines), sharex=True)
    minutes = [r["t_s"] / 60 for r in rows]
    for ax, (label, names) in zip(axes.flat, PANELS, strict=False):
        for name in names:
            ax.plot(minutes, [r[name] for r in rows], label=name, linewidth=0.9)
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        if len(names) > 1:
            ax.legend(fontsize=7, loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel("minutes")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
