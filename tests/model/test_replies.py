"""A connection's replies (stig/core/replies.py): the limit, what leaves and
when, partial sends, and ``bytes_written`` counted once for every byte sent.

A real engine (real LMDB) and session; the sink stands in for the client's
socket and records every send, taking at most ``per_send`` bytes of each
and waiting on ``gate`` before it takes anything when one is set (a client
that does not read).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from stig.core.replies import Replies
from stig.core.reply_gate import HELD_COST
from stig.engine.engine import Engine
from stig.engine.errors import CommitFailed
from stig.engine.promoter import Promotion
from stig.engine.session import Session
from stig.engine.settings import Settings


class Sink:
    """A client: what it received, send by send."""

    def __init__(self, per_send: int | None = None) -> None:
        self.per_send = per_send
        self.sends: list[bytes] = []
        self.gate: trio.Event | None = None  # set: the client reads again
        self.waiting = trio.Event()  # a send waits for the gate

    async def send(self, data: bytes | bytearray | memoryview, /) -> int:
        if self.gate is not None:
            self.waiting.set()
            await self.gate.wait()
        taken = bytes(data[: self.per_send] if self.per_send else data)
        self.sends.append(taken)
        return len(taken)

    @property
    def received(self) -> bytes:
        return b"".join(self.sends)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    engine = Engine(Settings(data_dir=tmp_path / "data", max_reply_bytes=1000))
    try:
        yield engine
    finally:
        await engine.close()


def _finished(nbytes: int = 0) -> Promotion:
    """A promotion already decided: a reply held behind it may be written."""
    promotion = Promotion([], {}, nbytes)
    promotion.finished = True
    return promotion


async def test_a_send_counts_every_byte_once_and_empties_the_buffer(engine: Engine) -> None:
    sink = Sink()
    replies = Replies(engine, Session(engine), sink)
    replies.out += b"STORED\r\n" * 3
    await replies.send()
    replies.out += b"END\r\n"
    await replies.send()
    await replies.send()  # nothing written: nothing sent
    assert sink.sends == [b"STORED\r\n" * 3, b"END\r\n"]
    assert engine.stats.bytes_written == 29
    assert not replies.out


async def test_a_partial_send_goes_on_until_all_is_sent_in_order(engine: Engine) -> None:
    sink = Sink(per_send=7)
    session = Session(engine)
    replies = Replies(engine, session, sink)
    reply = bytes(range(256)) * 4
    replies.out += reply
    await replies.send()
    assert sink.received == reply
    assert len(sink.sends) == -(-len(reply) // 7)  # 7 bytes a send
    assert engine.stats.bytes_written == len(reply)  # counted once, not per send
    assert not replies.out
    assert session.replies_blocked_since is None


async def test_a_send_the_client_does_not_take_says_since_when(engine: Engine) -> None:
    """The watchdog that ends the snapshots of stalled reads reads
    ``replies_blocked_since`` (stig/server/stalled_reads.py)."""
    sink = Sink()
    sink.gate = trio.Event()
    session = Session(engine)
    replies = Replies(engine, session, sink)
    replies.out += b"VALUE k 0 1\r\nx\r\nEND\r\n"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(replies.send)
        await sink.waiting.wait()
        assert session.replies_blocked_since is not None
        assert engine.stats.bytes_written == len(replies.out)  # counted as it leaves
        sink.gate.set()
    assert session.replies_blocked_since is None
    assert sink.received == b"VALUE k 0 1\r\nx\r\nEND\r\n"


async def test_the_limit_counts_the_held_replies_too(engine: Engine) -> None:
    replies = Replies(engine, Session(engine), Sink())
    assert replies.limit == 1000
    replies.out += bytes(999)
    assert not replies.full
    replies.out += b"x"
    assert replies.full
    replies.out.clear()
    replies.gate.hold(_finished(), b"held")
    assert replies.gate.cost == HELD_COST
    replies.out += bytes(1000 - HELD_COST - 1)
    assert not replies.full
    replies.out += b"x"
    assert replies.full
    replies.gate.discard()


async def test_held_replies_are_written_in_their_places_before_they_leave(
    engine: Engine,
) -> None:
    sink = Sink()
    replies = Replies(engine, Session(engine), sink)
    replies.gate.settle = lambda promotion, answer: answer  # type: ignore[assignment, return-value]
    replies.out += b"one\r\n"
    replies.gate.hold(_finished(), b"two\r\n")
    replies.out += b"three\r\n"
    await replies.send()
    assert sink.received == b"one\r\ntwo\r\nthree\r\n"
    assert engine.stats.bytes_written == len(sink.received)
    assert not replies.gate.holding and replies.gate.cost == 0


async def test_drain_without_a_sink_keeps_the_replies(engine: Engine) -> None:
    """A handler driven by a test or a script: its caller reads ``out``."""
    replies = Replies(engine, Session(engine))
    replies.out += b"END\r\n"
    await replies.drain()
    assert replies.out == b"END\r\n"
    assert engine.stats.bytes_written == 0


async def test_nothing_leaves_once_acknowledged_writes_are_lost(engine: Engine) -> None:
    sink = Sink()
    session = Session(engine)
    replies = Replies(engine, session, sink)
    replies.out += b"STORED\r\n"
    lost = Promotion([], {}, 0, answered_early=True, first_seq=1)  # after the last reply
    lost.error = "disk gone"
    session.ledger.record(lost, session.acked_seq)
    assert session.failure == "disk gone"
    await replies.send()  # the connection reports the loss instead
    with pytest.raises(CommitFailed):
        await replies.drain()  # a command stops
    assert sink.sends == [] and engine.stats.bytes_written == 0
    await replies.send_loss(
        lambda message: replies.out.extend(b"SERVER_ERROR %b\r\n" % message.encode())
    )
    report = b"SERVER_ERROR disk gone; unacknowledged writes were not stored\r\n"
    assert sink.received == report  # the loss alone: the pending STORED is dropped
    assert engine.stats.bytes_written == len(report)


async def test_with_durable_acks_a_reply_leaves_after_the_commit_it_acknowledges(
    tmp_path: Path,
) -> None:
    engine = Engine(Settings(data_dir=tmp_path / "data", durable_acks=True))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run_promoter)
            session = Session(engine)
            committed: list[bool] = []

            class Checking(Sink):
                async def send(self, data: bytes | bytearray | memoryview, /) -> int:
                    committed.append(not session.commits_awaited)
                    return await super().send(data)

            sink = Checking()
            replies = Replies(engine, session, sink)
            session.set(b"k", b"v", 0)
            session.close_run()
            replies.out += b"STORED\r\n"
            await replies.send()
            assert sink.received == b"STORED\r\n"
            assert committed == [True]
            await engine.promoter.close()
            nursery.cancel_scope.cancel()
    finally:
        await engine.close()


async def test_close_frees_the_buffer_and_lets_go_of_the_core(engine: Engine) -> None:
    replies = Replies(engine, Session(engine), Sink())
    replies.gate.settle = lambda promotion, answer: b""  # type: ignore[assignment]
    replies.out += bytes(500)
    replies.gate.hold(_finished(), None)
    replies.close()
    assert not replies.out and not replies.gate.holding
    with pytest.raises(AssertionError):
        replies.gate.settle(_finished(), None)
