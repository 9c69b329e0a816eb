"""The commit sequence and the replication log, kept in the same LMDB transactions as the items.

Every committed transaction (a group of runs, :meth:`Store.apply
<stig.storage.store.Store.apply>`) gets the next **sequence number**; the
number, and the **epoch** it was committed in (1 until a follower is
promoted: issue 22 item 4), live in the named database ``repl`` and are
written by the very transaction that writes the group's items, so the
stored number is exactly the state the items are in — after a crash too.

The **replication log** (named database ``replog``) holds the recent
groups, keyed by their sequence number big-endian (so a cursor walks them
in order), each as its *effects*: what the group did to each key — the
record it stored, with its cas, flags and state bits, or its removal, or a
clear — in the order it did them.  A follower replays the effects, not the
operations: no increment, ``add`` or ``cas`` is decided twice, and every
cas is the primary's.  The same transaction trims the log's oldest groups
to its bounds (bytes and age); the newest group always stays.

An entry, as stored and as sent:

* header (:data:`ENTRY_HEAD`): epoch (u32), the commit's wall time in
  milliseconds (u64), the cas counter after it (u64);
* effects, each :data:`EFFECT` — kind (``P`` put, ``D`` delete, ``C``
  clear), key length (u16), record length (u32) — then the key and the
  record (the layout of :mod:`stig.storage.records`).

This module knows LMDB's transactions as the store hands them over, and
nothing above the storage layer.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator

import attrs
import lmdb

U64 = struct.Struct(">Q")
#: epoch, commit wall time (ms), cas counter after the group
ENTRY_HEAD = struct.Struct(">IQQ")
#: kind, key length, record length
EFFECT = struct.Struct(">cHI")
PUT = b"P"
DELETE = b"D"
CLEAR = b"C"

#: Keys of the ``repl`` database.
SEQ_KEY = b"seq"  #: the last committed (primary) or applied (follower) sequence number
EPOCH_KEY = b"epoch"
LOG_FIRST_KEY = b"log_first"  #: the oldest sequence number still in the log
LOG_BYTES_KEY = b"log_bytes"  #: the bytes of every entry in the log
#: 1 while the log is written (a follower connected once, or this server is
#: one), 0 or absent while it is not: a restart keeps logging for a follower.
LOG_ON_KEY = b"log_on"
#: ``epoch_start:`` + epoch (u32 big-endian): the first sequence number of
#: that epoch (the epoch history; epoch 1 starts at 1 without a key).
EPOCH_START_PREFIX = b"epoch_start:"
#: The latest epoch another server was promoted to, as this one was told
#: (``stig_fence``, or a follower of that epoch); with ``FENCED_BY_KEY``,
#: who said so.  Later than this server's own epoch: it must not act as a
#: primary (docs/replication.md, taking over).
FENCED_EPOCH_KEY = b"fenced_epoch"
FENCED_BY_KEY = b"fenced_by"
#: ``fence_due:`` + a former primary's address (``HOST:PORT``): the epoch
#: (u64) this server was promoted to from following it, stored by the
#: promotion's own transaction and deleted once that address answered
#: ``stig_fence``: until then the server keeps telling it, after restarts
#: too (docs/replication.md, the old primary).
FENCE_DUE_PREFIX = b"fence_due:"
#: At most this many addresses wait to be told (one per promotion whose
#: former primary never answered): a promotion past it forgets the oldest.
MAX_FENCES_DUE = 16
FIRST_EPOCH = 1
EPOCH = struct.Struct(">I")
#: Epochs are u32 (log entries, the epoch history, the wire): the last one.
EPOCH_MAX = 2**32 - 1
#: A later epoch claimed by ``stig_fence`` or a follower is believed only up
#: to this far past this server's own: each promotion adds one, so a server
#: that missed more than this many failovers is not one a real primary of
#: that epoch would reach, while a claim far past it (any client's typo or
#: malice) would fence this server and spend the epoch space for nothing.
MAX_EPOCH_LEAP = 100
#: An epoch and its first sequence number, as a snapshot sends the history.
EPOCH_START = struct.Struct(">IQ")


def delete_effect(key: bytes) -> bytes:
    return EFFECT.pack(DELETE, len(key), 0) + key


def put_head(key: bytes, record_length: int) -> bytes:
    return EFFECT.pack(PUT, len(key), record_length)


CLEAR_EFFECT = EFFECT.pack(CLEAR, 0, 0)


@attrs.frozen
class Effect:
    """One decoded effect: ``kind`` (:data:`PUT`, :data:`DELETE`, :data:`CLEAR`)."""

    kind: bytes
    key: bytes
    record: bytes


@attrs.frozen
class Entry:
    """One decoded log entry (a follower's view of a group)."""

    epoch: int
    time_ms: int
    last_cas: int
    effects: list[Effect]


def decode(entry: bytes) -> Entry:
    """An entry's header and effects; raises ``ValueError`` on a torn one."""
    epoch, time_ms, last_cas = ENTRY_HEAD.unpack_from(entry)
    offset = ENTRY_HEAD.size
    effects = []
    size = len(entry)
    while offset < size:
        kind, key_len, rec_len = EFFECT.unpack_from(entry, offset)
        offset += EFFECT.size
        end = offset + key_len + rec_len
        if end > size or kind not in (PUT, DELETE, CLEAR):
            raise ValueError("a torn or unknown replication log entry")
        key = entry[offset : offset + key_len]
        effects.append(Effect(kind, key, entry[offset + key_len : end]))
        offset = end
    return Entry(epoch, time_ms, last_cas, effects)


def entry_time_ms(entry: bytes | memoryview) -> int:
    return int(ENTRY_HEAD.unpack_from(entry)[1])


def now_ms() -> int:
    return int(time.time() * 1000)


@attrs.define
class LogState:
    """The numbers of the ``repl`` database, as the last commit left them."""

    seq: int = 0
    epoch: int = FIRST_EPOCH
    log_first: int = 1  #: the oldest sequence number in the log (``seq + 1``: empty)
    log_bytes: int = 0
    #: Whether the commits write the log (:data:`LOG_ON_KEY`).
    logging: bool = False

    @property
    def log_groups(self) -> int:
        return self.seq - self.log_first + 1


def _u64(txn: lmdb.Transaction, key: bytes, db: lmdb._Database, default: int) -> int:
    raw = txn.get(key, db=db)
    return default if raw is None else int(U64.unpack(raw)[0])


def read_state(txn: lmdb.Transaction, repl: lmdb._Database) -> LogState:
    seq = _u64(txn, SEQ_KEY, repl, 0)
    return LogState(
        seq=seq,
        epoch=_u64(txn, EPOCH_KEY, repl, FIRST_EPOCH),
        log_first=_u64(txn, LOG_FIRST_KEY, repl, seq + 1),
        log_bytes=_u64(txn, LOG_BYTES_KEY, repl, 0),
        logging=bool(_u64(txn, LOG_ON_KEY, repl, 0)),
    )


def write_state(txn: lmdb.Transaction, repl: lmdb._Database, state: LogState) -> None:
    put = txn.put
    put(SEQ_KEY, U64.pack(state.seq), db=repl)
    put(EPOCH_KEY, U64.pack(state.epoch), db=repl)
    put(LOG_FIRST_KEY, U64.pack(state.log_first), db=repl)
    put(LOG_BYTES_KEY, U64.pack(state.log_bytes), db=repl)
    put(LOG_ON_KEY, U64.pack(state.logging), db=repl)


def _prefixed(
    txn: lmdb.Transaction, repl: lmdb._Database, prefix: bytes
) -> Iterator[tuple[bytes, bytes]]:
    """The entries of ``repl`` whose key begins with ``prefix``, in key
    order: each key without the prefix, and its value."""
    cursor = txn.cursor(db=repl)
    if not cursor.set_range(prefix):
        return
    for key, value in cursor:
        key = bytes(key)
        if not key.startswith(prefix):
            return
        yield key[len(prefix) :], bytes(value)


def epoch_starts(txn: lmdb.Transaction, repl: lmdb._Database) -> dict[int, int]:
    """The epoch history: each epoch after the first and its first sequence number."""
    return {
        EPOCH.unpack(suffix)[0]: U64.unpack(value)[0]
        for suffix, value in _prefixed(txn, repl, EPOCH_START_PREFIX)
    }


def set_epoch_start(txn: lmdb.Transaction, repl: lmdb._Database, epoch: int, seq: int) -> None:
    txn.put(EPOCH_START_PREFIX + EPOCH.pack(epoch), U64.pack(seq), db=repl)


def replace_epoch_starts(
    txn: lmdb.Transaction, repl: lmdb._Database, starts: dict[int, int]
) -> None:
    """Make ``starts`` the epoch history (a follower loading a snapshot)."""
    for epoch in epoch_starts(txn, repl):
        txn.delete(EPOCH_START_PREFIX + EPOCH.pack(epoch), db=repl)
    for epoch, seq in starts.items():
        set_epoch_start(txn, repl, epoch, seq)


def end_of_epoch(starts: dict[int, int], epoch: int) -> int | None:
    """The last sequence number of ``epoch`` in this history (the group
    before the next epoch's first); None if no later epoch is known."""
    later = [seq for other, seq in starts.items() if other > epoch]
    return min(later) - 1 if later else None


def encode_epoch_starts(starts: dict[int, int]) -> bytes:
    return b"".join(EPOCH_START.pack(epoch, seq) for epoch, seq in sorted(starts.items()))


def decode_epoch_starts(data: bytes) -> dict[int, int]:
    if len(data) % EPOCH_START.size:
        raise ValueError("a torn epoch history")
    return dict(EPOCH_START.iter_unpack(data))


@attrs.frozen
class Fence:
    """What this server was told of a later primary (``stig_fence``)."""

    epoch: int = 0
    by: str = ""


class ImplausibleEpoch(ValueError):
    """A fence's epoch no primary can have (:func:`check_claimed_epoch`)."""


def check_claimed_epoch(epoch: int, own: int) -> None:
    """Raise :class:`ImplausibleEpoch` unless a primary of ``epoch`` can
    exist for a server of epoch ``own``: at most :data:`MAX_EPOCH_LEAP` past
    it, and below :data:`EPOCH_MAX` (a promotion past it must still fit)."""
    if epoch >= EPOCH_MAX or epoch > own + MAX_EPOCH_LEAP:
        raise ImplausibleEpoch(
            f"epoch {epoch} is not believed: more than {MAX_EPOCH_LEAP} past this "
            f"server's {own} (or past {EPOCH_MAX - 1})"
        )


#: The words of a ``stig_fence`` answer from a server that knows ``epoch``
#: already (its own is as late or later): the fence is moot, as heard.
NOT_LATER = "is not later than this server's"


def not_later_words(epoch: int, own: int) -> str:
    """Why ``stig_fence <epoch>`` changes nothing on a server of epoch ``own``."""
    return f"epoch {epoch} {NOT_LATER} {own}"


def read_fence(txn: lmdb.Transaction, repl: lmdb._Database) -> Fence:
    """The stored fence; one past the epoch range (stored before fences were
    checked) is no primary's: ignored."""
    by = txn.get(FENCED_BY_KEY, db=repl)
    epoch = _u64(txn, FENCED_EPOCH_KEY, repl, 0)
    if epoch >= EPOCH_MAX:
        return Fence()
    return Fence(epoch, "" if by is None else bytes(by).decode())


def write_fence(txn: lmdb.Transaction, repl: lmdb._Database, fence: Fence) -> None:
    txn.put(FENCED_EPOCH_KEY, U64.pack(fence.epoch), db=repl)
    txn.put(FENCED_BY_KEY, fence.by.encode(), db=repl)


def fences_due(txn: lmdb.Transaction, repl: lmdb._Database) -> dict[str, int]:
    """The former primaries not yet told of this server's promotion, and
    the epoch each must hear of."""
    return {
        suffix.decode(errors="replace"): U64.unpack(value)[0]
        for suffix, value in _prefixed(txn, repl, FENCE_DUE_PREFIX)
    }


def add_fence_due(txn: lmdb.Transaction, repl: lmdb._Database, address: str, epoch: int) -> None:
    """Remember that ``address`` must hear of ``epoch``; past
    :data:`MAX_FENCES_DUE` addresses the one of the earliest epoch goes."""
    due = fences_due(txn, repl)
    due.pop(address, None)
    while len(due) >= MAX_FENCES_DUE:
        oldest = min(due, key=lambda other: due[other])
        txn.delete(FENCE_DUE_PREFIX + oldest.encode(), db=repl)
        del due[oldest]
    txn.put(FENCE_DUE_PREFIX + address.encode(), U64.pack(epoch), db=repl)


def drop_fence_due(txn: lmdb.Transaction, repl: lmdb._Database, address: str, epoch: int) -> bool:
    """``address`` heard of ``epoch``: forget it, unless it must hear of a
    later one (a later promotion from it); whether it was forgotten."""
    key = FENCE_DUE_PREFIX + address.encode()
    raw = txn.get(key, db=repl)
    if raw is None or U64.unpack(raw)[0] > epoch:
        return False
    return bool(txn.delete(key, db=repl))


@attrs.define
class LogBounds:
    """``--replication-log-bytes`` and ``--replication-log-seconds`` (0: no bound of that kind)."""

    max_bytes: int = 64 << 20
    max_seconds: float = 3600.0


def append(
    txn: lmdb.Transaction,
    replog: lmdb._Database,
    state: LogState,
    seq: int,
    entry: bytes,
    bounds: LogBounds,
    now: int,
) -> None:
    """Log ``entry`` as group ``seq`` (the next after ``state.seq``) and trim the
    oldest groups past ``bounds``, the newest kept whatever its size; updates
    ``state`` (the caller writes it in the same transaction)."""
    if state.log_first > state.seq:  # the log was empty
        state.log_first = seq
    txn.put(U64.pack(seq), entry, db=replog, append=True)
    state.seq = seq
    state.log_bytes += len(entry)
    max_bytes = bounds.max_bytes
    oldest_ms = now - int(bounds.max_seconds * 1000) if bounds.max_seconds else None
    while state.log_first < seq:
        if max_bytes and state.log_bytes > max_bytes:
            pass
        elif oldest_ms is not None:
            first = txn.get(U64.pack(state.log_first), db=replog)
            if first is None or entry_time_ms(first) >= oldest_ms:
                break
        else:
            break
        old = txn.pop(U64.pack(state.log_first), db=replog)
        state.log_bytes -= 0 if old is None else len(old)
        state.log_first += 1


def reset(txn: lmdb.Transaction, replog: lmdb._Database, state: LogState, seq: int) -> None:
    """Empty the log and make ``seq`` the last sequence number (a follower
    that loaded a snapshot taken at ``seq``)."""
    txn.drop(replog, delete=False)
    state.seq = seq
    state.log_first = seq + 1
    state.log_bytes = 0


def entries_after(
    txn: lmdb.Transaction, replog: lmdb._Database, after: int, max_bytes: int
) -> Iterator[tuple[int, bytes]]:
    """The logged groups after ``after``, in order, as (seq, entry), until
    about ``max_bytes`` are read (at least one)."""
    cursor = txn.cursor(db=replog)
    if not cursor.set_range(U64.pack(after + 1)):
        return
    total = 0
    for raw_key, value in cursor:
        seq = int(U64.unpack(raw_key)[0])
        entry = bytes(value)
        yield seq, entry
        total += len(entry)
        if total >= max_bytes:
            return
