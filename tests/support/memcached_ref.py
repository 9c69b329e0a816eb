"""A real memcached 1.6, the reference of the byte-for-byte comparison tests,
and the plain-socket helpers they share (free port, wait for a listener,
send and read until a terminator).

Used by tests/integration/test_text_memcached_parity.py and the operations
tests (listing and dump formats compared with memcached's, nutcracker in
front of Stig nodes).  ``.ci/run`` installs memcached; without it the
comparisons skip, saying why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

HOST = "127.0.0.1"
START_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port nothing listens on now (a race with other processes is possible,
    and tolerated: the server started on it fails loudly)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_port(
    port: int, timeout: float = START_TIMEOUT, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Until something accepts connections on ``port``; raises after ``timeout``
    seconds, or at once when ``proc`` (the server) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"exited with {proc.returncode} before listening") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextlib.contextmanager
def memcached() -> Iterator[int]:
    """A real memcached on a free port (``-U 0``: no UDP); yields the port.
    Skips the test when memcached is not installed."""
    binary = shutil.which("memcached") or "/usr/bin/memcached"
    if not os.path.exists(binary):
        pytest.skip("memcached is not installed (.ci/run installs it)")
    port = free_port()
    command = [binary, "-l", HOST, "-p", str(port), "-U", "0"]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]  # memcached refuses to run as root otherwise
    proc = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port, proc=proc)
        yield port
    finally:
        proc.kill()
        proc.wait(10)


def exchange(port: int, data: bytes, until: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection; everything received until it ends with ``until``."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(data)
        buf = b""
        deadline = time.monotonic() + timeout
        while not buf.endswith(until):
            assert time.monotonic() < deadline, f"no {until!r}; got {buf[-200:]!r}"
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed before {until!r}; got {buf[-200:]!r}"
            buf += chunk
        return buf
