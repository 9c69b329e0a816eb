"""A plain model of points of view, runs and promotion (docs/pov.md).

The model the POV tests run in lockstep with Stig: the session-level machine
(tests/model/test_pov_model.py, which drives :class:`~stig.engine.session.Session`
objects) and the wire-level one (tests/model/test_pov_wire_model.py, which
drives the command core and the three handlers with protocol bytes).

* ``Model.committed`` — the global state, a dict key -> :class:`Item` (value,
  flags, cas); ``Model.next_cas`` — the last cas a commit gave;
* per session, its open run and its closed-but-unsubmitted runs; the
  promoter's queue of submitted runs.  A run is a list of *intents*: the
  operation plus, for an unconditional write, the item this session's POV
  saw right after it.

What a session sees of its own writes is read straight off that: the newest
of its uncommitted intents that touches the key decides — an unconditional
one gives the item its POV computed, a conditional one (``add``/``replace``/
``cas``/``flush_all``, or a write recorded as an intent behind one) makes
the key *unresolved* (the session must wait for the verdict).  At commit the
model applies each run's operations, in submission order, to the committed
dict (:meth:`Model.apply`).
"""

from __future__ import annotations

from typing import Any

import attrs

from stig.storage.ops import (
    Add,
    Adjust,
    Cas,
    Clear,
    Concat,
    Op,
    Outcome,
    Put,
    Remove,
    Replace,
)
from stig.storage.records import Item

U64 = 2**64


def as_counter(value: bytes) -> int | None:
    """A value incr/decr acts on: decimal digits (trailing spaces allowed) < 2**64."""
    digits = value.rstrip(b" ")
    if not digits or any(c < 0x30 or c > 0x39 for c in digits):
        return None
    number = int(digits)
    return number if number < U64 else None


def bump(current: int, delta: int, incr: bool) -> int:
    return (current + delta) % U64 if incr else max(current - delta, 0)


UNRESOLVED = object()  # a view the session cannot know before a commit


@attrs.define
class Intent:
    op: Op
    key: bytes | None  # None: every key (flush_all)
    conditional: bool
    pov: Item | None = None  # unconditional: the item as the POV saw it after
    size: int = 0  # bytes the session counts for it


@attrs.define
class Run:
    session: int | None  #: None: its connection is gone (its writes are nobody's own)
    intents: list[Intent]
    #: The engine's promotion of the run, where the driver can see it (Session level).
    promotion: Any = None


@attrs.define
class MSession:
    open: list[Intent] = attrs.field(factory=list)
    closed: list[Run] = attrs.field(factory=list)


class Model:
    def __init__(self, sessions: int) -> None:
        self.committed: dict[bytes, Item] = {}
        self.next_cas = 0
        self.sessions = [MSession() for _ in range(sessions)]
        self.queue: list[Run] = []

    # -- the global state ---------------------------------------------------

    def _put(self, key: bytes, value: bytes, flags: int) -> None:
        self.next_cas += 1
        self.committed[key] = Item(value, flags, self.next_cas)

    def apply(self, op: Op) -> Outcome:
        """What one operation does to the committed state (docs/pov.md)."""
        state = self.committed
        if isinstance(op, Put):
            self._put(op.key, op.value, op.flags)
            return Outcome.STORED
        if isinstance(op, Remove):
            return Outcome.DELETED if state.pop(op.key, None) is not None else Outcome.NOT_FOUND
        if isinstance(op, Adjust):
            item = state.get(op.key)
            if item is None:
                return Outcome.SKIPPED
            current = as_counter(item.value)
            if current is None:
                return Outcome.NON_NUMERIC
            self._put(op.key, b"%d" % bump(current, op.delta, op.incr), item.flags)
            return Outcome.STORED
        if isinstance(op, Concat):
            item = state.get(op.key)
            if item is None:
                return Outcome.NOT_STORED
            value = op.data + item.value if op.prepend else item.value + op.data
            self._put(op.key, value, item.flags)
            return Outcome.STORED
        if isinstance(op, Add):
            if op.key in state:
                return Outcome.NOT_STORED
            self._put(op.key, op.value, op.flags)
            return Outcome.STORED
        if isinstance(op, Replace):
            if op.key not in state:
                return Outcome.NOT_STORED
            self._put(op.key, op.value, op.flags)
            return Outcome.STORED
        if isinstance(op, Cas):
            item = state.get(op.key)
            if item is None:
                return Outcome.NOT_FOUND
            if item.cas != op.expected:
                return Outcome.EXISTS
            self._put(op.key, op.value, op.flags)
            return Outcome.STORED
        if isinstance(op, Clear):
            state.clear()
            return Outcome.DELETED
        raise AssertionError(f"no model for {op!r}")

    # -- one session's point of view ------------------------------------------

    def uncommitted(self, s: int) -> list[Intent]:
        """Every intent of session ``s`` not committed yet, oldest first."""
        session = self.sessions[s]
        intents = [i for run in self.queue if run.session == s for i in run.intents]
        for run in session.closed:
            intents += run.intents
        return intents + session.open

    def view(self, s: int, key: bytes) -> object:
        """The item session ``s`` must see for ``key``, or UNRESOLVED."""
        for intent in reversed(self.uncommitted(s)):
            if intent.key == key or intent.key is None:
                return UNRESOLVED if intent.conditional else intent.pov
        item = self.committed.get(key)
        return item

    def acknowledged(self) -> Model:
        """The state once every queued run is committed, as a model of its own:
        what a read on any connection sees of the keys it has no writes of its
        own to, since it waits for the writes in flight to its keys
        (docs/pov.md, "Other sessions")."""
        after = Model(0)
        after.committed = dict(self.committed)
        after.next_cas = self.next_cas
        for run in self.queue:
            for intent in run.intents:
                after.apply(intent.op)
        return after

    def seen(self, s: int, key: bytes) -> object:
        """What a read of ``key`` on session ``s``'s connection answers: its
        own newest uncommitted write (:meth:`view`), or UNRESOLVED, or else
        the acknowledged state (:meth:`acknowledged`)."""
        for intent in reversed(self.uncommitted(s)):
            if intent.key == key or intent.key is None:
                return UNRESOLVED if intent.conditional else intent.pov
        return self.acknowledged().committed.get(key)

    def commit(self, runs: int) -> list[list[Outcome]]:
        """The first ``runs`` queued runs committed, in order: each one's outcomes."""
        done, self.queue = self.queue[:runs], self.queue[runs:]
        return [[self.apply(intent.op) for intent in run.intents] for run in done]

    def total_bytes(self) -> int:
        return sum(len(item.value) for item in self.committed.values())
