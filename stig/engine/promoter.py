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

Failures, all handled by one commit function (:meth:`Promoter._apply_group`
on the thread, :meth:`Promoter._settle` on the event loop) that the server,
the shutdown and the model tests share:

* a full LMDB map is grown (on the event-loop thread, where no read
  transaction is ever open across a checkpoint) and the rest of the group
  retried; the client never sees it;
* any other failure of a group's transaction — an ``lmdb.Error`` (a full
  disk, an operation LMDB refuses) or a bug in the commit path — leaves the
  store as it was, and each promotion of the group is then retried in a
  transaction of its own, so that one bad run fails alone; a run that fails
  on its own is finished with an error (``commit failed: …``), logged (with
  its traceback if it was not an ``lmdb.Error``), and the promoter goes on;
* a failure that will fail every write alike — a full disk, a disk I/O
  error, a map that cannot grow (:func:`stig.engine.refusal.classify`) —
  also refuses writes (:attr:`Promoter.refusal`) until a probe commits
  (stig/engine/refusal.py): the promoter probes every
  :data:`~stig.engine.refusal.PROBE_SECONDS`, and at once after any
  commit that succeeds meanwhile.

The promoter also keeps the numbers the connections' brakes read: the bytes
of writes not yet committed (:class:`WriteBudget`) and the commit lag (how
long the oldest submitted promotion has waited).
"""

from __future__ import annotations

import logging
import math
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs
import trio

from stig.engine.budget import WriteBudget
from stig.engine.group_commit import Failed as _Failed
from stig.engine.group_commit import apply_group
from stig.engine.group_commit import failed as _failed
from stig.engine.refusal import PROBE_BYTES, PROBE_SECONDS, Cause, WriteRefusal, words_for
from stig.engine.replica_hold import ReplicaHold
from stig.engine.stats import PromoterStats
from stig.engine.visibility import InFlight
from stig.engine.writer import PROBE_GREW, PROBE_OK
from stig.storage.ops import Op, Outcome
from stig.storage.records import Item
from stig.storage.store import Applied, MapCannotGrow, MapFull, Store

if TYPE_CHECKING:
    from stig.engine.shared_inflight import SharedInFlight
    from stig.engine.writer_link import WriterLink

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


#: How long a group may wait for more submissions before it is committed
#: (the idle commit thread otherwise waits until every task runnable at the
#: first submission has run — under a flood, a whole burst each: measured
#: ~900 ms between two commits with eight flooding connections).
GATHER_SECONDS = 0.002

#: The longest a connection lends the GIL to the commit thread (:class:`GilLoan`):
#: applying a group's operations takes well under a millisecond; the bound keeps
#: a stalled commit (a fault test's held commit, a slow map) from stopping the loop.
LOAN_SECONDS = 0.005


class GilLoan:
    """The commit thread asks the busy event loop for the GIL while it applies a group.

    py-lmdb releases the GIL around every LMDB call, ``put`` included, and
    takes it back after.  With the event loop busy, the commit thread then
    waited for it once per put, and the loop waited for it back after each
    of its own system calls: two context switches per write (measured: 2,000
    puts beside a thread busy in Python took 147 µs each instead of 2.8).

    So the thread, once awake with its group, raises :attr:`Promoter.gil_wanted`
    (a :class:`GilLoan`); the next connection that checks it between two
    commands blocks — on a lock, holding no GIL — until the thread has
    applied every operation and is about to commit (:meth:`repay`), or
    :data:`LOAN_SECONDS` have passed.  The fsync then runs beside the loop
    as before.  The loop never waits for the thread to be scheduled: the
    thread asks only once it is running.  An idle loop (in ``epoll_wait``)
    holds no GIL and lends nothing.
    """

    __slots__ = ("_lock", "_open", "_promoter")

    def __init__(self, promoter: Promoter) -> None:
        self._promoter = promoter
        self._lock = threading.Lock()
        self._lock.acquire()
        self._open = True  # neither repaid nor timed out: a lend may block

    def repay(self) -> None:
        """The thread is done with the GIL for now (commit thread; once or more):
        no connection lends any more for this group."""
        if self._promoter.gil_wanted is self:
            self._promoter.gil_wanted = None
        if self._open:
            self._open = False
            self._lock.release()

    def lend(self) -> None:
        """Block the event loop until the thread repays, at most :data:`LOAN_SECONDS`
        in all: a loan that timed out is not lent again (a long or stalled apply
        then runs beside the loop, as without a loan)."""
        if not self._open:
            return
        if self._lock.acquire(timeout=LOAN_SECONDS):
            self._lock.release()
        else:
            self._open = False
            if self._promoter.gil_wanted is self:
                self._promoter.gil_wanted = None


@attrs.define(eq=False, slots=True)
class Promotion:
    """One transaction of one session, waiting to be applied atomically."""

    ops: Sequence[Op]
    key_seqs: dict[bytes, int]  # the session's newest write sequence per key
    nbytes: int
    on_done: Callable[[Promotion], None] | None = None
    answered_early: bool = False  # holds writes already acknowledged from a POV
    last_seq: int = 0  # the session's write sequence number at the run's end
    first_seq: int = 0  # ... at the run's first write
    clears_all: bool = False  # holds a flush_all: every key is written
    #: Its last write's reply waits for it (stig/core/reply_gate.py): that reply
    #: reports its failure, no barrier does (Session.close_for_reply).
    held_reply: bool = False
    outcomes: list[Outcome] | None = None
    written: Item | None = None  # what the run's last operation stored, cas included
    error: str | None = None
    submitted: float = 0.0  # time.monotonic() when handed to the promoter
    finished: bool = False  # committed (or failed): outcomes/written/error are final
    number: int = 0  # its submission number in the shared in-flight table (N workers)
    #: Each other worker's newest write published before it and not yet
    #: committed when it was submitted, ``(worker, number)``, whatever its
    #: keys: the writer commits it after them (N workers; the publish order,
    #: docs/workers.md, "Write order across workers").
    after: tuple[tuple[int, int], ...] = ()
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


class _ChannelJobs:
    """The commit thread's job queue, for the writer link's task instead."""

    __slots__ = ("put",)

    def __init__(self, send: trio.MemorySendChannel[_Job | None]) -> None:
        self.put = send.send_nowait


@attrs.frozen
class _Probe:
    """A job for the commit thread: prove the disk has room (:meth:`Store.probe`)."""

    largest: int
    nbytes: int


#: A job for whatever commits: a group's runs, or a probe.
_Job = list[Sequence[Op]] | _Probe
_Jobs = queue.SimpleQueue[_Job | None] | _ChannelJobs


class Promoter:
    """Group-commits promotions; see the module docstring."""

    def __init__(
        self,
        store: Store,
        stats: PromoterStats,
        max_group_bytes: int = 64 << 20,
        budget: WriteBudget | None = None,
        link: WriterLink | None = None,
    ) -> None:
        self.store = store
        #: The writer process that commits instead of the commit thread
        #: (``--workers``, docs/workers.md); None: the commit thread.
        self.link = link
        #: The in-flight keys of every worker (``--workers N``; None: this
        #: process is the only one): published here too, at submit.
        self.shared: SharedInFlight | None = None
        self._number = 0  # the newest submission number handed out
        self.stats = stats
        self.max_group_bytes = max_group_bytes
        #: Keys written by submitted, unfinished promotions: what a read on
        #: another session waits for (stig/engine/visibility.py).
        self.in_flight = InFlight()
        #: ``--min-replica-acks``: the keys readers may not see yet, told of
        #: every group handed over and finished (stig/engine/replica_hold.py);
        #: None (the default): no hold, nothing to tell.
        self.hold: ReplicaHold | None = None
        self.budget = budget if budget is not None else WriteBudget(1 << 62)
        self._queue: list[Promotion] = []
        self._wakeup = trio.Event()
        self._closing = False
        self._stopped = trio.Event()
        self._running = False
        # Set (and replaced) whenever a group finishes: connections waiting
        # for the budget or the commit lag to come down wait on it.
        self._progress: trio.Event | None = None
        # The commit thread (while run() runs): its job queue, the group it
        # holds (None: idle), the trio token it reports through.
        self._jobs: _Jobs | None = None
        self._in_flight: list[Promotion] | None = None
        self._started_at = 0.0
        self._token: trio.lowlevel.TrioToken | None = None
        self._dispatch_due = False  # a _dispatch_soon callback is scheduled
        self._commit_seconds = 0.0  # moving average of a group commit's duration
        self._commit_peak = 0.0  # the slowest recent one (halves with each commit)
        self._commit_estimate = 0.0  # what expected_lag() counts per group commit
        self._draining = False  # run() is ending: it waits for the group in flight
        #: Set by the commit thread when a group is committed, until the event
        #: loop has finished it: connections in a long burst yield at once
        #: then, so that the completion runs (and the next group goes to the
        #: thread) within a command or so, not after a whole scheduler round
        #: (measured ~17 ms of every group commit under an 8-connection flood).
        self.finish_due = False
        #: Raised by the commit thread while it applies a group: a connection
        #: between two commands lends it the GIL (:meth:`lend_gil`).
        self.gil_wanted: GilLoan | None = None
        #: Whether writes are refused, and why (stig/engine/refusal.py).
        self.refusal = WriteRefusal()
        self._probe_due = False  # a commit succeeded while refused: probe when idle
        #: Called on the event loop after each group that committed (the
        #: replication streams wake on it: stig/engine/replicas.py).
        self.on_commit: Callable[[], None] | None = None

    def refusal_changed(self) -> None:
        """Another worker's commit refused writes, or its probe brought them
        back (stig/engine/shared_refusal.py): probe from now on, or stop."""
        self._wakeup.set()

    def lend_gil(self) -> None:
        """Let the commit thread apply its group without fighting for the GIL
        (:class:`GilLoan`); a connection calls this when :attr:`gil_wanted`."""
        loan = self.gil_wanted
        if loan is not None:
            self.stats.gil_loans += 1
            loan.lend()

    def number_from(self, number: int) -> None:
        """Number the next promotions after ``number`` in the shared table
        (a restarted worker: after everything its predecessor published)."""
        self._number = number

    def submit(self, promotions: Sequence[Promotion]) -> None:
        """Queue promotions; they commit in the order they were submitted.

        Published in :attr:`in_flight` here, before any reply acknowledging
        them can be sent: from now on a read of their keys on any session
        waits for their commit.
        """
        self.in_flight.publish(promotions)
        shared = self.shared
        if shared is not None:
            number = self._number
            for promotion in promotions:
                number += 1
                promotion.number = number
                promotion.after = shared.pending()
                shared.publish(promotion.key_seqs, number, promotion.clears_all)
            self._number = number
        now = time.monotonic()
        nbytes = 0
        for promotion in promotions:
            promotion.submitted = now
            nbytes += promotion.nbytes
        self._queue.extend(promotions)
        self.stats.pending_bytes += nbytes
        if self._in_flight is None and self._jobs is not None:
            if not self._dispatch_due:
                # Not at once: the callback runs after the tasks runnable now, so
                # their submissions join the same group (one fsync for all).
                self._dispatch_due = True
                self._token.run_sync_soon(self._dispatch_soon)  # type: ignore[union-attr]
            elif now - self._queue[0].submitted > GATHER_SECONDS:
                # Under a flood those tasks run long (a whole burst each): the
                # group has waited for company long enough, commit it now.
                self._dispatch()

    # -- what the brakes read ------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether promotions are queued or being committed."""
        return bool(self._queue) or self._in_flight is not None

    def lag(self) -> float:
        """Seconds the oldest submitted, uncommitted promotion has waited (0: none)."""
        group = self._in_flight
        oldest = group[0] if group else (self._queue[0] if self._queue else None)
        return 0.0 if oldest is None else max(time.monotonic() - oldest.submitted, 0.0)

    def expected_lag(self) -> float:
        """The longest wait an uncommitted promotion is expected to have had
        once committed; the brake reads this, so that writers stop before the
        bound is crossed, not after.

        For the group in flight: its oldest promotion's wait so far plus one
        group commit.  For the queue: its oldest promotion's wait plus what
        the group in flight still needs plus its own group's commit — it
        cannot start before the thread is free, which is what let the lag
        pass the bound by a whole commit.  A group commit is estimated
        high: the larger of the moving average and a recent peak that
        halves with each commit, because the lag is set by the slow
        commits, not the typical one.
        """
        queue = self._queue
        group = self._in_flight
        if not group and not queue:
            return 0.0
        now = time.monotonic()
        commit = self._commit_estimate
        worst = 0.0
        remaining = 0.0
        if group:
            elapsed = time.perf_counter() - self._started_at
            remaining = commit - elapsed if commit > elapsed else 0.0
            worst = now - group[0].submitted + (commit if commit > elapsed else elapsed)
        if queue:
            queued = now - queue[0].submitted + remaining + commit
            if queued > worst:
                worst = queued
        return worst

    async def wait_progress(self) -> None:
        """Wait until the promoter finishes its next group (or is idle)."""
        if not self.busy:
            await trio.lowlevel.checkpoint()
            return
        if self._progress is None:
            self._progress = trio.Event()
        await self._progress.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit groups until :meth:`close` is called and the queue is empty.

        Shortens the GIL switch interval meanwhile (see
        :data:`GIL_SWITCH_INTERVAL`) and puts the old one back at the end.
        """
        self._running = True
        previous_interval = sys.getswitchinterval()
        self._token = trio.lowlevel.current_trio_token()
        jobs: _Jobs
        if self.link is None:
            sys.setswitchinterval(min(previous_interval, GIL_SWITCH_INTERVAL))
            jobs = queue.SimpleQueue()
            thread = threading.Thread(
                target=self._work, args=(jobs,), name="stig-commit", daemon=True
            )
            thread.start()
        else:
            # A system task: it must outlive a cancelled run(), whose end
            # waits for the group in flight to be answered.
            send, receive = trio.open_memory_channel[_Job | None](math.inf)
            jobs = _ChannelJobs(send)
            trio.lowlevel.spawn_system_task(self._pump, self.link, receive, name="stig-writer-link")
        self._jobs = jobs
        task_status.started()
        try:
            if self._queue and self._in_flight is None:
                self._dispatch()
            while True:
                self.refusal.sync()  # with workers: another worker's failure, or probe
                if self.refusal.cause is None:  # none, or a read-only replica: no probe
                    await self._wakeup.wait()
                else:
                    with trio.move_on_after(PROBE_SECONDS) as waited:
                        await self._wakeup.wait()
                    if waited.cancelled_caught:
                        self._probe_due = True
                        self._probe_if_idle()
                        continue
                self._wakeup = trio.Event()
                if self._closing and not self._queue and self._in_flight is None:
                    return
        finally:
            self._draining = True
            with trio.CancelScope(shield=True):
                # The group the thread holds is finished before it stops.
                while self._in_flight is not None:
                    await self._wakeup.wait()
                    self._wakeup = trio.Event()
            self._jobs = None
            jobs.put(None)
            sys.setswitchinterval(previous_interval)
            self._stopped.set()

    async def _pump(self, link: WriterLink, jobs: trio.MemoryReceiveChannel[_Job | None]) -> None:
        """Hand each job to the writer process and finish it with its answer
        (the event loop's twin of :meth:`_work`; ``--workers``)."""
        async for job in jobs:
            if job is None:
                return
            try:
                if isinstance(job, _Probe):
                    status, why = await link.probe(job.largest, job.nbytes)
                    error: BaseException | None = None
                    if status == PROBE_GREW:
                        error = MapFull()
                    elif status != PROBE_OK:
                        error = RuntimeError(why)
                    self._probed(error)
                else:
                    self._committed((await link.commit(job, *self._order(self._in_flight)), False))
            except Exception:  # a bug here must not end the server's event loop
                log.exception("the writer link failed")

    def _work(self, jobs: queue.SimpleQueue[_Job | None]) -> None:
        """The commit thread: applies and commits each group it is handed (or probes)."""
        apply_group = self._apply_group
        token = self._token
        assert token is not None
        committed = self._committed
        while True:
            batches = jobs.get()
            if batches is None:
                return
            if isinstance(batches, _Probe):
                token.run_sync_soon(self._probed, self._probe(batches))
                continue
            loan = self.gil_wanted = GilLoan(self)
            try:
                result = apply_group(batches, loan.repay)
            finally:
                loan.repay()  # a failed group: nobody waits any longer
            self.finish_due = True
            token.run_sync_soon(committed, result)

    # -- the one commit function ------------------------------------------------------

    def _apply_group(
        self, batches: list[Sequence[Op]], before_commit: Callable[[], None] | None = None
    ) -> tuple[Sequence[Applied | _Failed], bool]:
        """Commit one group on the calling thread (:func:`stig.engine.group_commit.apply_group`)."""
        return apply_group(self.store, batches, before_commit)

    def _probe(self, job: _Probe) -> BaseException | None:
        """Run a probe (commit thread): None if it committed, else why not."""
        try:
            self.store.probe(job.largest, job.nbytes)
        except BaseException as exc:
            return exc
        return None

    def _settle(
        self,
        group: list[Promotion],
        outcome: tuple[Sequence[Applied | _Failed], bool],
        seconds: float,
    ) -> list[Promotion]:
        """Finish the group's promotions that the commit finished (event loop);
        returns the rest, to retry once the map has grown (empty: none)."""
        results, grow = outcome
        done, rest = group[: len(results)], group[len(results) :]
        if done:
            lag = time.monotonic() - done[0].submitted
            if lag > self.stats.lag_seconds_max:
                self.stats.lag_seconds_max = lag
            failed = sum(isinstance(result, _Failed) for result in results)
            self.stats.failed_commits += failed
            if failed < len(done):
                self.stats.record_commit(len(done) - failed, seconds)
                average = self._commit_seconds = 0.7 * self._commit_seconds + 0.3 * seconds
                self._commit_peak = max(seconds, self._commit_peak * 0.5)
                self._commit_estimate = max(average, self._commit_peak)
                if self.refusal.message is not None:
                    self._probe_due = True  # space may have been freed: probe when idle
            if failed:
                # Before the sessions hear of it: from their failure callbacks
                # on, no write is acknowledged (stig/engine/refusal.py).
                self._note_failures(done, results)
            self._finish(done, results)
            if failed < len(done) and self.on_commit is not None:
                self.on_commit()
        if grow:
            try:
                new_size = self.store.grow()  # no transaction is open: safe here
            except MapCannotGrow as exc:
                log.error("LMDB map full and cannot grow: %s", exc)
                failure = _failed(words_for(Cause.MAP_FULL, str(exc)), Cause.MAP_FULL, str(exc))
                self.stats.failed_commits += len(rest)
                self._note_failures(rest, [failure] * len(rest))
                self._finish(rest, [failure] * len(rest))
                rest = []
            else:
                log.info("LMDB map grown to %d bytes", new_size)
        if self._progress is not None:
            self._progress.set()
            self._progress = None
        return rest

    def _note_failures(
        self, group: Sequence[Promotion], results: Sequence[Applied | _Failed]
    ) -> None:
        """Keep the last failure for ``stats``; refuse writes if one has a cause."""
        refusal = self.refusal
        for promotion, result in zip(group, results, strict=True):
            if not isinstance(result, _Failed):
                continue
            refusal.failed(result.cause, result.error)
            if result.cause is not None:
                largest = max((len(getattr(op, "value", b"")) for op in promotion.ops), default=0)
                if refusal.enter(result.cause, largest):
                    log.error("writes refused: %s (%s)", refusal.message, result.error)
                    self._wakeup.set()  # run() probes from now on

    def _probe_if_idle(self) -> None:
        """Start a probe if one is due and the commit thread is free (event loop)."""
        if (
            self._probe_due
            and self.refusal.cause is not None
            and self._in_flight is None
            and not self._queue
            and self._jobs is not None
            and not (self._closing or self._draining)
        ):
            self._probe_due = False
            self._in_flight = []  # the thread is busy: submit() queues meanwhile
            self.refusal.probes += 1
            self._jobs.put(_Probe(self.refusal.largest, PROBE_BYTES))

    def _probed(self, error: BaseException | None) -> None:
        """A probe finished (event loop): writes are accepted again if it committed."""
        self._in_flight = None
        refusal = self.refusal
        if error is None:
            seconds = time.monotonic() - refusal.since
            log.warning("writes accepted again after %.1f s: a probe committed", seconds)
            refusal.leave()
        elif isinstance(error, MapFull) and self.link is not None:
            self._probe_due = True  # the writer grew the map: try again at once
        elif isinstance(error, MapFull):
            try:
                log.info("LMDB map grown to %d bytes", self.store.grow())
                self._probe_due = True  # try again at once, in the larger map
            except MapCannotGrow as exc:
                log.debug("probe: the map cannot grow: %s", exc)
        else:
            log.debug("probe failed: %s", error)
        if self._queue and self._jobs is not None:
            self._dispatch()
        elif self._closing or self._draining:
            self._wakeup.set()
        else:
            self._probe_if_idle()

    def _dispatch_soon(self) -> None:
        self._dispatch_due = False
        if self._in_flight is None and self._queue and self._jobs is not None:
            self._dispatch()

    def _dispatch(self, group: list[Promotion] | None = None) -> None:
        """Hand the next group to the idle commit thread (event loop only)."""
        if group is None:
            group = self._take_group()
            self._started_at = time.perf_counter()
        self._in_flight = group
        if self.hold is not None:
            self.hold.dispatched(group)
        self._jobs.put([p.ops for p in group])  # type: ignore[union-attr]

    def _committed(self, outcome: tuple[Sequence[Applied | _Failed], bool]) -> None:
        """The commit thread finished the group in flight (runs on the event loop)."""
        group = self._in_flight
        assert group is not None
        self.finish_due = False
        try:
            rest = self._settle(group, outcome, time.perf_counter() - self._started_at)
        except Exception:  # a bug in a completion callback: never the promoter's end
            log.exception("finishing a group commit failed")
            rest = []
        if rest and self._jobs is not None:
            self._dispatch(rest)
            return
        self._in_flight = None
        if rest:  # the thread is gone: close() commits them
            self._queue[:0] = rest
        if self._queue and self._jobs is not None:
            self._dispatch()
        elif self._closing or self._draining:
            self._wakeup.set()  # run() may be waiting for the thread to go idle
        else:
            self._probe_if_idle()

    def _order(
        self, group: Sequence[Promotion] | None
    ) -> tuple[list[int] | None, list[tuple[tuple[int, int], ...]] | None]:
        """What the writer needs to keep the write order across workers: each
        promotion's number and ``after`` (None, None: one process)."""
        if self.shared is None or not group:
            return None, None
        return [p.number for p in group], [p.after for p in group]

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

    def _finish(self, group: list[Promotion], results: Sequence[Applied | _Failed]) -> None:
        self.stats.pending_bytes -= sum([promotion.nbytes for promotion in group])
        if self.hold is not None:  # held before they leave the in-flight registry
            self.hold.finished(group, self.store.log_state.seq)
        for promotion, result in zip(group, results, strict=True):
            if isinstance(result, _Failed):
                promotion.error = str(result)
            else:
                promotion.outcomes, promotion.written = result
            self.in_flight.release(promotion)
            on_done = promotion.on_done
            if on_done is not None:
                # Called once: dropped first, so that a finished promotion
                # its session still holds (Session._last) is no reference
                # cycle through the session's bound method.
                promotion.on_done = None
                try:
                    on_done(promotion)
                except Exception:
                    log.exception("a promotion's completion callback failed")
            promotion.finish()

    def commit_queued_now(self) -> None:
        """Commit everything queued on the calling thread, blocking.

        For synchronous tools and model-based tests that step the promoter
        themselves; the server always uses :meth:`run`.  The same commit
        function as the server's.
        """
        while self._queue:
            group = self._take_group()
            while group:
                started = time.perf_counter()
                outcome = self._apply_group([p.ops for p in group])
                group = self._settle(group, outcome, time.perf_counter() - started)

    async def close(self) -> None:
        """Commit everything queued, then stop (also when the run task was cancelled)."""
        self._closing = True
        self._wakeup.set()
        with trio.CancelScope(shield=True):
            if self._running:
                await self._stopped.wait()
            while self._queue:
                group = self._take_group()
                while group:
                    started = time.perf_counter()
                    batches = [p.ops for p in group]
                    if self.hold is not None:  # readers run while it commits
                        self.hold.dispatched(group)
                    if self.link is not None:
                        outcome = (await self.link.commit(batches, *self._order(group)), False)
                    else:
                        outcome = await trio.to_thread.run_sync(self._apply_group, batches)
                    group = self._settle(group, outcome, time.perf_counter() - started)
