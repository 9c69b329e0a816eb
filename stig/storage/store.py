"""The LMDB environment: committed items, the cas counter, and byte totals.

Reads may happen on any thread (the event loop reads inline: they are fast
and never block on I/O for data in the page cache).  Writes happen only in
:meth:`Store.apply`, which a single promoter calls on a worker thread; it
begins, applies and commits its write transaction inside that one call, as
py-lmdb requires.

Durability: the environment is opened with ``sync=True`` and
``metasync=True`` and without ``writemap``/``map_async``, so when
:meth:`Store.apply` returns, the transaction is on disk (fdatasync), and
LMDB's copy-on-write pages mean a crash leaves either the whole transaction
or none of it.
"""

from __future__ import annotations

import functools
import mmap
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal, NamedTuple, overload

import lmdb

from stig.storage import replog
from stig.storage.dirlock import FILE_MODE, DirLock
from stig.storage.held import MAP_GREW, HeldReads
from stig.storage.ops import Op, Outcome, Put, PutRun
from stig.storage.records import HEADER, Item, decode, encode
from stig.storage.replog import CLEAR_EFFECT, EFFECT, PUT, LogBounds, LogState

_U64 = struct.Struct(">Q")
_CAS_KEY = b"cas"
_BYTES_KEY = b"bytes"
INITIAL_MAP_SIZE = 256 * 1024 * 1024
#: How the environment is opened for durability (the module docstring says
#: why); scripts/lmdb_reference.py opens its ceiling the same way.
DURABLE_OPTIONS: dict[str, bool] = {
    "sync": True,
    "metasync": True,
    "writemap": False,
    "map_async": False,
    "readahead": False,
}
_CAS_CEILING = 2**63  # explicit cas values at or above this do not move the counter
_HEADER_PACK = HEADER.pack
_EFFECT_PACK = EFFECT.pack
#: The keys of a disk-space probe's ballast in the meta table (:meth:`Store.probe`).
PROBE_PREFIX = b"probe:"
#: Each ballast record fills one overflow page of 4 KiB (a 16-byte page header).
_PROBE_RECORD = 4000


class Applied(NamedTuple):
    """What one batch did: each operation's outcome, and the item its last
    operation stored (with its fresh cas), or None."""

    outcomes: list[Outcome]
    written: Item | None


class Gauges(NamedTuple):
    """The store's ``stats`` gauges as the last commit left them, read from
    one LMDB snapshot: ``curr_items``, ``total_items`` (the cas counter) and
    ``bytes``."""

    items: int
    last_cas: int
    total_bytes: int


class MapFull(Exception):
    """The LMDB map is full: grow it (with no transaction open) and retry."""


class MapCannotGrow(Exception):
    """The LMDB map is full and cannot be grown: no address space for a larger one."""


class _WriteView:
    """The :class:`~stig.storage.ops.View` of one LMDB write transaction."""

    def __init__(
        self,
        txn: lmdb.Transaction[bytes],
        items: lmdb._Database,
        next_cas: int,
        max_value_size: int = 2**62,
        effects: list[bytes] | None = None,
    ) -> None:
        self._txn = txn
        #: What the transaction does, for the replication log
        #: (stig/storage/replog.py); None: not recorded.
        self.effects = effects
        self.max_value_size = max_value_size
        self._items = items
        self.next_cas = next_cas
        self.byte_delta = 0
        self.cleared = False
        self.last_put: Item | None = None  # the item the latest put stored

    def get(self, key: bytes) -> Item | None:
        record = self._txn.get(key, db=self._items)
        return None if record is None else decode(record)

    def put(
        self, key: bytes, value: bytes, flags: int, state: int = 0, cas: int | None = None
    ) -> int:
        """Store an item under ``cas``, or under a fresh cas unique when None.

        An explicit cas (meta ``E``, or an unchanged item keeping its own)
        raises the counter to it when larger — up to 2**63, so the counter
        can never run out — so fresh cas values stay above explicit ones and
        the counter never goes back, also across restarts.
        """
        if cas is None:
            self.next_cas += 1
            cas = self.next_cas
        elif self.next_cas < cas < _CAS_CEILING:
            self.next_cas = cas
        item = self.last_put = Item(value, flags, cas, state)
        record = encode(item)
        old = self._txn.replace(key, record, db=self._items)
        if self.effects is not None:
            self.effects += (_EFFECT_PACK(PUT, len(key), len(record)), key, record)
        self.byte_delta += len(value) - (0 if old is None else len(old) - 13)
        return cas

    def delete(self, key: bytes) -> bool:
        old = self._txn.pop(key, db=self._items)
        if old is None:
            return False
        self.byte_delta -= len(old) - 13
        if self.effects is not None:
            self.effects.append(replog.delete_effect(key))
        return True

    def clear(self) -> None:
        self._txn.drop(self._items, delete=False)
        if self.effects is not None:
            self.effects.append(CLEAR_EFFECT)
        self.cleared = True  # the byte total restarts from zero
        self.byte_delta = 0

    def apply_batches(self, batches: Iterable[Sequence[Op]]) -> list[Applied]:
        """Apply each session's run in order: per run, its outcomes and what its last op stored.

        Plain sets (:class:`~stig.storage.ops.Put` without an explicit cas) are the
        bulk of every write load, so they skip ``Put.apply``/:meth:`put` and
        the :class:`Item` they would build: the record is packed and replaced
        right here, with the cas counter and byte delta in locals set up once
        per transaction (a POV-acked set is a run of its own, so per-run
        set-up counts too).  Only a run's last stored item is materialized (a
        binary reply reports its cas).  Every other op goes through its own
        ``apply``, with the counters synced around it, so both paths agree.
        """
        results: list[Applied] = []
        replace = self._txn.replace
        items = self._items
        pack = _HEADER_PACK
        stored = Outcome.STORED
        cas = self.next_cas
        delta = 0
        effects = self.effects
        effect = _EFFECT_PACK
        for ops in batches:
            if ops.__class__ is PutRun:
                # A run of plain sets as columns (from the writer's link):
                # the same puts as below, without an op to look at per set.
                keys, values = ops.keys, ops.values
                for key, value, flags in zip(keys, values, ops.flags, strict=True):
                    cas += 1
                    record = pack(flags, cas, 0) + value
                    old = replace(key, record, db=items)
                    delta += len(value) if old is None else len(value) + 13 - len(old)
                    if effects is not None:
                        effects += (effect(PUT, len(key), len(record)), key, record)
                written_run = None
                if keys:
                    written_run = Item(values[-1], ops.flags[-1], cas, 0)
                results.append(Applied([stored] * len(keys), written_run))
                continue
            outcomes: list[Outcome] = []
            append = outcomes.append
            fast_last = False  # whether the run's latest op took the fast path
            for op in ops:
                if op.__class__ is Put and op.new_cas is None:
                    cas += 1
                    value = op.value
                    record = pack(op.flags, cas, 0) + value
                    old = replace(op.key, record, db=items)
                    delta += len(value) if old is None else len(value) + 13 - len(old)
                    if effects is not None:
                        effects += (effect(PUT, len(op.key), len(record)), op.key, record)
                    append(stored)
                    fast_last = True
                else:
                    self.next_cas = cas
                    self.byte_delta += delta
                    delta = 0
                    self.last_put = None
                    append(op.apply(self))
                    cas = self.next_cas
                    fast_last = False
            if fast_last:
                last = ops[-1]
                written: Item | None = Item(last.value, last.flags, cas, 0)  # type: ignore[union-attr]
            else:
                written = self.last_put if ops else None
            results.append(Applied(outcomes, written))
        self.next_cas = cas
        self.byte_delta += delta
        return results


def _sync_directory(path: Path) -> None:
    """fsync a directory, so the names created in it survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    """One LMDB environment holding Stig's committed state."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        map_size: int = INITIAL_MAP_SIZE,
        max_readers: int = 1024,
        *,
        lock: bool = True,
    ) -> None:
        """``lock=False``: for the writer process (docs/workers.md), whose
        parent holds the directory's lock for it."""
        self.path = Path(path)
        #: LMDB's reader table: one slot per read transaction open at once.
        self.max_readers = max_readers
        # One writer per directory, until close().
        self._lock = DirLock(self.path) if lock else None
        self.env = lmdb.open(
            str(self.path),
            map_size=map_size,
            max_dbs=4,
            **DURABLE_OPTIONS,
            max_readers=max_readers,
            lock=True,
            mode=FILE_MODE,  # data.mdb and lock.mdb, when LMDB creates them
        )
        # LMDB fsyncs its files but never their directory: on a filesystem
        # that keeps names durable only once their directory is synced (POSIX;
        # the power-cut suite's ``--dirs strict``), the first power cut after a
        # fresh start could lose data.mdb itself, with acknowledged commits.
        _sync_directory(self.path)
        _sync_directory(self.path.resolve().parent)
        #: The largest value an append/prepend may make (the engine sets
        #: ``--max-item-size``); larger ones are NOT_STORED.
        self.max_value_size = 2**62
        self._items = self.env.open_db(b"items")
        self._meta = self.env.open_db(b"meta")
        # The commit sequence and the replication log (stig/storage/replog.py).
        self._repl = self.env.open_db(b"repl")
        self._replog = self.env.open_db(b"replog")
        #: ``--replication-log-bytes`` and ``--replication-log-seconds``.
        self.log_bounds = LogBounds()
        #: Whether groups are written to the replication log (their sequence
        #: numbers are counted either way); each commit stores it
        #: (``log_state.logging``), so a restart can go on as it was.
        self.log_enabled = True
        self._begin_items: Callable[[], lmdb.Transaction[bytes]] = functools.partial(
            self.env.begin, db=self._items
        )
        #: A read-only transaction on the items (the hot path of every get
        #: begins one): one call in C while this process is the only writer;
        #: :meth:`follow_writer` makes it adopt a map another process grew.
        self.begin_read: Callable[[], lmdb.Transaction[bytes]] = self._begin_items
        #: Snapshots held across awaits (streamed replies, quiet get runs, key
        #: listings); grow() ends them first (stig/storage/held.py).
        self.long_reads = HeldReads()
        with self.env.begin(db=self._meta) as txn:
            self.last_cas = self._read_u64(txn, _CAS_KEY)
            self.total_bytes = self._read_u64(txn, _BYTES_KEY)
            leftover = bool(self._probe_keys(txn))
            #: The sequence number, epoch and log bounds as the last commit left them.
            self.log_state = replog.read_state(txn, self._repl)
            #: A later primary this server was told of (stig_fence).
            self.fence_state = replog.read_fence(txn, self._repl)
        if leftover:  # a crash in the middle of a probe
            try:
                self._drop_probe()
            except lmdb.Error:
                pass  # a full disk: the next probe drops it (``stig check`` allows it)

    def _probe_keys(self, txn: lmdb.Transaction) -> list[bytes]:
        """The keys of a probe's ballast in the meta table."""
        cursor = txn.cursor(db=self._meta)
        keys: list[bytes] = []
        if cursor.set_range(PROBE_PREFIX):
            for raw in cursor.iternext(values=False):
                key = bytes(raw)
                if not key.startswith(PROBE_PREFIX):
                    break
                keys.append(key)
        return keys

    def _drop_probe(self) -> None:
        """Delete every ballast record, in one durable transaction."""
        with self.env.begin(write=True, db=self._meta) as txn:
            for key in self._probe_keys(txn):
                txn.delete(key)

    @staticmethod
    def _read_u64(txn: lmdb.Transaction, key: bytes) -> int:
        raw = txn.get(key)
        return 0 if raw is None else _U64.unpack(raw)[0]

    @staticmethod
    def _read_u64_in(txn: lmdb.Transaction, key: bytes, db: lmdb._Database) -> int:
        raw = txn.get(key, db=db)
        return 0 if raw is None else _U64.unpack(raw)[0]

    # -- reads (any thread) --------------------------------------------------

    def follow_writer(self) -> None:
        """Another process writes (the writer process, docs/workers.md): every
        read adopts the map it grew (:meth:`adopt_map`) and begins again."""
        self.begin_read = self._begin_adopting

    def _begin_adopting(self) -> lmdb.Transaction[bytes]:
        try:
            return self._begin_items()
        except lmdb.MapResizedError:
            self.adopt_map()
            return self._begin_items()

    def _begin_whole(self) -> lmdb.Transaction[bytes]:
        """A read-only transaction on the whole environment, adopting a map
        the writer process grew (as :meth:`_begin_adopting`)."""
        try:
            return self.env.begin()
        except lmdb.MapResizedError:
            if self.begin_read != self._begin_adopting:
                raise
            self.adopt_map()
            return self.env.begin()

    def adopt_map(self) -> int:
        """Take on the map size another process (the writer process) grew the
        file to: ``MDB_MAP_RESIZED`` in a read transaction begun after it.

        As :meth:`grow`, no transaction may be open in this process: held
        snapshots are ended first.  Returns the map size now.
        """
        self.long_reads.end_all(MAP_GREW)
        self.env.set_mapsize(0)
        return self.map_size

    def get(self, key: bytes) -> Item | None:
        txn = self.begin_read()
        try:
            record = txn.get(key)
        finally:
            txn.abort()
        return None if record is None else decode(record)

    @overload
    def read_txn(self, buffers: Literal[False] = False) -> lmdb.Transaction[bytes]: ...
    @overload
    def read_txn(self, buffers: Literal[True]) -> lmdb.Transaction[memoryview]: ...
    def read_txn(self, buffers: bool = False) -> lmdb.Transaction[bytes | memoryview]:
        """A read-only snapshot of the items, for a caller that reads raw records
        (``txn.get(key)``: the header of :mod:`stig.storage.records`, then the value).

        The caller must ``abort()`` it before anything that may wait, unless it
        registers it in :attr:`long_reads` first (``Snapshot.hold``, the key
        listings), so that :meth:`grow` can end it before remapping the file.
        """
        if not buffers:
            return self.begin_read()
        # values as memoryviews into the map: valid until the next cursor move
        try:
            return self.env.begin(db=self._items, buffers=True)
        except lmdb.MapResizedError:  # only when another process writes
            self.adopt_map()
            return self.env.begin(db=self._items, buffers=True)

    def get_many(self, keys: Sequence[bytes]) -> list[Item | None]:
        """All ``keys`` read in one snapshot."""
        txn = self.begin_read()
        try:
            get = txn.get
            records = [get(key) for key in keys]
        finally:
            txn.abort()
        return [None if r is None else decode(r) for r in records]

    def item_count(self) -> int:
        txn = self.begin_read()
        try:
            return int(txn.stat(self._items)["entries"])
        finally:
            txn.abort()

    def gauges(self) -> Gauges:
        """The item count, cas counter and byte total as committed, from LMDB
        itself: right in any process whoever committed (a worker that has not
        committed since it started, a follower's worker whose stream another
        process applies: docs/workers.md), where :attr:`last_cas` and
        :attr:`total_bytes` are this process's last news of them."""
        txn = self.begin_read()
        try:
            return Gauges(
                int(txn.stat(self._items)["entries"]),
                self._read_u64_in(txn, _CAS_KEY, self._meta),
                self._read_u64_in(txn, _BYTES_KEY, self._meta),
            )
        finally:
            txn.abort()

    def disk_bytes(self) -> int:
        info = self.env.info()
        stat = self.env.stat()
        return int((info["last_pgno"] + 1) * stat["psize"])

    @property
    def map_size(self) -> int:
        return int(self.env.info()["map_size"])

    # -- writes (the promoter's worker thread only) --------------------------

    def apply(
        self, batches: Iterable[Sequence[Op]], before_commit: Callable[[], None] | None = None
    ) -> list[Applied]:
        """Apply every batch of operations, in order, in ONE durable transaction.

        Returns, per batch, each operation's outcome and the item its last
        operation stored (None if it stored nothing): that item's cas is the
        one a binary-protocol reply reports.  Raises :class:`MapFull`
        (nothing applied) when the map must grow, or ``lmdb.Error`` (nothing
        applied) when the disk refuses the commit.

        ``before_commit`` is called once every operation is applied, just
        before the commit writes and syncs (the promoter's GIL loan ends
        there: see :class:`stig.engine.promoter.GilLoan`).
        """
        try:
            with self.env.begin(write=True) as txn:
                # The counters are read inside the write transaction, never
                # from a copy: the stored values are the only truth.
                meta = self._meta
                effects: list[bytes] | None = [b""] if self.log_enabled else None
                view = _WriteView(
                    txn,
                    self._items,
                    self._read_u64_in(txn, _CAS_KEY, meta),
                    self.max_value_size,
                    effects,
                )
                results = view.apply_batches(batches)
                before = 0 if view.cleared else self._read_u64_in(txn, _BYTES_KEY, meta)
                total = before + view.byte_delta
                txn.put(_CAS_KEY, _U64.pack(view.next_cas), db=self._meta)
                txn.put(_BYTES_KEY, _U64.pack(max(total, 0)), db=self._meta)
                state = self._next_group(txn, effects, view.next_cas)
                if before_commit is not None:
                    before_commit()
        except lmdb.MapFullError as exc:
            raise MapFull() from exc
        self.last_cas = view.next_cas
        self.total_bytes = max(total, 0)
        self.log_state = state
        return results

    def _next_group(
        self, txn: lmdb.Transaction, effects: list[bytes] | None, last_cas: int
    ) -> LogState:
        """Number the group this transaction commits and log its ``effects``
        (whose first piece is a placeholder for the entry's header), in
        the same transaction; returns the numbers the commit leaves."""
        state = replog.read_state(txn, self._repl)
        seq = state.seq + 1
        state.logging = effects is not None
        if effects is None:
            state.seq = seq
            state.log_first = seq + 1  # nothing logged: a follower needs a snapshot
            if state.log_bytes:
                replog.reset(txn, self._replog, state, seq)
        else:
            now = replog.now_ms()
            effects[0] = replog.ENTRY_HEAD.pack(state.epoch, now, last_cas)
            entry = b"".join(effects)
            replog.append(txn, self._replog, state, seq, entry, self.log_bounds, now)
        replog.write_state(txn, self._repl, state)
        return state

    # -- a follower's writes (stig/replication/follower.py) --------------------

    def apply_replicated(self, groups: Sequence[tuple[int, bytes]]) -> None:
        """Apply a primary's logged groups, in order, in ONE durable transaction:
        each group's effects as they are (the primary's records and cas
        values), logged under the primary's sequence numbers, and the last
        of them stored as this store's sequence number.  Raises ``ValueError``
        (nothing applied) when a group is not the next one, :class:`MapFull`
        as :meth:`apply` does."""
        try:
            with self.env.begin(write=True) as txn:
                state = replog.read_state(txn, self._repl)
                view = _WriteView(txn, self._items, 0)
                last_cas = self._read_u64_in(txn, _CAS_KEY, self._meta)
                state.logging = self.log_enabled
                for seq, raw in groups:
                    if seq != state.seq + 1:
                        raise ValueError(f"group {seq} does not follow {state.seq}")
                    entry = replog.decode(raw)
                    for effect in entry.effects:
                        if effect.kind == PUT:
                            old = txn.replace(effect.key, effect.record, db=self._items)
                            size = len(effect.record) - 13
                            view.byte_delta += size if old is None else size + 13 - len(old)
                        elif effect.kind == replog.DELETE:
                            view.delete(effect.key)
                        else:
                            view.clear()
                    last_cas = max(last_cas, entry.last_cas)
                    if entry.epoch != state.epoch:
                        if entry.epoch < state.epoch:
                            raise ValueError(f"group {seq} is of an earlier epoch {entry.epoch}")
                        replog.set_epoch_start(txn, self._repl, entry.epoch, seq)
                    state.epoch = entry.epoch
                    if self.log_enabled:
                        replog.append(
                            txn, self._replog, state, seq, raw, self.log_bounds, replog.now_ms()
                        )
                    else:
                        replog.reset(txn, self._replog, state, seq)
                before = 0 if view.cleared else self._read_u64_in(txn, _BYTES_KEY, self._meta)
                total = max(before + view.byte_delta, 0)
                txn.put(_CAS_KEY, _U64.pack(last_cas), db=self._meta)
                txn.put(_BYTES_KEY, _U64.pack(total), db=self._meta)
                replog.write_state(txn, self._repl, state)
        except lmdb.MapFullError as exc:
            raise MapFull() from exc
        self.last_cas = last_cas
        self.total_bytes = total
        self.log_state = state

    def load_snapshot(
        self,
        records: Iterable[tuple[bytes, bytes]],
        seq: int,
        epoch: int,
        last_cas: int,
        epoch_starts: dict[int, int],
    ) -> None:
        """Replace every item by ``records`` (key, record) — a primary's
        snapshot taken at ``seq``, with its epoch history — in ONE durable
        transaction, with an empty log and ``seq`` as this store's sequence
        number: a crash leaves the old state or the new one whole.  Raises
        :class:`MapFull` as :meth:`apply`."""
        try:
            with self.env.begin(write=True) as txn:
                txn.drop(self._items, delete=False)
                total = 0
                put = txn.put
                items = self._items
                for key, record in records:
                    put(key, record, db=items)
                    total += len(record) - 13
                state = replog.read_state(txn, self._repl)
                replog.reset(txn, self._replog, state, seq)
                state.logging = self.log_enabled
                state.epoch = epoch
                replog.replace_epoch_starts(txn, self._repl, epoch_starts)
                txn.put(_CAS_KEY, _U64.pack(last_cas), db=self._meta)
                txn.put(_BYTES_KEY, _U64.pack(total), db=self._meta)
                replog.write_state(txn, self._repl, state)
        except lmdb.MapFullError as exc:
            raise MapFull() from exc
        self.last_cas = last_cas
        self.total_bytes = total
        self.log_state = state

    # -- taking over (docs/replication.md) ----------------------------------------

    def begin_epoch(self, former_primary: str | None = None) -> LogState:
        """Make this store a primary's of a new epoch — one past its own and
        past any it was fenced by — in ONE durable transaction: the epoch
        begins with an empty group (logged, so followers learn the epoch
        and where it starts), recorded in the epoch history, with the
        address of the primary it followed (``former_primary``), which must
        hear of the epoch (:meth:`fences_due`).  Only while nothing else
        writes (a follower that stopped following).  Raises
        :class:`~stig.storage.replog.ImplausibleEpoch`, storing nothing,
        when the epochs are spent."""
        try:
            with self.env.begin(write=True) as txn:
                repl = self._repl
                state = replog.read_state(txn, repl)
                epoch = max(state.epoch, replog.read_fence(txn, repl).epoch) + 1
                if epoch > replog.EPOCH_MAX:
                    raise replog.ImplausibleEpoch(f"no epoch left after {epoch - 1}")
                state.epoch = epoch
                replog.set_epoch_start(txn, repl, state.epoch, state.seq + 1)
                if former_primary is not None:
                    replog.add_fence_due(txn, repl, former_primary, epoch)
                replog.write_state(txn, repl, state)
                last_cas = self._read_u64_in(txn, _CAS_KEY, self._meta)
                state = self._next_group(txn, [b""] if self.log_enabled else None, last_cas)
        except lmdb.MapFullError as exc:
            raise MapFull() from exc
        self.log_state = state
        return state

    def start_logging(self) -> None:
        """Write the replication log from the next commit on, and store that
        it is on, in ONE durable transaction (the first follower: a restart
        before any commit must still log for it).  The flag is set before
        the transaction begins, so every commit after this one logs."""
        self.log_enabled = True
        with self.env.begin(write=True) as txn:
            state = replog.read_state(txn, self._repl)
            state.logging = True
            replog.write_state(txn, self._repl, state)

    def stop_logging(self) -> None:
        """Drop the replication log and store that it is off, in ONE durable
        transaction (``--replication-log-bytes 0``: its pages are free at once)."""
        self.log_enabled = False
        with self.env.begin(write=True) as txn:
            state = replog.read_state(txn, self._repl)
            replog.reset(txn, self._replog, state, state.seq)
            state.logging = False
            replog.write_state(txn, self._repl, state)
        self.log_state = state

    def fence(self, epoch: int, by: str) -> bool:
        """Remember, durably, that a primary of ``epoch`` exists (``by`` says
        who told); True when that is news: later than this store's epoch and
        than any fence before.  Raises
        :class:`~stig.storage.replog.ImplausibleEpoch` (storing nothing) for
        an epoch no primary can have (:func:`~stig.storage.replog.check_claimed_epoch`)."""
        with self.env.begin(write=True) as txn:
            state = replog.read_state(txn, self._repl)
            fence = replog.read_fence(txn, self._repl)
            if epoch <= max(state.epoch, fence.epoch):
                return False
            replog.check_claimed_epoch(epoch, state.epoch)
            fence = replog.Fence(epoch, by)
            replog.write_fence(txn, self._repl, fence)
        self.fence_state = fence
        return True

    def fences_due(self) -> dict[str, int]:
        """The former primaries not yet told of this server's promotion (the
        last commit's view): each address and the epoch it must hear of."""
        txn = self._begin_whole()
        try:
            return replog.fences_due(txn, self._repl)
        finally:
            txn.abort()

    def fence_heard(self, address: str, epoch: int) -> bool:
        """The former primary at ``address`` answered ``stig_fence <epoch>``
        (it knows of that epoch now, durably): stop telling it, in one
        durable transaction; whether it was due."""
        with self.env.begin(write=True) as txn:
            return replog.drop_fence_due(txn, self._repl, address, epoch)

    @property
    def fenced(self) -> bool:
        """Whether a primary of a later epoch than this store's is known."""
        return self.fence_state.epoch > self.log_state.epoch

    def epoch_starts(self, txn: lmdb.Transaction) -> dict[int, int]:
        """The epoch history as ``txn`` sees it (stig/storage/replog.py)."""
        return replog.epoch_starts(txn, self._repl)

    def log_txn(self) -> lmdb.Transaction[bytes]:
        """A read-only snapshot of the whole environment (items, sequence
        number and log agree in it); the caller aborts it before any wait,
        or registers it in :attr:`long_reads`."""
        return self._begin_whole()

    def cas_counter(self, txn: lmdb.Transaction) -> int:
        """The cas counter as ``txn`` sees it."""
        return self._read_u64_in(txn, _CAS_KEY, self._meta)

    def read_log_state(self, txn: lmdb.Transaction) -> LogState:
        return replog.read_state(txn, self._repl)

    def refresh_log_state(self) -> LogState:
        """Read :attr:`log_state` (and :attr:`fence_state`) again from the last
        commit (another process commits: the writer process, docs/workers.md);
        returns the log state."""
        txn = self._begin_whole()
        try:
            self.log_state = replog.read_state(txn, self._repl)
            self.fence_state = replog.read_fence(txn, self._repl)
        finally:
            txn.abort()
        return self.log_state

    def log_entries(
        self, txn: lmdb.Transaction, after: int, max_bytes: int
    ) -> list[tuple[int, bytes]]:
        """The logged groups after ``after`` in ``txn``, about ``max_bytes`` of them."""
        return list(replog.entries_after(txn, self._replog, after, max_bytes))

    def log_after(self, after: int) -> tuple[int, int | None]:
        """The bytes of the logged groups after ``after``, and the commit time
        (ms) of the first of them (None: none) — a follower's lag (``stats``)."""
        self._begin_whole().abort()  # adopts a map the writer process grew
        with self.env.begin(buffers=True) as txn:
            cursor = txn.cursor(db=self._replog)
            if not cursor.set_range(replog.U64.pack(after + 1)):
                return 0, None
            first_ms = replog.entry_time_ms(cursor.value())
            total = 0
            for value in cursor.iternext(keys=False, values=True):
                total += len(value)
            return total, first_ms

    def item_records(self, txn: lmdb.Transaction[bytes]) -> lmdb.Cursor[bytes]:
        """A cursor over every (key, record) of the items in ``txn``."""
        return txn.cursor(db=self._items)

    def probe(self, largest: int, nbytes: int) -> None:
        """Prove the disk has room again (stig/engine/refusal.py): commit one
        record of ``largest`` bytes (contiguous pages, as the value that
        failed needed) and ``nbytes`` more in page-sized records into the
        meta table, then delete them.  Raises :class:`MapFull` or
        ``lmdb.Error`` as :meth:`apply` does; a failed probe leaves no
        record behind (or one the next probe, or start, drops).

        The pages it took are free for the writes that follow: LMDB reuses
        the pages a commit frees only from the second commit after it (the
        previous snapshot still holds them), so a third, tiny commit (the
        cas counter rewritten as it is) follows the delete.
        """
        keys = [PROBE_PREFIX + b"%d" % index for index in range(nbytes // _PROBE_RECORD + 1)]
        page = bytes(_PROBE_RECORD)
        try:
            with self.env.begin(write=True, db=self._meta) as txn:
                for key in keys[1:]:
                    txn.put(key, page)
                txn.put(keys[0], bytes(max(largest, 1)))
            self._drop_probe()
            with self.env.begin(write=True, db=self._meta) as txn:
                txn.put(_CAS_KEY, _U64.pack(self._read_u64(txn, _CAS_KEY)))
        except lmdb.MapFullError as exc:
            raise MapFull() from exc

    def grow(self) -> int:
        """Double the map size.  No transaction may be open in this process.

        Raises :class:`MapCannotGrow` (nothing changed) when the larger map
        would not fit in the address space: LMDB unmaps the file before it
        maps it again at the new size, and if that fails it is left with no
        map at all, so the room is tried first with a mapping of our own.
        """
        new_size = self.map_size * 2
        try:
            mmap.mmap(-1, new_size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ).close()
        except (OSError, OverflowError, ValueError) as exc:
            raise MapCannotGrow(f"mmap of {new_size} bytes: {exc}") from exc
        # A remap leaves cursors dangling (py-lmdb 3 ends them too): each held
        # snapshot's transaction is aborted, its reader's next call fails.
        self.long_reads.end_all(MAP_GREW)
        self.env.set_mapsize(new_size)
        return new_size

    def close(self) -> None:
        self.env.close()
        if self._lock is not None:
            self._lock.release()
