"""Helpers of the operations tests: run the ``stig`` CLI, start a real memcached."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from conftest import REPO

CLI_TIMEOUT = 300


def run_stig(
    *args: str,
    input: bytes | None = None,
    check: bool | None = True,
    stdout: object = subprocess.PIPE,
) -> subprocess.CompletedProcess[bytes]:
    """``python -m stig ARGS`` from the worktree; asserts exit 0 when ``check``."""
    proc = subprocess.run(
        [sys.executable, "-m", "stig", *args],
        cwd=REPO,
        input=input,
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=CLI_TIMEOUT,
    )
    if check:
        assert proc.returncode == 0, (
            f"stig {' '.join(args)} exited {proc.returncode}: {proc.stderr!r}"
        )
    return proc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextlib.contextmanager
def memcached() -> Iterator[int]:
    """A real memcached 1.6 on a free port; yields the port."""
    binary = shutil.which("memcached") or "/usr/bin/memcached"
    port = free_port()
    command = [binary, "-p", str(port), "-U", "0", "-l", "127.0.0.1"]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield port
    finally:
        proc.kill()
        proc.wait(10)


def exchange(port: int, data: bytes, until: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection; everything received until it ends with ``until``."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        buf = b""
        deadline = time.monotonic() + timeout
        while not buf.endswith(until):
            assert time.monotonic() < deadline, f"no {until!r}; got {buf[-200:]!r}"
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed before {until!r}; got {buf[-200:]!r}"
            buf += chunk
        return buf


def data_path(directory: Path) -> Path:
    return directory / "data.mdb"
