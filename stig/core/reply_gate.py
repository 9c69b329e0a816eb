"""Replies held behind the commits they acknowledge, released in order.

A connection's replies are one ordered stream (:attr:`ReplyGate.out`, the
handler's reply buffer).  Some replies can only be written once a commit has
decided them — a conditional write's verdict, the cas a binary write got —
and some replies acknowledge writes that must be on disk (``--durable-acks``)
or handed over (the visibility rule) before they may leave.  The rule
(docs/pov.md, "Which replies acknowledge what"): **a reply that
acknowledges something is sent only when what it acknowledges is kept.**

The gate keeps that rule without making the connection wait command by
command.  A command whose reply needs its commit does not await it: it
closes its run and *holds* a place in the stream (:meth:`ReplyGate.hold`)
with the function that will write its reply from the commit's result; the
burst goes on, and every write of it joins the same group commit.  When the
connection sends (the end of a burst, or ``--max-reply-bytes`` reached), it
first hands the session's closed runs to the promoter, then
:meth:`ReplyGate.release` waits for the held commits and writes each reply
in its place, in order — then, under ``--durable-acks``, the connection also
waits for every run the replies acknowledge (stig/server/connection.py).
1,000 pipelined binary Sets so take a few group commits, not 1,000.

Bytes written after a held place are sent after it: a reply never overtakes
one before it.  A held reply costs memory until it is released, counted in
:attr:`ReplyGate.cost` against ``--max-reply-bytes`` (reaching it sends, which
releases).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from stig.engine.promoter import Promotion
from stig.engine.stats import CommandStats

#: What one held reply costs in memory until it is written (its place and
#: the answer that writes it, with what that binds; the promotion itself is
#: counted in the write budget): measured with tracemalloc, ~330 B for a
#: binary Set, rounded up.
HELD_COST = 384


class _Held(NamedTuple):
    """One reply held in the stream: where, behind which commit, and how to write it."""

    offset: int  # its place in ``out``: before every byte at or after this offset
    promotion: Promotion
    answer: object  # handed to ReplyGate.settle with the finished promotion


class ReplyGate:
    """The replies of one connection held behind their commits; see the module docstring."""

    __slots__ = ("_held", "_stats", "cost", "out", "settle")

    def __init__(self, out: bytearray, stats: CommandStats) -> None:
        #: The connection's reply buffer, which the handler appends to.
        self.out = out
        self._held: list[_Held] = []
        #: Memory the held replies cost (:data:`HELD_COST` each).
        self.cost = 0
        self._stats = stats  # stig_held_replies, stig_held_replies_max
        #: Writes a held reply: (its finished promotion, the answer it was
        #: held with) -> bytes.  Set by its owner (the command core).
        self.settle: Callable[[Promotion, object], bytes] = _unsettled

    @property
    def holding(self) -> bool:
        """Whether replies wait for their commits (:meth:`release` first)."""
        return bool(self._held)

    def hold(self, promotion: Promotion, answer: object) -> None:
        """Keep a place at the end of the stream for the reply that
        :attr:`settle` writes from ``promotion`` and ``answer`` once
        ``promotion`` is finished (committed or failed)."""
        held = self._held
        held.append(_Held(len(self.out), promotion, answer))
        self.cost += HELD_COST
        stats = self._stats
        stats.held_replies += 1
        if len(held) > stats.held_replies_max:
            stats.held_replies_max = len(held)

    def insert(self, position: int, data: bytes) -> None:
        """Insert ``data`` into the stream at ``position`` (the start of the
        reply being written: what a run's quiet writes are owed comes before
        it), after any reply held at that very place (it belongs to an
        earlier command)."""
        if not data:
            return
        self.out[position:position] = data
        held = self._held
        if held and held[-1].offset > position:
            size = len(data)
            self._held = [
                entry._replace(offset=entry.offset + size) if entry.offset > position else entry
                for entry in held
            ]

    def discard(self) -> None:
        """Forget the held replies (the connection reports a loss instead, or ends)."""
        self._stats.held_replies -= len(self._held)
        self._held = []
        self.cost = 0

    def close(self) -> None:
        """The connection is over: forget the held replies, and :attr:`settle`
        (a bound method of the core, which holds this gate: a reference
        cycle otherwise)."""
        self.discard()
        self.settle = _unsettled

    async def release(self) -> None:
        """Wait for each held reply's commit and write it in its place.

        The caller has handed the session's closed runs to the promoter
        first (else this waits for ever).  A session's promotions finish in
        the order they were submitted, so waiting for the last is waiting
        for all.
        """
        held = self._held
        if not held:
            return
        last = held[-1].promotion
        if not last.finished:
            await last.done.wait()
        self.discard()
        out = self.out
        settle = self.settle
        pieces: list[bytes | bytearray] = []
        start = 0
        for offset, promotion, answer in held:
            if not promotion.finished:  # never, by the order above; but never wrong
                await promotion.done.wait()
            pieces.append(out[start:offset])
            pieces.append(settle(promotion, answer))
            start = offset
        pieces.append(out[start:])
        out[:] = b"".join(pieces)


def _unsettled(promotion: Promotion, answer: object) -> bytes:
    raise AssertionError("a ReplyGate's settle was never set")
