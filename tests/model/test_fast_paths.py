"""Differential test: the handlers' fast paths against their general paths.

The text handler answers the commonest commands on fast paths (a plain get
and the gets pipelined behind it read from one snapshot, a stretch of plain
sets recorded in one loop, the parser's ready-made events for the commonest
lines), the meta handler too (a plain ``ms`` at once, an ``mg`` answered
inline), and the binary handler (a plain SetQ at once, a run of them in one
loop, a quiet get of an open run).  ``Settings(fast_paths=False)`` turns
every one of them off: each command takes the general path through
stig/core/command_core.py.

Hypothesis writes one script — several connections at once (two speaking
text and meta, one binary), each sending a random stream of commands
(reads, writes, quiet and noreply runs, incr/decr, append/prepend, cas,
add/replace, barriers, errors and garbage) cut into chunks at random
places, interleaved, with pauses (``--batch-idle-ms`` passes: open runs
close), group commits at random moments (so that reads meet writes in
flight) and hang-ups — and serves it twice, on two real servers without
sockets (:mod:`stig_testkit.memory_server`: the real connection loop, the
real engine, a fresh LMDB each in a temporary directory), fast paths on and
off.  The reply bytes of every connection and where they were cut into
sends (``--max-reply-bytes``), the command counters, the promotions and the
committed state read back from LMDB must be identical.

``STIG_FAST_PATH_EXAMPLES=3000`` runs a longer soak.
"""

from __future__ import annotations

import collections
import itertools
import os
import struct
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stig.engine.settings import Settings
from stig_protocol.binary_codes import Opcode
from stig_protocol.binary_writer import encode_request
from stig_protocol.limits import Limits
from stig_testkit.memory_server import (
    Commit,
    HangUp,
    Outcome,
    Pause,
    Send,
    Step,
    run_script,
)

#: Examples per test; ``STIG_FAST_PATH_EXAMPLES=3000`` runs a longer soak.
EXAMPLES = int(os.environ.get("STIG_FAST_PATH_EXAMPLES", "120"))

KEYS = [b"a", b"b", b"c", b"n"]

key = st.sampled_from(KEYS)
value = st.sampled_from([b"", b"x", b"12", b"hello", b"7" * 40, b"18446744073709551615"])
flags = st.sampled_from([0, 1, 65535])
exptime = st.sampled_from([0, 0, 0, -1, 100])  # -1: gone at once; no reply shows a clock
noreply = st.sampled_from([b"", b"", b" noreply"])
quiet = st.sampled_from([b"", b"", b" q"])


@st.composite
def storage(draw: st.DrawFn) -> bytes:
    verb = draw(
        st.sampled_from([b"set", b"set", b"set", b"add", b"replace", b"append", b"prepend", b"cas"])
    )
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
    extra = draw(
        st.sampled_from([b"", b" F3", b" c", b" T-1", b" MA", b" MP", b" ME", b" MR", b" I"])
    )
    compare = b" C%d" % draw(st.integers(1, 12)) if draw(st.booleans()) else b""
    return b"ms %b %d%b%b%b\r\n%b\r\n" % (draw(key), len(data), extra, compare, draw(quiet), data)


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
                b"gats 0 %b %b\r\n" % (k, draw(key)),
                b"mg %b v f c k%b\r\n" % (k, draw(quiet)),
                b"mg %b s v\r\n" % k,
                b"mg %b k v q\r\nmg %b k v q\r\nmn\r\n" % (k, draw(key)),
                b"md %b%b\r\n" % (k, draw(quiet)),
                b"md %b C%d q\r\n" % (k, draw(st.integers(1, 12))),
                b"ma %b%b\r\n" % (k, draw(quiet)),
                b"ma %b N0 J5 v\r\n" % k,
                b"ma %b MD D2 v c\r\n" % k,
                b"mn\r\n",
                b"version\r\n",
                b"verbosity 1\r\n",
                b"flush_all noreply\r\n",
                b"bogus %b\r\n" % k,
                b"get\r\n",
                b"set %b x 0 1\r\nz\r\n" % k,
                b"set %b 0 0 3\r\nabcde\r\n" % k,  # a data block of the wrong length
                b"incr %b abc\r\n" % k,
                b"\r\n",
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


garbage = st.binary(min_size=1, max_size=12).map(lambda junk: junk + b"\r\n")

command = st.one_of(
    storage(), storage(), retrieval(), retrieval(), meta_set(), other(), burst(), burst(), garbage
)


_STORES = [Opcode.Set, Opcode.SetQ, Opcode.Add, Opcode.AddQ, Opcode.Replace, Opcode.ReplaceQ]
_CONCATS = [Opcode.Append, Opcode.AppendQ, Opcode.Prepend, Opcode.PrependQ]
_ADJUSTS = [Opcode.Increment, Opcode.IncrementQ, Opcode.Decrement, Opcode.DecrementQ]
_KEYED = [Opcode.Get, Opcode.GetK, Opcode.GetQ, Opcode.GetKQ, Opcode.Delete, Opcode.DeleteQ]
_BARE = [Opcode.Noop, Opcode.Noop, Opcode.Version, Opcode.FlushQ]


@st.composite
def binary_request(draw: st.DrawFn) -> bytes:
    """One binary request: mostly plain SetQ (the fast path), then the rest."""
    k = draw(key)
    opaque = draw(st.integers(0, 3))
    kind = draw(
        st.sampled_from(
            ["setq", "setq", "setq", "store", "concat", "adjust", "keyed", "keyed", "bare", "bad"]
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


@st.composite
def setq_burst(draw: st.DrawFn) -> bytes:
    """A pipelined run of SetQ, most plain: the binary fast path's burst (a
    cas or an exptime in it sends the rest one by one)."""
    requests = []
    for _ in range(draw(st.integers(2, 6))):
        extras = struct.pack(">II", draw(flags), draw(st.sampled_from([0, 0, 0, 0, 100])))
        cas = draw(st.sampled_from([0, 0, 0, 0, 0, 3]))
        opaque = draw(st.integers(0, 3))
        requests.append(
            encode_request(Opcode.SetQ, draw(key), draw(value), extras, cas=cas, opaque=opaque)
        )
    return b"".join(requests)


binary_command = st.one_of(binary_request(), binary_request(), setq_burst())


def cut(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    """``stream`` cut into the chunks its connection receives."""
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=4))))
    bounds = [0, *cuts, len(stream)]
    return [stream[i:j] for i, j in itertools.pairwise(bounds) if i < j]


#: The connections of a script: two speak text and meta, one binary.
SLOTS = ("text", "text", "binary")
#: What may come between two chunks (mostly nothing).
BETWEEN = st.sampled_from(["", "", "", "", "", "pause", "commit", "commit", "hang up"])


@st.composite
def script(draw: st.DrawFn) -> list[Step]:
    """Each connection's stream in chunks, interleaved, with pauses, commits and hang-ups."""
    chunks: dict[int, collections.deque[bytes]] = {}
    for slot, kind in enumerate(SLOTS):
        if kind == "text":
            stream = b"".join(draw(st.lists(command, min_size=1, max_size=20)))
        else:
            stream = b"".join(draw(st.lists(binary_command, min_size=1, max_size=20)))
        chunks[slot] = collections.deque(cut(draw, stream))
    steps: list[Step] = []
    while live := [slot for slot, left in chunks.items() if left]:
        slot = draw(st.sampled_from(live))
        steps.append(Send(slot, chunks[slot].popleft()))
        between = draw(BETWEEN)
        if between == "pause":
            steps.append(Pause())
        elif between == "commit":
            steps.append(Commit())
        elif between == "hang up":
            steps.append(HangUp(draw(st.sampled_from(range(len(SLOTS))))))
    return steps


#: The servers a script runs on: the defaults; and a tight one (small items,
#: replies sent every 128 bytes so gets read ahead stop at the bound, every
#: reply after the commit it acknowledges: ``--durable-acks``).
SERVERS = {
    "default": {},
    "tight": {
        "limits": Limits(max_item_size=32),
        "max_reply_bytes": 128,
        "durable_acks": True,
    },
}


#: Data directories on tmpfs where there is one: an fsync costs nothing
#: there, and what is compared is the handlers, not the disk.
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None


def outcome_of(steps: list[Step], fast: bool, server: str = "default") -> Outcome:
    with tempfile.TemporaryDirectory(prefix="stig-fast-paths-", dir=SCRATCH) as tmp:
        knobs = SERVERS[server]
        # No brake for the commit lag: the clock of a stepped server is its own.
        settings = Settings(
            data_dir=Path(tmp) / "data",
            fast_paths=fast,
            max_commit_lag_ms=1e9,
            **knobs,  # type: ignore[arg-type]
        )
        return run_script(settings, steps)


def check(steps: list[Step], server: str = "default") -> Outcome:
    fast = outcome_of(steps, fast=True, server=server)
    general = outcome_of(steps, fast=False, server=server)
    for index, (on, off) in enumerate(zip(fast.replies, general.replies, strict=True)):
        assert on == off, f"connection {index}: the fast paths answered otherwise"
    assert fast.stats == general.stats
    assert fast.committed == general.committed
    assert fast == general
    return fast


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(script(), st.sampled_from(sorted(SERVERS)))
def test_fast_paths_answer_as_the_general_path(steps: list[Step], server: str) -> None:
    check(steps, server)


def test_a_pipelined_burst_of_gets_and_sets() -> None:
    """The fast paths' commonest bursts, spelled out (and the harness's sanity)."""
    steps: list[Step] = [
        Send(0, b"set a 1 0 1\r\nx\r\nset b 2 0 2\r\nyy\r\nset c 0 0 1 noreply\r\nz\r\n"),
        Send(
            0, b"get a\r\nget b\r\nget c\r\nget a b c\r\ngets a\r\nms n 2 q\r\n12\r\nincr n 1\r\n"
        ),
        Send(0, b"add a 0 0 1\r\nq\r\nmn\r\n"),
    ]
    replies = check(steps).replies[0]
    assert replies.startswith(b"STORED\r\nSTORED\r\nVALUE a 1 1\r\n")
    assert b"VALUE a 1 1\r\nx\r\nVALUE b 2 2\r\nyy\r\nVALUE c 0 1\r\nz\r\nEND\r\n" in replies
    assert replies.endswith(b"13\r\nNOT_STORED\r\nMN\r\n")


def test_a_get_behind_another_connections_write_in_flight() -> None:
    """Connection 1's gets (one line, then pipelined) meet connection 0's
    acknowledged set still in flight: each waits for its commit, fast or not."""
    steps: list[Step] = [
        Send(0, b"set a 0 0 1\r\nx\r\n"),
        Commit(),
        Send(0, b"set a 0 0 1\r\ny\r\n"),  # STORED: acknowledged, in flight
        Send(1, b"get a\r\nget a\r\nget b\r\n"),
    ]
    outcome = check(steps)
    assert outcome.replies[1] == b"VALUE a 0 1\r\ny\r\nEND\r\n" * 2 + b"END\r\n"


def tight_twins(steps: list[Step]) -> Outcome:
    """``steps`` on the tight server, fast paths on and off: the same outcome
    to the promotion (the replies sent at the bound hand over the runs
    closed so far, apart from the ones after them)."""
    fast = outcome_of(steps, fast=True, server="tight")
    general = outcome_of(steps, fast=False, server="tight")
    assert fast.replies == general.replies
    assert fast.promotions == general.promotions
    assert fast == general
    return fast


def test_the_set_burst_tail_sends_at_the_reply_bound() -> None:
    """Found by the differential test: the tail of a burst of plain sets
    (from an exptime on, handled one by one) handled every command before
    the connection could send, so its replies passed --max-reply-bytes and
    the runs closed on either side of the bound went in one promotion."""
    tail = b"set a 0 100 0\r\n\r\nset a 0 100 0\r\n\r\nset a 0 0 0\r\n\r\n"
    outcome = tight_twins([Send(0, b"set a 0 0 0\r\n\r\n" + tail)])
    assert outcome.promotions == 2


def test_a_stretch_of_loud_sets_stops_at_the_reply_bound() -> None:
    """40 answered plain sets: 320 reply bytes, past the tight server's 128,
    so the stretch recorded in one loop stops where the loop would send."""
    sets = b"".join(b"set %b 0 0 1\r\n%d\r\n" % (KEYS[i % 4], i % 10) for i in range(40))
    outcome = tight_twins([Send(0, sets + b"ms n 1\r\n9\r\n")])
    assert outcome.replies[0] == b"STORED\r\n" * 40 + b"HD\r\n"
    assert outcome.promotions > 1


def test_a_setq_tail_sends_its_quiet_failures_at_the_reply_bound() -> None:
    """A run of SetQ whose tail (from an exptime on) answers each with a
    refusal: those replies are sent at the bound too, as the loop does."""
    extras = struct.pack(">II", 0, 100)  # an exptime: refused, answered
    requests = [encode_request(Opcode.SetQ, b"a", b"x", struct.pack(">II", 0, 0))]
    requests += [encode_request(Opcode.SetQ, b"b", b"y", extras, opaque=i) for i in range(4)]
    requests.append(encode_request(Opcode.Set, b"c", b"z", struct.pack(">II", 0, 0)))
    tight_twins([Send(2, b"".join(requests))])
