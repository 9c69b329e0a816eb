"""Binary multi-gets under load: does every read of a transaction group see one version?

Writers rewrite a group of keys, each time in one quiet run (SetQ × N) closed
by a No-op, so every version of the group is one transaction.  Readers read
the whole group in the two shapes binary clients send:

* ``getk``: GetKQ for every key but the last, then a GetK for the last one —
  python-binary-memcached's ``get_multi`` (the README promises it one
  snapshot);
* ``noop``: GetKQ for every key, then a No-op — libmemcached's ``mget``.

Loaders keep the promoter busy meanwhile (pipelined quiet sets of other keys,
each burst closed by a No-op), so that group commits land between any two
requests a reader's connection handles.  A read that finds two versions of
the group, or misses a key, is *torn*.

Used by ``tests/integration/test_binary_multiget_snapshot.py`` (a few
thousand reads) and ``scripts/torn_multiget.py`` (minutes, with the numbers
printed).
"""

from __future__ import annotations

import attrs
import trio

from stig_testkit.soak import wire as w
from stig_testkit.soak.wire import Wire, WrongReply

GROUP = [b"tm:%d" % i for i in range(8)]
SHAPES = ("getk", "noop")


@attrs.define
class Tally:
    """What the readers saw."""

    reads: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(SHAPES, 0))
    torn: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(SHAPES, 0))
    examples: list[str] = attrs.field(factory=list)
    versions: int = 0  # group rewrites acknowledged
    load_bursts: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "reads": self.reads,
            "torn": self.torn,
            "versions": self.versions,
            "load_bursts": self.load_bursts,
            "examples": self.examples[:5],
        }


async def _writer(port: int, index: int, done: trio.Event, tally: Tally) -> None:
    wire = await Wire.connect(port)
    n = 0
    try:
        while not done.is_set():
            n += 1
            token = b"v%d.%d" % (index, n)
            run = b"".join(w.bin_set(key, token, quiet=True, opaque=n) for key in GROUP)
            await wire.send(run + w.bin_request(w.NOOP, opaque=n))
            await w.bin_expect(wire, w.NOOP, 0, opaque=n)
            tally.versions += 1
    finally:
        await wire.close()


async def _loader(port: int, index: int, done: trio.Event, tally: Tally) -> None:
    """Bursts of 200 quiet sets of 1 KB to keys of its own, then a No-op."""
    wire = await Wire.connect(port)
    value = b"x" * 1000
    try:
        while not done.is_set():
            burst = b"".join(
                w.bin_set(b"tl:%d:%d" % (index, i), value, quiet=True) for i in range(200)
            )
            await wire.send(burst + w.bin_request(w.NOOP, opaque=7))
            await w.bin_expect(wire, w.NOOP, 0, opaque=7)
            tally.load_bursts += 1
    finally:
        await wire.close()


async def read_group(wire: Wire, shape: str, opaque: int) -> dict[bytes, bytes]:
    """One multi-get of the group in ``shape``: the values found, by key."""
    last = w.bin_request(w.GETK, GROUP[-1], opaque=opaque)
    if shape == "getk":
        quiet, end, closer = GROUP[:-1], w.GETK, last
    else:
        quiet, end, closer = GROUP, w.NOOP, w.bin_request(w.NOOP, opaque=opaque)
    await wire.send(b"".join(w.bin_request(w.GETKQ, k, opaque=opaque) for k in quiet) + closer)
    found: dict[bytes, bytes] = {}
    while True:
        reply = await w.bin_reply(wire)
        if reply.opaque != opaque or reply.opcode not in (w.GETKQ, end):
            raise WrongReply(f"multi-get answered opcode {reply.opcode:#x} opaque {reply.opaque}")
        if reply.status == 0 and reply.opcode != w.NOOP:
            found[reply.key] = reply.value
        if reply.opcode == end:
            return found


async def _reader(port: int, index: int, until: float, reads: int, tally: Tally) -> None:
    """Multi-gets of the group, each shape in turn, until ``until`` (trio's
    clock) or until the readers have made ``reads`` reads in all."""
    wire = await Wire.connect(port)
    n = 0
    try:
        while trio.current_time() < until and sum(tally.reads.values()) < reads:
            n += 1
            shape = SHAPES[(n + index) % len(SHAPES)]
            found = await read_group(wire, shape, n)
            tally.reads[shape] += 1
            values = [found.get(key) for key in GROUP]
            if None in values or len(set(values)) != 1:
                tally.torn[shape] += 1
                if len(tally.examples) < 20:
                    tally.examples.append(f"{shape}: {[v.decode() if v else v for v in values]}")
    finally:
        await wire.close()


async def run(
    port: int,
    seconds: float = float("inf"),
    writers: int = 3,
    readers: int = 4,
    loaders: int = 2,
    reads: float = float("inf"),
) -> Tally:
    """Run the writers, readers and loaders against ``port`` until ``seconds``
    have passed or the readers have made ``reads`` reads (whichever is first)."""
    tally = Tally()
    setup = await Wire.connect(port)
    run = b"".join(w.bin_set(key, b"v0.0", quiet=True) for key in GROUP)
    await setup.send(run + w.bin_request(w.NOOP, opaque=1))
    await w.bin_expect(setup, w.NOOP, 0, opaque=1)
    await setup.close()
    until = trio.current_time() + seconds
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        for i in range(writers):
            nursery.start_soon(_writer, port, i, done, tally)
        for i in range(loaders):
            nursery.start_soon(_loader, port, i, done, tally)
        async with trio.open_nursery() as reading:
            for i in range(readers):
                reading.start_soon(_reader, port, i, until, reads, tally)
        done.set()
    return tally
