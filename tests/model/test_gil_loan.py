"""The commit thread's GIL loan (stig/engine/promoter.py, :class:`GilLoan`): while the
thread applies a group, a busy event loop that lends it the GIL blocks until
every operation is applied and goes on before the commit (the fsync); it never
waits longer than its bound, and a failed or stalled group lets it go.  Real
LMDB, no server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import trio

from stig.engine.promoter import LOAN_SECONDS, GilLoan, Promoter, Promotion
from stig.engine.stats import PromoterStats
from stig.storage.ops import Put
from stig.storage.store import Store


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


def _lend_in_thread(loan: GilLoan) -> threading.Thread:
    lender = threading.Thread(target=loan.lend, daemon=True)
    lender.start()
    return lender


def test_a_loan_ends_when_repaid_or_at_its_bound(store):
    promoter = Promoter(store, PromoterStats())
    loan = promoter.gil_wanted = GilLoan(promoter)
    lender = _lend_in_thread(loan)
    loan.repay()
    assert promoter.gil_wanted is None  # repaid: nobody lends any more
    loan.repay()  # repaid twice: harmless
    lender.join(10.0)
    assert not lender.is_alive()
    loan.lend()  # lent after it was repaid: returns at once

    never = promoter.gil_wanted = GilLoan(promoter)  # nobody repays
    lender = _lend_in_thread(never)
    lender.join(10.0 + LOAN_SECONDS)
    assert not lender.is_alive()  # the bound ended the wait
    assert promoter.gil_wanted is None  # and it is not lent again


async def test_the_loop_goes_on_while_a_lent_commit_is_held(store, monkeypatch):
    """A group stalled while the thread wants the GIL (as under a stalled
    disk) holds a lending loop for at most LOAN_SECONDS once: the loop keeps
    running, the group commits once released."""
    release = threading.Event()
    applying = threading.Event()
    released: list[bool] = []
    apply = Store.apply

    def stalled_apply(self, batches, before_commit=None):  # type: ignore[no-untyped-def]
        applying.set()
        # Released by the test's loop (True), or given up on (False: the
        # loop was stuck lending to this very commit).
        released.append(release.wait(10))
        return apply(self, batches, before_commit)

    monkeypatch.setattr(Store, "apply", stalled_apply)
    stats = PromoterStats()
    promoter = Promoter(store, stats)
    async with trio.open_nursery() as nursery:
        await nursery.start(promoter.run)
        promotion = Promotion([Put(b"k", b"v", 0)], {b"k": 1}, 64)
        promoter.submit([promotion])
        await trio.to_thread.run_sync(applying.wait, 30)
        assert promoter.gil_wanted is not None
        for _ in range(3):  # as a busy connection does between commands
            promoter.lend_gil()
            await trio.lowlevel.checkpoint()
        # The first lend waited LOAN_SECONDS and ended the loan: the others
        # did not wait (nor count) while the group stayed stalled.
        assert promoter.gil_wanted is None
        assert stats.gil_loans == 1
        assert not promotion.finished
        release.set()
        await promotion.done.wait()
        assert promotion.error is None
        assert released == [True]
        assert promoter.gil_wanted is None
        await promoter.close()
        nursery.cancel_scope.cancel()
    assert store.get(b"k").value == b"v"
