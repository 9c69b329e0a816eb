"""memcached for the history runs, with the ``start``/``kill``/``host``/``port``
of :class:`stig_testkit.process.StigProcess` (which runs Stig)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time


def memcached_binary() -> str | None:
    """Where memcached is installed, or None."""
    found = shutil.which("memcached") or "/usr/bin/memcached"
    return found if os.path.exists(found) else None


class Memcached:
    """A memcached on a free port of 127.0.0.1 (no UDP)."""

    def __init__(self) -> None:
        self.host, self.port = "127.0.0.1", 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Memcached:
        binary = memcached_binary()
        if binary is None:
            raise RuntimeError("memcached is not installed")
        with socket.socket() as probe:
            probe.bind((self.host, 0))
            self.port = probe.getsockname()[1]
        command = [binary, "-l", self.host, "-p", str(self.port), "-U", "0", "-t", "4"]
        if os.geteuid() == 0:
            command += ["-u", "nobody"]
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError("memcached did not start") from None
                time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    stop = kill
