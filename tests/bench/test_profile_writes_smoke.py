"""Smoke test of scripts/profile_writes.py, not a measurement: no speed is asserted.

One short ``set`` row with ``--profile set``: the script starts the real
server (stig_testkit/profiled_server.py), drives it, prints the row and the
event loop's profile of the measured rounds, whose functions include the
connection loop of stig/server/connection.py — the real one, not a copy.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from stig_testkit.process import child_env

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "profile_writes.py"


def test_profile_writes_profiles_the_real_connection_loop() -> None:
    row = ["--only", "set", "--depth", "4", "--repeat", "1", "--seconds", "0.3", "--conns", "4"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *row, "--profile", "set", "--top", "200"],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"^set d=4 +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+$", done.stdout, re.M), done.stdout
    assert re.search(r"stig/server/connection\.py:\d+\(_serve\)", done.stdout), done.stdout
