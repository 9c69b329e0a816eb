"""Servers for the history runs of scripts/: Stig on a data directory that
outlives its processes, and a memcached.  (Tests use conftest's StigProcess,
which has the same ``start``/``kill``/``host``/``port``.)"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

READY = "stig listening on "


class StigServer:
    """``python -m stig serve`` on 127.0.0.1, port 0, ``data_dir`` kept across restarts."""

    def __init__(self, data_dir: Path, log_dir: Path, args: tuple[str, ...] = ()) -> None:
        self.data_dir, self.log_dir, self.args = data_dir, log_dir, args
        self.host, self.port = "127.0.0.1", 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> StigServer:
        self.starts += 1
        out_path = self.log_dir / f"stdout.{self.starts}"
        command = [sys.executable, "-m", "stig", "serve", "--listen", self.host, "--port", "0"]
        command += ["--data-dir", str(self.data_dir), *self.args]
        with open(out_path, "wb") as out, open(self.log_dir / f"stderr.{self.starts}", "wb") as err:
            self.proc = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for line in out_path.read_text(errors="replace").splitlines():
                if line.startswith(READY):
                    self.port = int(line.rsplit(":", 1)[1])
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"stig did not start: see {self.log_dir}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


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
