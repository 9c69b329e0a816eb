"""One connection's replies: the buffer, its limit, when they may leave, sending them.

Every reply a connection writes goes through one :class:`Replies`: the front
ends append to :attr:`Replies.out` (and hold places in :attr:`Replies.gate`
for replies that wait for their commits), and every send — at the end of a
burst, when the replies reach ``--max-reply-bytes`` mid-burst, when a long
read sends as it grows (:meth:`Replies.drain`), the report of a lost write —
is one of its methods.  So the rules about sending live here once:

* **a reply that acknowledges something is sent only when what it
  acknowledges is kept** (docs/pov.md, "Which replies acknowledge what"):
  :meth:`Replies.release` hands the session's closed runs to the promoter,
  writes the held replies in their places once their commits are done, and
  under ``--durable-acks`` (or while writes are refused: a full disk) waits
  until the runs the replies acknowledge are on disk;
* nothing is sent once acknowledged writes are known lost: the loss report
  alone goes (:meth:`Replies.send_loss`);
* the buffer is bounded: whoever appends checks :attr:`Replies.limit`
  (the gate's held replies count too) and sends;
* while a send waits for its client, the session says since when
  (``Session.replies_blocked_since``), so that a snapshot its read holds can
  be ended (stig/server/stalled_reads.py);
* ``bytes_written`` is counted here and nowhere else.

The socket is anything with trio's ``send`` (:class:`Sink`).  Without one
(a handler driven by a test or a script, not by a connection) :meth:`drain`
sends nothing and the buffer is the caller's to read and clear.  A sink that
can also send without waiting (``send_now``: a plain socket,
stig/server/plain_socket.py) is tried that way first, so that the end of a
burst whose client reads costs no coroutine and no scheduler pass.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from stig.core.reply_gate import ReplyGate
from stig.engine.engine import Engine
from stig.engine.errors import CommitFailed
from stig.engine.session import Session

_now = trio.current_time  # bound once: read at every send
_checkpoint = trio.lowlevel.checkpoint


class Sink(Protocol):
    """Where replies go: a socket (:class:`stig.server.transport.Transport`)."""

    def send(self, data: bytes | bytearray | memoryview, /) -> Awaitable[int]:
        """Send some of ``data``; how many bytes went."""
        ...


class FastSink(Sink, Protocol):
    """A :class:`Sink` that can also send without waiting."""

    def send_now(self, data: bytes | bytearray | memoryview, /) -> int:
        """Send what the socket takes now; how many bytes went (0: none)."""
        ...


async def send_all(
    sock: Sink, data: bytes | bytearray, start: int = 0, session: Session | None = None
) -> None:
    """Send ``data[start:]`` whole, without copying it (a reply can be megabytes).

    The views are released before returning, so a bytearray can be cleared
    right after.  ``session``: whose replies these are; each send that makes
    progress restarts its :attr:`Session.replies_blocked_since` (the caller
    set it before its first send, and clears it after).
    """
    with memoryview(data) as whole:
        while start < len(whole):
            with whole[start:] as view:
                start += await sock.send(view)
            if session is not None:
                session.replies_blocked_since = trio.current_time()


class Replies:
    """The replies of one connection; see the module docstring."""

    __slots__ = (
        "_ack_timeout",
        "_durable",
        "_min_acks",
        "_refusal",
        "_replicas",
        "_send_now",
        "_session",
        "_stats",
        "_store",
        "gate",
        "limit",
        "out",
        "sink",
    )

    def __init__(self, engine: Engine, session: Session, sink: Sink | None = None) -> None:
        #: The replies written and not yet sent, in order.
        self.out = bytearray()
        #: The places in :attr:`out` of replies that wait for their commits.
        self.gate = ReplyGate(self.out, engine.stats)
        #: ``--max-reply-bytes``: past this (:attr:`out` plus the gate's
        #: :attr:`~ReplyGate.cost`) the replies are sent before more is written.
        self.limit = engine.settings.max_reply_bytes
        #: Where the replies go; None: nowhere (:meth:`drain` keeps them).
        self.sink = sink
        #: The sink's ``send_now`` (:class:`FastSink`), if it has one.
        self._send_now: Callable[[bytearray], int] | None = getattr(sink, "send_now", None)
        self._session = session
        self._stats = engine.stats
        settings = engine.settings
        # --min-replica-acks waits for the local commit too: its sequence
        # number is what the followers acknowledge.
        self._durable = settings.durable_acks or settings.min_replica_acks > 0
        self._min_acks = settings.min_replica_acks
        self._ack_timeout = settings.replica_ack_timeout_ms / 1000.0
        self._replicas = engine.replicas
        self._store = engine.store
        self._refusal = engine.promoter.refusal  # writes refused: a full disk

    @property
    def full(self) -> bool:
        """Whether the replies reached ``--max-reply-bytes`` (send before writing more)."""
        return len(self.out) + self.gate.cost >= self.limit

    # -- when replies may leave ------------------------------------------------

    def release(self) -> Awaitable[None] | None:
        """Make the replies written so far ready to leave: the one place the
        rule "a reply is sent only when what it acknowledges is kept" lives
        (docs/pov.md, "Which replies acknowledge what").  Every run closed
        so far is handed over (from then on every read waits for it: "Other
        sessions"); replies held behind their commits are written in their
        places once those commits are done; and with ``--durable-acks``, if
        a run closed since the last wait — whatever closed it: a write, a
        read, ``version``, a failed command — the replies wait until it is on
        disk.  Returns what to await first (None: nothing, the hot path: no
        coroutine per burst).  Afterwards ``Session.failure`` says whether
        acknowledged writes were lost instead (then nothing may be sent)."""
        session = self._session
        session.submit()
        if self.gate.holding:
            return self._release_held()
        if self._durable and (
            session.unacked_writes or (self._min_acks and session.unreplicated_writes)
        ):
            return self._until_durable()
        if self._refusal.message is not None and session.commits_awaited:
            # Writes are refused (a full disk): nothing more is acknowledged
            # before it is on disk, as with --durable-acks (docs/pov.md).
            return self._until_durable()
        return None

    async def _release_held(self) -> None:
        await self.gate.release()
        session = self._session
        unreplicated = self._min_acks and session.unreplicated_writes
        if (self._durable and (session.unacked_writes or unreplicated)) or (
            self._refusal.message is not None and session.commits_awaited
        ):
            await self._until_durable()

    async def _until_durable(self) -> None:
        try:
            await self._session.wait_committed(report=False)
        except CommitFailed:
            return  # session.failure: the caller reports it, nothing is sent
        if self._min_acks:
            await self._until_replicated()

    async def _until_replicated(self) -> None:
        """``--min-replica-acks N``: the replies wait until N followers have
        every group committed so far on disk (the session's runs among them),
        at most ``--replica-ack-timeout-ms``; then the connection fails
        with words that say so, never acknowledging unreplicated writes."""
        seq = self._store.log_state.seq
        hub = self._replicas
        if await hub.wait_acks(seq, self._min_acks, self._ack_timeout):
            self._session.unreplicated_writes = False
            return
        self._session.fail_unreplicated(
            f"only {hub.acks_for(seq)} of --min-replica-acks {self._min_acks} followers "
            f"acknowledged within {self._ack_timeout * 1000:g} ms; the writes are "
            "committed here but may be lost with this server"
        )

    # -- sending ----------------------------------------------------------------

    async def send(self) -> None:
        """Send the replies so far (the end of a burst, or the limit reached
        mid-burst): released first; nothing is sent once acknowledged writes
        are known lost (the caller sees ``Session.failure`` and reports it)."""
        pending = self.release()
        if pending is not None:
            await pending
        if self._session.failure is None and self.out:
            await self._write_mid_burst()

    async def drain(self) -> None:
        """Send what is written so far from inside a command (a long read or
        listing sends as it grows).  Raises :class:`CommitFailed` when
        acknowledged writes were lost (the command stops; the connection
        reports the loss).  Without a :attr:`sink`, nothing happens."""
        if self.sink is None or not (self.out or self.gate.holding):
            return
        pending = self.release()
        if pending is not None:
            await pending
        failure = self._session.failure
        if failure is not None:
            raise CommitFailed(failure)
        if self.out:
            await self._write_mid_burst()

    async def sent_at_bound(self) -> bool:
        """Send the replies so far from inside a burst a handler runs itself,
        as the connection loop does at ``--max-reply-bytes``: False when
        acknowledged writes were lost (nothing is sent; the handler stops and
        the connection reports the loss)."""
        try:
            await self.drain()
        except CommitFailed:
            return False
        return self._session.failure is None

    async def _write_mid_burst(self) -> None:
        """:meth:`write` from inside a burst or a command (the replies reached
        ``--max-reply-bytes``): always a scheduler pass, also when all went at
        once, so that a long reply to a client that reads as fast as it
        comes still lets the other connections run once per bound."""
        pending = self.write()
        if pending is None:
            await _checkpoint()
        else:
            await pending

    def write(self) -> Awaitable[None] | None:
        """Send :attr:`out` whole, now: the caller released it
        (:meth:`release`) and found no loss.  From now on the runs closed so
        far are acknowledged (``Session.replies_sent``).  Returns what to
        await for the rest (None: all of it went at once — the hot path of a
        :class:`FastSink`, no coroutine); not a coroutine itself."""
        self._session.replies_sent()
        send_now = self._send_now
        if send_now is not None:
            out = self.out
            size = len(out)
            sent = send_now(out)
            if sent == size:
                self._stats.bytes_written += size
                out.clear()
                return None
            return self._transmit(sent)
        return self._transmit()

    async def send_loss(self, write_error: Callable[[str], None]) -> None:
        """Acknowledged writes were lost: drop every reply not yet sent (held
        ones too) and send only the loss report, which ``write_error`` writes
        as its protocol words it (the handler's ``fatal_error``)."""
        self.discard()
        write_error(self._session.loss_message())
        if self.out:
            await self._transmit()

    def discard(self) -> None:
        """Forget every reply not sent (a loss is reported instead)."""
        self.out.clear()
        self.gate.discard()

    def close(self) -> None:
        """The connection is over: the replies never sent are freed now (the
        buffer of a client that stopped reading is up to ``--max-reply-bytes``
        plus an item), and the gate lets go of the core."""
        self.out.clear()
        self.gate.close()

    async def _transmit(self, sent: int = 0) -> None:
        """Send :attr:`out` (not empty) whole, from ``sent`` (what
        :meth:`write` sent at once), and clear it; one send when the client
        reads (the common case), and ``bytes_written`` counted — here only."""
        out = self.out
        size = len(out)
        sink = self.sink
        assert sink is not None, "replies sent without a sink"
        session = self._session
        self._stats.bytes_written += size
        # While a send waits for the client, the snapshots its reads hold
        # may be ended (--max-read-stall-ms, stig/storage/held.py).
        session.replies_blocked_since = _now()
        if not sent:
            sent = await sink.send(out)
        if sent < size:  # a partial send: the client is slow
            await send_all(sink, out, sent, session)
        session.replies_blocked_since = None
        out.clear()
