"""Helpers of the operations tests: run the ``stig`` CLI, find a data file.

A real memcached and the socket helpers are in tests/support/memcached_ref.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from stig_testkit.process import CODE_ROOT as REPO

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


def data_path(directory: Path) -> Path:
    return directory / "data.mdb"
