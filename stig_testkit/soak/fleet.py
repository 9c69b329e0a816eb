"""A load process of the soak: its share of the connections, in one trio loop.

:func:`mix` says what each of the soak's connections is (a well-behaved role
and protocol, or a hostile behaviour); :func:`worker_main` is the entry point
of a load process (started with ``multiprocessing``): it runs its share of
them until the deadline and puts its :class:`~stig_testkit.soak.tally.Tally`
snapshot on a queue every ``report_every`` seconds and once at the end.

Well-behaved clients keep one connection for the whole soak and operate at
random (Poisson) times, ``rate`` operations a second on average (an idle one
thirty times less often); any wrong reply, closed connection, failed connect
or reply slower than ``reply_timeout`` is an error (the connection is then
opened again).  A hostile slot lives one hostile connection after another.
"""

from __future__ import annotations

import random
import resource
from typing import Any

import attrs
import trio

from stig_testkit.soak import hostile
from stig_testkit.soak.clients import PROTOCOLS, Client, Torn
from stig_testkit.soak.tally import Tally
from stig_testkit.soak.wire import Wire, WrongReply

# Share of the connections per role; the readers take what rounding leaves.
MIX: dict[str, float] = {
    "writer": 0.15,
    "txn_writer": 0.08,
    "txn_reader": 0.12,
    "idle": 0.15,
    "never_read": 0.06,
    "half_sent": 0.06,
    "abort_run": 0.03,
    "pipeline_flood": 0.03,
    "big_flood": 0.01,
}
# How long one hostile connection lives, (low, high) seconds.
LIFETIMES: dict[str, tuple[float, float]] = {
    "never_read": (10, 60),
    "half_sent": (5, 60),
    "abort_run": (0, 0),
    "pipeline_flood": (20, 120),
    "big_flood": (20, 120),
}


@attrs.frozen
class Slot:
    """One of the soak's connections: its number, role and (for clients) protocol."""

    conn: int
    role: str
    protocol: str


def mix(connections: int) -> list[Slot]:
    """The soak's connections, numbered from 0, roles spread across the numbers."""
    roles: list[str] = []
    for role, share in MIX.items():
        roles += [role] * max(1, round(share * connections))
    roles += ["reader"] * max(0, connections - len(roles))
    roles = roles[:connections]
    random.Random(0).shuffle(roles)
    return [Slot(i, role, PROTOCOLS[i % 3]) for i, role in enumerate(roles)]


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return int(hard)


@attrs.frozen
class Plan:
    """What one load process runs."""

    worker: int
    port: int
    slots: list[Slot]
    seconds: float
    rate: float
    reply_timeout: float
    ramp: float
    seed: int
    report_every: float = 2.0


def worker_main(plan: Plan, queue: Any) -> None:
    """Entry point of a load process: raise the fd limit, run, report."""
    raise_fd_limit()
    tally = Tally()
    try:
        trio.run(_run, plan, tally, queue)
    finally:
        queue.put((plan.worker, tally.snapshot() | {"final": True}))


async def _run(plan: Plan, tally: Tally, queue: Any) -> None:
    deadline = trio.current_time() + plan.seconds
    async with trio.open_nursery() as reporting:
        reporting.start_soon(_report, plan.worker, plan.report_every, tally, queue)
        # the last operations may take up to reply_timeout
        with trio.move_on_at(deadline + plan.reply_timeout + 5):
            async with trio.open_nursery() as nursery:
                for slot in plan.slots:
                    rng = random.Random(plan.seed * 1_000_003 + slot.conn)
                    start = trio.current_time() + rng.uniform(0, plan.ramp)
                    task = _hostile if slot.role in LIFETIMES else _client
                    nursery.start_soon(task, plan, slot, rng, start, deadline, tally)
        reporting.cancel_scope.cancel()


async def _report(worker: int, every: float, tally: Tally, queue: Any) -> None:
    while True:
        await trio.sleep(every)
        queue.put((worker, tally.snapshot()))


async def _client(
    plan: Plan, slot: Slot, rng: random.Random, start: float, deadline: float, tally: Tally
) -> None:
    client = Client(slot.role, slot.protocol, slot.conn, rng)
    rate = plan.rate / 30 if slot.role == "idle" else plan.rate
    at = start
    wire: Wire | None = None
    try:
        while True:
            await trio.sleep_until(min(at, deadline))
            if trio.current_time() >= deadline:
                return
            checks = client.atomic_checks
            with trio.move_on_after(plan.reply_timeout) as scope:
                try:
                    if wire is None:
                        wire = await Wire.connect(plan.port)
                    await client.once(wire)
                    tally.op(slot.role)
                except Torn as error:
                    tally.violation(slot.role, f"[{slot.protocol}] {error}")
                except (WrongReply, OSError, trio.BrokenResourceError) as error:
                    tally.error(slot.role, f"[{slot.protocol}] {type(error).__name__}: {error}")
                    await _drop(wire)
                    wire = None
            if scope.cancelled_caught:
                tally.error(slot.role, f"[{slot.protocol}] no reply in {plan.reply_timeout:.0f} s")
                await _drop(wire)
                wire = None
            tally.atomic_checks += client.atomic_checks - checks
            at = max(at + rng.expovariate(rate), trio.current_time() - 1.0)
    finally:
        if wire is not None:
            with trio.CancelScope(shield=True):
                await wire.close()


async def _drop(wire: Wire | None) -> None:
    if wire is not None:
        with trio.CancelScope(shield=True):
            await wire.close()


async def _hostile(
    plan: Plan, slot: Slot, rng: random.Random, start: float, deadline: float, tally: Tally
) -> None:
    low, high = LIFETIMES[slot.role]
    await trio.sleep_until(start)
    with trio.move_on_at(deadline):
        while True:
            lifetime = rng.uniform(low, high)
            try:
                await hostile.life(slot.role, plan.port, rng, lifetime)
            except (OSError, trio.BrokenResourceError, WrongReply):
                pass  # a hostile client's troubles are its own
            tally.hostile_lives += 1
            await trio.sleep(rng.uniform(0.2, 2.0))
