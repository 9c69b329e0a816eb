"""Throughput of one Stig server over plain TCP, TLS and a unix socket.

The same client runs against each transport: ``--procs`` processes, each
with ``--conns`` blocking connections, every connection sending a pipelined
batch of ``--depth`` requests and reading all replies before the next batch
(closed loop).  Each reply is checked byte for byte.  Only the transport
differs, so the ratios are the cost of TLS (handshake excluded: connections
are opened before the window) and the gain of a unix socket — with the
caveat that on a small machine the client's own TLS work takes CPU from the
server too, as it would for a client on the same host.

    python3 scripts/transport_bench.py --seconds 10

Needs ``stig_testkit`` importable (its certificate maker): ``pip install -e
'.[test]'`` in the clone, or ``PYTHONPATH=.`` from the clone's root.

``scripts/bench.py`` runs it too (its ``transport`` rows: ``stig tcp``,
``stig tls`` and ``stig unix``, each compared with ``stig tcp``), so the
transports are measured beside the other rows in one run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stig_testkit.certs import self_signed_cert

REPO = Path(__file__).resolve().parent.parent
VALUE = b"v" * 100
KEYS = 1000
TRANSPORTS = ("tcp", "tls", "unix")
WORKLOADS = ("get", "set")
#: Every process started (servers and client processes), for bench.py's check
#: that none outlives the run.
STARTED_PIDS: list[int] = []


def _start(data: Path, *args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "stig", "serve", "--port", "0", "--data-dir", str(data), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    STARTED_PIDS.append(proc.pid)
    line = proc.stdout.readline().strip()  # type: ignore[union-attr]
    return proc, line.removeprefix("stig listening on ")


def _connect(address: str, tls: ssl.SSLContext | None) -> socket.socket:
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(address[5:])
        return sock
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return tls.wrap_socket(sock, server_hostname=host) if tls else sock


def _batch(workload: str, depth: int, start: int) -> tuple[bytes, bytes]:
    keys = [b"key:%d" % ((start + i) % KEYS) for i in range(depth)]
    if workload == "get":
        request = b"".join(b"get %b\r\n" % k for k in keys)
        reply = b"".join(b"VALUE %b 0 %d\r\n%b\r\nEND\r\n" % (k, len(VALUE), VALUE) for k in keys)
    else:
        request = b"".join(b"set %b 0 0 %d\r\n%b\r\n" % (k, len(VALUE), VALUE) for k in keys)
        reply = b"STORED\r\n" * depth
    return request, reply


def _client(
    address: str,
    tls_file: str | None,
    workload: str,
    conns: int,
    depth: int,
    seconds: float,
    start_at: float,
    results: mp.Queue,
) -> None:
    context = None
    if tls_file:
        context = ssl.create_default_context(cafile=tls_file)
    socks = [_connect(address, context) for _ in range(conns)]
    batches = [_batch(workload, depth, i * depth) for i in range(KEYS // depth)]
    done = errors = 0
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + seconds
    i = os.getpid()
    while time.time() < end:
        for sock in socks:
            request, reply = batches[i % len(batches)]
            i += 1
            sock.sendall(request)
            got = b""
            while len(got) < len(reply):
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                got += chunk
            done += depth
            errors += got != reply
    results.put((done, errors))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Shape:
    """The client: processes x connections, pipeline depth, seconds per figure."""

    seconds: float = 10.0
    procs: int = 1
    conns: int = 4
    depth: int = 16


def run(address: str, tls_file: str | None, workload: str, shape: Shape, server_pid: int):
    """Requests per second, and the server's CPU microseconds per request."""
    results: mp.Queue = mp.Queue()
    start_at = time.time() + 1.0  # every client connected (TLS handshakes) by then
    procs = [
        mp.Process(
            target=_client,
            args=(
                address,
                tls_file,
                workload,
                shape.conns,
                shape.depth,
                shape.seconds,
                start_at,
                results,
            ),
        )
        for _ in range(shape.procs)
    ]
    for proc in procs:
        proc.start()
        STARTED_PIDS.append(proc.pid)  # type: ignore[arg-type]
    while time.time() < start_at:
        time.sleep(0.001)
    cpu_before = _cpu_seconds(server_pid)
    counts = [results.get(timeout=shape.seconds + 60) for _ in procs]
    cpu = _cpu_seconds(server_pid) - cpu_before
    for proc in procs:
        proc.join()
    if sum(errors for _, errors in counts):
        raise SystemExit(f"{workload} over {address}: wrong replies")
    done = sum(done for done, _ in counts)
    return done / shape.seconds, cpu / done * 1e6


#: (transport, workload) -> (requests/s, server CPU µs per request), or why skipped
Figures = dict[tuple[str, str], "tuple[float, float] | str"]


def measure(
    shape: Shape,
    say: Callable[[str], None] = lambda msg: None,
    out_of_time: Callable[[], str | None] = lambda: None,
) -> Figures:
    """Start one server per transport in turn, preload it, measure get and set."""
    figures: Figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        tls_files: tuple[str, ...] = ()
        tls_skip = None
        if shutil.which("openssl") is None:
            tls_skip = "skipped (openssl not installed)"
        else:
            self_signed_cert(tmpdir)
            tls_files = (
                "--tls-cert",
                str(tmpdir / "cert.pem"),
                "--tls-key",
                str(tmpdir / "key.pem"),
            )
        sock_path = str(tmpdir / "stig.sock")
        if len(sock_path) > 100:  # sun_path holds 108 bytes
            sock_path = f"/tmp/stig-bench-{os.getpid()}.sock"
        setups = {
            "tcp": ((), None),
            "tls": (tls_files, str(tmpdir / "cert.pem")),
            "unix": (("--unix-socket", sock_path), None),
        }
        for name in TRANSPORTS:
            extra, tls_file = setups[name]
            skip = tls_skip if name == "tls" else None
            skip = skip or out_of_time()
            if skip:
                figures.update({(name, w): skip for w in WORKLOADS})
                continue
            say(f"transport {name}: get and set, d={shape.depth}")
            data = tmpdir / f"data-{name}"
            proc, address = _start(data, *extra)
            try:
                _preload(address, tls_file, shape.depth)
                for workload in WORKLOADS:
                    figures[name, workload] = run(address, tls_file, workload, shape, proc.pid)
            finally:
                proc.terminate()
                proc.wait(30)
                shutil.rmtree(data, ignore_errors=True)
    return figures


def _preload(address: str, tls_file: str | None, depth: int) -> None:
    preload = _connect(address, ssl.create_default_context(cafile=tls_file) if tls_file else None)
    for i in range(0, KEYS, depth):
        request, reply = _batch("set", depth, i)
        preload.sendall(request)
        got = b""
        while len(got) < len(reply):
            got += preload.recv(65536)
    preload.close()


def bench_rows(
    seconds: float,
    say: Callable[[str], None] = lambda msg: None,
    out_of_time: Callable[[], str | None] = lambda: None,
) -> list:  # list[report.Row]
    """bench.py's transport rows: ``stig tcp|tls|unix`` get and set at d=16,
    4 connections, each compared with ``stig tcp`` (the same client)."""
    from report import Row

    shape = Shape(seconds=seconds)
    figures = measure(shape, say, out_of_time)
    rows = []
    for name in TRANSPORTS:
        for workload in WORKLOADS:
            figure = figures[name, workload]
            row = Row(
                server=f"stig {name}",
                workload=workload,
                depth=shape.depth,
                value_size=len(VALUE),
                client=f"transport_bench {shape.conns} conns",
            )
            if isinstance(figure, str):
                row.status = figure
            else:
                rate, cpu_us = figure
                row.items_per_s, row.seconds = rate, shape.seconds
                row.server_cpu_s = cpu_us * rate * shape.seconds / 1e6
                tcp = figures["tcp", workload]
                if name != "tcp" and not isinstance(tcp, str):
                    row.ratio, row.ref = rate / tcp[0], "stig tcp"
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--procs", type=int, default=1)
    parser.add_argument("--conns", type=int, default=4)
    parser.add_argument("--depth", type=int, default=16)
    args = parser.parse_args()
    shape = Shape(args.seconds, args.procs, args.conns, args.depth)
    figures = measure(shape, say=lambda msg: print(msg, file=sys.stderr))
    print(
        f"{shape.procs} client process(es) x {shape.conns} connections, depth {shape.depth}, "
        f"{len(VALUE)}-byte values, {shape.seconds:g} s per figure"
    )
    print(
        f"{'workload':<10}{'tcp ops/s':>12}{'tls ops/s':>12}{'tls/tcp':>9}"
        f"{'unix ops/s':>12}{'unix/tcp':>10}   server CPU µs/request tcp / tls / unix"
    )
    for workload in WORKLOADS:
        got = [figures[t, workload] for t in TRANSPORTS]
        if any(isinstance(figure, str) for figure in got):
            print(
                f"{workload:<10}"
                + "  ".join(f"{t}: {f}" for t, f in zip(TRANSPORTS, got, strict=True))
            )
            continue
        (tcp, tcp_cpu), (tls, tls_cpu), (unix, unix_cpu) = got  # type: ignore[misc]
        print(
            f"{workload:<10}{tcp:>12,.0f}{tls:>12,.0f}{tls / tcp:>9.2f}{unix:>12,.0f}"
            f"{unix / tcp:>10.2f}   {tcp_cpu:.1f} / {tls_cpu:.1f} / {unix_cpu:.1f}"
        )


if __name__ == "__main__":
    main()
