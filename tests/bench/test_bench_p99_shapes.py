"""The p99 rows of ``scripts/bench.py`` per Stig shape, each paired with memcached.

Not a benchmark: no speed is asserted.  ``--smoke --only p99`` over Stig,
``--workers 1`` and memcached (tiny rows) must give each Stig shape its own
peak, its own half-peak row, and a memcached row at that same rate that its
ratio is divided by, not another shape's; issue 20's targets are printed
from those rows.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stig_testkit.process import child_env

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "scripts" / "bench.py"
SHAPES = ("stig", "stig-w1")


@pytest.mark.skipif(shutil.which("memcached") is None, reason="memcached not installed")
def test_each_shape_is_paired_with_memcached_at_its_own_rate(tmp_path: Path) -> None:
    out_json = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--smoke",
            "--only",
            "p99",
            "--servers",
            ",".join(("memcached", *SHAPES)),
            "--json",
            str(out_json),
        ],
        cwd=REPO,
        env=child_env(TMPDIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out_json.read_text())["rows"]
    for shape in SHAPES:
        peak = next(r for r in rows if r["server"] == shape and r["workload"] == "mix")
        assert peak["status"] == "ok" and peak["extra"]["peak_for"] == "p99", peak
        own = next(r for r in rows if r["server"] == shape and r["workload"] == "p99")
        mc = next(
            r
            for r in rows
            if r["server"] == "memcached"
            and r["workload"] == "p99"
            and r["extra"]["peak_of"] == shape
        )
        assert own["status"] == "ok" and mc["status"] == "ok", (own, mc)
        rate = peak["items_per_s"] / 2
        assert own["extra"]["offered_per_s"] == rate == mc["extra"]["offered_per_s"], (own, mc)
        assert own["ratio"] == own["p99_us"] / mc["p99_us"], (own, mc)
        assert own["ref"] == "memcached p99"
        assert own["cpu_us_per_item"] and mc["cpu_us_per_item"], (own, mc)
        assert mc["label"] == f"p99 at ½ {shape}'s peak mix d=1 100B", mc
        assert f"| p99 at ½ {shape}'s peak ≤ 5× memcached's | at {rate:,.0f}/s:" in proc.stdout
