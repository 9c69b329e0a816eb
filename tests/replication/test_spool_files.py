"""A follower's snapshot spool is named for the process that writes it
(stig/replication/follower.py): a stream worker restarted while the writer
process still loads its predecessor's spool must not truncate that file
(found by the review of followers with workers), and spools left by killed
processes are removed when a follower starts."""

from __future__ import annotations

import subprocess
from pathlib import Path

from stig.replication.follower import remove_stale_spools, spool_path


def test_each_process_spools_to_a_file_of_its_own(tmp_path: Path) -> None:
    assert spool_path(tmp_path) != spool_path(tmp_path, pid=1)
    assert spool_path(tmp_path).parent == tmp_path


def test_only_the_spools_of_gone_processes_are_removed(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    live = subprocess.Popen(["sleep", "60"])
    try:
        kept = spool_path(tmp_path, live.pid)
        stale = [spool_path(tmp_path, gone.pid), tmp_path / "replica-snapshot.tmp"]
        for path in (kept, *stale):
            path.write_bytes(b"chunk")
        (tmp_path / "data.mdb").write_bytes(b"not a spool")
        assert sorted(remove_stale_spools(tmp_path)) == sorted(stale)
        assert kept.exists() and (tmp_path / "data.mdb").exists()
    finally:
        live.kill()
        live.wait()
