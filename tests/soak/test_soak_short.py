"""The soak script end to end, short: 200 connections for about 20 seconds.

Runs ``scripts/soak.py`` as a user would (its own server, load processes,
probe) and checks what it promises to leave behind: a last line that says
``SOAK OK …`` or ``SOAK FAILED: …`` and an exit status that agrees, a CSV
with a row every sample and every column, and a PNG.  Twenty seconds cannot
tell a level that is still warming up from one that grows without bound
(that is the 30-minute run's job, docs/soak.md), so here a FAILED line may
only give growth as its reasons: an error seen by a well-behaved client, a
torn or aborted transaction read, a server that did not stop cleanly or
logged a traceback fail this test.  No speed is asserted.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

from stig_testkit.process import child_env
from stig_testkit.soak.sampler import COLUMNS

REPO = Path(__file__).resolve().parents[2]
SOAK = REPO / "scripts" / "soak.py"
LAST_LINE = re.compile(r"^SOAK (OK .+|FAILED: .+)$")


def test_a_short_soak_leaves_its_verdict_csv_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = child_env(TMPDIR=str(tmp_path))
    proc = subprocess.run(
        [
            sys.executable,
            str(SOAK),
            "--connections",
            "200",
            "--minutes",
            "0.33",
            "--interval",
            "1",
            "--workers",
            "1",
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    last = lines[-1]
    assert LAST_LINE.match(last), (last, proc.stderr[-2000:])
    assert proc.returncode == (0 if last.startswith("SOAK OK") else 1), last

    summary = json.loads((out / "summary.json").read_text())
    assert summary["errors"] == {}, summary["messages"]
    assert summary["violations"] == 0, summary["messages"]
    assert summary["server_exit"] == 0 and summary["tracebacks"] == 0, summary
    assert all(" grew: " in reason for reason in summary["reasons"]), summary["reasons"]
    # every role ran, and hostile connections came and went
    assert set(summary["ops"]) >= {"reader", "writer", "txn_writer", "txn_reader", "probe"}
    assert summary["atomic_checks"] > 0 and summary["hostile_lives"] > 0, summary

    with open(out / "soak.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 10, rows
    assert tuple(rows[0]) == COLUMNS
    assert all(float(row["curr_connections"]) > 0 for row in rows[-5:]), rows[-5:]

    png = (out / "soak.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
