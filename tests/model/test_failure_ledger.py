"""A session's ledger of failed promotions (stig/engine/failure_ledger.py):
each failure recorded is reported once, by the one who must report it, and
then cleared.

Real :class:`Promotion` records, finished by hand as the promoter finishes
them; no engine.  The session's and the core's use of the ledger is covered
by tests/model/test_pov_model.py and the fault tests in tests/durability/.
"""

from __future__ import annotations

from stig.engine.failure_ledger import FailureLedger
from stig.engine.promoter import Promotion
from stig.storage.ops import Outcome


def _finished(
    error: str | None,
    *,
    answered_early: bool = False,
    held_reply: bool = False,
    first_seq: int = 1,
) -> Promotion:
    promotion = Promotion(
        [], {}, 0, answered_early=answered_early, first_seq=first_seq, held_reply=held_reply
    )
    if error is None:
        promotion.outcomes = [Outcome.STORED]
    promotion.error = error
    promotion.finish()
    return promotion


def test_a_commit_records_nothing() -> None:
    ledger = FailureLedger()
    assert not ledger.record(_finished(None, answered_early=True), acked_seq=5)
    assert ledger.failure is None and ledger.unreported is None


def test_a_failure_is_unreported_until_a_reply_reports_it_then_cleared() -> None:
    ledger = FailureLedger()
    assert not ledger.record(_finished("disk full"), acked_seq=0)
    assert ledger.unreported == "disk full" and ledger.failure is None
    ledger.reported([])
    assert ledger.unreported is None


def test_a_held_reply_reports_its_own_failure() -> None:
    ledger = FailureLedger()
    ledger.record(_finished("disk full", held_reply=True), acked_seq=0)
    assert ledger.unreported is None


def test_a_loss_of_writes_answered_from_the_pov_is_the_failure_once_and_wakes_the_connection() -> (
    None
):
    woken: list[str | None] = []
    ledger = FailureLedger()
    ledger.on_failure = lambda: woken.append(ledger.failure)
    assert ledger.record(_finished("disk full", answered_early=True, first_seq=3), acked_seq=2)
    assert woken == ["disk full"] and ledger.failure == "disk full"
    assert ledger.loss_message() == "disk full; unacknowledged writes were not stored"
    # A second loss is not another failure: the first is what the connection says.
    assert not ledger.record(_finished("again", answered_early=True), acked_seq=9)
    assert woken == ["disk full"] and ledger.failure == "disk full"
    assert ledger.unreported == "again"


def test_a_loss_of_acknowledged_writes_says_so() -> None:
    ledger = FailureLedger()
    ledger.record(_finished("disk full", answered_early=True, first_seq=3), acked_seq=3)
    assert ledger.loss_message() == "disk full; acknowledged writes were lost"


def test_a_failed_run_owing_verdicts_reports_itself_once() -> None:
    ledger = FailureLedger()
    failed = _finished("disk full")
    ledger.record(failed, acked_seq=0)
    assert ledger.failure_to_report(_finished(None)) is None  # committed: nothing
    assert ledger.failure_to_report(failed) == "disk full"
    assert ledger.unreported is None  # reported with it: a barrier now answers success


def test_a_failure_a_reply_reported_is_owed_to_no_verdict() -> None:
    ledger = FailureLedger()
    failed, pending = _finished("disk full"), Promotion([], {}, 0)
    ledger.record(failed, acked_seq=0)
    ledger.reported([(failed, ["tag"]), (pending, ["tag"])])
    assert ledger.failure_to_report(failed) is None  # reported already: cleared
    pending.error = "later"
    pending.finish()
    assert ledger.failure_to_report(pending) == "later"  # unfinished when reported


def test_a_write_refused_quietly_is_reported_unless_a_failure_is_first() -> None:
    ledger = FailureLedger()
    ledger.refused_quietly("out of space")
    assert ledger.unreported == "out of space"
    ledger.reported([])
    ledger.record(_finished("disk full"), acked_seq=0)
    ledger.refused_quietly("out of space")
    assert ledger.unreported == "disk full"
