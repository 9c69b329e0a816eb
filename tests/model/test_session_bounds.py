"""Bounds the session and the promoter keep, without a server: the write
budget's accounting, append/prepend against --max-item-size, the cas
counter read inside the write transaction, runs kept whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.limits import Limits
from stig.engine import Engine
from stig.ops import Add, Outcome
from stig.session import RunTooLarge, Session
from stig.settings import Settings


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
