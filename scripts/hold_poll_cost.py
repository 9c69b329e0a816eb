"""What reads held across workers cost the worker that holds them.

``--workers 2 --min-replica-acks 1`` with the follower SIGSTOPped: a write
on worker 0 is committed and unreplicated; ``C`` connections on worker 1
each send a get of it and ``K - 1`` other keys, held (a held read with
workers looks at the shared ACK slots every 1 ms and re-checks all its
keys).  Measured over ``--seconds``: worker 1's CPU seconds per second and
the latency of a ``get`` of another key on worker 1.  Not a test: numbers.

    PYTHONPATH=. python3 scripts/hold_poll_cost.py --held 0 8 --keys 1 5000
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from pathlib import Path

from stig_testkit.process import StigProcess
from stig_testkit.procstat import cpu_seconds
from stig_testkit.waiting import wait_for, wait_for_stats
from stig_testkit.workers import on_worker, stats_of


def _server(root: Path, name: str, *args: str) -> StigProcess:
    (root / name).mkdir()
    (root / f"{name}.log").mkdir()
    return StigProcess(root / name, root / f"{name}.log", args).start()


def measure(held: int, keys: int, seconds: float) -> tuple[float, float]:
    """Worker 1's CPU use (s/s) and the median ms of a get of another key."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        primary = _server(
            root,
            "p",
            "--workers",
            "2",
            "--min-replica-acks",
            "1",
            "--replica-ack-timeout-ms",
            str(int((seconds + 5) * 1000)),
            "--replication-open",
        )
        follower = _server(root, "f", "--replica-of", f"{primary.host}:{primary.port}")
        try:
            wait_for_stats(primary, lambda s: s["connected_replicas"] == "1", what="follower")
            writer, probe = on_worker(primary, 0), on_worker(primary, 1)
            assert probe.send_recv(b"set warm 0 0 1\r\nv\r\n", b"\r\n") == b"STORED\r\n"
            pid = int(stats_of(probe)["pid"])
            assert follower.proc is not None
            os.kill(follower.proc.pid, signal.SIGSTOP)
            try:
                seq = int(stats_of(probe)["replication_seq"])
                writer.send(b"set k 0 0 1\r\nx\r\n")
                wait_for(lambda: int(stats_of(probe)["replication_seq"]), lambda n: n > seq)
                line = b"get k" + b"".join(b" other%d" % i for i in range(keys - 1)) + b"\r\n"
                readers = [on_worker(primary, 1) for _ in range(held)]
                for reader in readers:
                    reader.send(line)
                wait_for(
                    lambda: int(stats_of(probe)["replication_read_waits"]),
                    lambda waits: waits >= held,
                    what="the reads held",
                )
                cpu0, t0 = cpu_seconds(pid) or 0.0, time.monotonic()
                samples = []
                while time.monotonic() - t0 < seconds:
                    start = time.perf_counter()
                    probe.send_recv(b"get warm\r\n")
                    samples.append((time.perf_counter() - start) * 1000)
                    time.sleep(0.05)
                cpu = ((cpu_seconds(pid) or 0.0) - cpu0) / (time.monotonic() - t0)
            finally:
                os.kill(follower.proc.pid, signal.SIGCONT)
            samples.sort()
            return cpu, samples[len(samples) // 2]
        finally:
            follower.kill()
            primary.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held", type=int, nargs="+", default=[0, 8])
    parser.add_argument("--keys", type=int, nargs="+", default=[1, 5000])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    print("held  keys  worker1_cpu_s/s  other_get_ms_p50")
    for held in args.held:
        for keys in args.keys:
            cpu, p50 = measure(held, keys, args.seconds)
            print(f"{held:4d} {keys:5d} {cpu:16.2f} {p50:17.2f}")


if __name__ == "__main__":
    main()
