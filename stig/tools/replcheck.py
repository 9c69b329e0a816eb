"""``stig check`` on the replication databases: the sequence, the epochs, the log.

The ``repl`` and ``replog`` databases (stig/storage/replog.py) are written
by the same transactions as the items, so one snapshot of them must agree:

* ``repl`` holds only known keys, each of its size; the epoch is 1..2**32-1;
* the epoch history (``epoch_start:<epoch>``) names only epochs after the
  first and up to the stored one, the later an epoch the later its first
  group, none past the stored sequence number; the stored epoch, if past
  the first, has its start;
* the log's keys are sequence numbers, contiguous from ``log_first`` to the
  stored ``seq`` (an empty log: ``log_first`` is ``seq + 1``) — a gap or a
  repeat is a group missing or applied twice;
* every entry decodes, its epoch is the one the history gives its group,
  its cas counter is at most the stored one, and the entries' bytes add up
  to ``log_bytes``.

Each finding goes to ``problem`` as one line naming the database and the group.
"""

from __future__ import annotations

from collections.abc import Callable

import lmdb

from stig.storage import replog

#: Keys of ``repl`` holding a u64, besides the epoch history, the fences due
#: and ``fenced_by``.
_U64_KEYS = {
    replog.SEQ_KEY,
    replog.EPOCH_KEY,
    replog.LOG_FIRST_KEY,
    replog.LOG_BYTES_KEY,
    replog.FENCED_EPOCH_KEY,
    replog.LOG_ON_KEY,
}
_OTHER_KEYS = {replog.FENCED_BY_KEY}


def _show(key: bytes) -> str:
    return repr(key[:60])


def check_replication(
    txn: lmdb.Transaction,
    repl: lmdb._Database,
    log: lmdb._Database,
    cas_counter: int,
    problem: Callable[[str], None],
) -> replog.LogState:
    """Check ``repl`` and ``replog`` as ``txn`` sees them; returns the stored numbers."""
    for raw_key, raw in txn.cursor(db=repl):
        key, value = bytes(raw_key), bytes(raw)
        if key.startswith(replog.EPOCH_START_PREFIX):
            if len(key) != len(replog.EPOCH_START_PREFIX) + replog.EPOCH.size or len(value) != 8:
                problem(f"repl: malformed epoch history record {_show(key)}")
        elif key.startswith(replog.FENCE_DUE_PREFIX):
            if len(value) != 8:
                problem(f"repl: malformed fence due record {_show(key)}")
        elif key in _U64_KEYS:
            if len(value) != 8:
                problem(f"repl: {key.decode()} is {len(value)} bytes, not 8")
        elif key not in _OTHER_KEYS:
            problem(f"repl: unknown entry {_show(key)}")
    try:
        state = replog.read_state(txn, repl)
        starts = replog.epoch_starts(txn, repl)
    except Exception as exc:  # a malformed record (reported above): nothing more to check
        problem(f"repl: unreadable ({exc})")
        return replog.LogState()
    _check_epochs(state, starts, problem)
    _check_log(txn, log, state, starts, cas_counter, problem)
    return state


def _check_epochs(
    state: replog.LogState, starts: dict[int, int], problem: Callable[[str], None]
) -> None:
    if not replog.FIRST_EPOCH <= state.epoch <= replog.EPOCH_MAX:
        problem(f"repl: epoch {state.epoch} outside 1..{replog.EPOCH_MAX}")
    previous = (replog.FIRST_EPOCH, 1)
    for epoch, first in sorted(starts.items()):
        if not replog.FIRST_EPOCH < epoch <= state.epoch:
            problem(
                f"repl: epoch history names epoch {epoch}, outside 2..{state.epoch} "
                "(the stored epoch)"
            )
        if first <= previous[1] and epoch != previous[0]:
            problem(
                f"repl: epoch {epoch} starts at group {first}, not after epoch "
                f"{previous[0]}'s start at {previous[1]}"
            )
        if first > state.seq:
            problem(f"repl: epoch {epoch} starts at group {first}, past the stored seq {state.seq}")
        previous = (epoch, first)
    if state.epoch > replog.FIRST_EPOCH and state.epoch not in starts:
        problem(f"repl: the stored epoch {state.epoch} has no start in the epoch history")


def _epoch_of(starts: list[tuple[int, int]], seq: int) -> int:
    """The epoch group ``seq`` belongs to in a history sorted by epoch."""
    epoch = replog.FIRST_EPOCH
    for other, first in starts:
        if first <= seq:
            epoch = other
    return epoch


def _check_log(
    txn: lmdb.Transaction,
    log: lmdb._Database,
    state: replog.LogState,
    starts: dict[int, int],
    cas_counter: int,
    problem: Callable[[str], None],
) -> None:
    history = sorted(starts.items())
    expected = state.log_first
    total = 0
    try:
        for raw_key, raw in txn.cursor(db=log):
            key, entry = bytes(raw_key), bytes(raw)
            total += len(entry)
            if len(key) != replog.U64.size:
                problem(f"replog: a key of {len(key)} bytes, not a sequence number")
                continue
            seq = replog.U64.unpack(key)[0]
            if seq != expected:
                what = "missing" if seq > expected else "out of order"
                problem(
                    f"replog: group {expected} expected, found {seq} (groups {what}: "
                    "the log must run without gaps from log_first to seq)"
                )
            expected = seq + 1
            try:
                decoded = replog.decode(entry)
            except Exception as exc:  # struct.error on a short header, ValueError
                problem(f"replog: group {seq} does not decode ({exc})")
                continue
            if decoded.epoch != _epoch_of(history, seq):
                problem(
                    f"replog: group {seq} is of epoch {decoded.epoch}, the epoch history "
                    f"says {_epoch_of(history, seq)}"
                )
            if decoded.last_cas > cas_counter:
                problem(
                    f"replog: group {seq} leaves the cas counter at {decoded.last_cas}, "
                    f"above the stored {cas_counter}"
                )
    except lmdb.Error as exc:
        problem(f"replog: LMDB error while walking the log: {exc}")
        return
    if expected != state.seq + 1:
        problem(
            f"replog: the log ends at group {expected - 1}, the stored seq is {state.seq}"
            if expected > state.log_first
            else f"replog: empty, but log_first {state.log_first} is not seq + 1 ({state.seq + 1})"
        )
    if total != state.log_bytes:
        problem(f"replog: the entries hold {total} bytes, log_bytes says {state.log_bytes}")
