"""Model-based test of points of view, driven through the handlers with protocol bytes.

The sibling of tests/model/test_pov_model.py one floor up: the same plain
model (:mod:`stig_testkit.pov_model`), but Stig is driven the way clients
drive it — three connections to one real engine (real LMDB, the real
connection loop, :mod:`stig_testkit.memory_server`: no sockets), one
speaking text, one meta, one binary, each command sent as bytes through the
handler, its fast paths and the command core, and every reply checked to
the byte against what the model says it must be.  A fast path that skips a
rule of docs/pov.md — the in-flight check of a read, read-your-writes, a
run's atomicity, a verdict after commit — answers otherwise than the model.

The server commits only when a connection waits for a commit (a read of a
key whose acknowledged write is in flight, a reply after commit, a
barrier) or when the ``commit`` rule says so; the model learns how many
promotions each step committed and applies that many of its queued runs:
before the command's read (a read waits for them first), or after its write
(a reply after commit waits for its own run).  Between commits, writes
acknowledged on one connection are in flight, and the model says every
other connection's read sees them (docs/pov.md, "Other sessions").

Checked in every rule: the reply bytes.  After every step: the committed
state read back from LMDB (values, flags, cas) against the model's, and
that the promoter has work exactly when the model has queued runs.

``STIG_POV_WIRE_EXAMPLES=2000`` runs a longer soak.
"""

from __future__ import annotations

import functools
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from stig.core.command_core import NON_NUMERIC
from stig.engine.engine import PROTOCOL_VERSION
from stig.engine.settings import Settings
from stig.storage.ops import Add, Adjust, Cas, Concat, Op, Outcome, Put, Remove, Replace
from stig.storage.records import Item
from stig_protocol import text_replies as R
from stig_protocol.binary_codes import Opcode, Status
from stig_protocol.binary_writer import (
    counter_response,
    encode_request,
    encode_response,
    error_response,
    get_miss_response,
    get_response,
)
from stig_testkit.memory_server import BlockingServer
from stig_testkit.pov_model import UNRESOLVED, Intent, Model, Run, as_counter, bump

TEXT, META, BINARY = 0, 1, 2
SLOTS = (TEXT, META, BINARY)
KEYS = [b"a", b"b", b"c"]
NO_CREATE = 0xFFFFFFFF

slots = st.sampled_from(SLOTS)
keys = st.sampled_from(KEYS[:1] * 2 + KEYS[1:])  # skewed: more collisions
values = st.sampled_from([b"0", b"1", b"9", b"41", b"18446744073709551615", b"x", b"", b"1x"])
flags = st.sampled_from([0, 1, 2**32 - 1])
deltas = st.sampled_from([0, 1, 5, 2**64 - 1])
pieces = st.sampled_from([b"1", b"0", b"x"])

NON_NUMERIC_REPLY = R.client_error(NON_NUMERIC)
_TEXT_OUTCOMES = {
    Outcome.STORED: R.STORED,
    Outcome.NOT_STORED: R.NOT_STORED,
    Outcome.EXISTS: R.EXISTS,
    Outcome.NOT_FOUND: R.NOT_FOUND,
}
_META_OUTCOMES = {
    Outcome.STORED: b"HD\r\n",
    Outcome.NOT_STORED: b"NS\r\n",
    Outcome.EXISTS: b"EX\r\n",
    Outcome.NOT_FOUND: b"NF\r\n",
}
#: A binary conditional write's failures (memcached's statuses).
_BINARY_FAILURES = {
    "add": {Outcome.NOT_STORED: Status.KEY_EEXISTS},
    "replace": {Outcome.NOT_STORED: Status.KEY_ENOENT},
    "cas": {Outcome.EXISTS: Status.KEY_EEXISTS, Outcome.NOT_FOUND: Status.KEY_ENOENT},
}

#: What a rule expects: the reply bytes, or how to word them from the
#: outcome of its own run's last write and the model after its commit.
Expected = bytes | Callable[[Outcome, Model], bytes]


def _counted(opcode: int, opaque: int, key: bytes, outcome: Outcome, model: Model) -> bytes:
    """A binary Increment/Decrement's response after its commit, which applies
    it to the value current then: gone or no number by then, it failed."""
    if outcome is Outcome.SKIPPED:
        return error_response(opcode, opaque, Status.KEY_ENOENT)
    if outcome is Outcome.NON_NUMERIC:
        return error_response(opcode, opaque, Status.DELTA_BADVAL)
    item = model.committed[key]
    return counter_response(opcode, opaque, item.cas, int(item.value))


def _appended(opcode: int, opaque: int, key: bytes, outcome: Outcome, model: Model) -> bytes:
    """A binary Append/Prepend's response after its commit (the key may be gone by then)."""
    if outcome is Outcome.NOT_STORED:
        return error_response(opcode, opaque, Status.NOT_STORED)
    return encode_response(opcode, Status.NO_ERROR, opaque, model.committed[key].cas)


class WireMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="stig-pov-wire-", dir=_SCRATCH))
        self.server = BlockingServer(Settings(data_dir=self.tmp / "data", max_commit_lag_ms=1e9))
        self.model = Model(len(SLOTS))
        self.opaque = 0
        self.last_input = [0] * len(SLOTS)  # the step of each slot's last input
        self.steps = 0
        #: The snapshot of the meta slot's run of quiet mg that goes on in its
        #: next input (docs/pov.md rule 3): the committed state when it began.
        self.mg_run: dict[bytes, Item] | None = None

    def teardown(self) -> None:
        try:
            self.server.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- the lockstep ------------------------------------------------------------

    def _promotions(self) -> int:
        engine = self.server.server.engine  # type: ignore[union-attr]
        return self.server.call(lambda: engine.promoter_stats.promotions)

    def _close(self, slot: int) -> None:
        """The slot's open run closes (handed over at the end of the step)."""
        msession = self.model.sessions[slot]
        if msession.open:
            self.model.queue.append(Run(slot, msession.open))
            msession.open = []

    def _commit(self, runs: int) -> list[list[Outcome]]:
        assert runs <= len(self.model.queue), ("more promotions than runs", runs)
        if runs:
            event("a step committed runs")
        return self.model.commit(runs)

    def _exchange(
        self,
        slot: int,
        data: bytes,
        evaluate: Callable[[], Expected],
        *,
        reads: bool = False,
        closes: bool = False,
        continues_mg_run: bool = False,
    ) -> None:
        """Send ``data`` on ``slot``; the model follows: ``reads`` closes the
        run and lets the commits land first; ``evaluate`` records the
        command's writes and says its reply; ``closes`` closes the run after
        it; the commits left are its own run's (a reply after commit)."""
        if slot == META and not continues_mg_run:
            self.mg_run = None  # any other command ends the run of mg
        before = self._promotions()
        reply = self.server.send(slot, data)
        committed = self._promotions() - before
        self.steps += 1
        self.last_input[slot] = self.steps
        if reads:
            self._close(slot)
        first = min(committed, len(self.model.queue))
        self._commit(first)
        expected = evaluate()
        if closes:
            self._close(slot)
        done = self._commit(committed - first)
        if callable(expected):
            assert done, "a reply after commit, but nothing was committed"
            expected = expected(done[-1][-1], self.model)
        assert reply == expected, (slot, data, reply, expected)

    def _next_opaque(self) -> int:
        self.opaque = (self.opaque + 1) & 0xFFFF
        return self.opaque

    def _seen(self, slot: int, key: bytes) -> Item | None:
        seen = self.model.seen(slot, key)
        assert seen is not UNRESOLVED, (slot, key)
        return seen  # type: ignore[return-value]

    def _unresolved(self, slot: int, key: bytes) -> str:
        """Whether ``slot``'s session awaits a verdict for ``key``: a
        conditional write of its own to it (or a flush) not committed yet,
        even behind a newer plain write (a read or a read-modify-write waits
        for it, stig/engine/session.py ``unresolved``): "" none; "open" one
        in its open run (a quiet write then becomes an intent, docs/pov.md
        "Runs stay whole"); "closed" one in a run handed over."""
        if any(i.conditional and i.key in (key, None) for i in self.model.sessions[slot].open):
            return "open"
        for run in self.model.queue:
            if run.session == slot and any(
                i.conditional and i.key in (key, None) for i in run.intents
            ):
                return "closed"
        return ""

    def _record(self, slot: int, op: Op, key: bytes, pov: Item | None, conditional=False) -> None:
        self.model.sessions[slot].open.append(Intent(op, key, conditional, pov))

    # -- unconditional writes: answered from the POV (binary: after commit) ----------

    @rule(slot=slots, key=keys, value=values, flag=flags, quiet=st.booleans())
    def set(self, slot: int, key: bytes, value: bytes, flag: int, quiet: bool) -> None:
        def evaluate() -> Expected:
            self._record(slot, Put(key, value, flag), key, Item(value, flag))
            if slot == TEXT:
                return b"" if quiet else R.STORED
            if slot == META:
                return b"" if quiet else b"HD\r\n"
            if quiet:
                return b""
            return lambda _outcome, model: encode_response(
                Opcode.Set, Status.NO_ERROR, opaque, model.committed[key].cas
            )

        opaque = self._next_opaque()
        if slot == TEXT:
            data = b"set %b %d 0 %d%b\r\n%b\r\n" % (
                key, flag, len(value), b" noreply" if quiet else b"", value,
            )  # fmt: skip
        elif slot == META:
            data = b"ms %b %d F%d%b\r\n%b\r\n" % (key, len(value), flag, b" q" * quiet, value)
        else:
            opcode = Opcode.SetQ if quiet else Opcode.Set
            extras = struct.pack(">II", flag, 0)
            data = encode_request(opcode, key, value, extras, opaque=opaque)
        self._exchange(slot, data, evaluate, closes=not quiet)

    def _read_modify_write(
        self,
        slot: int,
        key: bytes,
        quiet: bool,
        data: bytes,
        intent: Op,
        pov: Callable[[Item | None], tuple[Op | None, Item | None, Expected]],
    ) -> None:
        """A write whose POV answer reads ``key`` first: ``pov(seen)`` says what
        it records and answers.  A quiet one whose key awaits a verdict of the
        open run becomes an intent (``intent``; text noreply: owed nothing);
        else the read waits for that verdict, or for a write in flight."""
        unresolved = self._unresolved(slot, key)
        if unresolved == "open" and quiet:
            assert slot == TEXT, "only the text slot leaves conditional writes pending"
            event("a quiet write became an intent")
            self._exchange(slot, data, lambda: self._record(slot, intent, key, None, True) or b"")
            return

        def evaluate() -> Expected:
            op, after, expected = pov(self._seen(slot, key))
            if op is not None:
                self._record(slot, op, key, after)
            return expected

        # A verdict to wait for: the run closes and is committed first.
        self._exchange(slot, data, evaluate, reads=bool(unresolved), closes=not quiet)

    @rule(slot=slots, key=keys, quiet=st.booleans())
    def delete(self, slot: int, key: bytes, quiet: bool) -> None:
        opaque = self._next_opaque()

        def pov(seen: Item | None) -> tuple[Op | None, Item | None, Expected]:
            found = seen is not None
            op = Remove(key) if found else None
            if slot == TEXT:
                return op, None, b"" if quiet else (R.DELETED if found else R.NOT_FOUND)
            if slot == META:
                return op, None, (b"" if quiet else b"HD\r\n") if found else b"NF\r\n"
            opcode = Opcode.DeleteQ if quiet else Opcode.Delete
            if not found:
                return op, None, error_response(opcode, opaque, Status.KEY_ENOENT)
            return op, None, b"" if quiet else encode_response(opcode, Status.NO_ERROR, opaque)

        if slot == TEXT:
            data = b"delete %b%b\r\n" % (key, b" noreply" * quiet)
        elif slot == META:
            data = b"md %b%b\r\n" % (key, b" q" * quiet)
        else:
            data = encode_request(Opcode.DeleteQ if quiet else Opcode.Delete, key, opaque=opaque)
        self._read_modify_write(slot, key, quiet, data, Remove(key), pov)

    @rule(slot=slots, key=keys, delta=deltas, incr=st.booleans(), quiet=st.booleans())
    def adjust(self, slot: int, key: bytes, delta: int, incr: bool, quiet: bool) -> None:
        opaque = self._next_opaque()
        opcode = {
            (True, False): Opcode.Increment,
            (True, True): Opcode.IncrementQ,
            (False, False): Opcode.Decrement,
            (False, True): Opcode.DecrementQ,
        }[(incr, quiet)]

        def pov(seen: Item | None) -> tuple[Op | None, Item | None, Expected]:
            current = None if seen is None else as_counter(seen.value)
            if current is None:
                if slot == TEXT:
                    failure = R.NOT_FOUND if seen is None else NON_NUMERIC_REPLY
                    return None, None, b"" if quiet else failure
                if slot == META:
                    return None, None, b"NF\r\n" if seen is None else NON_NUMERIC_REPLY
                status = Status.KEY_ENOENT if seen is None else Status.DELTA_BADVAL
                return None, None, error_response(opcode, opaque, status)
            assert seen is not None
            number = bump(current, delta, incr)
            after = Item(b"%d" % number, seen.flags)
            op = Adjust(key, delta, incr)
            if slot == TEXT:
                return op, after, b"" if quiet else R.number(number)
            if slot == META:
                return op, after, b"" if quiet else b"VA %d\r\n%d\r\n" % (len(after.value), number)
            if quiet:
                return op, after, b""
            return op, after, functools.partial(_counted, opcode, opaque, key)

        if slot == TEXT:
            verb = b"incr" if incr else b"decr"
            data = b"%b %b %d%b\r\n" % (verb, key, delta, b" noreply" * quiet)
        elif slot == META:
            mode = b"" if incr else b" MD"
            data = b"ma %b D%d%b%b\r\n" % (key, delta, mode, b" q" if quiet else b" v")
        else:
            extras = struct.pack(">QQI", delta, 0, NO_CREATE)
            data = encode_request(opcode, key, b"", extras, opaque=opaque)
        self._read_modify_write(slot, key, quiet, data, Adjust(key, delta, incr), pov)

    @rule(slot=slots, key=keys, piece=pieces, prepend=st.booleans(), quiet=st.booleans())
    def concat(self, slot: int, key: bytes, piece: bytes, prepend: bool, quiet: bool) -> None:
        opaque = self._next_opaque()
        opcode = {
            (False, False): Opcode.Append,
            (False, True): Opcode.AppendQ,
            (True, False): Opcode.Prepend,
            (True, True): Opcode.PrependQ,
        }[(prepend, quiet)]

        def pov(seen: Item | None) -> tuple[Op | None, Item | None, Expected]:
            if seen is None:
                if slot == TEXT:
                    return None, None, b"" if quiet else R.NOT_STORED
                if slot == META:
                    return None, None, b"NS\r\n"
                return None, None, error_response(opcode, opaque, Status.NOT_STORED)
            value = piece + seen.value if prepend else seen.value + piece
            op = Concat(key, piece, prepend)
            after = Item(value, seen.flags)
            if slot == TEXT:
                return op, after, b"" if quiet else R.STORED
            if slot == META:
                return op, after, b"" if quiet else b"HD\r\n"
            if quiet:
                return op, after, b""
            return op, after, functools.partial(_appended, opcode, opaque, key)

        if slot == TEXT:
            verb = b"prepend" if prepend else b"append"
            data = b"%b %b 0 0 %d%b\r\n%b\r\n" % (
                verb, key, len(piece), b" noreply" * quiet, piece,
            )  # fmt: skip
        elif slot == META:
            mode = b"MP" if prepend else b"MA"
            data = b"ms %b %d %b%b\r\n%b\r\n" % (key, len(piece), mode, b" q" * quiet, piece)
        else:
            data = encode_request(opcode, key, piece, opaque=opaque)
        concat = Concat(key, piece, prepend)
        self._read_modify_write(slot, key, quiet, data, concat, pov)

    # -- conditional writes: checked at promotion, answered after the commit --------

    def _conditional_op(
        self, slot: int, kind: str, key: bytes, value: bytes, flag: int, fresh: bool
    ) -> Op:
        if kind == "add":
            return Add(key, value, flag)
        if kind == "replace":
            return Replace(key, value, flag)
        # The cas the key will have when this write is checked, or a stale one.
        ahead = self.model.acknowledged()
        for intent in self.model.sessions[slot].open:
            ahead.apply(intent.op)
        item = ahead.committed.get(key)
        unique = item.cas if item is not None else ahead.next_cas + 1
        return Cas(key, value, flag, unique if fresh else unique + 1000)

    @rule(
        slot=slots,
        key=keys,
        kind=st.sampled_from(["add", "replace", "cas", "cas"]),
        value=values,
        flag=flags,
        fresh=st.booleans(),
    )
    def conditional(
        self, slot: int, key: bytes, kind: str, value: bytes, flag: int, fresh: bool
    ) -> None:
        """A conditional write that replies: its run closes, its reply waits for the commit."""
        op = self._conditional_op(slot, kind, key, value, flag, fresh)
        opaque = self._next_opaque()
        if slot == TEXT:
            cas = b" %d" % op.expected if isinstance(op, Cas) else b""
            verb = b"cas" if kind == "cas" else kind.encode()
            data = b"%b %b %d 0 %d%b\r\n%b\r\n" % (verb, key, flag, len(value), cas, value)
        elif slot == META:
            mode = {"add": b" ME", "replace": b" MR", "cas": b""}[kind]
            cas = b" C%d" % op.expected if isinstance(op, Cas) else b""
            data = b"ms %b %d F%d%b%b\r\n%b\r\n" % (key, len(value), flag, mode, cas, value)
        else:
            opcode = {"add": Opcode.Add, "replace": Opcode.Replace, "cas": Opcode.Set}[kind]
            unique = op.expected if isinstance(op, Cas) else 0
            extras = struct.pack(">II", flag, 0)
            data = encode_request(opcode, key, value, extras, cas=unique, opaque=opaque)

        def answer(outcome: Outcome, model: Model) -> bytes:
            event(f"{kind} -> {outcome.value}")
            if slot == TEXT:
                return _TEXT_OUTCOMES[outcome]
            if slot == META:
                return _META_OUTCOMES[outcome]
            status = _BINARY_FAILURES[kind].get(outcome)
            if status is not None:
                return error_response(opcode, opaque, status)
            return encode_response(opcode, Status.NO_ERROR, opaque, model.committed[key].cas)

        def evaluate() -> Expected:
            self._record(slot, op, key, None, conditional=True)
            return answer

        self._exchange(slot, data, evaluate, closes=True)

    @rule(
        key=keys,
        kind=st.sampled_from(["add", "replace", "cas"]),
        value=values,
        flag=flags,
        fresh=st.booleans(),
    )
    def conditional_noreply(
        self, key: bytes, kind: str, value: bytes, flag: int, fresh: bool
    ) -> None:
        """A text noreply conditional write joins the open run: the key is
        unresolved for its connection until its commit (nobody else waits)."""
        op = self._conditional_op(TEXT, kind, key, value, flag, fresh)
        cas = b" %d" % op.expected if isinstance(op, Cas) else b""
        verb = b"cas" if kind == "cas" else kind.encode()
        data = b"%b %b %d 0 %d%b noreply\r\n%b\r\n" % (verb, key, flag, len(value), cas, value)
        self._exchange(TEXT, data, lambda: self._record(TEXT, op, key, None, True) or b"")

    # -- reads: they close the run, and wait for what they must see -----------------

    def _entries(self, slot: int, wanted: list[bytes]) -> list[tuple[bytes, Item | None]]:
        return [(key, self._seen(slot, key)) for key in wanted]

    @rule(
        slot=slots,
        wanted=st.lists(keys, min_size=1, max_size=3),
        with_cas=st.booleans(),
        quiet=st.booleans(),
    )
    def read(self, slot: int, wanted: list[bytes], with_cas: bool, quiet: bool) -> None:
        """text ``get``/``gets``; meta ``mg`` lines (quiet: a run that goes on
        in the next input, misses unsaid); binary Get each (quiet: a GetKQ
        run ended by a No-op, misses unsaid).  A read closes the run and
        waits for the writes in flight it must see, so it sees every write
        acknowledged anywhere, and its own."""
        opaques = [self._next_opaque() for _ in wanted]
        barrier = self._next_opaque()

        def evaluate() -> Expected:
            held = self.mg_run if slot == META else None
            if held is not None:  # the run goes on from its snapshot
                entries = [(key, held.get(key)) for key in wanted]
            else:
                entries = self._entries(slot, wanted)
            if slot == META:
                # A run whose input ends on a quiet mg goes on in the next input.
                if not quiet:
                    self.mg_run = None
                elif held is None:
                    self.mg_run = dict(self.model.committed)
                    event("a run of mg goes on in the next input")
            if held is None and (with_cas or slot == BINARY):  # a cas shown is committed
                for key, item in entries:
                    committed = self.model.committed.get(key)
                    assert item is None or item == committed, (
                        f"{key!r}: a cas is shown of committed items only, so this read "
                        "should have waited for the write in flight (or its own) first"
                    )
            out = bytearray()
            if slot == TEXT:
                for key, item in entries:
                    if item is not None:
                        out += R.value(key, item.flags, item.value, item.cas if with_cas else None)
                return bytes(out + R.END)
            if slot == META:
                for _key, item in entries:
                    if item is None:
                        out += b"" if quiet else b"EN\r\n"
                    else:
                        cas = b" c%d" % item.cas if with_cas else b""
                        size = len(item.value)
                        out += b"VA %d f%d%b\r\n%b\r\n" % (size, item.flags, cas, item.value)
                return bytes(out)
            opcode = Opcode.GetKQ if quiet else Opcode.Get
            for (key, item), opaque in zip(entries, opaques, strict=True):
                if item is None:
                    out += b"" if quiet else get_miss_response(opcode, opaque)
                else:
                    out += get_response(opcode, opaque, item.flags, item.cas, item.value, key)
            if quiet:
                out += encode_response(Opcode.Noop, Status.NO_ERROR, barrier)
            return bytes(out)

        if slot == TEXT:
            data = (b"gets " if with_cas else b"get ") + b" ".join(wanted) + b"\r\n"
        elif slot == META:
            tail = b" c" * with_cas + b" q" * quiet
            data = b"".join(b"mg %b v f%b\r\n" % (k, tail) for k in wanted)
        else:
            opcode = Opcode.GetKQ if quiet else Opcode.Get
            pairs = zip(wanted, opaques, strict=True)
            data = b"".join(encode_request(opcode, k, opaque=o) for k, o in pairs)
            if quiet:
                data += encode_request(Opcode.Noop, opaque=barrier)
        self._exchange(slot, data, evaluate, reads=True, continues_mg_run=True)

    @rule(slot=slots)
    def barrier(self, slot: int) -> None:
        """text ``version`` closes the run; meta ``mn`` and binary No-op also
        wait until everything the connection sent is committed."""
        opaque = self._next_opaque()
        if slot == TEXT:
            self._exchange(slot, b"version\r\n", lambda: R.version(PROTOCOL_VERSION), reads=True)
        elif slot == META:
            self._exchange(slot, b"mn\r\n", lambda: b"MN\r\n", reads=True)
        else:
            noop = encode_request(Opcode.Noop, opaque=opaque)
            reply = encode_response(Opcode.Noop, Status.NO_ERROR, opaque)
            self._exchange(slot, noop, lambda: reply, reads=True)

    # -- time, the promoter and hang-ups -------------------------------------------

    @rule()
    def pause(self) -> None:
        """``--batch-idle-ms`` without input: every open run closes, in the
        order of its connection's last input; a run of mg held open ends."""
        self.mg_run = None
        for slot in sorted(SLOTS, key=lambda s: self.last_input[s]):
            self._close(slot)
        self.server.pause()

    @precondition(lambda self: bool(self.model.queue))
    @rule()
    def commit(self) -> None:
        before = self._promotions()
        self.server.commit()
        assert self._promotions() - before == len(self.model.queue)
        self._commit(len(self.model.queue))

    @rule(slot=slots)
    def hang_up(self, slot: int) -> None:
        """A clean disconnect commits the open run; the next command on the
        slot opens a new connection, whose POV holds none of the old writes."""
        self._close(slot)
        if slot == META:
            self.mg_run = None
        for run in self.model.queue:
            if run.session == slot:
                run.session = None
        assert self.server.hang_up(slot) == b""

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def committed_state(self) -> None:
        engine = self.server.server.engine  # type: ignore[union-attr]
        items, busy = self.server.call(lambda: (engine.store.get_many(KEYS), engine.promoter.busy))
        assert items == [self.model.committed.get(k) for k in KEYS]
        assert busy == bool(self.model.queue)


#: Data directories on tmpfs where there is one: an fsync costs nothing there.
_SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None

TestPovWireModel = WireMachine.TestCase
TestPovWireModel.settings = settings(
    # STIG_POV_WIRE_EXAMPLES=2000 for a longer soak; the default keeps it < 20 s.
    max_examples=int(os.environ.get("STIG_POV_WIRE_EXAMPLES", "80")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
