"""The read hold of ``--min-replica-acks`` (stig/engine/replica_hold.py) on
its own: which keys it holds from a group's hand-over to the followers'
ACK, its bounds, and its compaction.  The end-to-end promise (a read of an
unreplicated write waits, or fails) is tests/replication/test_read_hold.py."""

from __future__ import annotations

import os

import attrs
import pytest
import trio
import trio.testing

from stig.engine import shared_inflight
from stig.engine.errors import NotReplicated
from stig.engine.replica_hold import MAX_GROUPS_NUMBERED, MAX_KEYS_HELD, ReplicaHold
from stig.engine.replicas import ReplicaHub
from stig.engine.shared_inflight import SharedInFlight
from stig.engine.shared_replicas import SharedReplicas
from stig.engine.visibility import InFlight


@attrs.define
class _Written:
    key_seqs: dict[bytes, int]
    clears_all: bool = False
    number: int = 0


def _hold(count: int = 1, timeout: float = 5.0) -> tuple[ReplicaHold, ReplicaHub]:
    hub = ReplicaHub()
    return ReplicaHold(InFlight(), hub, count, timeout), hub


def _group(*keys: bytes, clears: bool = False) -> list[_Written]:
    return [_Written(dict.fromkeys(keys, 1), clears)]


async def test_a_key_is_held_from_hand_over_until_enough_followers_ack() -> None:
    hold, hub = _hold(count=2)
    first, second = hub.connect("a"), hub.connect("b")
    group = _group(b"k")
    assert hold.clear_for([b"k"])
    hold.dispatched(group)  # with the commit thread: may be committed already
    assert not hold.clear_for([b"k"]) and hold.clear_for([b"other"])
    assert not hold.clear_for(None)
    hold.finished(group, 7)
    assert not hold.clear_for([b"k"])
    assert hold.clear_for([b"k"], own={b"k": object()})  # its own POV
    hub.acked(first, 7)
    assert not hold.clear_for([b"k"])  # one of two
    hub.acked(second, 9)
    assert hold.clear_for([b"k"]) and hold.clear_for(None)
    assert hold.keys_held == 0
    hub.disconnect(second)  # what was on two disks stays there
    assert hold.replicated == 7


async def test_a_newer_write_keeps_the_key_held_and_a_flush_holds_every_key() -> None:
    hold, hub = _hold()
    follower = hub.connect("a")
    for seq, group in ((3, _group(b"k")), (4, _group(b"k", b"j"))):
        hold.dispatched(group)
        hold.finished(group, seq)
    hub.acked(follower, 3)
    assert not hold.clear_for([b"k"]) and not hold.clear_for([b"j"])
    flush = _group(clears=True)
    hold.dispatched(flush)
    hold.finished(flush, 5)
    hub.acked(follower, 4)
    assert not hold.clear_for([b"anything"])
    hub.acked(follower, 5)
    assert hold.clear_for([b"anything"]) and hold.clear_for(None)


async def test_a_key_rewritten_by_every_group_is_compacted() -> None:
    hold, hub = _hold()
    follower = hub.connect("a")
    for seq in range(1, 10_000):
        group = _group(b"hot", b"k%d" % (seq % 10))
        hold.dispatched(group)
        hold.finished(group, seq)
    assert hold.keys_held == 11
    # Compacted (past twice the keys held plus a slack of 4096), not one list
    # per group: 9,999 groups of two keys each.
    assert len(hold._groups) <= (2 * 11 + 4096) // 2 + 11
    hub.acked(follower, 9_998)
    assert hold.clear_for([b"k8"]) and not hold.clear_for([b"hot"]) and not hold.clear_for([b"k9"])
    hub.acked(follower, 9_999)
    assert hold.keys_held == 0


async def test_a_read_waits_for_the_ack_then_gives_up_after_the_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hold, hub = _hold(timeout=5.0)
    follower = hub.connect("a")
    group = _group(b"k")
    hold.dispatched(group)
    hold.finished(group, 1)
    read = trio.Event()

    async def reader() -> None:
        await hold.wait([b"k"])
        read.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert not read.is_set() and hold.waits == 1
        hub.acked(follower, 1)
    assert read.is_set()
    # Unacknowledged: the read fails after the bound ...
    group = _group(b"j")
    hold.dispatched(group)
    hold.finished(group, 2)
    start = trio.current_time()
    with pytest.raises(NotReplicated, match="only 0 of --min-replica-acks 1 followers"):
        await hold.wait([b"j"])
    assert trio.current_time() - start == pytest.approx(5.0)
    # ... and a later read of a write unacknowledged that long fails at once.
    start = trio.current_time()
    with pytest.raises(NotReplicated):
        await hold.wait([b"j"])
    assert trio.current_time() == start
    assert hold.timeouts == 2


async def test_a_read_of_keys_still_arriving_names_why_it_gave_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A read whose keys are not known yet waits until nothing is held; if
    some group is always with the commit thread, it must not blame a write
    "not committed": the writes were committed, others kept coming."""
    hold, hub = _hold(timeout=1.0)
    hub.connect("a")
    done = _group(b"other")
    hold.dispatched(done)
    hold.finished(done, 1)
    hold.dispatched(_group(b"next"))  # the next group, with the commit thread
    with pytest.raises(NotReplicated, match="keys were still arriving"):
        await hold.wait(None)


async def test_past_its_bound_the_hold_holds_every_key_through_the_newest_group() -> None:
    hold, hub = _hold()
    follower = hub.connect("a")
    group = _group(*(b"k%d" % n for n in range(MAX_KEYS_HELD + 1)))
    hold.dispatched(group)
    hold.finished(group, 3)
    assert hold.keys_held == 0 and hold.collapses == 1  # memory bounded
    assert not hold.clear_for([b"never-written"])  # every key held instead
    assert not hold.clear_for([b"k0"])
    hub.acked(follower, 3)
    assert hold.clear_for([b"k0"]) and hold.clear_for([b"never-written"])


def _two_workers(fd: int) -> tuple[list[ReplicaHold], list[ReplicaHub], SharedInFlight]:
    """The holds and hubs of workers 0 and 1 over one shared segment, and the writer's view."""
    offset = shared_inflight.replicas_offset(2)
    holds, hubs = [], []
    for worker in (0, 1):
        table = SharedInFlight(fd, 2, worker)
        hub = ReplicaHub(SharedReplicas(fd, 2, worker, offset), table)
        in_flight = InFlight()
        in_flight.shared = table
        holds.append(ReplicaHold(in_flight, hub, 1, 5.0, table))
        hubs.append(hub)
    return holds, hubs, SharedInFlight(fd, 2, -1)


def _numbered(number: int, *keys: bytes) -> list[_Written]:
    return [_Written(dict.fromkeys(keys, 1), number=number)]


async def _clear(hold: ReplicaHold, keys: list[bytes] | None) -> bool:
    """``hold.clear_for(keys)`` once its worker has looked at the commits
    again (a worker looks at the ``committed`` words at each wait)."""
    table = hold._in_flight.shared
    assert table is not None
    await table.wait([])
    return hold.clear_for(keys)


async def test_with_workers_the_other_workers_writes_are_held_until_replicated() -> None:
    fd = shared_inflight.create(2)
    try:
        (hold, other), (hub, _), writer = _two_workers(fd)
        follower = hub.connect("a")  # streams from worker 0
        table = SharedInFlight(fd, 2, 0)
        first, second = _numbered(1, b"k"), _numbered(2, b"j")
        for number, group in ((1, first), (2, second)):
            table.publish(group[0].key_seqs, number, False)
            hold.dispatched(group)
        # In flight on worker 0, then committed: held on worker 1 all along.
        assert not await _clear(other, [b"k"]) and await _clear(other, [b"elsewhere"])
        writer.set_committed(0, 1, 5)
        hold.finished(first, 5)
        assert not await _clear(other, [b"k"])
        writer.set_committed(0, 2, 6)
        hold.finished(second, 6)
        hub.acked(follower, 5)
        # Worker 0's hold publishes that its number 1 is replicated: k is
        # read on worker 1 although worker 0's last commit (6) is not.
        assert await _clear(other, [b"k"]) and not await _clear(other, [b"j"])
        assert not await _clear(other, None)
        hub.acked(follower, 6)
        assert await _clear(other, [b"j"]) and await _clear(other, None)
    finally:
        os.close(fd)


async def test_with_workers_acks_heard_elsewhere_release_an_idle_workers_writes() -> None:
    """Worker 0 wrote k and hears no ACK (its follower streams from worker
    1): a read on worker 1 compares the ACK with worker 0's last commit."""
    fd = shared_inflight.create(2)
    try:
        (hold, other), (_, hub), writer = _two_workers(fd)
        follower = hub.connect("a")  # streams from worker 1
        group = _numbered(1, b"k")
        SharedInFlight(fd, 2, 0).publish([b"k"], 1, False)
        hold.dispatched(group)
        writer.set_committed(0, 1, 5)
        hold.finished(group, 5)
        assert not await _clear(other, [b"k"])
        hub.acked(follower, 5)
        assert await _clear(other, [b"k"])
    finally:
        os.close(fd)


async def test_with_workers_a_read_of_the_other_workers_write_gives_up_after_the_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fd = shared_inflight.create(2)
    try:
        (_, other), (hub, _), writer = _two_workers(fd)
        hub.connect("a")
        SharedInFlight(fd, 2, 0).publish([b"k"], 1, False)
        writer.set_committed(0, 1, 5)
        start = trio.current_time()
        with pytest.raises(NotReplicated, match="only 0 of --min-replica-acks 1 followers"):
            await other.wait([b"k"])
        assert trio.current_time() - start == pytest.approx(5.0, abs=0.01)
    finally:
        os.close(fd)


async def test_with_workers_the_numbered_groups_are_bounded() -> None:
    fd = shared_inflight.create(2)
    try:
        (hold, other), (hub, _), writer = _two_workers(fd)
        follower = hub.connect("a")
        table = SharedInFlight(fd, 2, 0)
        groups = MAX_GROUPS_NUMBERED + 100
        for number in range(1, groups + 1):
            group = _numbered(number, b"k%d" % number)
            table.publish([b"k%d" % number], number, False)
            hold.dispatched(group)
            writer.set_committed(0, number, number)
            hold.finished(group, number)
        assert len(hold._numbered) == MAX_GROUPS_NUMBERED  # memory bounded
        hub.acked(follower, groups)
        assert await _clear(other, [b"k1"]) and await _clear(other, [b"k%d" % groups])
    finally:
        os.close(fd)


@attrs.define(eq=False)
class _Promotion:
    key_seqs: dict[bytes, int]
    clears_all: bool = False
    finished: bool = False
    number: int = 0
    done: trio.Event = attrs.Factory(trio.Event)


async def test_a_key_that_leaves_the_pov_while_held_waits_for_earlier_writes() -> None:
    """A read held for j's followers takes k from its POV; its own write to
    k commits meanwhile, so k comes from the store: another session's write
    to k, acknowledged before the read began and not yet handed to the
    commit thread, must be committed (and replicated) before it reads."""
    in_flight = InFlight()
    hub = ReplicaHub()
    hold = ReplicaHold(in_flight, hub, 1, 5.0)
    follower = hub.connect("a")
    j_write = _group(b"j")
    hold.dispatched(j_write)
    hold.finished(j_write, 1)  # committed, not on the follower yet
    own_write, others = _Promotion({b"k": 1}), _Promotion({b"k": 2})
    in_flight.publish([own_write, others])
    hold.dispatched([own_write])  # others waits for the next group
    overlay: dict[bytes, object] = {b"k": object()}  # k read from the POV
    returned = False

    async def read() -> None:
        nonlocal returned
        await hold.wait([b"j", b"k"], overlay)
        returned = True

    def finish(promotion: _Promotion, seq: int) -> None:
        hold.finished([promotion], seq)
        in_flight.release(promotion)
        promotion.finished = True
        promotion.done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        finish(own_write, 2)
        del overlay[b"k"]
        hub.acked(follower, 2)  # j and the reader's own write replicated
        await trio.testing.wait_all_tasks_blocked()
        assert not returned  # k from the store: the other write is not in it
        hold.dispatched([others])
        finish(others, 3)
        await trio.testing.wait_all_tasks_blocked()
        assert not returned  # committed, not replicated
        hub.acked(follower, 3)
    assert returned
