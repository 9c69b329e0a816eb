"""Stig's histories, checked: list-append transactions over the text, meta and
binary protocols at once, with every way a run can end, under SIGKILLs.

What Stig allows (docs/pov.md, docs/history.md): in the default mode a crash
may lose the last acknowledged runs, whole; under --durable-acks nothing
acknowledged is lost.  Everything else — every isolation anomaly, a run lost
in part, an acknowledged run lost while a later one survived — is a
violation in both modes.  The servers run with a small --max-pending-bytes
and --max-commit-lag-ms, so the flow control is in play too.
"""

from __future__ import annotations

from stig_testkit.history.run import run_history
from stig_testkit.history.workload import ALL_CLOSERS, REPLY_CLOSERS

SMALL_BOUNDS = ("--max-pending-bytes", "64k", "--max-commit-lag-ms", "5")
TXNS = 3000
CRASHES = 4


def _run(stig_factory, mode: str, crashes: int, closers=ALL_CLOSERS, seed: int = 7):
    args = (*SMALL_BOUNDS, "--durable-acks") if mode == "durable" else SMALL_BOUNDS
    server = stig_factory(*args)
    outcome = run_history(server, mode, TXNS, crashes=crashes, seed=seed, closers=closers)
    assert outcome.unexpected_breaks == 0, outcome.verdict.render()
    assert outcome.verdict.stats["crashes"] == crashes
    return outcome.verdict


def test_a_history_without_crashes_is_strict_serializable(stig_factory):
    verdict = _run(stig_factory, "default", crashes=0)
    assert verdict.valid, verdict.render()
    assert all(verdict.levels.values()), verdict.render()
    assert not verdict.allowed


def test_default_mode_under_sigkills_loses_only_whole_last_runs(stig_factory):
    verdict = _run(stig_factory, "default", crashes=CRASHES)
    assert verdict.valid, verdict.render()
    assert all(verdict.levels.values()), verdict.render()
    assert set(verdict.allowed) <= {"lost-in-crash"}


def test_durable_acks_under_sigkills_keep_runs_acknowledged_by_writes_and_barriers(stig_factory):
    """Runs closed by a loud append, ``mn``, a binary No-op, a quiet ``mg``
    run + ``mn`` or a GetKQ run + No-op (or never acknowledged: quit,
    disconnect, abort), with standalone reads."""
    verdict = _run(stig_factory, "durable", crashes=CRASHES, closers=ALL_CLOSERS - REPLY_CLOSERS)
    assert verdict.valid, verdict.render()
    assert not verdict.allowed


def test_durable_acks_under_sigkills_keep_runs_acknowledged_by_any_reply(stig_factory):
    verdict = _run(stig_factory, "durable", crashes=CRASHES, closers=REPLY_CLOSERS)
    assert verdict.valid, verdict.render()
    assert not verdict.allowed
