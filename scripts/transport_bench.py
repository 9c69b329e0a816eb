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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VALUE = b"v" * 100
KEYS = 1000


def _certs(directory: Path) -> None:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
    )


def _start(data: Path, *args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "stig", "serve", "--port", "0", "--data-dir", str(data), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
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


def run(
    address: str, tls_file: str | None, workload: str, args: argparse.Namespace, server_pid: int
) -> tuple[float, float]:
    """Requests per second, and the server's CPU microseconds per request."""
    results: mp.Queue = mp.Queue()
    start_at = time.time() + 1.0
    procs = [
        mp.Process(
            target=_client,
            args=(
                address,
                tls_file,
                workload,
                args.conns,
                args.depth,
                args.seconds,
                start_at,
                results,
            ),
        )
        for _ in range(args.procs)
    ]
    for proc in procs:
        proc.start()
    while time.time() < start_at:
        time.sleep(0.001)
    cpu_before = _cpu_seconds(server_pid)
    counts = [results.get(timeout=args.seconds + 60) for _ in procs]
    cpu = _cpu_seconds(server_pid) - cpu_before
    for proc in procs:
        proc.join()
    if sum(errors for _, errors in counts):
        raise SystemExit(f"{workload} over {address}: wrong replies")
    done = sum(done for done, _ in counts)
    return done / args.seconds, cpu / done * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--procs", type=int, default=1)
    parser.add_argument("--conns", type=int, default=4)
    parser.add_argument("--depth", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        _certs(tmpdir)
        sock_path = f"/tmp/stig-bench-{os.getpid()}.sock"
        setups = [
            ("tcp", (), None),
            (
                "tls",
                ("--tls-cert", str(tmpdir / "cert.pem"), "--tls-key", str(tmpdir / "key.pem")),
                str(tmpdir / "cert.pem"),
            ),
            ("unix", ("--unix-socket", sock_path), None),
        ]
        rates: dict[tuple[str, str], float] = {}
        cpu: dict[tuple[str, str], float] = {}
        for name, extra, tls_file in setups:
            data = tmpdir / f"data-{name}"
            proc, address = _start(data, *extra)
            try:
                preload = _connect(
                    address, ssl.create_default_context(cafile=tls_file) if tls_file else None
                )
                for i in range(0, KEYS, args.depth):
                    request, reply = _batch("set", args.depth, i)
                    preload.sendall(request)
                    got = b""
                    while len(got) < len(reply):
                        got += preload.recv(65536)
                preload.close()
                for workload in ("get", "set"):
                    rates[name, workload], cpu[name, workload] = run(
                        address, tls_file, workload, args, proc.pid
                    )
            finally:
                proc.terminate()
                proc.wait(30)
                shutil.rmtree(data, ignore_errors=True)
        print(
            f"{args.procs} client process(es) x {args.conns} connections, depth {args.depth}, "
            f"{len(VALUE)}-byte values, {args.seconds:g} s per figure"
        )
        print(
            f"{'workload':<10}{'tcp ops/s':>12}{'tls ops/s':>12}{'tls/tcp':>9}"
            f"{'unix ops/s':>12}{'unix/tcp':>10}   server CPU µs/request tcp / tls / unix"
        )
        for workload in ("get", "set"):
            tcp, tls, unix = (rates[t, workload] for t in ("tcp", "tls", "unix"))
            costs = " / ".join(f"{cpu[t, workload]:.1f}" for t in ("tcp", "tls", "unix"))
            print(
                f"{workload:<10}{tcp:>12,.0f}{tls:>12,.0f}{tls / tcp:>9.2f}{unix:>12,.0f}"
                f"{unix / tcp:>10.2f}   {costs}"
            )


if __name__ == "__main__":
    main()
