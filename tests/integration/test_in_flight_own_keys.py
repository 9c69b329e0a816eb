"""The in-flight registry's wait (stig/engine/visibility.py) when a key the
reading session answered from its POV leaves the POV during the wait: its own
write committed while the read waited for another key.  The read then takes
that key from the store, so it must wait for the other sessions' writes to
it that were acknowledged before it began (a stale read otherwise: the
history checker found it, G-single-realtime, docs/history.md)."""

from __future__ import annotations

import os

import attrs
import trio
import trio.testing

from stig.engine import shared_inflight
from stig.engine.shared_inflight import SharedInFlight
from stig.engine.visibility import InFlight


@attrs.define(eq=False)
class _Promotion:
    key_seqs: dict[bytes, int]
    clears_all: bool = False
    finished: bool = False
    number: int = 0
    done: trio.Event = attrs.Factory(trio.Event)


def _finish(registry: InFlight, promotion: _Promotion) -> None:
    registry.release(promotion)
    promotion.finished = True
    promotion.done.set()


async def test_a_key_that_leaves_the_pov_during_the_wait_waits_for_earlier_writes() -> None:
    registry = InFlight()
    own_write = _Promotion({b"k": 1})  # the reader's own write to k
    others = _Promotion({b"k": 2})  # another session's, acknowledged after it
    elsewhere = _Promotion({b"j": 3})  # a third session's write to j
    registry.publish([own_write, others, elsewhere])
    overlay: dict[bytes, object] = {b"k": object()}  # k read from the POV
    returned = False

    async def read() -> None:
        nonlocal returned
        await registry.wait([b"j", b"k"], overlay)
        returned = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        # The reader's own write commits: its overlay entry goes; then j's.
        _finish(registry, own_write)
        del overlay[b"k"]
        _finish(registry, elsewhere)
        await trio.testing.wait_all_tasks_blocked()
        # k now comes from the store: the other session's write must be in it.
        assert not returned
        _finish(registry, others)
    assert returned


async def test_a_key_still_in_the_pov_is_not_waited_for() -> None:
    registry = InFlight()
    others = _Promotion({b"k": 2})
    elsewhere = _Promotion({b"j": 3})
    registry.publish([others, elsewhere])
    overlay: dict[bytes, object] = {b"k": object()}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(registry.wait, [b"j", b"k"], overlay)
        await trio.testing.wait_all_tasks_blocked()
        _finish(registry, elsewhere)
    assert not others.finished  # returned without waiting for k


async def test_with_workers_a_key_that_leaves_the_pov_waits_for_the_other_workers_writes() -> None:
    """The same race across workers (docs/workers.md, "Own keys"): the other
    session's write to k is in flight on worker 1 (the shared table), after
    the reader's own write to k on worker 0; the read waits for worker 1's
    write to j, and meanwhile its own write commits.  k then comes from the
    store, so worker 1's write to k must be committed before the read goes
    on, although its write to j, numbered before it, is committed first."""
    fd = shared_inflight.create(2)
    wakes = shared_inflight.create_wakes(2)
    try:
        writer = SharedInFlight(fd, 2, -1, wakes)
        other = SharedInFlight(fd, 2, 1)
        registry = InFlight()
        registry.shared = SharedInFlight(fd, 2, 0, (wakes[0],))
        own_write = _Promotion({b"k": 1}, number=1)  # worker 0's, the reader's own
        registry.publish([own_write])
        registry.shared.publish([b"k"], 1, False)
        other.publish([b"j"], 1, False)  # worker 1: a third session's write to j
        other.publish([b"k"], 2, False)  # ... and another's to k, after the reader's
        overlay: dict[bytes, object] = {b"k": object()}  # k read from the POV
        returned = False

        async def read() -> None:
            nonlocal returned
            assert not registry.clear_for([b"j", b"k"], overlay)
            await registry.wait([b"j", b"k"], overlay)
            returned = True

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            # The writer commits the reader's own write, then worker 1's to j.
            writer.set_committed(0, 1, 7)
            writer.signal()
            _finish(registry, own_write)
            del overlay[b"k"]
            writer.set_committed(1, 1, 8)
            writer.signal()
            await trio.testing.wait_all_tasks_blocked()
            # k now comes from the store: worker 1's write to k must be in it.
            assert not returned
            writer.set_committed(1, 2, 9)
            writer.signal()
        assert returned
    finally:
        for descriptor in (fd, *wakes):
            os.close(descriptor)


async def test_with_workers_a_key_still_in_the_pov_is_not_waited_for() -> None:
    fd = shared_inflight.create(2)
    try:
        writer = SharedInFlight(fd, 2, -1)
        other = SharedInFlight(fd, 2, 1)
        registry = InFlight()
        registry.shared = SharedInFlight(fd, 2, 0)
        other.publish([b"j"], 1, False)
        other.publish([b"k"], 2, False)
        overlay: dict[bytes, object] = {b"k": object()}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(registry.wait, [b"j", b"k"], overlay)
            await trio.testing.wait_all_tasks_blocked()
            writer.set_committed(1, 1, 8)
        assert writer.committed(1) == 1  # returned without waiting for k's write
    finally:
        os.close(fd)
