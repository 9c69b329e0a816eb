"""``stig serve`` without ``--workers`` runs a worker per core (README,
docs/workers.md): the cores this process may run on, not the machine's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stig.tools.cli import default_workers
from stig_testkit import process
from stig_testkit.process import StigProcess
from stig_testkit.workers import stats_of


def _serve_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cores: set[int] | None):
    """A server started with no ``--workers`` (the suite's shape dropped),
    pinned to ``cores`` if given."""
    monkeypatch.setattr(process, "SERVE_ARGS", ())
    server = StigProcess(tmp_path / "data", tmp_path, ())
    if cores is not None:
        server.preexec_fn = lambda: os.sched_setaffinity(0, cores)
    return server.start()


def test_the_default_is_a_worker_per_core(tmp_path, monkeypatch) -> None:
    server = _serve_default(tmp_path, monkeypatch, None)
    try:
        expected = min(len(os.sched_getaffinity(0)), 64)
        assert default_workers() == expected
        assert stats_of(server.connect())["stig_workers"] == str(expected)
    finally:
        server.terminate()


def test_on_one_core_the_default_is_one_worker_and_the_writer(tmp_path, monkeypatch) -> None:
    """Pinned to one core (taskset, a container's cpuset): one worker, and
    the writer in a process of its own (``--workers 1``)."""
    server = _serve_default(tmp_path, monkeypatch, {min(os.sched_getaffinity(0))})
    try:
        assert stats_of(server.connect())["stig_workers"] == "1"
    finally:
        server.terminate()
