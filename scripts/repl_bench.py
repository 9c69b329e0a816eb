"""Replicated writes: Stig alone, with an asynchronous follower, and with ``--min-replica-acks 1``.

Four configurations, each started fresh, driven by the same client
(:mod:`cond_bench`'s: processes x connections, closed loop, every reply
checked) in one run:

* ``alone`` — ``stig serve``, no follower (so no replication log: it is
  written once a follower has connected);
* ``async`` — the same primary with one follower (``--replica-of``) on
  this machine, streaming as it commits;
* ``sync`` — the primary with ``--min-replica-acks 1``: a reply that
  acknowledges a write leaves once the follower has it applied and fsynced.
* ``durable`` — no follower, ``--durable-acks``: each reply waits for the
  local commit, as under ``sync`` (which implies it), so ``sync`` against
  ``durable`` is what the follower's round trip adds.

Workloads: ``text set`` at d=1 (one plain set per round trip: answered
from the POV without ``--min-replica-acks``, after the follower's ACK with
it) and at d=16 (bursts of 16 per connection, one group commit between
them), 100-byte values.  Each row gives writes/s, the primary's CPU and the
follower's, and the ratio to ``alone``.  Follower and primary share the
machine's cores with the client, so a follower costs CPU here that it
would not cost on its own machine: read the ratios as an upper bound of
the throughput cost.

    python3 scripts/repl_bench.py --seconds 5 --rounds 3

``scripts/bench.py`` runs it too (its ``repl`` rows).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable

import cond_bench
from cond_bench import Figure, Shape
from servers import SERVERS, RunningServer, ServerSpec, StartError, stat

MODES = ("alone", "durable", "async", "sync")
#: Each mode's extra options for the primary (followers without a login:
#: this machine only).
PRIMARY_ARGS = {
    "durable": ("--durable-acks",),
    "async": ("--replication-open",),
    "sync": ("--min-replica-acks", "1", "--replication-open"),
}
WORKLOADS = (("text set", 1), ("text set", 16))
#: Every server process started, for bench.py's check that none outlives the run.
STARTED_PIDS: list[int] = []


def _spec(name: str, *extra: str) -> ServerSpec:
    base = SERVERS["stig"]

    def argv(port: int, data_dir: str) -> list[str]:
        return [*base.argv(port, data_dir), *extra]

    return dataclasses.replace(base, name=name, argv=argv)


def _wait(what: str, ready: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise StartError(f"{what}: not within {timeout:g}s")
        time.sleep(0.01)


@dataclasses.dataclass
class Result:
    figure: Figure
    follower_cpu_s: float | None
    log_on: bool  # the primary wrote the replication log (stats replication_log_on)


def _one_mode(
    mode: str, shape_for: Callable[[int], Shape], say: Callable[[str], None]
) -> dict[tuple[str, int], Result | str]:
    primary = RunningServer(_spec(f"stig-{mode}", *PRIMARY_ARGS.get(mode, ())))
    follower: RunningServer | None = None
    results: dict[tuple[str, int], Result | str] = {}
    try:
        primary.start()
        STARTED_PIDS.append(primary.pid)
        if mode in ("async", "sync"):
            follower = RunningServer(
                _spec("stig-follower", "--replica-of", f"127.0.0.1:{primary.port}")
            )
            follower.start()
            STARTED_PIDS.append(follower.pid)
            # Measured only once the follower is attached and the primary
            # logs (the log starts with the first follower: every group of
            # the rows below is logged and streamed, none from before).
            _wait(
                "the follower connected and the primary's log on",
                lambda: (
                    stat(primary.port, "connected_replicas") == "1"
                    and stat(primary.port, "replication_log_on") == "1"
                ),
            )
        for workload, depth in WORKLOADS:
            shape = shape_for(depth)
            say(f"repl: {mode} {workload} d={depth}")
            before = None if follower is None else cond_bench._cpu_seconds(follower.pid)
            figure = cond_bench.run(primary.port, primary.pid, workload, shape)
            follower_cpu = (
                None
                if follower is None or before is None
                else cond_bench._cpu_seconds(follower.pid) - before
            )
            log_on = stat(primary.port, "replication_log_on") == "1"
            results[workload, depth] = Result(figure, follower_cpu, log_on)
    except StartError as exc:
        for key in WORKLOADS:
            results.setdefault(key, f"skipped (did not start: {exc})"[:120])
    finally:
        if follower is not None:
            follower.stop()
            follower.cleanup()
        primary.stop()
        primary.cleanup()
    return results


def measure(
    seconds: float,
    say: Callable[[str], None] = lambda msg: None,
    out_of_time: Callable[[], str | None] = lambda: None,
) -> dict[str, dict[tuple[str, int], Result | str]]:
    figures: dict[str, dict[tuple[str, int], Result | str]] = {}
    missing = SERVERS["stig"].missing()
    for mode in MODES:
        skip = missing or out_of_time()
        if skip:
            figures[mode] = {k: skip if skip.startswith("skipped") else f"skipped ({skip})"
                             for k in WORKLOADS}  # fmt: skip
            continue
        figures[mode] = _one_mode(mode, lambda d: Shape(seconds=seconds, depth=d), say)
    return figures


def bench_rows(
    seconds: float,
    say: Callable[[str], None] = lambda msg: None,
    out_of_time: Callable[[], str | None] = lambda: None,
) -> list:  # list[report.Row]
    """bench.py's ``repl`` rows: every mode and workload, compared with ``alone``."""
    from report import Row

    figures = measure(seconds, say, out_of_time)
    rows = []
    for mode in MODES:
        for workload, depth in WORKLOADS:
            result = figures[mode][workload, depth]
            row = Row(
                server=f"stig {mode}",
                workload=f"repl {workload} d={depth} 100B",
                depth=depth,
                value_size=0,  # in the label already
                client="cond_bench 2x4 conns",
                durable=mode in ("durable", "sync"),
            )
            if isinstance(result, str):
                row.status = result
            else:
                figure = result.figure
                row.items_per_s, row.seconds = figure.writes_per_s, seconds
                row.p50_us, row.p99_us = figure.p50_us, figure.p99_us
                row.latency_unit = "per burst"
                row.errors, row.server_cpu_s = figure.errors, figure.server_cpu_s
                row.extra = {"replication_log_on": result.log_on}
                if result.follower_cpu_s is not None:
                    row.extra["follower_cpu_s"] = round(result.follower_cpu_s, 2)
                alone = figures["alone"][workload, depth]
                if mode != "alone" and isinstance(alone, Result):
                    row.ratio = figure.writes_per_s / alone.figure.writes_per_s
                    row.ref = "stig alone"
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every mode this many times, in turn (a shared machine's load "
        "drifts: each round's ratios are to that round's alone), then the median ratios",
    )
    args = parser.parse_args()
    print(
        "2 client processes x 4 connections, 100-byte values, "
        f"{args.seconds:g} s per figure; CPU in seconds over the window"
    )
    ratios: dict[tuple[str, str, int], list[float]] = {}
    for round_no in range(1, args.rounds + 1):
        figures = measure(args.seconds, say=lambda msg: print(msg, file=sys.stderr))
        print(f"round {round_no} of {args.rounds}")
        for mode in MODES:
            for workload, depth in WORKLOADS:
                print(_line(mode, workload, depth, figures, ratios))
    if args.rounds > 1:
        print(f"median ratio to alone over {args.rounds} rounds (min-max):")
        for (mode, workload, depth), values in ratios.items():
            print(
                f"{mode:<7} {workload} d={depth:<3} {statistics.median(values):.2f}x "
                f"({min(values):.2f}-{max(values):.2f})"
            )


def _line(
    mode: str,
    workload: str,
    depth: int,
    figures: dict[str, dict[tuple[str, int], Result | str]],
    ratios: dict[tuple[str, str, int], list[float]],
) -> str:
    """One figure as a line of text; its ratio to ``alone`` is added to ``ratios``."""
    result = figures[mode][workload, depth]
    label = f"{mode:<7} {workload} d={depth:<3}"
    if isinstance(result, str):
        return f"{label} {result}"
    figure = result.figure
    alone = figures["alone"][workload, depth]
    ratio = ""
    if isinstance(alone, Result) and mode != "alone":
        value = figure.writes_per_s / alone.figure.writes_per_s
        ratios.setdefault((mode, workload, depth), []).append(value)
        ratio = f"{value:.2f}x alone"
    follower = "" if result.follower_cpu_s is None else f"follower CPU {result.follower_cpu_s:.2f}"
    return (
        f"{label} {figure.writes_per_s:>9,.0f} writes/s  p50 {figure.p50_us:>7,.0f} µs  "
        f"p99 {figure.p99_us:>8,.0f} µs  errors {figure.errors}  "
        f"primary CPU {figure.server_cpu_s:.2f}  log {'on' if result.log_on else 'off'}  "
        f"{follower}  {ratio}"
    )


if __name__ == "__main__":
    main()
