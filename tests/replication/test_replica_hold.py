"""The read hold of ``--min-replica-acks`` (stig/engine/replica_hold.py) on
its own: which keys it holds from a group's hand-over to the followers'
ACK, its bounds, and its compaction.  The end-to-end promise (a read of an
unreplicated write waits, or fails) is tests/replication/test_read_hold.py."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from stig.engine.errors import NotReplicated
from stig.engine.replica_hold import MAX_KEYS_HELD, ReplicaHold
from stig.engine.replicas import ReplicaHub
from stig.engine.visibility import InFlight


@attrs.define
class _Written:
    key_seqs: dict[bytes, int]
    clears_all: bool = False


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
