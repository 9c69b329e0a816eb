"""The promoter: the one writer that moves sessions' writes into the global state.

Sessions hand it closed transactions (:class:`Promotion`).  It takes every
promotion that is waiting, applies them in order in ONE LMDB write
transaction on its commit thread, commits with fsync, then wakes whoever
waits on any of them — group commit: the more writers wait, the more each
fsync carries.  The event loop never blocks on the disk.

The commit thread is one persistent thread fed through a queue (not a
``trio.to_thread`` call per group): ``submit`` hands a group straight to it
when it is idle, and the thread reports back with
``TrioToken.run_sync_soon``, whose callback finishes the group and hands over
the next one — no promoter task to wake, no thread-cache hand-off per group.

A full LMDB map is grown (on the event-loop thread, where no read
transaction is ever open across a checkpoint) and the group retried; the
client never sees it.  Any other commit failure (a full disk) fails every
promotion of the group and leaves the store as it was.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from typing import Callable, Sequence

import attrs
import lmdb
import trio

from stig.ops import Op, Outcome
from stig.records import Item
from stig.stats import PromoterStats
from stig.store import Applied, MapFull, Store
from stig.visibility import InFlight

log = logging.getLogger(__name__)

#: The GIL switch interval while the promoter runs (CPython's default: 5 ms).
#: The commit thread gives the GIL up around every LMDB commit (fsync) and then
#: waits for a busy event loop to hand it back, which by default may take a
#: whole 5 ms interval per hand-over; that latency sits on every group commit.
#: 0.5 ms measured +25-30 % sets/s at d=1 (bench --quick, A/B) with a
#: trio.to_thread hand-off per group.  With the persistent commit thread, 2 ms
#: keeps that throughput at less CPU: the event loop is preempted 4x less often
#: (A/B, 50 conns d=1: sets -2.0 us CPU/set POV, -0.9 durable, same sets/s;
#: mix -1.3 us/op; 5 ms cut CPU more but lost ~2-3 % sets/s).
GIL_SWITCH_INTERVAL = 0.002


@attrs.define(eq=False, slots=True)
class Promotion:
    """One transaction of one session, waiting to be applied atomically."""

    ops: Sequence[Op]
    key_seqs: dict[bytes, int]  # the session's newest write sequence per key
    nbytes: int
    on_done: Callable[["Promotion"], None] | None = None
    answered_early: bool = False  # holds writes already acknowledged from a POV
    last_seq: int = 0  # the session's write sequence number at the run's end
    clears_all: bool = False  # holds a flush_all: every key is written
    outcomes: list[Outcome] | None = None
    written: Item | None = None  # what the run's last operation stored, cas included
    error: str | None = None
    finished: bool = False  # committed (or failed): outcomes/written/error are final
    _event: trio.Event | None = attrs.field(default=None, init=False)

    @property
    def done(self) -> trio.Event:
        """Set once the promotion is finished.

        Made on first use: most promotions (every POV-acknowledged write) are
        never waited on, and a trio.Event per write is measurable.
        """
        event = self._event
        if event is None:
            event = self._event = trio.Event()
            if self.finished:
                event.set()
        return event

    def finish(self) -> None:
        """Mark it finished and wake whoever waits on :attr:`done`."""
        self.finished = True
        if self._event is not None:
            self._event.set()


class Promoter:
    """Group-commits promotions; see the module docstring."""

    def __init__(self, store: Store, stats: PromoterStats, max_group_bytes: int = 64 << 20) -> None:
        self.store = store
        self.stats = stats
        self.max_group_bytes = max_group_bytes
        #: Keys written by submitted, unfinished promotions: what a read on
        #: another session waits for (stig/visibility.py).
        self.in_flight = InFlight()
        self._queue: list[Promotion] = []
        self._wakeup = trio.Event()
        self._closing = False
        self._stopped = trio.Event()
        self._running = False
        self._limiter = trio.CapacityLimiter(1)
        # The commit thread (while run() runs): its job queue, the group it
        # holds (None: idle), the trio token it reports through.
        self._jobs: queue.SimpleQueue[list[Sequence[Op]] | None] | None = None
        self._in_flight: list[Promotion] | None = None
        self._started_at = 0.0
        self._token: trio.lowlevel.TrioToken | None = None
        self._crash: BaseException | None = None
        self._dispatch_due = False  # a _dispatch_soon callback is scheduled
        self._draining = False  # run() is ending: it waits for the group in flight

    def submit(self, promotions: Sequence[Promotion]) -> None:
        """Queue promotions; they commit in the order they were submitted.

        Published in :attr:`in_flight` here, before any reply acknowledging
        them can be sent: from now on a read of their keys on any session
        waits for their commit.
        """
        self.in_flight.publish(promotions)
        self._queue.extend(promotions)
        self.stats.pending_bytes += sum([p.nbytes for p in promotions])
        if self._in_flight is None and self._jobs is not None and not self._dispatch_due:
            # Not at once: the callback runs after the tasks runnable now, so
            # their submissions join the same group (one fsync for all).
            self._dispatch_due = True
            self._token.run_sync_soon(self._dispatch_soon)  # type: ignore[union-attr]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit groups until :meth:`close` is called and the queue is empty.

        Shortens the GIL switch interval meanwhile (see
        :data:`GIL_SWITCH_INTERVAL`) and puts the old one back at the end.
        """
        self._running = True
        previous_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(previous_interval, GIL_SWITCH_INTERVAL))
        self._token = trio.lowlevel.current_trio_token()
        jobs: queue.SimpleQueue[list[Sequence[Op]] | None] = queue.SimpleQueue()
        thread = threading.Thread(target=self._work, args=(jobs,), name="stig-commit", daemon=True)
        thread.start()
        self._jobs = jobs
        task_status.started()
        try:
            if self._queue and self._in_flight is None:
                self._dispatch()
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                if self._crash is not None:
                    raise self._crash
                if self._closing and not self._queue and self._in_flight is None:
                    return
        finally:
            self._draining = True
            with trio.CancelScope(shield=True):
                # The group the thread holds is finished before it stops.
                while self._in_flight is not None and self._crash is None:
                    await self._wakeup.wait()
                    self._wakeup = trio.Event()
            self._jobs = None
            jobs.put(None)
            sys.setswitchinterval(previous_interval)
            self._stopped.set()

    def _work(self, jobs: "queue.SimpleQueue[list[Sequence[Op]] | None]") -> None:
        """The commit thread: begins, applies and commits each group's transaction."""
        apply = self.store.apply
        token = self._token
        assert token is not None
        committed = self._committed
        while True:
            batches = jobs.get()
            if batches is None:
                return
            try:
                result: object = apply(batches)
            except BaseException as exc:  # MapFull, lmdb.Error, a bug: the loop decides
                result = exc
            token.run_sync_soon(committed, result)

    def _dispatch_soon(self) -> None:
        self._dispatch_due = False
        if self._in_flight is None and self._queue and self._jobs is not None:
            self._dispatch()

    def _dispatch(self) -> None:
        """Hand the next group to the idle commit thread (event loop only)."""
        group = self._in_flight = self._take_group()
        self._started_at = time.perf_counter()
        self._jobs.put([p.ops for p in group])  # type: ignore[union-attr]

    def _committed(self, result: object) -> None:
        """The commit thread finished the group in flight (runs on the event loop)."""
        group = self._in_flight
        assert group is not None
        try:
            if isinstance(result, MapFull):
                new_size = self.store.grow()  # no transaction is open: safe here
                log.info("LMDB map grown to %d bytes", new_size)
                self._jobs.put([p.ops for p in group])  # type: ignore[union-attr]
                return
            self._in_flight = None
            if isinstance(result, lmdb.Error):
                log.error("commit of %d promotions failed: %s", len(group), result)
                self.stats.failed_commits += 1
                self._finish(group, None, f"commit failed: {result}")
            elif isinstance(result, BaseException):
                raise result
            else:
                self.stats.record_commit(len(group), time.perf_counter() - self._started_at)
                self._finish(group, result, None)  # type: ignore[arg-type]
            if self._queue and self._jobs is not None:
                self._dispatch()
            elif self._closing or self._draining:
                self._wakeup.set()  # run() may be waiting for the thread to go idle
        except BaseException as exc:  # a bug: crash run(), as a failed commit task would
            self._crash = exc
            self._wakeup.set()

    def _take_group(self) -> list[Promotion]:
        size = 0
        for count, promotion in enumerate(self._queue):
            size += promotion.nbytes
            if size > self.max_group_bytes and count:
                break
        else:
            count = len(self._queue)
        group, self._queue = self._queue[:count], self._queue[count:]
        return group

    async def _commit(self, group: list[Promotion]) -> None:
        """Commit one group on a trio worker thread (close() after run() has stopped)."""
        started = time.perf_counter()
        batches = [p.ops for p in group]
        while True:
            try:
                results = await trio.to_thread.run_sync(
                    self.store.apply, batches, limiter=self._limiter
                )
                break
            except MapFull:
                new_size = self.store.grow()
                log.info("LMDB map grown to %d bytes", new_size)
            except lmdb.Error as exc:
                log.error("commit of %d promotions failed: %s", len(group), exc)
                self.stats.failed_commits += 1
                self._finish(group, None, f"commit failed: {exc}")
                return
        self.stats.record_commit(len(group), time.perf_counter() - started)
        self._finish(group, results, None)

    def _finish(
        self, group: list[Promotion], results: list[Applied] | None, error: str | None
    ) -> None:
        self.stats.pending_bytes -= sum([promotion.nbytes for promotion in group])
        for index, promotion in enumerate(group):
            if results is not None:
                promotion.outcomes, promotion.written = results[index]
            promotion.error = error
            self.in_flight.release(promotion)
            on_done = promotion.on_done
            if on_done is not None:
                on_done(promotion)
            promotion.finish()

    def commit_queued_now(self) -> None:
        """Commit everything queued on the calling thread, blocking.

        For synchronous tools and model-based tests that step the promoter
        themselves; the server always uses :meth:`run`.
        """
        while self._queue:
            group = self._take_group()
            while True:
                try:
                    results = self.store.apply([p.ops for p in group])
                    break
                except MapFull:
                    self.store.grow()
            self.stats.record_commit(len(group), 0.0)
            self._finish(group, results, None)

    async def close(self) -> None:
        """Commit everything queued, then stop (also when the run task was cancelled)."""
        self._closing = True
        self._wakeup.set()
        with trio.CancelScope(shield=True):
            if self._running:
                await self._stopped.wait()
            while self._queue:
                await self._commit(self._take_group())
