"""Fencing former primaries: tell each the epoch it was replaced by, until it hears it.

A follower promoted (``stig_promote``) stores, in the promotion's own LMDB
transaction, the address it followed and the epoch it began
(``Store.fences_due``).  While such an entry is there, the process that
holds the stream (a single process; worker 0 with ``--workers N``) sends
that address ``stig_fence <epoch>``: at once, then after a pause that
doubles from :data:`~stig.replication.follower.RECONNECT_FIRST` to
:data:`~stig.replication.follower.RECONNECT_MAX` while it is unreachable
or refuses, for as long as it takes.  The entry is deleted (durably) once
the address *heard* the epoch: it answered ``FENCED``, or that it knows
that epoch or a later one already.  Since the entry is in LMDB, neither a
restart of the whole server (with or without ``--replica-of``) nor a
restart of the supervisor's group forgets it (docs/replication.md, the
old primary).

Whether this server is itself fenced by a later epoch meanwhile changes
nothing: the former primary must still learn that its own epoch is over,
and the later primary's promotion fenced only the server it followed.
"""

from __future__ import annotations

import logging

import trio

from stig.engine.engine import Engine
from stig.replication.follower import (
    LINK_FAILURES,
    RECONNECT_FIRST,
    RECONNECT_MAX,
    send_fence,
)
from stig.storage.replog import NOT_LATER

log = logging.getLogger(__name__)

#: The most characters of a target's answer a log line quotes.
ANSWER_LOG_CHARS = 200


def heard(answer: str, epoch: int) -> bool:
    """Whether the answer to ``stig_fence <epoch>`` means the server knows
    that epoch now (durably): ``FENCED <epoch>``, or the words that it had
    that epoch or a later one already (``SERVER_ERROR`` and
    :func:`~stig.storage.replog.not_later_words`).  Nothing else counts, so
    that a target answering garbage (not Stig, a proxy) or about another
    epoch never makes the fence be forgotten."""
    if answer == f"FENCED {epoch}":
        return True
    known = f"SERVER_ERROR epoch {epoch} {NOT_LATER} "
    return answer.startswith(known) and answer[len(known) :].isdigit()


def loggable(answer: str) -> str:
    """``answer`` as a log line may quote it: control characters escaped (a
    target answering garbage must not forge log lines or ring terminals),
    at most :data:`ANSWER_LOG_CHARS` characters, and said when cut."""
    shown = answer.encode("unicode_escape").decode("ascii")
    if len(shown) <= ANSWER_LOG_CHARS:
        return shown
    return f"{shown[:ANSWER_LOG_CHARS]}... ({len(shown)} characters)"


async def fence_former_primaries(engine: Engine) -> None:
    """Tell every former primary due a fence, each in a task of its own,
    and look again whenever this process learns of a promotion; runs until
    cancelled (the server stops)."""
    telling: set[str] = set()
    async with trio.open_nursery() as nursery:
        while True:
            changed = engine.fences_changed
            for address in engine.store.fences_due():
                if address not in telling:
                    telling.add(address)
                    nursery.start_soon(_tell_until_heard, engine, address, telling)
            await changed.wait()


async def _tell_until_heard(engine: Engine, address: str, telling: set[str]) -> None:
    """Tell ``address`` the epoch it is due (the latest, if a later
    promotion from it came meanwhile) until it heard it and that is stored."""
    pause = RECONNECT_FIRST
    said = ""
    try:
        while (epoch := engine.store.fences_due().get(address)) is not None:
            try:
                answer = await send_fence(engine, address, epoch)
            except LINK_FAILURES as exc:
                answer = f"not reached: {exc or type(exc).__name__}"
            if heard(answer, epoch):
                log.warning(
                    "former primary %s told of epoch %d: %s", address, epoch, loggable(answer)
                )
                if await _forget(engine, address, epoch):
                    continue
            elif answer != said:  # each new reason once, not every retry
                log.warning(
                    "former primary %s not fenced yet (retrying): %s", address, loggable(answer)
                )
                said = answer
            await trio.sleep(pause)
            pause = min(pause * 2, RECONNECT_MAX)
    finally:
        telling.discard(address)


async def _forget(engine: Engine, address: str, epoch: int) -> bool:
    """Store that ``address`` heard ``epoch``; False if that failed (it is
    told again after the pause, which it answers alike)."""
    try:
        if await engine.fence_heard(address, epoch):
            return True
    except Exception as exc:  # a failed transaction (disk full): it stays due
        log.error("could not store that %s heard of epoch %d: %s", address, epoch, exc)
        return False
    # Not due any more (a stale view), or the writer died: look again.
    return engine.store.fences_due().get(address) != epoch
