"""The commit thread's GIL loan (stig/promoter.py, :class:`GilLoan`): the event
loop waits while a small group is applied and goes on before its commit
(the fsync); it never waits longer than its bound, and a failed group lets
it go at once.  Real LMDB, no server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import trio

from stig.ops import Put
from stig.promoter import LOAN_SECONDS, GilLoan, Promoter, Promotion
from stig.stats import PromoterStats
from stig.store import Store


@pytest.fixture
def store(tmp_path: Path):
    store = Store(tmp_path / "data")
    yield store
    store.close()


def test_before_commit_runs_once_after_every_put_and_before_the_commit(store):
    seen: list[object] = []

    def before_commit() -> None:
        # Everything is applied in the write transaction, nothing committed:
        # a snapshot begun now still reads the old state.
        seen.append(store.get(b"a"))

    store.apply([[Put(b"a", b"1", 0), Put(b"b", b"2", 0)]], before_commit)
    assert seen == [None]
    assert store.get(b"a").value == b"1"


def test_a_loan_ends_when_repaid_or_at_its_bound():
    loan = GilLoan()
    threading.Timer(0.01, loan.repay).start()
    loan.wait(30.0)  # returns on repay, long before the bound
    loan.repay()  # repaid twice: harmless

    never = GilLoan()  # nobody repays: the bound ends the wait
    waiter = threading.Thread(target=never.wait, args=(LOAN_SECONDS,), daemon=True)
    waiter.start()
    waiter.join(10.0)
    assert not waiter.is_alive()


async def test_the_loop_goes_on_while_a_lent_commit_is_held(store, monkeypatch):
    """A commit stalled inside the loan (as under a stalled disk) holds the
    event loop for at most LOAN_SECONDS: other tasks keep running."""
    release = threading.Event()
    applying = threading.Event()
    released: list[bool] = []
    apply = Store.apply

    def stalled_apply(self, batches, before_commit=None):  # type: ignore[no-untyped-def]
        applying.set()
        # Released by the test's loop (True), or given up on (False: the
        # loop was stuck waiting for this very commit).
        released.append(release.wait(10))
        return apply(self, batches, before_commit)

    monkeypatch.setattr(Store, "apply", stalled_apply)
    promoter = Promoter(store, PromoterStats())
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        await nursery.start(promoter.run)
        nursery.start_soon(ticker)
        promotion = Promotion([Put(b"k", b"v", 0)], {b"k": 1}, 64)
        promoter.submit([promotion])
        await trio.to_thread.run_sync(applying.wait, 30)
        before = ticks
        while ticks < before + 100:  # the loop runs while the commit is held
            await trio.sleep(0)
        assert not promotion.finished
        release.set()
        await promotion.done.wait()
        assert promotion.error is None
        assert released == [True]
        await promoter.close()
        nursery.cancel_scope.cancel()
    assert store.get(b"k").value == b"v"
