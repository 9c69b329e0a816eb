"""Power cuts for history runs: Stig's data directory on lazyfs
(tests/support/lazyfs.py, a FUSE filesystem that forgets what was never
synced), and a crash that SIGKILLs Stig *and* cuts the power.

A small controller of its own (tests/support/crashrig.py has the power-cut
suite's, with freezes and ledgers) that runs lazyfs.py as a process, so
scripts/ need not import from tests/.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LAZYFS = Path(__file__).resolve().parents[2] / "tests" / "support" / "lazyfs.py"
MOUNTED = "lazyfs mounted on "
TIMEOUT = 30.0


def unavailable() -> str | None:
    """Why lazyfs cannot run here, or None when it can."""
    if not LAZYFS.exists():
        return f"{LAZYFS} missing (run from a checkout)"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine"
    if os.geteuid() != 0:
        return "not root: mounting FUSE needs root here"
    if shutil.which("fusermount3") is None:
        return "fusermount3 missing (Debian package fuse3)"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as error:
        return f"/dev/fuse cannot be opened ({error})"
    try:
        import pyfuse3  # noqa: F401
    except ImportError as error:
        return f"pyfuse3 not importable ({error})"
    return None


class LazyFs:
    """One lazyfs process over ``backing`` mounted at ``mount``; it remounts
    after each cut (``--torn random``: each cut keeps none, a random subset or
    a prefix of the unsynced pages)."""

    def __init__(self, backing: Path, mount: Path, log_dir: Path, seed: int) -> None:
        self.backing, self.mount, self.seed = backing, mount, seed
        for path in (backing, mount, log_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.out_path = log_dir / "lazyfs.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.cuts = 0

    def start(self) -> None:
        command = [sys.executable, str(LAZYFS), str(self.backing), str(self.mount)]
        command += ["--remount", "--torn", "random", "--seed", str(self.seed)]
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self._wait_mounted(1)

    def _mounts(self) -> int:
        text = self.out_path.read_text(errors="replace")
        return sum(line.startswith(MOUNTED) for line in text.splitlines())

    def _wait_mounted(self, count: int) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not (self._mounts() >= count and os.path.ismount(self.mount)):
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"lazyfs did not mount:\n{self.out_path.read_text()}")
            time.sleep(0.01)

    def cut(self) -> None:
        """Power cut: unsynced pages dropped (or torn), then a fresh mount."""
        assert self.proc is not None
        mounts = self._mounts()
        self.proc.send_signal(signal.SIGUSR1)
        self._wait_mounted(mounts + 1)
        self.cuts += 1

    def cut_under(self, server: Any) -> Callable[[], None]:
        """A crash for :meth:`Driver.crash`: SIGKILL ``server`` (a process with
        ``proc``), cut the power, reap it."""

        def crash() -> None:
            server.proc.send_signal(signal.SIGKILL)
            self.cut()
            server.proc.wait(TIMEOUT)

        return crash

    def stop(self) -> None:
        """Clean shutdown (everything synced), unmounted; safe to call twice."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(TIMEOUT)
        self.proc = None
        if os.path.ismount(self.mount):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mount)], check=False)
