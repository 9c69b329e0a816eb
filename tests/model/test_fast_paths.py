"""Differential test: the handlers' fast paths against their general paths.

The text handler answers the commonest commands on fast paths (a plain get
and the gets pipelined behind it read from one snapshot, a stretch of plain
sets recorded in one loop, the parser's ready-made events for the commonest
lines).  ``TextHandler(fast=False)`` turns every one of them off: each
command goes through :meth:`TextHandler._handle` and the general read, and
the parser through its general code.  Hypothesis feeds the same random
stream of text and meta commands — valid and invalid, pipelined, cut into
chunks at random places — to two handler stacks, each over its own real
LMDB in a temporary directory, fast paths on and off, and checks that the
replies, the command counters, the promotions and the committed state are
identical.  The binary handler the same way (``BinaryHandler(fast=False)``:
no plain SetQ at once, no run of them in one loop), with a random stream of
binary requests, refused ones included.  Between chunks another session
now and then writes some keys and submits them, in flight until the pump
commits: the reads behind must wait for them the same way on both paths.

No sockets: the bytes go to the handler as :mod:`stig.server.connection`
feeds them (parse, handle, await what must wait, release the held replies at
the end of each chunk), and a pump task steps the promoter with
:meth:`~stig.engine.promoter.Promoter.commit_queued_now` whenever every other
task is blocked (waiting for a commit), as the model tests do.
"""

from __future__ import annotations

import itertools
import os
import struct
import tempfile
from pathlib import Path

import attrs
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.binary_codes import Opcode
from protocol.binary_writer import encode_request
from protocol.errors import ProtocolError
from protocol.events import NEED_DATA
from stig.engine.engine import Engine
from stig.engine.errors import RunTooLarge
from stig.engine.session import Session
from stig.engine.settings import Settings
from stig.frontends.binary import BinaryHandler
from stig.frontends.text import TextHandler

Handler = TextHandler | BinaryHandler
#: Examples per test; ``STIG_FAST_PATH_EXAMPLES=3000`` runs a longer soak.
EXAMPLES = int(os.environ.get("STIG_FAST_PATH_EXAMPLES", "150"))

KEYS = [b"a", b"b", b"c", b"n"]

key = st.sampled_from(KEYS)
value = st.sampled_from([b"", b"x", b"12", b"hello", b"7" * 40, b"18446744073709551615"])
flags = st.sampled_from([0, 1, 65535])
exptime = st.sampled_from([0, 0, 0, -1, 100])  # -1: gone at once; no reply shows a clock
noreply = st.sampled_from([b"", b"", b" noreply"])
quiet = st.sampled_from([b"", b"", b" q"])


@st.composite
def storage(draw: st.DrawFn) -> bytes:
    verb = draw(st.sampled_from([b"set", b"set", b"set", b"add", b"replace", b"append", b"cas"]))
    data = draw(value)
    cas = b" %d" % draw(st.integers(0, 12)) if verb == b"cas" else b""
    head = b"%b %b %d %d %d%b%b" % (
        verb,
        draw(key),
        draw(flags),
        draw(exptime),
        len(data),
        cas,
        draw(noreply),
    )
    return head + b"\r\n" + data + b"\r\n"


@st.composite
def retrieval(draw: st.DrawFn) -> bytes:
    verb = draw(st.sampled_from([b"get", b"get", b"gets"]))
    keys = draw(st.lists(key, min_size=1, max_size=4))
    return verb + b" " + b" ".join(keys) + b"\r\n"


@st.composite
def meta_set(draw: st.DrawFn) -> bytes:
    data = draw(value)
    extra = draw(st.sampled_from([b"", b" F3", b" c", b" T-1", b" MA", b" I"]))
    return b"ms %b %d%b%b\r\n%b\r\n" % (draw(key), len(data), extra, draw(quiet), data)


@st.composite
def other(draw: st.DrawFn) -> bytes:
    k = draw(key)
    return draw(
        st.sampled_from(
            [
                b"delete %b%b\r\n" % (k, draw(noreply)),
                b"incr %b 3%b\r\n" % (k, draw(noreply)),
                b"decr %b 5%b\r\n" % (k, draw(noreply)),
                b"touch %b 0%b\r\n" % (k, draw(noreply)),
                b"gat 0 %b\r\n" % k,
                b"mg %b v f c k%b\r\n" % (k, draw(quiet)),
                b"mg %b s v\r\n" % k,
                b"md %b%b\r\n" % (k, draw(quiet)),
                b"ma %b%b\r\n" % (k, draw(quiet)),
                b"mn\r\n",
                b"version\r\n",
                b"verbosity 1\r\n",
                b"flush_all noreply\r\n",
                b"bogus %b\r\n" % k,
                b"get\r\n",
                b"set %b x 0 1\r\nz\r\n" % k,
                b"incr %b abc\r\n" % k,
            ]
        )
    )


@st.composite
def plain_write(draw: st.DrawFn) -> bytes:
    """A write the fast path of pipelined sets takes (mixed loud and quiet)."""
    data = draw(value)
    if draw(st.booleans()):
        return b"set %b %d 0 %d%b\r\n%b\r\n" % (
            draw(key),
            draw(flags),
            len(data),
            draw(noreply),
            data,
        )
    extra = draw(st.sampled_from([b"", b"", b" F5", b" T0"]))
    return b"ms %b %d%b%b\r\n%b\r\n" % (draw(key), len(data), extra, draw(quiet), data)


@st.composite
def burst(draw: st.DrawFn) -> bytes:
    """A pipelined run of plain writes or of one-key gets: the fast paths' bursts."""
    if draw(st.booleans()):
        return b"".join(draw(st.lists(plain_write(), min_size=2, max_size=6)))
    return b"".join(b"get %b\r\n" % k for k in draw(st.lists(key, min_size=2, max_size=6)))


command = st.one_of(storage(), storage(), retrieval(), retrieval(), meta_set(), other(), burst())


_STORES = [Opcode.Set, Opcode.SetQ, Opcode.Add, Opcode.AddQ, Opcode.Replace, Opcode.ReplaceQ]
_CONCATS = [Opcode.Append, Opcode.AppendQ, Opcode.Prepend, Opcode.PrependQ]
_ADJUSTS = [Opcode.Increment, Opcode.IncrementQ, Opcode.Decrement, Opcode.DecrementQ]
_KEYED = [Opcode.Get, Opcode.GetK, Opcode.GetQ, Opcode.GetKQ, Opcode.Delete, Opcode.DeleteQ]
_BARE = [Opcode.Noop, Opcode.Version]


@st.composite
def binary_request(draw: st.DrawFn) -> bytes:
    """One binary request: mostly plain SetQ (the fast path), then the rest."""
    k = draw(key)
    opaque = draw(st.integers(0, 3))
    kind = draw(
        st.sampled_from(
            ["setq", "setq", "setq", "store", "concat", "adjust", "keyed", "bare", "bad"]
        )
    )
    if kind in ("setq", "store"):
        opcode = Opcode.SetQ if kind == "setq" else draw(st.sampled_from(_STORES))
        cas = draw(st.sampled_from([0, 0, 0, 1, 4]))
        extras = struct.pack(">II", draw(flags), draw(st.sampled_from([0, 0, 0, 100])))
        return encode_request(opcode, k, draw(value), extras, cas=cas, opaque=opaque)
    if kind == "concat":
        return encode_request(draw(st.sampled_from(_CONCATS)), k, draw(value), opaque=opaque)
    if kind == "adjust":
        extras = struct.pack(
            ">QQI", draw(st.integers(0, 5)), 7, draw(st.sampled_from([0, 0xFFFFFFFF]))
        )
        return encode_request(draw(st.sampled_from(_ADJUSTS)), k, b"", extras, opaque=opaque)
    if kind == "keyed":
        return encode_request(draw(st.sampled_from(_KEYED)), k, opaque=opaque)
    if kind == "bare":
        return encode_request(draw(st.sampled_from(_BARE)), opaque=opaque)
    return encode_request(0x50, k, opaque=opaque)  # an unknown opcode: refused


#: What the stacks are fed: a chunk of bytes for the handler, or the keys
#: another session writes (a run closed and submitted, in flight until the
#: pump commits it: the reads behind it must wait for it, or see past it).
Step = bytes | tuple[bytes, ...]


def cut(draw: st.DrawFn, stream: bytes) -> list[Step]:
    """``stream`` cut into the chunks the handler receives, with another
    session's writes now and then between them."""
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=4))))
    bounds = [0, *cuts, len(stream)]
    steps: list[Step] = []
    for i, j in itertools.pairwise(bounds):
        if i < j:
            others = draw(st.lists(key, max_size=2))
            if others:
                steps.append(tuple(others))
            steps.append(stream[i:j])
    return steps


@st.composite
def chunked(draw: st.DrawFn) -> list[Step]:
    """A text and meta command stream, in chunks."""
    return cut(draw, b"".join(draw(st.lists(command, min_size=1, max_size=40))))


@st.composite
def binary_chunked(draw: st.DrawFn) -> list[Step]:
    """A binary request stream, in chunks."""
    return cut(draw, b"".join(draw(st.lists(binary_request(), min_size=1, max_size=40))))


@attrs.define
class Outcome:
    """What one handler stack made of the stream."""

    replies: bytes
    stats: dict[str, object]
    promotions: int
    failed_commits: int
    committed: list[object]


class Stack:
    """A text handler on its own session and engine, fed bytes as a connection feeds them."""

    def __init__(self, data_dir: Path, handler: type[Handler], fast: bool) -> None:
        self.engine = Engine(Settings(data_dir=data_dir, fast_paths=fast))
        self.session = Session(self.engine)
        self.handler = handler(self.engine, self.session)
        self.handler.drain = self._drain
        self.sent = bytearray()
        self.other = Session(self.engine)  # another connection's writes
        self._written = 0

    async def _release(self) -> None:
        """Hand the closed runs over and write the held replies (Connection._release_replies)."""
        self.session.submit()
        if self.handler.gate.holding:
            await self.handler.gate.release()

    async def _drain(self) -> None:
        await self._release()
        self.sent += self.handler.out
        self.session.replies_sent()
        self.handler.out.clear()

    async def feed(self, chunk: bytes) -> None:
        """One received chunk: every command in it handled, its replies sent."""
        handler = self.handler
        session = self.session
        parser = handler.parser
        parser.feed(chunk)
        try:
            while not handler.closing:
                event = parser.next_event()
                if event is NEED_DATA:
                    break
                pending = handler.handle(event)
                if pending is not None:
                    await pending
                assert session.failure is None
                if session.wants_room:
                    assert await session.make_room(self._drain)
        except ProtocolError as exc:
            handler.protocol_error(exc)
            handler.closing = True
        except RunTooLarge as exc:
            handler.fatal_error(exc.reason)
            handler.closing = True
        await self._drain()

    async def run(self, chunks: list[Step]) -> Outcome:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump)
            for step in chunks:
                if self.handler.closing:
                    break
                if isinstance(step, tuple):
                    self._other_writes(step)
                else:
                    await self.feed(step)
            if self.handler.parser.at_boundary:  # Connection._end_session
                self.session.close_run()
                self.session.submit()
            else:
                self.session.discard_run()
            nursery.cancel_scope.cancel()
        self.engine.promoter.commit_queued_now()
        self.handler.close()
        engine = self.engine
        outcome = Outcome(
            replies=bytes(self.sent),
            stats=attrs.asdict(engine.stats),
            promotions=engine.promoter_stats.promotions,
            failed_commits=engine.promoter_stats.failed_commits,
            committed=list(engine.store.get_many(KEYS)),
        )
        engine.store.close()
        return outcome

    def _other_writes(self, keys: tuple[bytes, ...]) -> None:
        """Another session sets ``keys`` in one run and submits it."""
        for k in keys:
            self._written += 1
            self.other.set(k, b"other %d" % self._written, 0)
        self.other.close_run()
        self.other.submit()

    async def _pump(self) -> None:
        """Commit what is queued whenever every other task waits (for a commit)."""
        promoter = self.engine.promoter
        while True:
            await trio.testing.wait_all_tasks_blocked()
            assert promoter.busy, "the handler waits for something that is not a commit"
            promoter.commit_queued_now()


def outcome_of(chunks: list[Step], fast: bool, handler: type[Handler] = TextHandler) -> Outcome:
    with tempfile.TemporaryDirectory() as tmp:
        return trio.run(Stack(Path(tmp) / "data", handler, fast).run, chunks)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(chunked())
def test_fast_paths_answer_as_the_general_path(chunks: list[Step]) -> None:
    fast = outcome_of(chunks, fast=True)
    general = outcome_of(chunks, fast=False)
    assert fast.replies == general.replies
    assert fast == general


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(binary_chunked())
def test_binary_fast_paths_answer_as_the_general_path(chunks: list[Step]) -> None:
    fast = outcome_of(chunks, fast=True, handler=BinaryHandler)
    general = outcome_of(chunks, fast=False, handler=BinaryHandler)
    assert fast.replies == general.replies
    assert fast == general


def test_a_pipelined_burst_of_gets_and_sets() -> None:
    """The fast paths' commonest bursts, spelled out (and the harness's sanity)."""
    stream = [
        b"set a 1 0 1\r\nx\r\nset b 2 0 2\r\nyy\r\nset c 0 0 1 noreply\r\nz\r\n",
        b"get a\r\nget b\r\nget c\r\nget a b c\r\ngets a\r\nms n 2 q\r\n12\r\nincr n 1\r\n",
        b"add a 0 0 1\r\nq\r\nmn\r\n",
    ]
    fast = outcome_of(stream, fast=True)
    assert fast == outcome_of(stream, fast=False)
    assert fast.replies.startswith(b"STORED\r\nSTORED\r\nVALUE a 1 1\r\n")
    assert b"VALUE a 1 1\r\nx\r\nVALUE b 2 2\r\nyy\r\nVALUE c 0 1\r\nz\r\nEND\r\n" in fast.replies
    assert fast.replies.endswith(b"13\r\nNOT_STORED\r\nMN\r\n")
