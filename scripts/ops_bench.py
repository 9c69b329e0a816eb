"""Measure the operations tools: backup MB/s and the writer's longest stall
during it, check, dump and load rates.  Figures for docs/performance.md.

    python3 scripts/ops_bench.py                   # 1M keys (backup/check/dump --data-dir),
                                                    # 100k keys (load, dump --server)
    python3 scripts/ops_bench.py --keys 10000000   # the benchmark's 10M-key data set

The large data set is written straight into LMDB with stig's Store (no
server: that is not what is measured); a server is then started on it.

The writer's stall: one connection commits quiet runs of 10 sets closed by
``mn`` (each ``MN`` means on disk) in a loop; the longest ``mn`` round trip
is taken for a few seconds without a backup, then while ``stig backup`` runs.

It also runs the 100k-key dump → load round trip that CI runs with fewer
keys (tests/operations/test_dump_load.py) and checks the result is equal.

It imports ``stig`` (to build the data set): run it from a clone after
``pip install -e '.[test]'``, or as ``PYTHONPATH=. python3
scripts/ops_bench.py`` from the clone's root without installing.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from stig.storage.ops import Put
from stig.storage.store import Store
from stig.tools import dumpfmt

REPO = Path(__file__).resolve().parent.parent


def stig(*args: str, **kwargs) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "stig", *args], cwd=REPO, check=True, **kwargs)


def build(data_dir: Path, keys: int, value_size: int) -> None:
    store = Store(data_dir, map_size=1 << 30)
    value = b"v" * value_size
    batch = 50_000
    for start in range(0, keys, batch):
        ops = [
            Put(b"key:%010d" % i, value, i & 0xFFFF) for i in range(start, min(start + batch, keys))
        ]
        while True:
            try:
                store.apply([ops])
                break
            except Exception as exc:  # MapFull: grow and retry
                if type(exc).__name__ != "MapFull":
                    raise
                store.grow()
    store.close()


class Server:
    def __init__(self, data_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stig", "serve", "--port", "0", "--data-dir", str(data_dir)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        line = self.proc.stdout.readline().decode()
        assert line.startswith("stig listening on "), line
        self.port = int(line.rsplit(":", 1)[1])

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


class StallProbe(threading.Thread):
    """Commits quiet runs in a loop and keeps the longest MN round trip."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.longest = 0.0
        self.count = 0
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            body = b"".join(b"ms probe:%d 8 q\r\n%08d\r\n" % (j, n) for j in range(10)) + b"mn\r\n"
            started = time.perf_counter()
            self.sock.sendall(body)
            reply = b""
            while not reply.endswith(b"\r\n"):
                reply += self.sock.recv(64)
            assert reply == b"MN\r\n", reply
            self.longest = max(self.longest, time.perf_counter() - started)
            self.count += 1
            n += 1

    def measure(
        self, seconds: float | None = None, during: subprocess.Popen | None = None
    ) -> tuple[float, int]:
        self.longest, self.count = 0.0, 0
        if during is not None:
            during.wait()
        else:
            time.sleep(seconds or 3)
        return self.longest, self.count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--transfer-keys", type=int, default=100_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stig-ops-bench-"))
    try:
        data = work / "data"
        t = time.perf_counter()
        build(data, args.keys, args.value_size)
        print(
            f"data set: {args.keys:,} keys of {args.value_size} B, "
            f"written in {time.perf_counter() - t:.1f} s"
        )
        server = Server(data)
        try:
            probe = StallProbe(server.port)
            probe.start()
            idle_stall, idle_runs = probe.measure(3)
            print(
                f"writer alone: longest mn round trip {idle_stall * 1000:.1f} ms "
                f"over {idle_runs} runs"
            )
            backup = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "stig",
                    "backup",
                    str(work / "backup"),
                    "--data-dir",
                    str(data),
                    "--quiet",
                ],
                cwd=REPO,
            )
            t = time.perf_counter()
            stall, runs = probe.measure(during=backup)
            seconds = time.perf_counter() - t
            size = (work / "backup" / "data.mdb").stat().st_size
            print(
                f"backup: {size / 1e6:.1f} MB in {seconds:.2f} s "
                f"= {size / 1e6 / seconds:.1f} MB/s; "
                f"writer's longest mn round trip meanwhile {stall * 1000:.1f} ms "
                f"over {runs} runs"
            )
            probe.stop.set()
            t = time.perf_counter()
            stig("check", "--data-dir", str(work / "backup"), "--quiet", stdout=subprocess.DEVNULL)
            seconds = time.perf_counter() - t
            print(f"check: {args.keys / seconds:,.0f} keys/s ({seconds:.1f} s)")
            t = time.perf_counter()
            with open(work / "full.dump", "wb") as out:
                stig("dump", "--data-dir", str(data), "--quiet", stdout=out)
            seconds = time.perf_counter() - t
            print(f"dump --data-dir: {args.keys / seconds:,.0f} keys/s ({seconds:.1f} s)")
        finally:
            server.stop()
        shutil.rmtree(data)

        # Transfers over the protocol: a dump with binary keys and values.
        rng = random.Random(1)
        items = {}
        while len(items) < args.transfer_keys:
            items[rng.randbytes(rng.randint(1, 40)) + len(items).to_bytes(4, "big")] = (
                rng.randbytes(rng.randint(0, 200)),
                rng.getrandbits(32),
            )
        source = work / "in.dump"
        source.write_bytes(b"".join(dumpfmt.encode_item(k, v, f) for k, (v, f) in items.items()))
        target = Server(work / "target")
        try:
            t = time.perf_counter()
            stig("load", "--server", f"127.0.0.1:{target.port}", str(source), "--quiet")
            seconds = time.perf_counter() - t
            print(
                f"load: {len(items) / seconds:,.0f} keys/s ({len(items):,} keys, {seconds:.1f} s)"
            )
            t = time.perf_counter()
            with open(work / "out.dump", "wb") as out:
                stig("dump", "--server", f"127.0.0.1:{target.port}", "--quiet", stdout=out)
            seconds = time.perf_counter() - t
            print(f"dump --server: {len(items) / seconds:,.0f} keys/s ({seconds:.1f} s)")
        finally:
            target.stop()
        with open(work / "out.dump", "rb") as dumped:
            back = {i.key: (i.value, i.flags) for i in dumpfmt.read(dumped) if i is not None}
        assert back == items, "round trip differs"
        print(f"round trip of {len(items):,} binary keys: equal")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
