"""Bounds the session and the promoter keep, without a server: the write
budget's accounting, append/prepend against --max-item-size, the cas
counter read inside the write transaction, runs kept whole."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from stig.engine.engine import Engine
from stig.engine.session import RunTooLarge, RunWaitedTooLong, Session
from stig.engine.settings import Settings
from stig.storage.ops import Add, Outcome
from stig_protocol.limits import Limits


@pytest.fixture
def engine(tmp_path: Path):
    engine = Engine(Settings(data_dir=tmp_path / "data", limits=Limits(max_item_size=2048)))
    yield engine
    engine.store.close()


def _commit(engine: Engine, *sessions: Session) -> None:
    for session in sessions:
        session.close_run()
        session.submit()
    engine.promoter.commit_queued_now()


def test_append_past_max_item_size_is_not_stored_and_changes_nothing(engine):
    a = Session(engine)
    a.set(b"k", b"x" * 1500, 0)
    _commit(engine, a)
    assert not a.concat(b"k", b"y" * 600, prepend=False)
    assert not a.concat(b"k", b"y" * 600, prepend=True)
    assert not a.run_open  # nothing recorded
    assert a.concat(b"k", b"y" * 548, prepend=False)  # exactly the limit is fine
    _commit(engine, a)
    assert engine.store.get(b"k").value == b"x" * 1500 + b"y" * 548


def test_append_that_outgrows_the_limit_at_promotion_is_skipped(engine):
    """Two appends that each fit the POV they were made in, but not together."""
    a, b = Session(engine), Session(engine)
    a.set(b"k", b"x" * 1500, 0)
    _commit(engine, a)
    assert a.concat(b"k", b"a" * 400, prepend=False)
    assert b.concat(b"k", b"b" * 400, prepend=False)
    a.close_run()
    b.close_run()
    promotion_b = b._closed[-1]
    _commit(engine, a, b)
    assert promotion_b.outcomes == [Outcome.NOT_STORED]
    assert engine.store.get(b"k").value == b"x" * 1500 + b"a" * 400


def test_budget_counts_every_uncommitted_write_and_frees_it_at_commit(engine):
    budget = engine.budget
    a, b = Session(engine), Session(engine)
    a.set(b"k", b"v" * 100, 0)
    b.add_conditional(Add(b"j", b"w" * 100, 0), b"j", 100)  # conditionals count too
    assert budget.used == a.pending_bytes + b.pending_bytes > 200
    a.discard_run()
    assert budget.used == b.pending_bytes
    _commit(engine, a, b)
    assert budget.used == 0 and a.pending_bytes == 0 and b.pending_bytes == 0


def test_an_open_conditional_run_is_bounded(tmp_path):
    engine = Engine(Settings(data_dir=tmp_path / "data", max_pending_bytes=10_000))
    try:
        a = Session(engine)
        with pytest.raises(RunTooLarge):
            for index in range(1000):
                a.add_conditional(Add(b"k%d" % index, b"v" * 100, 0), b"k%d" % index, 100)
        assert not a.run_open and not a.unresolved
        assert engine.budget.used == 0
    finally:
        engine.store.close()


def test_cas_counter_is_read_inside_the_write_transaction(engine):
    """A stale cached counter cannot make a cas unique repeat."""
    a = Session(engine)
    a.set(b"one", b"1", 0)
    _commit(engine, a)
    first = engine.store.get(b"one").cas
    engine.store.last_cas = 0  # a stale copy (as another writer would leave it)
    a.set(b"two", b"2", 0)
    _commit(engine, a)
    assert engine.store.get(b"two").cas == first + 1


# -- open runs past the budget take turns (stig/engine/budget.py) ---------------------------


@pytest.fixture
def small_budget(tmp_path: Path):
    engine = Engine(Settings(data_dir=tmp_path / "data", max_pending_bytes=10_000))
    yield engine
    engine.store.close()


async def _wait_in_background(nursery: trio.Nursery, session: Session) -> trio.Event:
    """Start ``session.wait_for_room()`` in ``nursery``, and return once every
    task is blocked; the event is set when the wait ends."""
    done = trio.Event()

    async def waiter() -> None:
        await session.wait_for_room()
        done.set()

    nursery.start_soon(waiter)
    await trio.testing.wait_all_tasks_blocked()
    return done


async def test_past_the_budget_one_open_run_holds_and_the_others_wait_for_room(small_budget):
    """The first run to pass the budget holds and goes on; another that grows
    keeps its write and waits until the holder's run ends, then holds."""
    budget = small_budget.budget
    a, b = Session(small_budget), Session(small_budget)
    a.set(b"a1", b"x" * 6000, 0)
    b.set(b"b1", b"y" * 6000, 0)  # passes the budget first: b holds
    assert budget.holder is b and not b.wants_room
    b.set(b"b2", b"y" * 1000, 0)  # the holder goes on
    assert not b.wants_room
    a.set(b"a2", b"x" * 1000, 0)  # kept, but a must wait before the next write
    assert a.wants_room and a.get(b"a2") is not None
    async with trio.open_nursery() as nursery:
        done = await _wait_in_background(nursery, a)
        assert not done.is_set() and budget.waiting == 1
        b.close_run()  # b's run ends: a's turn
        await done.wait()
    assert budget.waiting == 0 and budget.room_waits == 1 and not a.wants_room
    assert budget.open <= budget.limit and budget.holder is None  # room again
    a.close_run()
    assert budget.holder is None and budget.open == 0


async def test_a_waiting_run_whose_run_closed_meanwhile_does_not_wait(small_budget):
    budget = small_budget.budget
    a, b = Session(small_budget), Session(small_budget)
    b.set(b"b1", b"y" * 9000, 0)
    a.set(b"a1", b"x" * 2000, 0)  # passes: a holds
    b.set(b"b2", b"y" * 100, 0)
    assert b.wants_room
    b.close_run()  # a loud write closes its run at once: nothing to wait for
    assert not b.wants_room  # (so its reply is not sent alone, as before a wait)
    await b.wait_for_room()
    assert not b.wants_room and budget.room_waits == 0


def test_the_holder_alone_past_the_budget_is_refused_and_lets_go(small_budget):
    budget = small_budget.budget
    a, b = Session(small_budget), Session(small_budget)
    a.set(b"a1", b"x" * 5000, 0)
    b.set(b"b1", b"y" * 6000, 0)
    assert budget.holder is b
    with pytest.raises(RunTooLarge):
        b.set(b"b2", b"y" * 5000, 0)  # b's run alone is past the budget
    assert budget.holder is None and not b.run_open
    assert budget.open == a.pending_bytes  # a's run is untouched


def test_a_discarded_holder_lets_go(small_budget):
    budget = small_budget.budget
    a, b = Session(small_budget), Session(small_budget)
    a.set(b"a1", b"x" * 5000, 0)
    b.set(b"b1", b"y" * 6000, 0)
    assert budget.holder is b
    b.discard_run()  # its client went away mid-run
    assert budget.holder is None and budget.open == a.pending_bytes


async def test_a_run_waits_for_room_at_most_max_run_wait_ms_then_is_refused(
    small_budget, autojump_clock
):
    """The holder's run need not end (a client that does not read its replies
    blocks its connection in a send): a waiter is refused after
    --max-run-wait-ms (30 s by default), its run discarded, the others
    untouched."""
    budget = small_budget.budget
    a, b = Session(small_budget), Session(small_budget)
    a.set(b"a1", b"x" * 6000, 0)
    b.set(b"b1", b"y" * 6000, 0)  # b holds, and never ends
    a.set(b"a2", b"x" * 100, 0)
    assert a.wants_room
    start = trio.current_time()
    with pytest.raises(RunWaitedTooLong):
        await a.wait_for_room()
    assert trio.current_time() - start == pytest.approx(30.0)
    assert not a.run_open and a.get(b"a1") is None  # discarded whole
    assert budget.waiting == 0 and budget.wait_refusals == 1
    assert budget.wait_max == pytest.approx(30.0)
    assert budget.open == b.pending_bytes <= budget.limit
    assert budget.holder is None  # back within the budget: no turn to hold


async def test_a_lost_acknowledged_write_ends_a_wait_for_room_at_once(small_budget):
    """A waiter whose acknowledged writes fail to commit stops waiting (its
    connection reports the loss) instead of waiting for the holder."""
    budget = small_budget.budget
    a, b = Session(small_budget), Session(small_budget)
    a.set(b"a1", b"x" * 6000, 0)
    b.set(b"b1", b"y" * 6000, 0)
    a.set(b"a2", b"x" * 100, 0)
    async with trio.open_nursery() as nursery:
        done = await _wait_in_background(nursery, a)
        assert budget.waiting == 1
        a.ledger.failure = "commit failed: disk full"  # as FailureLedger.record sets it
        budget.wake()
        await done.wait()
    assert budget.waiting == 0 and budget.holder is b and a.run_open
