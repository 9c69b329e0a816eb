"""The history checker on hand-made histories: each anomaly it names, found
where it is, and nothing found where there is none.

Pure: histories in, verdicts out; no server.  Each history is the smallest
that shows its anomaly, built with :class:`Book`; times are made up (each
transaction takes one tick after the previous one unless told otherwise).
"""

from __future__ import annotations

import pytest

from stig_testkit.history.checker import (
    STIG_ASYNC_FAILOVER,
    STIG_DEFAULT,
    STIG_DURABLE,
    STRICT,
    Rules,
    Verdict,
    check,
)
from stig_testkit.history.model import Append, History, Read, Status, Txn, dump, load


class Book:
    """Writes a history transaction by transaction."""

    def __init__(self) -> None:
        self.txns: list[Txn] = []
        self.crashes: list[float] = []
        self.clock = 0.0
        self.epoch = 0

    def _add(
        self,
        session: int,
        appends: tuple[Append, ...],
        reads: tuple[Read, ...],
        status: Status,
        at: tuple[float, float] | None,
        closer: str,
    ) -> int:
        if at is None:
            at = (self.clock + 1, self.clock + 2)
        self.clock = max(self.clock, at[1])
        kind = "read" if reads and not appends else "run"
        txn = Txn(
            id=len(self.txns) + 1,
            session=session,
            protocol="text",
            kind=kind,
            closer=closer,
            status=status,
            invoke=at[0],
            complete=at[1] if status == "ok" else None,
            epoch=self.epoch,
            appends=appends,
            reads=reads,
        )
        self.txns.append(txn)
        return txn.id

    def run(
        self,
        session: int,
        *appends: tuple[str, int],
        status: Status = "ok",
        at: tuple[float, float] | None = None,
        closer: str = "text:mn",
        reads: dict[str, list[int]] | None = None,
    ) -> int:
        """A run appending ``(key, element)`` pairs (and reading, for mixed transactions)."""
        got = tuple(Read(k, tuple(v)) for k, v in (reads or {}).items())
        return self._add(session, tuple(Append(k, e) for k, e in appends), got, status, at, closer)

    def read(self, session: int, at: tuple[float, float] | None = None, **lists: list[int]) -> int:
        reads = tuple(Read(k, tuple(v)) for k, v in lists.items())
        return self._add(session, (), reads, "ok", at, "text:get")

    def crash(self) -> None:
        self.clock += 0.5
        self.crashes.append(self.clock)
        self.epoch += 1

    def check(self, rules: Rules = STRICT) -> Verdict:
        return check(History(tuple(self.txns), tuple(self.crashes)), rules)


def _only(verdict: Verdict, *kinds: str) -> None:
    assert set(verdict.counts) == set(kinds), verdict.render()


def test_a_serial_history_is_valid_at_every_level():
    book = Book()
    book.run(1, ("x", 1), ("y", 2))
    book.read(2, x=[1], y=[2])
    book.run(2, ("x", 3))
    book.read(1, x=[1, 3], y=[2])
    verdict = book.check()
    assert verdict.valid, verdict.render()
    assert all(verdict.levels.values())
    assert verdict.stats["txns"] == 4


def test_g0_write_cycle():
    """Two runs appended to x and y in opposite orders."""
    book = Book()
    t1 = book.run(1, ("x", 1), ("y", 1_1), at=(1, 5))
    t2 = book.run(2, ("x", 2), ("y", 2_2), at=(1, 5))
    book.read(3, x=[1, 2], y=[2_2, 1_1])
    verdict = book.check()
    _only(verdict, "G0")
    assert set(verdict.examples["G0"][0].txns) == {t1, t2}
    assert not any(verdict.levels.values())


def test_g1a_aborted_read():
    book = Book()
    aborted = book.run(1, ("x", 1), status="fail", closer="text:abort")
    reader = book.read(2, x=[1])
    verdict = book.check()
    assert "G1a" in verdict.counts, verdict.render()
    assert verdict.examples["G1a"][0].txns == (aborted, reader)
    assert not verdict.levels["snapshot-isolation"]


def test_g1b_intermediate_read():
    """A read that ends inside a run that appended twice to its key."""
    book = Book()
    run = book.run(1, ("x", 1), ("x", 2), at=(1, 5))
    reader = book.read(2, x=[1], at=(2, 3))
    book.read(3, x=[1, 2])
    verdict = book.check()
    _only(verdict, "G1b")
    assert verdict.examples["G1b"][0].txns == (run, reader)


def test_g1c_circular_information_flow():
    """Mixed transactions that each read the other's write."""
    book = Book()
    book.run(1, ("x", 1), reads={"y": [2]}, at=(1, 5))
    book.run(2, ("y", 2), reads={"x": [1]}, at=(1, 5))
    book.read(3, x=[1], y=[2])
    verdict = book.check()
    _only(verdict, "G1c")
    assert verdict.levels == {
        "snapshot-isolation": False,
        "serializable": False,
        "strict-serializable": False,
    }


def test_g_single_read_skew_of_a_torn_run():
    """A multi-key read that sees one key of a run and not the other."""
    book = Book()
    run = book.run(1, ("x", 1), ("y", 2), at=(1, 5))
    reader = book.read(2, x=[1], y=[], at=(2, 3))
    book.read(3, x=[1], y=[2])
    verdict = book.check()
    _only(verdict, "G-single")
    assert set(verdict.examples["G-single"][0].txns) == {run, reader}
    assert "-rw->" in verdict.examples["G-single"][0].cycle


def test_g2_write_skew_is_allowed_by_snapshot_isolation_only():
    book = Book()
    book.run(1, ("y", 1), reads={"x": []}, at=(1, 5))
    book.run(2, ("x", 2), reads={"y": []}, at=(1, 5))
    book.read(3, x=[2], y=[1])
    verdict = book.check()
    _only(verdict, "G2")
    assert verdict.levels == {
        "snapshot-isolation": True,
        "serializable": False,
        "strict-serializable": False,
    }


def test_stale_read_breaks_only_strict_serializability():
    """A read begun after an append was acknowledged does not see it."""
    book = Book()
    book.run(1, ("x", 1), at=(1, 2))
    book.read(2, x=[], at=(3, 4))
    book.read(3, x=[1])
    verdict = book.check()
    _only(verdict, "G-single-realtime")
    assert verdict.levels == {
        "snapshot-isolation": True,
        "serializable": True,
        "strict-serializable": False,
    }


def test_lost_acknowledged_write_without_a_crash():
    book = Book()
    run = book.run(1, ("x", 1))
    book.read(2, x=[])
    verdict = book.check(STIG_DEFAULT)
    _only(verdict, "lost-acknowledged-write")
    assert verdict.examples["lost-acknowledged-write"][0].txns[0] == run


def _lost_in_crash() -> Book:
    book = Book()
    book.run(1, ("x", 1))
    book.read(2, x=[1])
    book.run(1, ("x", 2), ("y", 3), closer="text:version")
    book.crash()
    book.read(3, x=[1], y=[])
    return book


def test_a_run_lost_whole_in_a_crash_is_allowed_in_the_default_mode_only():
    default = _lost_in_crash().check(STIG_DEFAULT)
    assert default.valid, default.render()
    assert default.allowed == {"lost-in-crash": 1}
    durable = _lost_in_crash().check(STIG_DURABLE)
    _only(durable, "lost-acknowledged-write")
    assert "text:version" in durable.examples["lost-acknowledged-write"][0].text


def test_a_crash_loss_is_a_violation_once_another_session_read_it():
    book = Book()
    book.run(1, ("x", 1))
    book.read(2, x=[1])
    book.crash()
    book.read(3, x=[])
    verdict = book.check(STIG_DEFAULT)
    _only(verdict, "lost-acknowledged-write")
    assert "another session read it" in verdict.examples["lost-acknowledged-write"][0].text


def _read_then_lost() -> Book:
    book = Book()
    book.run(1, ("x", 1))
    book.read(2, x=[1], y=[])
    book.run(4, ("y", 5))
    book.read(2, x=[1], y=[5])
    book.crash()
    book.run(3, ("x", 2))
    book.read(3, x=[2], y=[])
    return book


def test_an_asynchronous_failover_may_lose_runs_other_sessions_read():
    """The old primary served reads of groups its follower never got: the
    loss is allowed (whole, a suffix of the epoch), and the reads of the
    discarded timeline are set aside rather than made into cycles."""
    verdict = _read_then_lost().check(STIG_ASYNC_FAILOVER)
    assert verdict.valid, verdict.render()
    assert all(verdict.levels.values()), verdict.render()
    assert verdict.allowed == {"lost-after-read": 2}
    assert verdict.stats["reads_of_lost_runs"] == 2
    single_node = _read_then_lost().check(STIG_DEFAULT)
    assert single_node.counts.get("lost-acknowledged-write") == 2, single_node.render()


@pytest.mark.parametrize(
    ("rules", "read_by_another"), [(STIG_DEFAULT, False), (STIG_ASYNC_FAILOVER, True)]
)
def test_a_crash_loss_is_a_violation_when_a_later_run_survived(rules: Rules, read_by_another: bool):
    """Runs commit in the order they were handed over: a crash keeps a prefix,
    and so does a failover (the follower applies the groups in order), even
    when the lost run was read on the old primary."""
    book = Book()
    book.run(1, ("x", 1))
    if read_by_another:
        book.read(3, x=[1])
    book.run(2, ("y", 2))
    book.crash()
    book.read(3, x=[], y=[2])
    verdict = book.check(rules)
    _only(verdict, "lost-acknowledged-write")
    assert "survived" in verdict.examples["lost-acknowledged-write"][0].text


def test_own_reads_of_a_run_lost_in_a_crash_are_not_inconsistent():
    """The session read its own append from its POV; the crash took it."""
    book = Book()
    book.run(1, ("x", 1))
    book.read(1, x=[1])
    book.crash()
    book.run(2, ("x", 2))
    book.read(3, x=[2])
    verdict = book.check(STIG_DEFAULT)
    assert verdict.valid, verdict.render()
    assert verdict.allowed == {"lost-in-crash": 1}


def test_part_of_a_run_lost_is_always_a_violation():
    book = Book()
    run = book.run(1, ("x", 1), ("y", 2))
    book.crash()
    book.read(2, x=[1], y=[])
    verdict = book.check(STIG_DEFAULT)
    _only(verdict, "partial-run")
    assert verdict.examples["partial-run"][0].txns[0] == run


def test_an_unacknowledged_run_may_land_but_only_whole():
    book = Book()
    book.run(1, ("x", 1), ("y", 2), status="info", closer="text:quit")
    book.run(2, ("x", 3), ("y", 4), status="info", closer="text:disconnect")
    book.read(3, x=[1], y=[2])
    verdict = book.check(STIG_DURABLE)
    assert verdict.valid, verdict.render()
    book.run(4, ("x", 5), ("y", 6), status="info", closer="text:quit")
    book.read(3, x=[1, 5], y=[2])
    _only(book.check(STIG_DURABLE), "partial-run")


def test_duplicate_and_invented_elements():
    book = Book()
    book.run(1, ("x", 1))
    book.read(2, x=[1, 1])
    book.read(3, x=[1, 99])
    verdict = book.check()
    assert {"duplicate-element", "invented-element"} <= set(verdict.counts), verdict.render()


def test_an_element_read_under_another_key_is_invented():
    book = Book()
    book.run(1, ("x", 1))
    book.read(2, x=[1], y=[1])
    assert "invented-element" in book.check().counts


def test_a_read_that_is_no_prefix_of_the_order_is_inconsistent():
    book = Book()
    book.run(1, ("x", 1))
    book.run(2, ("x", 2))
    book.read(3, x=[2])
    book.read(4, x=[1, 2])
    verdict = book.check()
    assert "inconsistent-read" in verdict.counts, verdict.render()


@pytest.mark.parametrize("rules", [STRICT, STIG_DEFAULT])
def test_own_pov_over_an_older_base(rules: Rules):
    """Stig: a session that appended x reads its own value, whose base is
    older than a concurrent run of another session committed before it
    (docs/pov.md: the POV shows the session's value until it is committed)."""
    book = Book()
    book.run(1, ("x", 1), at=(1, 4))  # session 1's POV: [1]
    book.run(2, ("x", 2), at=(2, 3))  # handed over first, committed first
    book.read(1, x=[1], at=(5, 6))  # session 1 still reads its POV
    book.read(3, x=[2, 1])
    verdict = book.check(rules)
    if rules.pov:
        assert verdict.valid, verdict.render()
    else:
        assert not verdict.valid


def test_the_verdict_shows_the_transactions_with_their_wire():
    book = Book()
    book.run(1, ("x", 1), ("y", 2), at=(1, 5))
    book.read(2, x=[1], y=[], at=(2, 3))
    book.read(3, x=[1], y=[2])
    text = book.check().render()
    assert "G-single" in text and "append x 1" in text and "read y -> []" in text
    assert text.endswith("VERDICT: INVALID")


def test_a_history_is_kept_and_read_back_whole():
    book = _lost_in_crash()
    history = History(tuple(book.txns), tuple(book.crashes))
    assert load(dump(history)) == history


def test_a_pov_read_stays_one_when_a_crash_takes_its_own_writes():
    """Session 1's read ends with its own pending append (its POV, over an
    older base that lacks session 2's append); the crash then takes session
    1's run.  Stripped of it, the read must not pass for a stale snapshot."""
    book = Book()
    book.run(2, ("x", 1), at=(1, 2))
    book.run(1, ("x", 2), at=(1.5, 3))  # POV [2]: evaluated before 1 was handed over
    book.read(1, x=[2], at=(3.5, 4))
    book.crash()
    book.read(3, x=[1])
    verdict = book.check(STIG_DEFAULT)
    assert verdict.valid, verdict.render()
    assert verdict.allowed == {"lost-in-crash": 1}
