"""The soak's yardstick: one well-behaved text client on a fixed-rate set/get loop.

Every ``1 / rate`` seconds (a fixed schedule, so a slow server cannot slow
the questions down) it sets one of its keys and reads it back, checks both
replies exactly, and records each round trip's latency.  The soak takes the
latencies gathered since its last sample (:meth:`Probe.take`) and reports
their p50/p99; a wrong reply, a closed connection or a reply slower than
``reply_timeout`` is an error.
"""

from __future__ import annotations

import time

import trio

from stig_testkit.soak import keys
from stig_testkit.soak import wire as w
from stig_testkit.soak.tally import Tally
from stig_testkit.soak.wire import Wire, WrongReply

ROLE = "probe"


class Probe:
    def __init__(self, port: int, rate: float, reply_timeout: float) -> None:
        self.port, self.rate, self.reply_timeout = port, rate, reply_timeout
        self.tally = Tally()
        self._latencies: list[float] = []

    def take(self) -> list[float]:
        """The latencies (ms) recorded since the last call."""
        taken, self._latencies = self._latencies, []
        return taken

    async def run(self, seconds: float) -> None:
        wire: Wire | None = None
        start = trio.current_time()
        tick = 0
        while True:
            tick += 1
            at = start + tick / self.rate
            if at - start >= seconds:
                break
            await trio.sleep_until(at)
            with trio.move_on_after(self.reply_timeout) as scope:
                try:
                    if wire is None:
                        wire = await Wire.connect(self.port)
                    await self._once(wire, tick)
                    self.tally.op(ROLE)
                except (WrongReply, OSError, trio.BrokenResourceError) as error:
                    self.tally.error(ROLE, f"{type(error).__name__}: {error}")
                    wire = None
            if scope.cancelled_caught:
                self.tally.error(ROLE, f"no reply in {self.reply_timeout:.0f} s")
                wire = None
        if wire is not None:
            await wire.close()

    async def _once(self, wire: Wire, tick: int) -> None:
        key = b"probe:%d" % (tick % 100)
        data = keys.value(key, tick, 100)
        began = time.perf_counter()
        await wire.send(w.text_set(key, data))
        await w.expect_line(wire, b"STORED")
        middle = time.perf_counter()
        await wire.send(w.text_get(key))
        got = await w.text_values(wire)
        end = time.perf_counter()
        if got != {key: data}:
            raise WrongReply(f"probe read {key!r} back as {got!r}"[:200])
        self._latencies += [(middle - began) * 1000, (end - middle) * 1000]
