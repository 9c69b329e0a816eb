"""One server per data directory (issue 8, item 3): the second one is refused.

Two servers on one LMDB environment would hand out the same cas uniques and
race two promoters; ``stig serve`` holds an exclusive lock on ``stig.lock``
in the data directory, and a second server exits non-zero naming it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from stig_testkit.process import CODE_ROOT as REPO
from stig_testkit.process import ServerFailed


def test_second_server_on_one_data_dir_is_refused(stig_factory):
    first = stig_factory()
    first.client().set("k", "v")
    proc = subprocess.run(
        [sys.executable, "-m", "stig", "serve", "--port", "0", "--data-dir", str(first.data_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode != 0
    assert str(first.data_dir) in proc.stderr
    assert "in use by another Stig process" in proc.stderr
    assert "stig listening" not in proc.stdout
    # The first one never noticed.
    assert first.client().get("k") == b"v"


def test_second_server_via_fixture_fails_to_start(stig_factory):
    first = stig_factory()
    with pytest.raises(ServerFailed, match="in use by another Stig process"):
        stig_factory(data_dir=first.data_dir)


def test_lock_is_released_on_exit_and_on_crash(stig_factory):
    server = stig_factory()
    server.terminate()
    server.start()  # a clean exit released it
    server.kill()
    server.start()  # so did SIGKILL: the kernel drops a dead process's flock
    assert server.client().get("missing") is None
