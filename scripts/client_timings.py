"""How long the cross-language clients' batches take on Stig and on memcached.

Runs the ``multiget`` and ``batch`` cases of every client of ``tests/clients``
(``stig_testkit.clients``: Node memjs and memcached, Perl
Cache::Memcached::Fast and Cache::Memcached, php-memcached text and binary,
spymemcached text and binary) against Stig and against memcached, each case
on a fresh server, and prints every timing the scripts report side by side,
with whether the case's checks held on each server (memcached passes every
batch check, so a case that fails on Stig alone fails because of Stig).
Clients whose runtime or library is missing are listed as skipped.

    python3 scripts/client_timings.py                 # every client, both cases
    python3 scripts/client_timings.py --client memjs --case batch --repeat 3

It imports ``stig_testkit`` (installed with Stig: ``pip install -e .``; from
a bare checkout, ``PYTHONPATH=. python3 scripts/client_timings.py``).  The
tests never assert these times; docs/clients.md quotes them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from stig_testkit import clients

REPO = Path(__file__).resolve().parent.parent
CLIENTS_DIR = REPO / "tests" / "clients"
HOST = "127.0.0.1"
START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_answers(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Until the server answers ``version``; raises if it exits or never does."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=1) as sock:
                sock.sendall(b"version\r\n")
                if sock.recv(100).startswith(b"VERSION"):
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"no answer on port {port} within {START_TIMEOUT:.0f}s")


@contextlib.contextmanager
def server(name: str) -> Iterator[int]:
    """A fresh ``stig`` (defaults, its own data directory) or ``memcached``; yields its port."""
    port = free_port()
    data = tempfile.mkdtemp(prefix=f"client-timings-{name}-")
    if name == "stig":
        argv = [sys.executable, "-m", "stig", "serve", "--port", str(port), "--data-dir", data]
    else:
        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
        argv = ["memcached", "-u", user, "-l", HOST, "-p", str(port), "-U", "0", "-t", "2"]
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_answers(port, proc)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        shutil.rmtree(data, ignore_errors=True)


def measure(spec: clients.ClientSpec, case: str, server_name: str, build: Path) -> clients.CaseRun:
    with server(server_name) as port:
        if case == "multiget":
            clients.store_multiget_keys(HOST, port)
        return clients.run_case(spec, CLIENTS_DIR, HOST, port, case, build)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", action="append", help="a client's name (repeatable)")
    parser.add_argument("--case", action="append", choices=("multiget", "batch", "ttl"))
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best is kept")
    args = parser.parse_args(argv)
    cases = args.case or ["multiget", "batch"]
    specs = [s for s in clients.ALL if not args.client or s.name in args.client]
    servers = ["stig"] if shutil.which("memcached") is None else ["stig", "memcached"]

    build = Path(tempfile.mkdtemp(prefix="client-timings-java-"))
    best: dict[tuple[str, str, str], float] = {}  # (client, measure, server) -> seconds
    broken: set[tuple[str, str, str]] = set()  # ... measured in a case that failed
    failed: list[str] = []
    try:
        for spec in specs:
            missing = spec.missing(CLIENTS_DIR)
            if missing:
                print(f"skipped {spec.name}: {missing}", flush=True)
                continue
            if spec.language == "java" and not any(build.iterdir()):
                clients.build_java(CLIENTS_DIR, build)
            for case in (c for c in cases if c in spec.cases):
                for server_name in servers:
                    for _ in range(args.repeat):
                        run = measure(spec, case, server_name, build)
                        for t in run.timings:
                            key = (spec.name, t["timing"], server_name)
                            best[key] = min(best.get(key, float("inf")), float(t["seconds"]))
                    problems = run.problems()
                    if problems:
                        broken.update((spec.name, t["timing"], server_name) for t in run.timings)
                    verdict = "passed" if not problems else f"FAILED: {problems[0][:150]}"
                    print(f"{spec.name} {case} on {server_name}: {verdict}", flush=True)
                    if problems:
                        failed.append(f"{spec.name} {case} on {server_name}: {problems[0][:150]}")
    finally:
        shutil.rmtree(build, ignore_errors=True)

    print()
    print("A time marked (failed) is that of a case whose checks failed (a timeout, an error).")
    print("| client | measure | Stig (s) | memcached (s) | Stig / memcached |")
    print("|---|---|---:|---:|---:|")
    rows = sorted({(c, m) for c, m, _ in best})
    for client, what in rows:
        on_stig = best.get((client, what, "stig"))
        on_mc = best.get((client, what, "memcached"))
        ratio = f"{on_stig / on_mc:.1f}×" if on_stig and on_mc else "–"
        cells = [
            "–" if v is None else f"{v:.3f}" + (" (failed)" * ((client, what, name) in broken))
            for v, name in ((on_stig, "stig"), (on_mc, "memcached"))
        ]
        print(f"| {client} | {what} | {cells[0]} | {cells[1]} | {ratio} |")
    if failed:
        print("\nCases whose checks failed:")
        for line in failed:
            print(f"- {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
