"""The shared state of one server: store, promoter, settings and counters.

Sessions and protocol handlers reach everything global through it; it owns
no sockets.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import attrs
import trio

from stig.engine.auth import Authenticator
from stig.engine.budget import WriteBudget
from stig.engine.prefix_stats import PrefixStats
from stig.engine.promoter import Promoter
from stig.engine.readiness import Readiness
from stig.engine.settings import Settings
from stig.engine.shared_inflight import SharedInFlight
from stig.engine.stats import CommandStats, PromoterStats
from stig.engine.writer_link import WriterLink
from stig.storage.store import Store

if TYPE_CHECKING:
    from stig.engine.certificates import TlsCertificates

VERSION = "0.1.0"
#: What ``version`` answers: a memcached-style number (libmemcached parses it)
#: tagged with Stig's own version.
PROTOCOL_VERSION = f"1.6.21-stig-{VERSION}"


#: Reader slots beyond two per connection: listings, backups, checks.
SPARE_READERS = 64


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
        self.promoter_stats = PromoterStats()
        self.stats = CommandStats()
        self.budget = WriteBudget(settings.max_pending_bytes, settings.max_run_wait_ms / 1000.0)
        #: The writer process (``--workers``); None: the commit thread commits.
        self.writer: WriterLink | None = None
        shared: SharedInFlight | None = None
        if settings.workers:
            self.store.follow_writer()
        if role is not None:
            self.writer = WriterLink(self.store, settings.log_level, fd=role.link_fd)
            shared = SharedInFlight(role.table_fd, settings.workers, role.worker_id)
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
        self.started = time.time()
        #: Password logins (``--auth-file``); None when anyone may connect.
        self.auth = Authenticator.from_file(settings.auth_file) if settings.auth_file else None
        #: Per-prefix counters of ``stats detail`` (off until ``stats detail on``).
        self.prefixes = PrefixStats()
        #: The TLS certificates (``refresh_certs`` reloads them); None without TLS.
        self.tls: TlsCertificates | None = None
        #: When the service manager hears READY=1; a follower holds it back
        #: until it has caught up (stig/engine/readiness.py).
        self.readiness = Readiness()

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
