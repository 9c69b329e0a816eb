"""Stig's histories under power cuts: its data directory on lazyfs (a FUSE
filesystem that forgets what was never synced), each crash a SIGKILL and a
power cut that drops or tears the unsynced pages.  A SIGKILL alone leaves
the page cache intact; only this shows that what Stig acknowledged was on
disk.  Needs FUSE and root; skips, saying why, without them.
"""

from __future__ import annotations

import pytest

from stig_testkit.history.powercut import LazyMount, cut_under, fuse_unavailable
from stig_testkit.history.run import run_history
from stig_testkit.history.workload import ALL_CLOSERS

_reason = fuse_unavailable()
pytestmark = pytest.mark.skipif(_reason is not None, reason=f"needs lazyfs: {_reason}")

SMALL_BOUNDS = ("--max-pending-bytes", "64k", "--max-commit-lag-ms", "5")


@pytest.mark.parametrize(
    ("mode", "closers"),
    [("default", ALL_CLOSERS), ("durable", ALL_CLOSERS)],
    ids=["default", "durable-acks"],
)
def test_history_under_power_cuts(stig_factory, tmp_path, mode, closers):
    fs = LazyMount(tmp_path / "backing", tmp_path / "mount", tmp_path / "lazyfs")
    fs.start(seed=19)
    args = (*SMALL_BOUNDS, "--durable-acks") if mode == "durable" else SMALL_BOUNDS
    server = stig_factory(*args, data_dir=tmp_path / "mount" / "data")
    try:
        outcome = run_history(
            server, mode, 1500, crashes=3, seed=23, closers=closers, kill=cut_under(fs, server)
        )
    finally:
        server.kill()
        fs.kill()
    verdict = outcome.verdict
    assert outcome.unexpected_breaks == 0, verdict.render()
    assert verdict.valid, verdict.render()
    assert all(verdict.levels.values()), verdict.render()
    if mode == "durable":
        assert not verdict.allowed, verdict.render()
