"""Model-based test of points of view, runs and promotion (docs/pov.md).

Several :class:`~stig.engine.session.Session` objects share one real
:class:`~stig.engine.engine.Engine` (real LMDB in a temporary directory, no mocks),
driven synchronously: the test closes runs, submits them, and steps the
promoter with :meth:`~stig.engine.promoter.Promoter.commit_queued_now`, which
applies every queued promotion in one LMDB transaction.

A plain model runs in lockstep (stig_testkit/pov_model.py, shared with the
wire-level machine of tests/model/test_pov_wire_model.py): the committed
state, per session its open run and its closed-but-unsubmitted runs, and the
promoter's queue of submitted runs; what a session sees of its own writes is
read straight off that, and at commit the model applies each run's
operations, in submission order, to its committed dict.

Checked after every step: read-your-writes (``get`` of every key in every
session), one-snapshot ``get_many``, that a key the model calls unresolved
is unresolved for the session too, the whole LMDB contents (values, flags
and cas uniques), the byte total, the cas counter and the pending-byte
accounting.  Checked in the rules: each reply of an unconditional write,
each promotion's exact operations and every outcome of every committed
operation, atomic visibility of a group commit to a session with no writes
of its own, add exclusivity, cas with a fresh/stale unique, and durability
of everything committed across a crash (reopening the environment).

The engine is set up small so that the rare paths run too: a 64 KiB initial
map (a big value makes the promoter grow it), a promoter group limit that
splits a queue into several transactions, and a ``max_pending_bytes`` that a
run of a few big values exceeds (RunTooLarge: the open run is discarded) and
that the open runs of several sessions pass together (one holds, the others
wait for room: stig/engine/budget.py).

``STIG_POV_EXAMPLES=5000`` runs a longer soak than the default.

A bug the machine found becomes a plain regression test at the bottom.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from stig.engine.charges import OP_OVERHEAD, RUN_OVERHEAD
from stig.engine.engine import Engine
from stig.engine.promoter import Promotion
from stig.engine.session import RunTooLarge, Session
from stig.engine.settings import Settings
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
from stig_testkit.pov_model import (
    U64,
    UNRESOLVED,
    Intent,
    Model,
    MSession,
    Run,
    as_counter,
    bump,
)

N_SESSIONS = 3
KEYS = [b"a", b"b", b"c", b"d"]
#: A tiny initial map so that a big value makes the promoter grow it.
MAP_SIZE = 64 * 1024
#: Small enough that a run of a few big values is refused (RunTooLarge) ...
MAX_RUN_BYTES = 100_000
#: ... and that a group commit of them is split into several transactions.
MAX_GROUP_BYTES = 50_000
OVERHEAD = OP_OVERHEAD  # what a session counts per pending write on top of key and value


class _Big(bytes):
    """A value big enough to fill the tiny map; shown short in failure reports."""

    def __repr__(self) -> str:
        return "BIG"


BIG = _Big(b"v" * 40_000)

keys = st.sampled_from(KEYS[:1] * 3 + KEYS[1:2] * 2 + KEYS[2:])  # skewed: more collisions
sessions = st.integers(0, N_SESSIONS - 1)
values = st.sampled_from(
    [
        b"0",
        b"1",
        b"9",
        b"41",
        b"1",
        b"3",
        b"100",
        b"18446744073709551615",  # 2**64 - 1: the next incr wraps
        b"18446744073709551616",  # 2**64: not a counter
        b"7  ",  # memcached pads with spaces after a decr
        b"x",
        b"",
        b"1x",
        BIG,
    ]
)
flags = st.sampled_from([0, 1, 2**32 - 1])
deltas = st.sampled_from([0, 1, 2, 5, 2**63, U64 - 1])
pieces = st.sampled_from([b"1", b"0", b"x", b" ", b""])


# -- the machine -------------------------------------------------------------


def _size(key: bytes | None, value: bytes) -> int:
    """What a session counts for a conditional write."""
    return len(value) + (len(key) if key else 0) + OVERHEAD


def _shown(item: object) -> object:
    return item if item is None or item is UNRESOLVED else (item.value[:40], item.flags, item.cas)


class PovMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="stig-pov-model-"))
        self.settings = Settings(
            data_dir=self.tmp / "data", map_size=MAP_SIZE, max_pending_bytes=MAX_RUN_BYTES
        )
        self.engine = self._open_engine()
        self.sessions = [Session(self.engine) for _ in range(N_SESSIONS)]
        self.observer = Session(self.engine)  # never writes: sees only committed state
        self.model = Model(N_SESSIONS)

    def _open_engine(self) -> Engine:
        engine = Engine(self.settings)
        engine.promoter.max_group_bytes = MAX_GROUP_BYTES
        return engine

    def teardown(self) -> None:
        self.engine.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers ------------------------------------------------------------

    def _open_bytes(self) -> int:
        """The bytes of every session's open run (docs/pov.md, "Bounds")."""
        return sum(i.size for m in self.model.sessions for i in m.open)

    def _check_budget(self, s: int, size: int, grow) -> bool:
        """Grow session ``s``'s open run by ``size`` bytes with ``grow()``;
        False if the run was refused (RunTooLarge: discarded whole, the POV
        as it was before the run).

        The rule of ``max_pending_bytes`` for open runs (stig/engine/budget.py):
        a run alone past it is refused; while the open runs of all sessions
        together are past it, one run holds (the first to pass it: it goes
        on) and any other that grows keeps its write and must wait for room
        (``wants_room``: its connection waits before its next command —
        which this machine, driving sessions directly, stands in for by
        clearing the flag).
        """
        msession = self.model.sessions[s]
        session = self.sessions[s]
        budget = self.engine.budget
        own = sum(i.size for i in msession.open) + size
        total = self._open_bytes() + size
        holder = budget.holder
        try:
            grow()
        except RunTooLarge:
            assert own > MAX_RUN_BYTES < total
            msession.open = []
            event("run too large: discarded")
            return False
        assert own <= MAX_RUN_BYTES
        if total > MAX_RUN_BYTES:
            waits = holder not in (None, session)
            assert session.wants_room == waits
            assert budget.holder is (holder if waits else session)
            event("open runs past the budget: " + ("waits for room" if waits else "holds"))
            session.wants_room = False
        else:
            assert not session.wants_room
        return True

    def _write(self, s: int, write, op: Op, key: bytes, pov: Item | None, size: int) -> object:
        """Do an unconditional write that records ``op``; the model follows
        (RunTooLarge when the run was refused: :meth:`_check_budget`)."""
        results: list[object] = []
        if not self._check_budget(s, size, lambda: results.append(write())):
            return RunTooLarge
        self.model.sessions[s].open.append(Intent(op, key, False, pov, size))
        return results[0]

    def _add_conditional(self, s: int, op: Op, op_key: bytes | None, value: bytes) -> bool:
        """Add a conditional write to the open run; False if that made the run
        too large (RunTooLarge: the run is discarded, as for any write)."""
        size = _size(op_key, value)
        grow = lambda: self.sessions[s].add_conditional(op, op_key, len(value))  # noqa: E731
        if not self._check_budget(s, size, grow):
            return False
        self.model.sessions[s].open.append(Intent(op, op_key, True, size=size))
        return True

    def _known_view(self, s: int, key: bytes) -> Item | None:
        view = self.model.view(s, key)
        assert view is not UNRESOLVED, f"session {s} wrote to unresolved {key!r} without resolving"
        return view  # type: ignore[return-value]

    def _resolve_if_needed(self, s: int, key: bytes) -> None:
        """What the protocol layer does before a read-modify-write of ``key``."""
        if self.sessions[s].is_unresolved((key,)):
            self._close(s)
            self._submit(s)
            self._commit()

    def _close(self, s: int) -> Promotion | None:
        promotion = self.sessions[s].close_run()
        msession = self.model.sessions[s]
        if not msession.open:
            assert promotion is None
            return None
        assert promotion is not None
        if msession.closed and msession.closed[-1].promotion is promotion:
            # A run of POV-answered writes joined the one closed before it
            # (Session.close_run): both are one promotion, so one transaction.
            joined = msession.closed[-1]
            assert not any(i.conditional for i in joined.intents + msession.open)
            joined.intents.extend(msession.open)
            event("run joined the promotion before it")
        else:
            msession.closed.append(Run(s, msession.open, promotion))
        assert list(promotion.ops) == [intent.op for intent in msession.closed[-1].intents]
        msession.open = []
        return promotion

    def _submit(self, s: int) -> None:
        self.sessions[s].submit()
        msession = self.model.sessions[s]
        self.model.queue += msession.closed
        msession.closed = []

    def _commit(self) -> None:
        """Step the promoter: every queued run, in submission order, in one transaction."""
        queue = self.model.queue
        touched = sorted({i.key for run in queue for i in run.intents if i.key is not None})
        cleared = any(i.key is None for run in queue for i in run.intents)
        watch = KEYS if cleared else touched
        before = [self.model.committed.get(k) for k in watch]
        # Nothing of a submitted run is visible to anyone else before the commit...
        assert self.observer.get_many(watch) == before
        self.engine.promoter.commit_queued_now()
        for run in queue:
            expected = [self.model.apply(intent.op) for intent in run.intents]
            promotion = run.promotion
            assert promotion.done.is_set()
            assert promotion.error is None
            assert promotion.outcomes == expected, (run.session, [i.op for i in run.intents])
        self.model.queue = []
        event(f"commit: {min(len(queue), 3)}{'+' if len(queue) >= 3 else ''} runs")
        for run in queue:
            for intent, outcome in zip(run.intents, run.promotion.outcomes or (), strict=True):
                event(f"at promotion: {type(intent.op).__name__} -> {outcome.value}")
        if self.engine.store.map_size > MAP_SIZE:
            event("map grown")
        # ... and all of it after.
        assert self.observer.get_many(watch) == [self.model.committed.get(k) for k in watch]
        assert self.engine.promoter_stats.pending_bytes == 0

    # -- unconditional writes: answered from the POV ---------------------------

    @rule(s=sessions, key=keys, value=values, flags=flags)
    def set(self, s: int, key: bytes, value: bytes, flags: int) -> None:
        size = len(value) + len(key) + OVERHEAD
        write = self.sessions[s].set
        op, pov = Put(key, value, flags), Item(value, flags)
        self._write(s, lambda: write(key, value, flags), op, key, pov, size)

    @rule(s=sessions, key=keys)
    def delete(self, s: int, key: bytes) -> None:
        self._resolve_if_needed(s, key)
        seen = self._known_view(s, key)
        if seen is None:
            assert self.sessions[s].delete(key) is False  # records nothing
            return
        size = len(key) + OVERHEAD
        found = self._write(s, lambda: self.sessions[s].delete(key), Remove(key), key, None, size)
        assert found in (True, RunTooLarge)

    @rule(s=sessions, key=keys, delta=deltas, incr=st.booleans())
    def adjust(self, s: int, key: bytes, delta: int, incr: bool) -> None:
        self._resolve_if_needed(s, key)
        seen = self._known_view(s, key)
        current = None if seen is None else as_counter(seen.value)
        if current is None:  # records nothing
            result = self.sessions[s].adjust(key, delta, incr)
            assert result is (Outcome.NOT_FOUND if seen is None else Outcome.NON_NUMERIC)
            return
        expected = bump(current, delta, incr)
        assert seen is not None
        result = self._write(
            s,
            lambda: self.sessions[s].adjust(key, delta, incr),
            Adjust(key, delta, incr),
            key,
            Item(b"%d" % expected, seen.flags),
            8 + len(key) + OVERHEAD,
        )
        assert result in (expected, RunTooLarge)

    @rule(s=sessions, key=keys, data=pieces, prepend=st.booleans())
    def concat(self, s: int, key: bytes, data: bytes, prepend: bool) -> None:
        self._resolve_if_needed(s, key)
        seen = self._known_view(s, key)
        if seen is None:
            assert self.sessions[s].concat(key, data, prepend) is False  # records nothing
            return
        value = data + seen.value if prepend else seen.value + data
        stored = self._write(
            s,
            lambda: self.sessions[s].concat(key, data, prepend),
            Concat(key, data, prepend),
            key,
            Item(value, seen.flags),
            len(value) + len(key) + OVERHEAD,
        )
        assert stored in (True, RunTooLarge)

    # -- conditional writes: checked at promotion -------------------------------

    def _conditional_op(self, kind: str, key: bytes, value: bytes, flags: int, fresh: bool) -> Op:
        if kind == "add":
            return Add(key, value, flags)
        if kind == "replace":
            return Replace(key, value, flags)
        if kind == "flush_all":
            return Clear()
        committed = self.engine.store.get(key)
        cas = committed.cas if committed is not None else 1
        return Cas(key, value, flags, cas if fresh else cas + 1000)

    def _queued_writes_to(self, key: bytes) -> bool:
        return any(i.key in (key, None) for run in self.model.queue for i in run.intents)

    @rule(
        s=sessions,
        key=keys,
        kind=st.sampled_from(
            ["add", "replace", "cas", "cas", "add", "replace", "cas", "flush_all"]
        ),
        value=values,
        flags=flags,
        fresh=st.booleans(),
    )
    def conditional(
        self, s: int, key: bytes, kind: str, value: bytes, flags: int, fresh: bool
    ) -> None:
        """A replying conditional write: closes the run, waits for its commit."""
        session = self.sessions[s]
        op = self._conditional_op(kind, key, value, flags, fresh)
        op_key = None if kind == "flush_all" else key
        # cas against the committed unique: does anything get in before it?
        raced = (
            self._queued_writes_to(key)
            or any(i.key in (key, None) for i in self.model.sessions[s].open)
            or any(i.key in (key, None) for r in self.model.sessions[s].closed for i in r.intents)
        )
        committed_before = self.engine.store.get(key)
        if not self._add_conditional(s, op, op_key, value):
            return
        promotion = self._close(s)
        assert promotion is not None
        self._submit(s)
        self._commit()
        outcome = promotion.outcomes[-1]  # type: ignore[index]
        event(f"{kind} -> {outcome.value}")
        if kind == "cas" and not raced:
            if committed_before is None:
                assert outcome is Outcome.NOT_FOUND
            else:
                assert outcome is (Outcome.STORED if fresh else Outcome.EXISTS)
        # Its verdict is in: the key is resolved for this session again.
        if op_key is not None and self.model.view(s, key) is not UNRESOLVED:
            assert not session.is_unresolved((key,))

    @rule(
        s=sessions,
        key=keys,
        kind=st.sampled_from(["add", "replace", "cas", "add", "replace", "cas", "flush_all"]),
        value=values,
        flags=flags,
        fresh=st.booleans(),
    )
    def conditional_noreply(
        self, s: int, key: bytes, kind: str, value: bytes, flags: int, fresh: bool
    ) -> None:
        """A noreply conditional write joins the open run; nobody waits for it."""
        op = self._conditional_op(kind, key, value, flags, fresh)
        op_key = None if kind == "flush_all" else key
        self._add_conditional(s, op, op_key, value)

    @rule(pair=st.permutations(range(N_SESSIONS)), key=keys, value=values)
    def add_race(self, pair: Sequence[int], key: bytes, value: bytes) -> None:
        """Two sessions add one key in the same group commit: at most one wins."""
        first, second = pair[0], pair[1]
        model = self.model
        # The state just before the first add: everything queued ahead of it applied.
        ahead = Model(N_SESSIONS)
        ahead.committed = dict(model.committed)
        for run in model.queue + model.sessions[first].closed:
            for intent in run.intents:
                ahead.apply(intent.op)
        for intent in model.sessions[first].open:
            ahead.apply(intent.op)
        between = [i for r in model.sessions[second].closed for i in r.intents]
        between += model.sessions[second].open
        exclusive = not any(i.key in (key, None) for i in between)
        promotions = []
        for s in (first, second):
            if not self._add_conditional(s, Add(key, value, s), key, value):
                self._commit()
                return
            promotions.append(self._close(s))
            self._submit(s)
        self._commit()
        outcomes = [p.outcomes[-1] for p in promotions]  # type: ignore[union-attr,index]
        if key in ahead.committed:
            assert outcomes[0] is Outcome.NOT_STORED
        elif exclusive:
            assert outcomes == [Outcome.STORED, Outcome.NOT_STORED]

    # -- acknowledged writes are visible to every session --------------------------

    def _read(self, s: int, probe: list[bytes]) -> None:
        """Read ``probe`` on session ``s`` as the command core does, and check it.

        A run is acknowledged once it is submitted: a connection hands its
        closed runs over before it sends the replies of the burst that
        closed them.  So the rule "after a write's reply, reads from any
        session see it or something newer" reads here: a read must wait
        (the in-flight registry's ``clear_for`` False: what
        ``Core.read_ready`` asks, stig/engine/visibility.py) exactly when
        another session's *submitted* run still in the queue writes one of
        its keys (or clears them all),
        and then — after the commit it waits for — it sees that run whole.
        Runs still open or closed but not handed over are invisible, and
        keys the session wrote itself come from its POV without a wait.
        """
        session = self.sessions[s]
        if session.is_unresolved(probe):  # the core first awaits its own verdicts
            self._close(s)
            self._submit(s)
            self._commit()
        model = self.model
        own = {i.key for i in model.uncommitted(s)}
        foreign = {key for key in probe if key not in own}
        in_flight = bool(foreign) and any(
            i.key is None or i.key in foreign for run in model.queue for i in run.intents
        )
        clear_for = self.engine.promoter.in_flight.clear_for
        assert clear_for(probe, session.overlay) is (not in_flight), (s, probe, in_flight)
        if in_flight:
            event("read waited for another session's write in flight")
            self._commit()  # what await_acked waits for
            assert clear_for(probe, session.overlay)
        got = session.get_many(probe)
        expected = [model.view(s, key) for key in probe]
        assert got == expected, (s, [_shown(i) for i in got], [_shown(i) for i in expected])

    @rule(s=sessions, key=keys)
    def read_after_reply(self, s: int, key: bytes) -> None:
        """A single-key read on any session sees every acknowledged write."""
        self._read(s, [key])

    @rule(s=sessions)
    def multi_read_after_reply(self, s: int) -> None:
        """A multi-key read: one snapshot, each acknowledged run in it whole."""
        self._read(s, KEYS)

    # -- run boundaries and the promoter ------------------------------------------

    def _any_open(self) -> bool:
        return any(m.open for m in self.model.sessions)

    def _any_closed(self) -> bool:
        return any(m.closed for m in self.model.sessions)

    @precondition(_any_open)
    @rule(s=sessions)
    def close_run(self, s: int) -> None:
        self._close(s)

    @precondition(_any_closed)
    @rule(s=sessions)
    def submit(self, s: int) -> None:
        self._submit(s)

    @precondition(_any_open)
    @rule(s=sessions)
    def close_and_submit(self, s: int) -> None:
        """The end of a burst of input: the run is complete and handed over."""
        self._close(s)
        self._submit(s)

    @precondition(lambda self: bool(self.model.queue))
    @rule()
    def commit(self) -> None:
        self._commit()

    @precondition(_any_open)
    @rule(s=sessions)
    def discard_run(self, s: int) -> None:
        """A torn command: the open run is forgotten, the closed ones are not."""
        self.sessions[s].discard_run()
        self.model.sessions[s].open = []

    @rule()
    def crash_and_reopen(self) -> None:
        """Everything committed survives; nothing uncommitted does."""
        self.engine.store.close()
        self.engine = self._open_engine()
        self.sessions = [Session(self.engine) for _ in range(N_SESSIONS)]
        self.observer = Session(self.engine)
        self.model.sessions = [MSession() for _ in range(N_SESSIONS)]
        self.model.queue = []

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def read_your_writes(self) -> None:
        for s, session in enumerate(self.sessions):
            for key in KEYS:
                view = self.model.view(s, key)
                if view is UNRESOLVED:
                    assert session.is_unresolved((key,)), (s, key)
                    event("unresolved key seen")
                    continue
                got = session.get(key)
                assert got == view, (s, key, _shown(got), _shown(view))

    @invariant()
    def multi_get_is_consistent(self) -> None:
        probe = KEYS + KEYS[::-1]
        for s, session in enumerate(self.sessions):
            got = session.get_many(probe)
            for key, item in zip(probe, got, strict=True):
                view = self.model.view(s, key)
                if view is not UNRESOLVED:
                    assert item == view, (s, key, _shown(item), _shown(view))

    @invariant()
    def global_state(self) -> None:
        store = self.engine.store
        assert store.get_many(KEYS) == [self.model.committed.get(k) for k in KEYS]
        assert store.item_count() == len(self.model.committed)
        assert store.total_bytes == self.model.total_bytes()
        assert store.last_cas == self.model.next_cas
        cas = [item.cas for item in self.model.committed.values()]
        assert len(set(cas)) == len(cas)

    @invariant()
    def pending_bytes(self) -> None:
        """Each session counts exactly its uncommitted writes; the promoter its queue."""
        for s, session in enumerate(self.sessions):
            runs = sum(r.session == s for r in self.model.queue) + len(
                self.model.sessions[s].closed
            )
            expected = sum(i.size for i in self.model.uncommitted(s)) + RUN_OVERHEAD * runs
            assert session.pending_bytes == expected, s
        queued = sum(i.size for run in self.model.queue for i in run.intents)
        queued += RUN_OVERHEAD * len(self.model.queue)
        # The engine-wide budget counts every session's uncommitted bytes.
        budget = self.engine.budget
        assert budget.used == sum(x.pending_bytes for x in self.sessions)
        assert budget.open == self._open_bytes()
        # Only an open run holds the room past the budget.
        assert budget.holder is None or budget.holder.run_open  # type: ignore[attr-defined]
        assert self.engine.promoter_stats.pending_bytes == queued


TestPovModel = PovMachine.TestCase
TestPovModel.settings = settings(
    # STIG_POV_EXAMPLES=5000 for a longer soak; the default keeps the file < 30 s.
    max_examples=int(os.environ.get("STIG_POV_EXAMPLES", "300")),
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- plain regression tests -------------------------------------------------------


@pytest.fixture
def engine(tmp_path: Path):
    engine = Engine(Settings(data_dir=tmp_path / "data"))
    yield engine
    engine.store.close()


def _commit(*sessions: Session) -> list[Promotion]:
    promotions = [p for s in sessions if (p := s.close_run()) is not None]
    for s in sessions:
        s.submit()
    sessions[0].engine.promoter.commit_queued_now()
    return promotions


def test_incr_from_two_sessions_in_one_commit_both_count(engine: Engine) -> None:
    a, b = Session(engine), Session(engine)
    a.set(b"c", b"10", 3)
    _commit(a)
    assert a.adjust(b"c", 1, True) == 11
    assert b.adjust(b"c", 1, True) == 11  # each POV answers a possible value
    assert a.adjust(b"c", 5, True) == 16
    assert b.get(b"c") == Item(b"11", 3)
    promotions = _commit(a, b)
    assert [p.outcomes for p in promotions] == [[Outcome.STORED] * 2, [Outcome.STORED]]
    assert engine.store.get(b"c").value == b"17"  # every increment counts
    assert a.get(b"c") == b.get(b"c") == engine.store.get(b"c")
    assert engine.store.get(b"c").flags == 3


def test_decr_clamps_and_incr_wraps_at_promotion(engine: Engine) -> None:
    a, b = Session(engine), Session(engine)
    a.set(b"n", b"3", 0)
    a.set(b"m", b"%d" % (U64 - 2), 0)
    _commit(a)
    assert a.adjust(b"n", 2, False) == 1
    assert b.adjust(b"n", 2, False) == 1
    assert a.adjust(b"m", 1, True) == U64 - 1
    assert b.adjust(b"m", 2, True) == 0
    _commit(a, b)
    assert engine.store.get(b"n").value == b"0"
    assert engine.store.get(b"m").value == b"1"


def test_incr_of_a_key_deleted_before_promotion_is_skipped(engine: Engine) -> None:
    a, b = Session(engine), Session(engine)
    a.set(b"k", b"1", 0)
    _commit(a)
    assert b.delete(b"k")
    _commit(b)
    assert a.get(b"k") is None
    a.set(b"k", b"5", 0)
    c = Session(engine)
    _commit(a)
    assert c.adjust(b"k", 1, True) == 6
    assert b.delete(b"k")
    (deleted,) = _commit(b)
    (incr,) = _commit(c)
    assert deleted.outcomes == [Outcome.DELETED]
    assert incr.outcomes == [Outcome.SKIPPED]
    assert c.get(b"k") is None


def test_discard_run_leaves_nothing(engine: Engine) -> None:
    a, b = Session(engine), Session(engine)
    a.set(b"x", b"1", 0)
    a.set(b"gone", b"1", 0)
    _commit(a)
    a.set(b"x", b"2", 0)
    assert a.adjust(b"x", 5, True) == 7
    assert a.delete(b"gone")
    a.set(b"new", b"n", 0)
    a.discard_run()
    assert not a.run_open
    assert a.close_run() is None
    assert a.pending_bytes == 0
    engine.promoter.commit_queued_now()
    assert engine.store.get(b"x").value == b"1"
    assert engine.store.get(b"gone").value == b"1"
    assert engine.store.get(b"new") is None
    for session in (a, b):
        assert session.get_many([b"x", b"gone", b"new"]) == engine.store.get_many(
            [b"x", b"gone", b"new"]
        )


def test_discard_run_keeps_the_closed_runs_writes_visible(engine: Engine) -> None:
    """Found by the model: discarding the open run hid a closed run's write."""
    a = Session(engine)
    a.set(b"k", b"closed", 0)
    closed = a.close_run()
    a.set(b"k", b"open", 0)
    a.discard_run()
    assert a.get(b"k") == Item(b"closed", 0)  # still pending, so still seen
    a.submit()
    engine.promoter.commit_queued_now()
    assert closed.outcomes == [Outcome.STORED]
    assert a.get(b"k") == engine.store.get(b"k")
    assert engine.store.get(b"k").value == b"closed"


def test_discard_run_forgets_a_write_before_a_conditional(engine: Engine) -> None:
    """Found by the model: set k; add k (noreply); discard left k's set in the POV."""
    a = Session(engine)
    a.set(b"k", b"1", 0)
    a.add_conditional(Add(b"k", b"2", 0), b"k", 1)
    a.discard_run()
    assert a.get(b"k") is None
    assert not a.is_unresolved([b"k"])
    assert a.pending_bytes == 0


def test_add_is_exclusive_within_one_group_commit(engine: Engine) -> None:
    sessions = [Session(engine) for _ in range(3)]
    for index, session in enumerate(sessions):
        session.add_conditional(Add(b"lock", b"%d" % index, 0), b"lock", 1)
    promotions = _commit(*sessions)
    outcomes = [p.outcomes[-1] for p in promotions]
    assert outcomes == [Outcome.STORED, Outcome.NOT_STORED, Outcome.NOT_STORED]
    assert engine.store.get(b"lock").value == b"0"
    for session in sessions:
        assert session.get(b"lock").value == b"0"


def test_own_earlier_write_is_promoted_before_own_add(engine: Engine) -> None:
    a = Session(engine)
    a.set(b"k", b"mine", 0)
    a.add_conditional(Add(b"k", b"again", 0), b"k", 5)
    (promotion,) = _commit(a)
    assert promotion.outcomes == [Outcome.STORED, Outcome.NOT_STORED]
    assert a.get(b"k").value == b"mine"


def test_cas_fresh_succeeds_and_stale_gets_exists(engine: Engine) -> None:
    a, b = Session(engine), Session(engine)
    a.set(b"k", b"v1", 0)
    _commit(a)
    unique = engine.store.get(b"k").cas
    a.add_conditional(Cas(b"k", b"v2", 0, unique), b"k", 2)
    (ok,) = _commit(a)
    assert ok.outcomes == [Outcome.STORED]
    assert engine.store.get(b"k").cas > unique
    b.add_conditional(Cas(b"k", b"v3", 0, unique), b"k", 2)  # the old unique
    (stale,) = _commit(b)
    assert stale.outcomes == [Outcome.EXISTS]
    assert b.get(b"k").value == b"v2"
    b.add_conditional(Cas(b"missing", b"v", 0, unique), b"missing", 1)
    (missing,) = _commit(b)
    assert missing.outcomes == [Outcome.NOT_FOUND]


def test_cas_loses_to_a_write_queued_ahead_of_it(engine: Engine) -> None:
    a, b = Session(engine), Session(engine)
    a.set(b"k", b"v1", 0)
    _commit(a)
    unique = engine.store.get(b"k").cas
    a.set(b"k", b"v2", 0)
    a.close_run()
    a.submit()
    b.add_conditional(Cas(b"k", b"v3", 0, unique), b"k", 2)
    (promotion,) = _commit(b)  # one group: a's set, then b's cas
    assert promotion.outcomes == [Outcome.EXISTS]
    assert engine.store.get(b"k").value == b"v2"


def test_run_is_all_or_nothing_for_other_sessions(engine: Engine) -> None:
    a, b = Session(engine), Session(engine)
    keys = [b"t1", b"t2", b"t3"]
    a.set(b"t1", b"1", 0)
    a.set(b"t2", b"2", 0)
    a.set(b"t3", b"3", 0)
    assert a.get_many(keys) == [Item(b"1"), Item(b"2"), Item(b"3")]
    promotion = a.close_run()
    assert b.get_many(keys) == [None, None, None]
    a.submit()
    assert b.get_many(keys) == [None, None, None]
    engine.promoter.commit_queued_now()
    assert promotion.outcomes == [Outcome.STORED] * 3
    assert [item.value for item in b.get_many(keys)] == [b"1", b"2", b"3"]


def test_pov_answered_runs_of_a_burst_share_one_promotion(engine: Engine) -> None:
    """docs/pov.md, "What forms a run": closed runs of POV-answered writes not
    submitted yet are one promotion (one unit of the group commit); a run with
    a conditional write keeps its own, and a submitted promotion takes no more."""
    a, b = Session(engine), Session(engine)
    a.set(b"k1", b"1", 0)
    first = a.close_run()
    assert a.delete(b"k1")
    a.set(b"k2", b"2", 0)
    assert a.close_run() is first  # joined
    assert [type(op).__name__ for op in first.ops] == ["Put", "Remove", "Put"]
    a.add_conditional(Add(b"k3", b"3", 0), b"k3", 1)
    conditional = a.close_run()
    assert conditional is not first
    a.set(b"k4", b"4", 0)
    after = a.close_run()
    assert after is not conditional and after is not first  # never joins a conditional run
    a.submit()
    assert b.get_many([b"k2", b"k4"]) == [None, None]  # still one transaction each
    a.set(b"k5", b"5", 0)
    late = a.close_run()
    assert late is not after  # a submitted promotion takes no more runs
    a.submit()
    engine.promoter.commit_queued_now()
    assert first.outcomes == [Outcome.STORED, Outcome.DELETED, Outcome.STORED]
    assert conditional.outcomes == [Outcome.STORED]
    assert [item and item.value for item in b.get_many([b"k1", b"k2", b"k3", b"k4", b"k5"])] == [
        None,
        b"2",
        b"3",
        b"4",
        b"5",
    ]
    assert a.pending_bytes == 0 and engine.budget.used == 0


def test_overlay_survives_the_commit_of_an_older_run(engine: Engine) -> None:
    a, b = Session(engine), Session(engine)
    a.set(b"c", b"1", 0)
    a.close_run()
    a.submit()
    assert a.adjust(b"c", 1, True) == 2  # open run, newer than the submitted one
    b.set(b"c", b"100", 0)
    _commit(b)  # commits a's submitted run and b's: a's open incr is still pending
    assert engine.store.get(b"c").value == b"100"
    assert a.get(b"c").value == b"2"
    _commit(a)
    assert a.get(b"c").value == b"101"


def test_incr_of_a_key_made_non_numeric_before_promotion_is_skipped(engine: Engine) -> None:
    a, b = Session(engine), Session(engine)
    a.set(b"c", b"5", 0)
    _commit(a)
    assert a.adjust(b"c", 1, True) == 6
    b.set(b"c", b"text", 0)
    _commit(b)
    (incr,) = _commit(a)
    assert incr.outcomes == [Outcome.NON_NUMERIC]
    assert a.get(b"c").value == b"text"


def test_incr_accepts_leading_zeros_like_memcached(engine: Engine) -> None:
    """Found by the model: prepend "0" to 2**64-1 and incr said NON_NUMERIC."""
    a = Session(engine)
    a.set(b"c", b"0" + b"%d" % (U64 - 1), 0)
    assert a.adjust(b"c", 0, False) == U64 - 1
    a.set(b"z", b"0" * 30 + b"7", 0)
    assert a.adjust(b"z", 1, True) == 8
    a.set(b"big", b"0" * 5 + b"1" * 21, 0)  # still > 20 significant digits
    assert a.adjust(b"big", 1, True) is Outcome.NON_NUMERIC
    (_promotion,) = _commit(a)  # one run, one promotion
    assert engine.store.get(b"c").value == b"%d" % (U64 - 1)
    assert engine.store.get(b"z").value == b"8"


def test_discard_after_the_older_run_committed_shows_the_global_state(engine: Engine) -> None:
    a, b = Session(engine), Session(engine)
    a.set(b"k", b"old", 0)
    a.close_run()
    a.submit()
    a.set(b"k", b"discarded", 0)
    engine.promoter.commit_queued_now()  # the older run lands meanwhile
    b.set(b"k", b"theirs", 0)
    _commit(b)
    a.discard_run()
    assert a.get(b"k") == engine.store.get(b"k")
    assert a.get(b"k").value == b"theirs"


def test_discard_keeps_an_older_conditional_unresolved(engine: Engine) -> None:
    a = Session(engine)
    a.add_conditional(Add(b"k", b"1", 0), b"k", 1)  # noreply add, closed run
    a.close_run()
    a.add_conditional(Replace(b"k", b"2", 0), b"k", 1)
    a.discard_run()
    assert a.is_unresolved([b"k"])  # the add's verdict is still to come
    a.submit()
    engine.promoter.commit_queued_now()
    assert not a.is_unresolved([b"k"])
    assert a.get(b"k").value == b"1"


def test_run_too_large_discards_the_run_and_restores_the_pov(tmp_path: Path) -> None:
    engine = Engine(Settings(data_dir=tmp_path / "data", max_pending_bytes=1000))
    try:
        a = Session(engine)
        a.set(b"k", b"kept", 0)
        a.close_run()
        a.set(b"k", b"x" * 500, 0)
        with pytest.raises(RunTooLarge):
            a.set(b"j", b"y" * 500, 0)
        assert not a.run_open
        assert a.get(b"k").value == b"kept"
        assert a.get(b"j") is None
        a.submit()
        engine.promoter.commit_queued_now()
        assert engine.store.get(b"k").value == b"kept"
        assert engine.store.get(b"j") is None
        assert a.pending_bytes == 0
    finally:
        engine.store.close()
