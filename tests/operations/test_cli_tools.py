"""The operations commands as a newcomer meets them: help, progress, --quiet."""

from __future__ import annotations

import pytest
from opstools import run_stig


@pytest.mark.parametrize(
    "command, words",
    [
        ("backup", [b"hot backup", b"Example"]),
        ("restore", [b"backup", b"--force", b"Example"]),
        ("check", [b"cas", b"exit status 1"]),
        ("dump", [b"meta commands", b"--data-dir", b"--server", b"Examples"]),
        ("load", [b"transactions", b"refused", b"Example"]),
        ("move-keys copy", [b"--old", b"--new", b"--state", b"--key-prefix", b"cas"]),
        ("move-keys finish", [b"--old", b"--new", b"--state", b"deleted", b"again"]),
        ("move-keys cleanup", [b"--old", b"--new", b"old ring", b"stale"]),
    ],
)
def test_every_command_explains_itself(command, words):
    text = run_stig(*command.split(), "--help").stdout
    for word in words:
        assert word in text, (command, word)
    assert b"--quiet" in text


def test_progress_shows_counts_and_rate_unless_quiet(stig_server):
    stig_server.client().set_many({f"k{i}": b"v" for i in range(50)}, noreply=False)
    stig_server.settle()
    loud = run_stig("dump", "--data-dir", str(stig_server.data_dir))
    assert b"50/50 keys" in loud.stderr and b"keys/s" in loud.stderr
    quiet = run_stig("dump", "--data-dir", str(stig_server.data_dir), "--quiet")
    assert quiet.stderr == b"" and quiet.stdout == loud.stdout
    checked = run_stig("check", "--data-dir", str(stig_server.data_dir), "--quiet")
    assert checked.stderr == b"" and b"50 keys" in checked.stdout


def test_move_keys_names_its_steps_and_where_they_are_explained():
    text = run_stig("move-keys", "--help").stdout
    for word in (b"copy", b"finish", b"cleanup", b"HashClient", b"docs/scaling.md"):
        assert word in text, word


def test_serve_takes_a_snapshot_age_bound_and_refuses_a_bad_one(tmp_path):
    """``--max-snapshot-age-ms`` is explained in ``stig serve --help`` and
    checked before anything starts (its effect: tests/durability/test_old_snapshots.py;
    a server shows it in ``stats settings`` there)."""
    text = run_stig("serve", "--help").stdout
    assert b"--max-snapshot-age-ms" in text and b"new snapshot" in text
    refused = run_stig(
        "serve", "--max-snapshot-age-ms", "0", "--data-dir", str(tmp_path / "d"), check=False
    )
    assert refused.returncode == 2 and b"--max-snapshot-age-ms" in refused.stderr
    assert not (tmp_path / "d").exists()
