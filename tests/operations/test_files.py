"""The files a database makes: private modes, and the backup's progress line.

docs/operations.md ("Files and permissions") promises that the data files,
the lock file and backups are created 0600 in directories created 0700, that
existing files keep their mode, and that the backup's progress line ends at
100% of the bytes it wrote.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from opstools import run_stig


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _modes(directory: Path) -> dict[str, int]:
    return {p.name: _mode(p) for p in directory.iterdir()}


def test_a_new_data_directory_and_its_files_are_private(stig_factory, tmp_path):
    data_dir = tmp_path / "fresh" / "data"
    server = stig_factory(data_dir=data_dir)
    server.client().set("k", b"v", noreply=False)
    server.settle()
    assert _mode(data_dir) == 0o700
    assert _modes(data_dir) == {"data.mdb": 0o600, "lock.mdb": 0o600, "stig.lock": 0o600}


def test_existing_files_keep_their_mode(stig_factory, tmp_path):
    data_dir = tmp_path / "data"
    server = stig_factory(data_dir=data_dir)
    server.client().set("k", b"v", noreply=False)
    server.terminate()
    os.chmod(data_dir, 0o750)
    for name in ("data.mdb", "lock.mdb", "stig.lock"):
        os.chmod(data_dir / name, 0o640)
    server.start()
    assert server.client().get("k") == b"v"
    assert _mode(data_dir) == 0o750
    assert _modes(data_dir) == {"data.mdb": 0o640, "lock.mdb": 0o640, "stig.lock": 0o640}
    server.terminate()
    # restore --force replaces data.mdb with a file of the same mode
    backup = tmp_path / "backup"
    run_stig("backup", str(backup), "--data-dir", str(data_dir), "--quiet")
    run_stig("restore", str(backup), "--data-dir", str(data_dir), "--force", "--quiet")
    assert _mode(data_dir / "data.mdb") == 0o640


def test_backups_and_restores_are_private(stig_server, tmp_path):
    stig_server.client().set("k", b"v", noreply=False)
    stig_server.settle()
    backup = tmp_path / "new" / "backup"
    run_stig("backup", str(backup), "--data-dir", str(stig_server.data_dir), "--quiet")
    assert _mode(backup) == 0o700
    assert _modes(backup) == {"data.mdb": 0o600}
    restored = tmp_path / "restored"
    run_stig("restore", str(backup), "--data-dir", str(restored), "--quiet")
    assert _mode(restored) == 0o700
    modes = _modes(restored)  # lock.mdb too: restore reads the result back
    assert modes == dict.fromkeys(["data.mdb", "lock.mdb", "stig.lock"], 0o600), modes


def test_backup_progress_ends_at_100_percent(stig_server, tmp_path):
    client = stig_server.client()
    for start in range(0, 6000, 500):
        client.set_many({f"k{i}": b"v" * 300 for i in range(start, start + 500)}, noreply=False)
    # Deletes leave free pages, which the compacted copy drops: a bar measured
    # against the live file's size would end far below 100%.
    for i in range(0, 6000, 2):
        client.delete(f"k{i}", noreply=False)
    stig_server.settle()
    backup = tmp_path / "backup"
    done = run_stig("backup", str(backup), "--data-dir", str(stig_server.data_dir))
    size = (backup / "data.mdb").stat().st_size
    last = done.stderr.decode().strip().splitlines()[-1]
    assert "100%" in last and f"{size:,}/{size:,} bytes" in last, last
