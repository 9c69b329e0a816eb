"""The shared state of one server: store, promoter, settings and counters.

Sessions and protocol handlers reach everything global through it; it owns
no sockets.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING, cast

import attrs
import trio

from stig.engine.auth import Authenticator
from stig.engine.budget import WriteBudget
from stig.engine.errors import PromoteRefused
from stig.engine.prefix_stats import PrefixStats
from stig.engine.promoter import Promoter
from stig.engine.readiness import Readiness
from stig.engine.replica_hold import ReplicaHold
from stig.engine.replicas import FollowerState, ReplicaHub
from stig.engine.settings import Settings
from stig.engine.shared_budget import SharedWriteBudget
from stig.engine.shared_follower import SharedFollower
from stig.engine.shared_inflight import SharedInFlight, replicas_offset
from stig.engine.shared_refusal import SharedWriteRefusal
from stig.engine.shared_region import Region
from stig.engine.shared_replicas import POLL_SECONDS, SharedReplicas
from stig.engine.stats import CommandStats, PromoterStats
from stig.engine.writer_link import StreamJobRefused, WriterDied, WriterLink
from stig.storage.replog import ImplausibleEpoch, LogState
from stig.storage.store import Store

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from stig.engine.certificates import TlsCertificates

VERSION = "0.1.0"
#: What ``version`` answers: a memcached-style number (libmemcached parses it)
#: tagged with Stig's own version.
PROTOCOL_VERSION = f"1.6.21-stig-{VERSION}"


#: Reader slots beyond two per connection: listings, backups, checks.
SPARE_READERS = 64
#: How often a primary's worker looks for a fence stored by another worker
#: (``--workers N``: a follower's workers sleep on their eventfd instead,
#: which the writer signals; a primary's is signalled at every commit).
ROLE_POLL_SECONDS = 0.02
#: How long ``stig_promote``/``stig_fence`` waits for every other worker to
#: adopt the change before it answers (a dead worker adopts it as it starts).
ROLE_WAIT_SECONDS = 2.0


def readers_for(max_connections: int) -> int:
    """LMDB reader slots for ``--max-connections`` (``stig_max_readers``)."""
    return 2 * max_connections + SPARE_READERS


@attrs.frozen
class WorkerRole:
    """What a worker process of ``stig serve --workers N`` is handed by its
    supervisor (docs/workers.md): its number and inherited descriptors."""

    worker_id: int
    link_fd: int  #: its socket to the writer process
    table_fd: int  #: the shared in-flight table (stig/engine/shared_inflight.py)
    #: The supervisor's listening socket, which every worker accepts on.
    listen_fd: int = -1
    #: With ``--tls-port``: the listening socket of the TLS port.
    tls_listen_fd: int = -1
    #: Its eventfd: the writer signals commits, its waiting reads wake.
    wake_fd: int = -1


class Engine:
    def __init__(self, settings: Settings, role: WorkerRole | None = None) -> None:
        self.settings = settings
        #: Which worker this is (``--workers N``; 0 in a single process).
        self.worker_id = 0 if role is None else role.worker_id
        # Every connection may hold a snapshot while its reply streams and
        # briefly read a second (an mg lease re-read); the rest is for key
        # listings, backups and the tools: LMDB refuses a reader past its table.
        # A worker's supervisor holds the directory lock and sized the table.
        self.store = Store(
            settings.data_dir,
            settings.map_size,
            readers_for(settings.max_connections) * max(settings.workers, 1),
            lock=role is None,
        )
        self.store.max_value_size = settings.limits.max_item_size
        self.store.log_bounds.max_bytes = settings.replication_log_bytes
        self.store.log_bounds.max_seconds = settings.replication_log_seconds
        # The log is written once a follower wants it (the first
        # stig_replicate turns it on: stig/replication/sender.py), and by a
        # follower, which may be promoted; each commit stores whether it is,
        # so a restart goes on logging.  --replication-log-bytes 0 drops it.
        self.store.log_enabled = settings.replication_log_bytes > 0 and (
            settings.replica_of is not None or self.store.log_state.logging
        )
        if not settings.replication_log_bytes and self.store.log_state.logging:
            if role is None and not settings.workers:  # the writer process commits there
                self.store.stop_logging()
                log.info("replication log off (--replication-log-bytes 0): dropped")
        max_wait = settings.max_run_wait_ms / 1000.0
        #: The counters and the budget shared by every worker (``--workers N``,
        #: stig/engine/shared_region.py); None: one process has them all.
        self.region: Region | None = None
        if role is None:
            self.promoter_stats = PromoterStats()
            self.stats = CommandStats()
            self.budget = WriteBudget(settings.max_pending_bytes, max_wait)
        else:
            region = self.region = Region(role.table_fd, settings.workers, role.worker_id)
            region.start()
            # The same fields in shared memory (ctypes structures: the hot
            # path's ``stats.cmd_get += 1`` is unchanged).
            self.promoter_stats = cast(PromoterStats, region.mine.promoter)
            self.stats = cast(CommandStats, region.mine.command)
            self.budget = SharedWriteBudget(region, settings.max_pending_bytes, max_wait)
            # Held snapshots, stalled reads and renewals, live on every worker.
            self.store.long_reads.share(region.mine.figures)
        #: The writer process (``--workers``); None: the commit thread commits.
        self.writer: WriterLink | None = None
        shared: SharedInFlight | None = None
        if settings.workers:
            self.store.follow_writer()
        replicas: SharedReplicas | None = None
        if role is not None:
            self.writer = WriterLink(self.store, settings.log_level, fd=role.link_fd)
            wakes = () if role.wake_fd < 0 else (role.wake_fd,)
            shared = SharedInFlight(role.table_fd, settings.workers, role.worker_id, wakes)
            replicas = SharedReplicas(
                role.table_fd, settings.workers, role.worker_id, replicas_offset(settings.workers)
            )
        elif settings.workers:
            self.writer = WriterLink(self.store, settings.log_level)
            try:
                self.writer.start()
            except BaseException:
                self.store.close()
                raise
        self.promoter = Promoter(
            self.store, self.promoter_stats, budget=self.budget, link=self.writer
        )
        self.promoter.shared = self.promoter.in_flight.shared = shared
        if replicas is not None and self.region is not None:
            # Writes refused is the server's state: every worker follows the
            # writer's words (stig/engine/shared_refusal.py).
            refusal = SharedWriteRefusal(
                replicas.refusal_words(), self.region.mine.figures, replicas.commit_error_bytes()
            )
            refusal.on_adopt = self.promoter.refusal_changed
            self.promoter.refusal = refusal
        #: The writer's commit signals and the shared table (``--workers N``).
        self.table = shared
        if shared is not None:
            # A restarted worker numbers on after its predecessor (whose
            # numbers the writer released: stig/engine/shared_inflight.py).
            self.promoter.number_from(shared.committed(shared.me))
        #: The followers of this server (stig/replication/sender.py): with
        #: ``--workers N``, every worker's, in the shared block.
        self.replicas = ReplicaHub(replicas, shared)
        self.promoter.on_commit = self.replicas.committed
        if settings.min_replica_acks:
            # No read sees a write before N followers have it (a follower:
            # from its promotion on, as the replies; stig/engine/replica_hold.py).
            self.promoter.hold = ReplicaHold(
                self.promoter.in_flight,
                self.replicas,
                settings.min_replica_acks,
                settings.replica_ack_timeout_ms / 1000.0,
                shared,  # the other workers' writes (--workers N)
            )
            if settings.replica_of is None:
                # A restart: what was committed before may lack the acks.
                self.promoter.hold.held_through(self.store.log_state.seq)
        if self.region is not None:
            self.promoter.on_commit = self.publish_figures
        #: A follower's progress (``--replica-of``; None on a primary): its
        #: writes are refused, naming the primary.
        self.follower: FollowerState | None = None
        #: Whether this process holds a follower's stream from the primary:
        #: with ``--workers N`` worker 0 does, the writer applies it
        #: (docs/workers.md); the others show its progress from here.
        self.holds_stream = self.worker_id == 0
        self.shared_follower: SharedFollower | None = None
        #: Set (and replaced) when this process learns of a promotion: a
        #: former primary may be due a fence (``Store.fences_due``, told by
        #: stig/replication/fencer.py).
        self.fences_changed = trio.Event()
        # The role change this worker adopts below (``--workers N``), read
        # before the stored state: a later one is adopted by watch_role.
        role_gen = 0
        if replicas is not None:
            self.shared_follower = SharedFollower(replicas.follower_bytes())
            role_gen = replicas.role_gen
            self.store.refresh_log_state()  # a fence stored since the store opened
        # A worker restarted after another promoted the server is a primary
        # (its former primary's fence is due in LMDB until it is heard).
        promoted = replicas is not None and bool(replicas.promoted_epoch)
        if settings.replica_of is not None and not promoted:
            self.follower = FollowerState(settings.replica_of)
            self.promoter.refusal.make_read_only(f"read-only replica of {settings.replica_of}")
            if self.holds_stream and self.shared_follower is not None:
                # A restarted worker 0 goes on from its predecessor's counters
                # (the server did not restart); not connected yet.
                self.follower.load(self.shared_follower)
                self.follower.connected = False
                self.follower.pending_bytes = 0
                self.follower.mirror = self.shared_follower
                self.shared_follower.publish_all(self.follower)
        if self.follower is None and self.store.fenced:
            self.promoter.refusal.make_read_only(self.fenced_words())
            log.error("%s", self.fenced_words())
        if replicas is not None:
            replicas.saw_role(role_gen)
        self.started = time.time()
        #: Password logins (``--auth-file``); None when anyone may connect.
        self.auth = Authenticator.from_file(settings.auth_file) if settings.auth_file else None
        #: Per-prefix counters of ``stats detail`` (off until ``stats detail on``).
        #: With ``--workers N`` one table for every worker (the switch too).
        self.prefixes = PrefixStats.local() if self.region is None else self.region.prefixes()
        #: The TLS certificates (``refresh_certs`` reloads them); None without TLS.
        self.tls: TlsCertificates | None = None
        #: When the service manager hears READY=1; a follower holds it back
        #: until it has caught up (stig/engine/readiness.py).
        self.readiness = Readiness()

    def connections(self) -> int:
        """Connections open now, on every worker (``--max-connections`` bounds
        the server: two workers accepting at the same moment may each admit
        one past it, at most one per other worker)."""
        region = self.region
        if region is None:
            return self.stats.curr_connections
        return sum(int(slot.command.curr_connections) for slot in region.slots)

    def publish_figures(self) -> None:
        """Copy what the other workers' ``stats`` read of this one into the
        shared region (after each commit, and before this worker answers
        ``stats``); tell the followers of the commit (none with workers)."""
        if self.region is not None:
            self.region.mine.figures.publish(self.promoter, self.store)
        self.replicas.committed()

    def fenced_words(self) -> str:
        """What a fenced primary's refused writes and followers are told."""
        fence = self.store.fence_state
        return (
            f"fenced: a primary of epoch {fence.epoch} exists ({fence.by}); this server "
            f"is of epoch {self.store.log_state.epoch}: restart it with --replica-of to rejoin"
        )

    async def fence(self, epoch: int, by: str) -> bool:
        """A primary of ``epoch`` exists (``stig_fence``, or a follower of that
        epoch): remember it durably and, if it is later than this server's
        epoch, stop acting as a primary — refuse writes (and followers) from
        now on, after restarts too.  True when that is news.  Raises
        :class:`~stig.storage.replog.ImplausibleEpoch` for an epoch no
        primary can have (too far past this server's; nothing is stored)."""
        news: bool
        if self.writer is None:
            news = await trio.to_thread.run_sync(self.store.fence, epoch, by)
        else:  # the writer process stores it (and tells the other workers)
            try:
                news = await self.writer.fence(epoch, by)
            except WriterDied as exc:
                raise PromoteRefused("the writer process died: ask again") from exc
            self.store.refresh_log_state()
        if self.store.fenced and self.follower is None:
            self.promoter.refusal.make_read_only(self.fenced_words())
            if news:
                log.error("%s", self.fenced_words())
        if news:
            await self._every_worker_adopts()
        return news

    async def promote(self) -> LogState:
        """``stig_promote``: stop following and become a primary of a new epoch.

        The follower task ends first (a group being applied is finished, never
        cut), then one transaction stores the new epoch and its first (empty)
        group; writes are accepted from then on.  Returns the new state."""
        follower = self.follower
        if follower is None:
            raise PromoteRefused(
                f"this server is already a primary (epoch {self.store.log_state.epoch})"
            )
        if follower.stop_requested:
            raise PromoteRefused("a promotion is under way")
        if self.replicas.shared is not None:
            return await self._promote_workers(follower)
        follower.stop()
        epoch = self.store.log_state.epoch
        try:
            await follower.stopped.wait()
            state: LogState
            if self.writer is None:
                state = await trio.to_thread.run_sync(self.store.begin_epoch, follower.primary)
            else:  # --workers 1: the writer process begins it
                state = await self._begin_epoch_in_writer(epoch, follower.primary)
        except BaseException as exc:
            # Nothing was stored: a later stig_promote may try again (the
            # server stays a read-only follower, no longer following).
            follower.stop_requested = False
            if isinstance(exc, ImplausibleEpoch):
                raise PromoteRefused(f"cannot begin a new epoch: {exc}") from exc
            raise
        self._promoted(follower)
        return state

    async def _begin_epoch_in_writer(self, epoch: int, former_primary: str) -> LogState:
        """The writer process begins the new epoch (it owns the write
        transaction) and stores that ``former_primary`` must hear of it;
        ``epoch``: this server's before, to tell whether a writer that died
        meanwhile had stored it."""
        assert self.writer is not None
        try:
            return await self.writer.begin_epoch(former_primary)
        except StreamJobRefused as exc:
            raise PromoteRefused(str(exc)) from exc
        except WriterDied as exc:
            if self.store.refresh_log_state().epoch > epoch:
                return self.store.log_state  # it was stored before the writer died
            raise PromoteRefused("the writer process died: ask again") from exc

    async def _promote_workers(self, follower: FollowerState) -> LogState:
        """``stig_promote`` with ``--workers N``: the writer begins the epoch
        between two of the stream's jobs and refuses the rest (the worker
        holding the stream stops it), then every worker adopts the change
        (:meth:`adopt_role`) before the answer: each accepts writes."""
        follower.stop_requested = True
        try:
            # The epoch as stored now: this worker applies no stream, so its
            # own view may predate an epoch the stream brought, and a writer
            # dying mid-promotion would then pass for one that stored it.
            state = await self._begin_epoch_in_writer(
                self.store.refresh_log_state().epoch, follower.primary
            )
        finally:
            follower.stop_requested = False  # adopt_role stops it for good
        self.adopt_role()
        await self._every_worker_adopts()
        return state

    def _promoted(self, follower: FollowerState) -> None:
        """This process is a primary now (its stream stopped or stopping)."""
        self.follower = None
        self.promoter.refusal.lift_read_only()
        self.replicas.committed()
        follower.promoted.set()
        self.fences_changed.set()  # its former primary is due a fence now
        self.fences_changed = trio.Event()
        log.warning(
            "promoted: primary of epoch %d from group %d (was a replica of %s)",
            self.store.log_state.epoch,
            self.store.log_state.seq,
            follower.primary,
        )

    # -- a promotion or a fence across workers (docs/workers.md) -------------------

    def adopt_role(self) -> None:
        """Take what the writer stored since this worker last looked: a new
        epoch (``stig_promote`` on any worker: stop following, accept
        writes) or a fence (refuse writes); then say so in the shared block."""
        shared = self.replicas.shared
        if shared is None:
            return
        gen = shared.role_gen
        self.store.refresh_log_state()
        follower = self.follower
        if shared.promoted_epoch and follower is not None:
            follower.stop()  # the stream's worker: the writer refuses its jobs anyway
            follower.mirror = None
            self._promoted(follower)
        if self.follower is None and self.store.fenced:
            self.promoter.refusal.make_read_only(self.fenced_words())
        shared.saw_role(gen)

    async def watch_role(self) -> None:
        """Adopt every promotion or fence the writer stores (``--workers N``):
        a follower's worker sleeps on its eventfd (the writer signals it at
        the change; a follower's workers commit nothing else), a primary's
        looks every :data:`ROLE_POLL_SECONDS` (its eventfd rings at every
        commit)."""
        shared, table = self.replicas.shared, self.table
        if shared is None or table is None:
            return
        while True:
            seen = shared.role_seen(shared.me)
            if self.follower is not None:
                await table.next_signal(functools.partial(_changed, shared, seen))
            else:
                await trio.sleep(ROLE_POLL_SECONDS)
            if shared.role_gen != seen:
                self.adopt_role()
            await trio.lowlevel.checkpoint()  # never a loop without one

    async def _every_worker_adopts(self) -> None:
        """Wait until every worker has adopted the writer's last role change,
        at most :data:`ROLE_WAIT_SECONDS` (one that died adopts it as it
        starts again)."""
        shared = self.replicas.shared
        if shared is None:
            return
        gen = shared.role_gen
        with trio.move_on_after(ROLE_WAIT_SECONDS):
            while any(shared.role_seen(w) < gen for w in range(shared.workers)):
                await trio.sleep(POLL_SECONDS)

    async def fence_heard(self, address: str, epoch: int) -> bool:
        """The former primary at ``address`` heard of ``epoch``: it is no
        longer due a fence (stored durably, by the writer process with
        ``--workers``); whether that was stored."""
        if self.writer is None:
            done: bool = await trio.to_thread.run_sync(self.store.fence_heard, address, epoch)
            return done
        return await self.writer.fence_heard(address, epoch)

    async def run_promoter(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await self.promoter.run(task_status=task_status)

    async def close(self) -> None:
        """Commit whatever is queued and close LMDB.  Safe to call twice."""
        await self.promoter.close()
        if self.writer is not None:
            # Before the directory lock goes: the writer has stopped when a
            # new server may start.
            await trio.to_thread.run_sync(self.writer.close)
        self.store.close()


def _changed(shared: SharedReplicas, seen: int) -> bool:
    """Whether the writer stored a role change after ``seen``."""
    return shared.role_gen != seen
