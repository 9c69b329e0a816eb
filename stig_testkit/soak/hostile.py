"""The hostile clients of the soak: each :func:`life` is one connection, start to end.

* ``never_read``: asks for big values (single and multi-key reads, every
  protocol) and never reads a byte of the replies, for a while, then leaves
  (FIN or RST);
* ``half_sent``: sends part of a command (a set's header and half its data,
  a line without its newline, part of a binary header or body), waits,
  then leaves, or sends the rest and reads the reply;
* ``abort_run``: a noreply/quiet run writing an ``ABORT`` token to a
  transaction group, cut mid-command by a disconnect in the same send: the
  run must be discarded, so no reader may ever see that token;
* ``big_flood``: bursts of pipelined sets of values near 1 MB (loud, or a
  quiet run closed by a barrier), read at the end of each burst;
* ``pipeline_flood``: bursts of hundreds of pipelined small gets and sets
  with a barrier at the end, whose replies are read slowly.

None of them checks what it gets (they are not the clients the soak judges);
what they do to the others is what the soak measures.
"""

from __future__ import annotations

import random

import trio

from stig_testkit.soak import keys
from stig_testkit.soak import wire as w
from stig_testkit.soak.wire import Wire

BEHAVIOURS = ("never_read", "half_sent", "abort_run", "big_flood", "pipeline_flood")
_BIG = b"B" * keys.BIG_SIZE


async def life(behaviour: str, port: int, rng: random.Random, lifetime: float) -> None:
    """One connection of ``behaviour``, lasting about ``lifetime`` seconds."""
    protocol = rng.choice(("text", "meta", "binary"))
    await _LIVES[behaviour](port, protocol, rng, lifetime)


async def _leave(wire: Wire, rng: random.Random) -> None:
    if rng.random() < 0.5:
        await wire.reset()
    else:
        await wire.close()


async def _never_read(port: int, protocol: str, rng: random.Random, lifetime: float) -> None:
    wire = await Wire.connect(port, rcvbuf=16384)
    big = [keys.big_key(i) for i in range(keys.BIG_KEYS)]
    if protocol == "text":
        request = b"".join(w.text_get(*rng.sample(big, rng.choice((1, 3)))) for _ in range(100))
    elif protocol == "meta":
        request = b"".join(w.meta_get(rng.choice(big)) for _ in range(100))
    else:
        request = b"".join(w.bin_request(w.GETK, rng.choice(big)) for _ in range(100))
    try:
        with trio.move_on_after(lifetime):
            await wire.send(request)
            await trio.sleep_forever()
    finally:
        await _leave(wire, rng)


def _half(protocol: str, rng: random.Random) -> tuple[bytes, bytes]:
    """(what is sent first, the rest) of one command."""
    key = keys.half_key(rng.randrange(keys.HALF_KEYS))
    data = b"h" * rng.choice((10, 1000, 100_000))
    if protocol == "text":
        whole = rng.choice((w.text_set(key, data), w.text_get(key, keys.shared_key(1))))
    elif protocol == "meta":
        whole = rng.choice((w.meta_set(key, data), w.meta_get(key)))
    else:
        whole = w.bin_set(key, data)
    cut = rng.randrange(1, len(whole) - 1)
    return whole[:cut], whole[cut:]


async def _half_sent(port: int, protocol: str, rng: random.Random, lifetime: float) -> None:
    wire = await Wire.connect(port)
    first, rest = _half(protocol, rng)
    try:
        await wire.send(first)
        await trio.sleep(lifetime)
        if rng.random() < 0.3:
            await wire.send(rest)
            with trio.move_on_after(10):
                await wire.stream.receive_some(65536)
    finally:
        await _leave(wire, rng)


def _aborted_run(protocol: str, rng: random.Random) -> bytes:
    """A run writing an ABORT token to a whole group, then the start of one more write."""
    members = keys.group_keys(rng.randrange(keys.GROUPS))
    token = keys.ABORT + b".%d" % rng.randrange(1 << 30)
    if protocol == "text":
        run = [w.text_set(k, token, noreply=True) for k in members]
    elif protocol == "meta":
        run = [w.meta_set(k, token, quiet=True) for k in members]
    else:
        run = [w.bin_set(k, token, quiet=True) for k in members]
    last = run[-1]
    return b"".join(run[:-1]) + last[: rng.randrange(1, len(last) - 1)]


async def _abort_run(port: int, protocol: str, rng: random.Random, lifetime: float) -> None:
    wire = await Wire.connect(port)
    try:
        await wire.send(_aborted_run(protocol, rng))
    finally:
        await _leave(wire, rng)


def _big_burst(protocol: str, rng: random.Random) -> tuple[bytes, int]:
    """A burst of big sets, and how many replies it gets."""
    count = rng.randrange(2, 9)
    quiet = rng.random() < 0.5
    sets = []
    for _ in range(count):
        key, data = (
            keys.big_key(rng.randrange(keys.BIG_KEYS)),
            _BIG[: rng.randrange(200_000, keys.BIG_SIZE)],
        )
        if protocol == "text":
            sets.append(w.text_set(key, data, noreply=quiet))
        elif protocol == "meta":
            sets.append(w.meta_set(key, data, quiet=quiet))
        else:
            sets.append(w.bin_set(key, data, quiet=quiet))
    if quiet:
        sets.append(w.bin_request(w.NOOP) if protocol == "binary" else b"mn\r\n")
        return b"".join(sets), 1
    return b"".join(sets), count


async def _big_flood(port: int, protocol: str, rng: random.Random, lifetime: float) -> None:
    wire = await Wire.connect(port)
    try:
        with trio.move_on_after(lifetime):
            while True:
                burst, replies = _big_burst(protocol, rng)
                await wire.send(burst)
                for _ in range(replies):
                    if protocol == "binary":
                        await w.bin_reply(wire)
                    else:
                        await wire.line()
                await trio.sleep(rng.uniform(2, 10))
    finally:
        await _leave(wire, rng)


def _pipeline(protocol: str, rng: random.Random) -> tuple[bytes, bytes]:
    """Hundreds of small gets and noreply sets of shared keys, then a barrier;
    and the barrier's reply, which ends the replies."""
    parts = []
    for i in range(rng.randrange(200, 1000)):
        key = keys.shared_key(rng.randrange(keys.SHARED_KEYS))
        data = keys.value(key, i, 100)
        if protocol == "text":
            parts.append(w.text_get(key) if i % 2 else w.text_set(key, data, noreply=True))
        elif protocol == "meta":
            parts.append(w.meta_get(key) if i % 2 else w.meta_set(key, data, quiet=True))
        else:
            parts.append(w.bin_request(w.GETKQ, key) if i % 2 else w.bin_set(key, data, quiet=True))
    if protocol == "binary":
        end = w.HEADER.pack(w.RESPONSE, w.NOOP, 0, 0, 0, 0, 0, 0xB00F, 0)
        return b"".join(parts) + w.bin_request(w.NOOP, opaque=0xB00F), end
    return b"".join(parts) + b"mn\r\n", b"MN\r\n"


async def _pipeline_flood(port: int, protocol: str, rng: random.Random, lifetime: float) -> None:
    wire = await Wire.connect(port, rcvbuf=16384)
    try:
        with trio.move_on_after(lifetime):
            while True:
                request, end = _pipeline(protocol, rng)
                await wire.send(request)
                tail = b""
                while not tail.endswith(end):
                    chunk = await wire.stream.receive_some(4096)
                    if not chunk:
                        return
                    tail = (tail + chunk)[-64:]
                    await trio.sleep(0.01)  # a slow reader
                await trio.sleep(rng.uniform(1, 5))
    finally:
        await _leave(wire, rng)


_LIVES = {
    "never_read": _never_read,
    "half_sent": _half_sent,
    "abort_run": _abort_run,
    "big_flood": _big_flood,
    "pipeline_flood": _pipeline_flood,
}
