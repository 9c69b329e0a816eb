"""The one commit function: apply a group of runs to a :class:`Store`, report per run.

Shared by the promoter's commit thread (stig/engine/promoter.py) and the
writer process (stig/engine/writer.py), so that a group commits — and fails —
the same way in both shapes of the server (docs/workers.md).

A group is committed in ONE LMDB write transaction.  If that transaction
fails for any reason but a full map — an ``lmdb.Error`` (a full disk, an
operation LMDB refuses) or a bug — the store is unchanged and each run is
retried in a transaction of its own, so that one bad run fails alone.  A full
map is reported to the caller (``grow``), which grows it with no transaction
open and retries the runs not yet finished.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import lmdb

from stig.engine.refusal import Cause, classify, words_for
from stig.storage.ops import Op
from stig.storage.store import Applied, MapFull, Store

log = logging.getLogger("stig.engine.promoter")


class Failed(str):
    """A run's failure message, as the client is told it; ``cause``: why
    writes must be refused (None: this run's own failure)."""

    cause: Cause | None = None
    error: str = ""  #: the failure in LMDB's (or the grow's) own words


def failed(message: str, cause: Cause | None, error: str) -> Failed:
    """A :class:`Failed` with its cause and LMDB's words."""
    result = Failed(message)
    result.cause = cause
    result.error = error
    return result


def apply_group(
    store: Store,
    batches: Sequence[Sequence[Op]],
    before_commit: Callable[[], None] | None = None,
) -> tuple[list[Applied | Failed], bool]:
    """Commit one group: per batch its result or failure, and whether the map must grow.

    Returns the results of the leading batches that are finished and
    whether the map must grow before the rest (in order) is retried.
    Never raises.  ``before_commit``: see :meth:`Store.apply` (called by the
    first, whole-group attempt only).
    """
    apply = store.apply
    try:
        return list(apply(batches, before_commit)), False
    except MapFull:
        return [], True
    except BaseException as exc:  # lmdb.Error or a bug: find which runs fail
        if before_commit is not None:
            before_commit()  # the retries below may take long
        if len(batches) == 1:
            return [failure(store, exc, batches)], False
        log.warning("commit of %d runs failed (%s); retrying each alone", len(batches), exc)
    results: list[Applied | Failed] = []
    for batch in batches:
        try:
            results += apply([batch])
        except MapFull:
            return results, True
        except BaseException as exc:
            results.append(failure(store, exc, [batch]))
    return results, False


def failure(store: Store, exc: BaseException, batches: Sequence[Sequence[Op]]) -> Failed:
    """Log a failed commit of ``batches`` and say what the client is told,
    with the cause that refuses writes, if it is one."""
    if isinstance(exc, lmdb.Error):
        log.error("commit of %d run(s) failed: %s", len(batches), exc)
        needed = sum(len(getattr(op, "value", b"")) for ops in batches for op in ops)
        cause = classify(exc, store.path, needed)
        return failed(words_for(cause, str(exc)), cause, str(exc))
    log.error("commit of %d run(s) failed: internal error", len(batches), exc_info=exc)
    return failed("commit failed: internal error (see the server log)", None, repr(exc))
