"""The counters of ``stats`` in shared memory, one block per worker (``--workers N``).

With N workers every process keeps its counters where all of them can read
them: in the shared region (:mod:`stig.engine.shared_region`), each worker
in a block of its own that only it writes.  The blocks are ctypes
structures over the region's memory with the same field names as
:class:`~stig.engine.stats.CommandStats` and
:class:`~stig.engine.stats.PromoterStats`, so the hot path's ``stats.cmd_get
+= 1`` is unchanged: a C-level field store into the shared page (one
aligned 8-byte store, atomic on the platforms Stig runs on), about 80 ns
against 30 for a plain attribute.  Nothing is published or copied: whichever
worker answers ``stats`` reads every block as it is at that moment, so a
counter bumped before a reply left another worker is in the sum.

How each figure is combined (:func:`combine`, docs/workers.md):

* counters (``cmd_get``, ``bytes_read``, ``stig_commits``, …) and gauges
  (``curr_connections``, ``stig_held_replies``, ``stig_paused_connections``,
  ``stig_pending_promotion_bytes``): the sum;
* maxima (``stig_group_commit_max``, ``stig_commit_latency_max_us``,
  ``stig_commit_lag_max_ms``, ``stig_held_replies_max``): the largest;
* the averages are recomputed from the sums; the commit lag now from the
  oldest uncommitted promotion's submission time each worker published.

:class:`Figures` is the third block: what other objects of a worker know
(keys in flight, read waits, the refusal's counters), copied in by
:meth:`Figures.publish` after each of its commits and before its own
``stats`` answer; and the held reads' figures, stored there as they change
(live on every worker).  The store's gauges are not here: ``stats`` reads
them from LMDB (``Store.gauges``), right whichever process committed.
"""

from __future__ import annotations

import ctypes
import time
from typing import TYPE_CHECKING

import attrs

from stig.engine.stats import CommandStats, PromoterStats

if TYPE_CHECKING:
    from stig.engine.promoter import Promoter
    from stig.storage.store import Store

#: PromoterStats' fields that are the most seen, not a count.
_PROMOTER_MAXIMA = ("max_group", "commit_seconds_max", "lag_seconds_max")
#: CommandStats' fields that are the most seen, not a count.
_COMMAND_MAXIMA = ("held_replies_max",)


def names(block: type[ctypes.Structure] | ctypes.Structure) -> list[str]:
    """The field names of a ctypes structure."""
    return [field[0] for field in block._fields_]


def _ctype(default: object) -> type[ctypes.c_int64] | type[ctypes.c_double]:
    return ctypes.c_double if isinstance(default, float) else ctypes.c_int64


class SharedCommandStats(ctypes.Structure):
    """:class:`CommandStats` of one worker, in shared memory (same fields)."""

    _fields_ = [(field.name, _ctype(field.default)) for field in attrs.fields(CommandStats)]

    def reset(self) -> None:
        """``stats reset``: every counter but the gauges (as CommandStats.reset)."""
        for name in names(self):
            if name not in ("curr_connections", "held_replies", "ssl_handshake_errors"):
                setattr(self, name, 0)


class SharedPromoterStats(ctypes.Structure):
    """:class:`PromoterStats` of one worker, in shared memory (same fields)."""

    _fields_ = [(field.name, _ctype(field.default)) for field in attrs.fields(PromoterStats)]
    commits: int
    promotions: int
    max_group: int
    commit_seconds_total: float
    commit_seconds_max: float

    def record_commit(self, group_size: int, seconds: float) -> None:
        self.commits += 1
        self.promotions += group_size
        if group_size > self.max_group:
            self.max_group = group_size
        self.commit_seconds_total += seconds
        if seconds > self.commit_seconds_max:
            self.commit_seconds_max = seconds

    def reset(self) -> None:
        """``stats reset``: every counter but the gauges (as PromoterStats.reset)."""
        for name in names(self):
            if name not in ("pending_bytes", "paused_connections"):
                setattr(self, name, 0)


class Figures(ctypes.Structure):
    """What a worker's other objects know, copied in by :meth:`publish`
    (after each of its commits and before its own ``stats`` answer) — but
    the held reads' three figures (``held_snapshots``, ``stalled_reads``,
    ``snapshot_renewals``), which its :class:`~stig.storage.held.HeldReads`
    keeps here as they change (:meth:`~stig.storage.held.HeldReads.share`):
    a worker that commits nothing would otherwise show another worker's
    ``stats`` its reads as of its last commit."""

    _fields_ = [
        ("keys_in_flight", ctypes.c_int64),  # sum
        ("read_waits", ctypes.c_int64),  # sum
        ("held_snapshots", ctypes.c_int64),  # sum
        ("stalled_reads", ctypes.c_int64),  # sum
        ("snapshot_renewals", ctypes.c_int64),  # sum
        # When its oldest uncommitted promotion was submitted (time.monotonic,
        # one clock for every process; 0: none): the lag is computed when read.
        ("oldest_submitted", ctypes.c_double),
        ("writes_refused", ctypes.c_int64),  # max (1 if any worker refuses)
        ("write_refusals", ctypes.c_int64),  # sum
        ("refused_episodes", ctypes.c_int64),  # max (each worker counts every episode)
        ("space_probes", ctypes.c_int64),  # sum
    ]
    held_snapshots: int
    stalled_reads: int
    snapshot_renewals: int

    def publish(self, promoter: Promoter, store: Store) -> None:
        in_flight = promoter.in_flight
        refusal = promoter.refusal
        self.keys_in_flight = len(in_flight)
        self.read_waits = in_flight.waits
        reads = store.long_reads.counts
        if reads is not self:  # with workers they are kept here as they change
            self.held_snapshots = reads.held_snapshots
            self.stalled_reads = reads.stalled_reads
            self.snapshot_renewals = reads.snapshot_renewals
        lag = promoter.lag()
        self.oldest_submitted = time.monotonic() - lag if lag > 0 else 0.0
        self.writes_refused = int(refusal.refusing)
        self.write_refusals = refusal.refused
        self.refused_episodes = refusal.episodes
        self.space_probes = refusal.probes


class BudgetWords(ctypes.Structure):
    """One worker's part of the budget, in its slot of the shared region."""

    _fields_ = [
        ("used", ctypes.c_int64),
        ("open", ctypes.c_int64),
        ("peak", ctypes.c_int64),  # the largest sum this worker saw
        ("waiting", ctypes.c_int64),
        ("room_waits", ctypes.c_int64),
        ("wait_max", ctypes.c_double),
        ("wait_refusals", ctypes.c_int64),
    ]
    waiting: int
    room_waits: int
    wait_max: float
    wait_refusals: int


@attrs.define
class Totals:
    """Every worker's blocks combined (:func:`combine`)."""

    command: CommandStats
    promoter: PromoterStats
    figures: dict[str, int]


def _combine_into(target: object, blocks: list[ctypes.Structure], maxima: tuple[str, ...]) -> None:
    for name in names(blocks[0]):
        values = [getattr(block, name) for block in blocks]
        setattr(target, name, max(values) if name in maxima else sum(values))


def combine(
    commands: list[SharedCommandStats],
    promoters: list[SharedPromoterStats],
    figures: list[Figures],
) -> Totals:
    """The sums (and maxima) of every worker's blocks, as they are now."""
    command = CommandStats()
    promoter = PromoterStats()
    _combine_into(command, list(commands), _COMMAND_MAXIMA)
    _combine_into(promoter, list(promoters), _PROMOTER_MAXIMA)
    now = time.monotonic()
    combined = {
        "keys_in_flight": sum(block.keys_in_flight for block in figures),
        "read_waits": sum(block.read_waits for block in figures),
        "held_snapshots": sum(block.held_snapshots for block in figures),
        "stalled_reads": sum(block.stalled_reads for block in figures),
        "snapshot_renewals": sum(block.snapshot_renewals for block in figures),
        "commit_lag_ms": max(
            (
                int((now - block.oldest_submitted) * 1000)
                for block in figures
                if block.oldest_submitted
            ),
            default=0,
        ),
        "writes_refused": max(block.writes_refused for block in figures),
        "write_refusals": sum(block.write_refusals for block in figures),
        "refused_episodes": max(block.refused_episodes for block in figures),
        "space_probes": sum(block.space_probes for block in figures),
    }
    return Totals(command, promoter, combined)
