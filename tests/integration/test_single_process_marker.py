"""The ``single_process`` marker (stig_testkit/single_process.py): a marked
test's servers are one process whatever shape the suite runs in, and an
unmarked test's servers are in that shape.

The suite's shape is ``--workers 2`` (stig_testkit.process.TEST_SHAPE), so
the marked test's server answers ``stig_workers 0``, the unmarked one ``2``.
"""

from __future__ import annotations

import os

import pytest

from stig.tools.cli import default_workers
from stig_testkit import process
from stig_testkit.process import StigProcess
from stig_testkit.workers import stats_of


def _workers_asked(*args: str) -> str:
    """The ``--workers`` that ``stig serve`` takes from ``args`` (the last wins)."""
    workers = str(default_workers())
    for index, arg in enumerate(args[:-1]):
        if arg == "--workers":
            workers = args[index + 1]
    return workers


@pytest.mark.single_process("this test checks the marker itself")
def test_a_marked_test_starts_one_process(stig_server: StigProcess) -> None:
    assert stats_of(stig_server.connect())["stig_workers"] == "0"


@pytest.mark.single_process("this test checks the marker itself")
def test_a_marked_test_keeps_its_own_workers_option(stig_factory) -> None:
    server = stig_factory("--workers", "1")
    assert stats_of(server.connect())["stig_workers"] == "1"


def test_an_unmarked_test_runs_in_the_suites_shape(stig_server: StigProcess) -> None:
    expected = _workers_asked(*process.SERVE_ARGS)
    assert stats_of(stig_server.connect())["stig_workers"] == expected


def test_without_a_shape_named_test_servers_have_two_workers(stig_server: StigProcess) -> None:
    """The suite's own shape (README "Test it"): with no
    ``$STIG_TEST_SERVE_ARGS`` every test server spreads its connections over
    two workers, whatever ``stig serve``'s default is on this machine."""
    if "STIG_TEST_SERVE_ARGS" in os.environ:
        pytest.skip("the run names its own shape")
    assert stats_of(stig_server.connect())["stig_workers"] == "2"
