"""The soak's judge (stig_testkit/soak/verdict.py) on made-up runs: it passes a flat
run and fails a leak, an error, a torn read and an unclean stop, each for its
own stated reason."""

from __future__ import annotations

from stig_testkit.soak.sampler import COLUMNS
from stig_testkit.soak.verdict import TOLERANCES, judge


def _run(samples: int = 90, **slopes: float) -> list[dict[str, float]]:
    """Rows every 20 s, every figure flat at 100 (plus ``slope`` per sample) and a
    little noise; the load keeps running."""
    rows = []
    for i in range(samples):
        row = dict.fromkeys(COLUMNS, 100.0)
        row.update(t_s=20.0 * i, wb_ops_per_s=500.0)
        for name in TOLERANCES:
            row[name] = 100.0 + (3 if i % 2 else -3) + slopes.get(name, 0.0) * i
        rows.append(row)
    return rows


def test_a_flat_run_holds() -> None:
    verdict = judge(_run(), wb_errors=0, violations=0, server_exit=0, tracebacks=0)
    assert verdict.ok, verdict.reasons
    assert verdict.line("x") == "SOAK OK x"


def test_a_steady_leak_is_growth_without_bound() -> None:
    # 6 MiB and 3 fds a minute for 30 minutes: the last third's median is 60 MiB
    # and 30 fds above the middle third's (bounds 10 % + 16 MiB, 5 % + 20); half
    # that many fds would stay within bounds.
    rows = _run(rss_mib=2.0, server_fds=1.0)
    verdict = judge(rows, wb_errors=0, violations=0, server_exit=0, tracebacks=0)
    assert not verdict.ok
    assert [r.split(" grew")[0] for r in verdict.reasons] == ["rss_mib", "server_fds"]
    assert verdict.line("x").startswith("SOAK FAILED: rss_mib grew: last third ")


def test_a_late_step_up_in_memory_counts() -> None:
    # Memory is judged by its peak in each third: a step in the last minutes
    # is growth even though the last third's median has not moved.
    rows = _run()
    for row in rows[-8:]:
        row["rss_mib"] += 50
    verdict = judge(rows, wb_errors=0, violations=0, server_exit=0, tracebacks=0)
    assert [r.split(" grew")[0] for r in verdict.reasons] == ["rss_mib"]


def test_errors_torn_reads_and_an_unclean_stop_each_fail() -> None:
    verdict = judge(_run(), wb_errors=3, violations=1, server_exit=None, tracebacks=2)
    assert verdict.reasons == [
        "1 torn or aborted transaction reads",
        "3 errors reached well-behaved clients",
        "server did not stop cleanly (exit status None)",
        "server log holds 2 tracebacks",
    ]


def test_a_load_that_stopped_fails() -> None:
    rows = _run()
    for row in rows[60:]:
        row["wb_ops_per_s"] = 0.0
    verdict = judge(rows, wb_errors=0, violations=0, server_exit=0, tracebacks=0)
    assert verdict.reasons == ["no well-behaved operation completed in the last third"]


def test_too_short_a_run_cannot_be_judged() -> None:
    verdict = judge(_run(samples=4), wb_errors=0, violations=0, server_exit=0, tracebacks=0)
    assert not verdict.ok and verdict.reasons[0].startswith("too few samples")
