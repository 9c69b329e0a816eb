"""A session's account in the write budget (stig/engine/charges.py): charge,
hold, refuse, close, discard and release, against a real budget.

No engine and no session: the owners are plain objects, as the budget sees
them; the session's use of its account is covered by
tests/model/test_session_bounds.py and the POV model (test_pov_model.py).
"""

from __future__ import annotations

import trio
import trio.testing

from stig.engine.budget import WriteBudget
from stig.engine.charges import RUN_OVERHEAD, Charges


def test_a_charge_counts_in_the_session_and_the_budget() -> None:
    budget = WriteBudget(limit=1000)
    a, b = Charges(budget, "a"), Charges(budget, "b")
    assert not a.charge(300)
    assert not b.charge(200)
    assert (a.pending, a.open, b.pending, b.open) == (300, 300, 200, 200)
    assert (budget.used, budget.open, budget.peak) == (500, 500, 500)
    assert a.closed == 0 and a.room() == 500


def test_a_charge_past_the_limit_says_so_and_the_first_run_past_it_holds() -> None:
    budget = WriteBudget(limit=1000)
    a, b = Charges(budget, "a"), Charges(budget, "b")
    assert not a.charge(600)
    assert b.charge(500)  # the open runs together: 1100
    assert b.hold() is True and budget.holder == "b"
    assert b.room() == 500  # while it holds, only its own run counts
    assert a.charge(10) and a.hold() is False  # another run waits for room
    assert a.room() == 1000 - budget.open


def test_a_run_alone_past_the_limit_is_refused_and_its_discard_gives_everything_back() -> None:
    budget = WriteBudget(limit=1000)
    a = Charges(budget, "a")
    assert a.charge(1200) and a.hold() is None
    a.discard_run()
    assert (a.pending, a.open) == (0, 0)
    assert (budget.used, budget.open, budget.holder) == (0, 0, None)
    assert budget.peak == 1200  # the peak stays


def test_a_closed_run_pays_its_promotion_once_and_its_release_frees_everything() -> None:
    budget = WriteBudget(limit=10_000)
    a = Charges(budget, "a")
    a.charge(100)
    first = a.close_run(joined=False)
    assert first == 100 + RUN_OVERHEAD
    assert (a.open, a.pending, a.closed) == (0, first, first)
    assert (budget.open, budget.used) == (0, first)
    a.charge(50)
    joined = a.close_run(joined=True)  # joins the promotion before: no overhead more
    assert joined == 50 and a.pending == first + joined
    a.release(first + joined)
    assert (a.pending, budget.used, budget.open) == (0, 0, 0)


def test_a_closing_holder_lets_go() -> None:
    budget = WriteBudget(limit=1000)
    a, b = Charges(budget, "a"), Charges(budget, "b")
    a.charge(600)
    assert b.charge(600) and b.hold() is True
    b.close_run(joined=False)
    assert budget.holder is None and budget.open == 600


async def test_a_waiter_gets_room_when_the_holder_closes_and_a_loss_wakes_it() -> None:
    budget = WriteBudget(limit=1000)
    a, b, c = Charges(budget, "a"), Charges(budget, "b"), Charges(budget, "c")
    a.charge(600)
    assert b.charge(600) and b.hold() is True
    assert c.charge(500) and c.hold() is False
    results: list[bool] = []
    lost = False
    async with trio.open_nursery() as nursery:

        async def wait(charges: Charges) -> None:
            results.append(await charges.wait_for_room(lambda: lost))

        nursery.start_soon(wait, c)
        await trio.testing.wait_all_tasks_blocked()
        assert budget.waiting == 1 and results == []
        b.close_run(joined=False)  # the holder's run ended, still past the limit: c holds
    assert results == [True] and budget.holder == "c"
    assert a.charge(10) and a.hold() is False
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, a)
        await trio.testing.wait_all_tasks_blocked()
        lost = True  # as the session's ledger records a loss
        a.wake_waiters()
    assert results == [True, True] and budget.waiting == 0 and budget.holder == "c"
