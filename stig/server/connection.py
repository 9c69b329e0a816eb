"""One client connection: receive, parse, execute, reply.

The loop is the same for every protocol; the handler (text or binary,
chosen from the first byte as memcached does) owns the parser, and the
connection's :class:`~stig.core.replies.Replies` the reply buffer and every
send.  Many commands are parsed from each receive and all their replies
go out in one send, so pipelining costs one syscall pair per burst.

The lean shape (issue 20): a plain TCP or unix connection reads and writes
its stdlib socket itself (stig/server/plain_socket.py; TLS keeps trio's
stream), the common commands are plain calls (a handler returns an
awaitable only when it must wait), and a burst whose client reads its
replies costs **one scheduler pass**: the receive, which parks in
``wait_readable`` or, when data was already there, passes through the
scheduler once; the replies go out with a plain ``send``, and the receive
after them passes through the scheduler first (``recv_after_pass``), so
that the client's next request is mostly there when it reads (a second
pass, the park, only when it is not).  Fairness: between
two scheduler passes a connection handles at most one receive
(:data:`RECEIVE_SIZE` bytes) and at most :data:`YIELD_EVERY` commands
(counted across bursts; tests/integration/test_connection_fairness.py; a
run of quiet gets received with its end is the exception: it is read whole,
without a yield, from one snapshot), and
sends at most ``--max-reply-bytes`` of replies plus one item
(:meth:`Replies.send` and :meth:`Replies.drain` pass through the scheduler
also when the kernel took everything at once).  A
finished group commit makes a burst yield early only once it has handled
:data:`FINISH_AFTER` commands: short bursts leave its completion to their
own end, so that the many waiting connections take it together.

Transaction edges the loop owns (docs/pov.md):

* end of a burst: closed runs are submitted together (one group commit);
* a noreply/quiet run left open is closed when no input arrives for
  ``--batch-idle-ms`` between two commands, or when the client disconnects
  at a command boundary; a disconnect in the middle of a command discards
  it;
* replies leave only once what they acknowledge is kept (docs/pov.md,
  "Which replies acknowledge what"): the runs closed so far are handed to
  the promoter first (from then on every connection sees them), replies
  held behind their commits are written in their places
  (stig/core/reply_gate.py), and with ``--durable-acks`` every run the
  replies acknowledge is on disk — :meth:`Replies.release`
  (stig/core/replies.py, which every send goes through);
* brakes: a connection with uncommitted writes reads nothing more while
  the engine-wide write budget (``--max-pending-bytes``) is exceeded; one
  with closed runs not yet committed, while the promoter is more than
  ``--max-commit-lag-ms`` behind (never for its open run alone, which no
  commit ends); one whose open run grew past the budget while another run
  holds it waits for room (:mod:`stig.engine.budget`);
* replies are sent as they grow (every ``--max-reply-bytes``), and a
  connection whose client does not read them is not read either; while a
  send waits, the session says since when (``replies_blocked_since``), so
  that a snapshot its read holds ends after ``--max-read-stall-ms``
  (:mod:`stig.server.stalled_reads`);
* acknowledged writes that failed to commit are reported at once, even to
  an idle connection: the session wakes it (:meth:`Connection._wake`), it
  writes the error line and closes.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable
from typing import Protocol

import trio

from stig.core.command_core import Core
from stig.core.replies import Replies
from stig.engine.engine import Engine
from stig.engine.errors import RunTooLarge
from stig.engine.session import Session
from stig.frontends.binary import BinaryHandler
from stig.frontends.text import TextHandler
from stig.server.transport import Transport
from stig_protocol.commands import Replicate
from stig_protocol.errors import ProtocolError
from stig_protocol.events import NEED_DATA

log = logging.getLogger(__name__)

RECEIVE_SIZE = 256 * 1024
#: How often a connection braked by another worker's queued commits looks
#: at the budget again (there is no cross-process wake-up: :meth:`_brake`).
BRAKE_POLL_SECONDS = 0.001
#: Commands handled between two yields to the scheduler: a burst of 256 KiB of
#: small writes is ~2,000 commands, and without a yield the promoter's
#: completion callbacks wait for every connection's whole burst (measured
#: ~900 ms between two commits with eight flooding connections).
YIELD_EVERY = 128
#: Commands of a burst after which a finished group commit makes the
#: connection yield at once (its completion runs, the next group goes to the
#: thread).  Shorter bursts leave it to their end, which is a scheduler pass
#: anyway: the completions of the many d=1 and d=16 connections are then taken
#: together, not each behind an extra pass (issue 20: -9 % CPU per set at d=1).
FINISH_AFTER = 32
#: Commands of one receive a run of quiet gets (GetQ/GetKQ, ``mg … q``) is
#: read without a scheduler pass: a run of up to this many, received with its
#: end, is one snapshot at any load and any ``--max-snapshot-age-ms``
#: (docs/pov.md, rule 3); a longer one lets the other connections run every
#: this many commands (the hostile review measured 490 ms p50 for another
#: connection's ``version`` beside three endless GetKQ runs read whole).
READ_RUN_STRETCH = 1024
BINARY_MAGIC = 0x80


class Parser(Protocol):
    #: Commands handed out in runs (many per call) since last set to 0.
    batched: int

    def feed(self, data: bytes) -> None: ...
    def next_event(self) -> object: ...
    @property
    def at_boundary(self) -> bool: ...


class Handler(Protocol):
    """What the connection loop needs of a protocol handler (which writes
    its replies into the connection's :class:`Replies`, given to it by
    :func:`make_handler`)."""

    closing: bool
    #: A follower's request: the connection becomes its replication stream.
    takeover: Replicate | None

    @property
    def parser(self) -> Parser: ...

    def handle(self, event: object) -> Awaitable[None] | None:
        """Execute one event: None when it was answered at once (the common
        commands then cost no coroutine), else an awaitable to await."""
        ...

    def fatal_error(self, message: str) -> None:
        """Write a protocol-appropriate server error; the connection will close."""
        ...

    def protocol_error(self, error: ProtocolError) -> None:
        """Write the reply an unrecoverable framing error calls for."""
        ...

    @property
    def read_run_open(self) -> bool:
        """A run of quiet reads holds its snapshot until its end arrives."""
        ...

    def end_read_run(self) -> None:
        """No input came for ``--batch-idle-ms``: end that run (as an open write run)."""
        ...

    def close(self) -> None:
        """The connection is over: release the snapshots the handler holds,
        and drop its references to itself (its dispatch tables of bound
        methods), so that nothing of the connection waits for the cycle
        collector (tests/model/test_connection_garbage.py)."""
        ...


def make_handler(engine: Engine, session: Session, first_byte: int, replies: Replies) -> Handler:
    """The handler of the protocol ``first_byte`` opens, over a :class:`Core`
    built here on the connection's session and replies: the handler is
    handed its core and never sees the session (a frontend translates, the
    core rules; tests/protocol/test_layout.py)."""
    core = Core(engine, session, replies.gate)
    if first_byte == BINARY_MAGIC:
        return BinaryHandler(core, replies)
    return TextHandler(core, replies)


class Connection:
    """Serves one socket until EOF, ``quit``, an unrecoverable error or shutdown."""

    def __init__(self, engine: Engine, sock: Transport) -> None:
        self.engine = engine
        self.sock = sock
        self.session = Session(engine)
        self.handler: Handler | None = None
        settings = engine.settings
        self._batch_idle = settings.batch_idle_ms / 1000.0
        self._idle_timeout = settings.idle_timeout or float("inf")
        self._max_lag = settings.max_commit_lag_ms / 1000.0
        #: Every reply of this connection, and every send of them.
        self.replies = Replies(engine, self.session, sock)
        self._failed = False  # an internal error ended the connection
        self.session.on_failure = self._wake
        #: Cancels this connection (shutdown); set by whoever serves it.
        self.scope = trio.CancelScope()
        #: Shutdown: finish what was received, then close at a command boundary.
        self.stopping = False
        self._waiting_for_input = False  # in a receive: nothing received is unanswered

    def stop_when_idle(self) -> None:
        """Shutdown has begun: answer every command already received, then close.

        A connection waiting for input at a command boundary has nothing in
        flight and closes now (its open run, if any, is committed, as on a
        clean disconnect); one in the middle of a burst or of a command
        closes once that is done.
        """
        self.stopping = True
        if self._waiting_for_input and self._at_boundary():
            self.scope.cancel()

    def _at_boundary(self) -> bool:
        return self.handler is None or self.handler.parser.at_boundary

    def _wake(self) -> None:
        """Acknowledged writes were lost: stop reading, so that a connection
        waiting for input wakes up (its receive sees the end of input) and
        reports the loss; one busy elsewhere reports it after its burst."""
        try:
            self.sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    async def serve(self) -> None:
        with self.scope:
            try:
                await self._serve()
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.debug("connection dropped: %s", exc)
            except Exception:
                # A bug must cost one connection, never the server: its open run
                # is discarded (it may be torn), everyone else goes on.
                log.exception("internal error; closing this connection")
                self._failed = True
            finally:
                if self.handler is not None:
                    self.handler.close()
                self._end_session()
                # Replies never sent, if any, are freed now (under churn such
                # buffers once held hundreds of MiB, docs/soak.md).
                self.replies.close()
                self.sock.close()
                # Nothing of a closed connection may wait for the cycle
                # collector, whose full collections are rare in the server
                # (stig/tools/cli.py): the session drops its wake-up (this
                # connection's bound method) and its budget account's link
                # back; the handler's dispatch tables and the gate's settle
                # went with their close() above
                # (tests/model/test_connection_garbage.py).
                self.session.close()

    def _end_session(self) -> None:
        """Commit an open run left at a command boundary; discard a torn one."""
        handler = self.handler
        if handler is not None and handler.parser.at_boundary and not self._failed:
            self.session.close_run()
            self.session.submit()
        else:
            self.session.discard_run()

    async def _receive(self) -> bytes | None:
        """The next chunk of input; None when the idle timeout expired or
        shutdown has begun (at a command boundary: nothing is unanswered)."""
        if self.stopping and self._at_boundary():
            return None
        self._waiting_for_input = True
        try:
            return await self._receive_now()
        finally:
            self._waiting_for_input = False

    async def _receive_now(self) -> bytes | None:
        session = self.session
        handler = self.handler
        # A pause in the middle of a command closes no write run: that command
        # belongs to the run, which ends with it (or is discarded if the client
        # drops mid-command).
        idle_closes_run = session.run_open and self._at_boundary()
        if idle_closes_run or (handler is not None and handler.read_run_open):
            with trio.move_on_after(self._batch_idle):
                return await self.sock.recv(RECEIVE_SIZE)
            if idle_closes_run:
                session.close_run()  # the client paused: its quiet run is complete
                session.submit()
            if handler is not None:
                handler.end_read_run()
        if self._idle_timeout == float("inf"):
            return await self.sock.recv(RECEIVE_SIZE)  # no cancel scope: the hot path
        with trio.move_on_after(self._idle_timeout):
            return await self.sock.recv(RECEIVE_SIZE)
        return None

    def _brake_needed(self) -> bool:
        """Whether this session must stop reading now (the caller knows it has
        uncommitted writes): while the write budget is exceeded, any of them
        — an open run too: memory is the bound; while the promoter would lag
        more than ``--max-commit-lag-ms`` (:meth:`Promoter.expected_lag`),
        only closed runs, which its commits will end.

        Never an open run for the lag: no commit can end it before its client
        closes it, so a connection paused for it (as it once was) waited
        until the promoter caught up or went idle, which under steady writers
        never happens — transaction writers stopped mid-run went unanswered
        for minutes, and clients that had left held their connections
        (docs/soak.md, finding 4)."""
        engine = self.engine
        if engine.budget.over:
            return True
        return self.session.closed_bytes > 0 and engine.promoter.expected_lag() > self._max_lag

    async def _brake(self) -> None:
        """Wait while :meth:`_brake_needed` holds, this session's writes are not
        all committed and none has failed.  Waits only for the promoter's
        progress, so it always ends: for the lag, at the commit of this
        session's closed runs at the latest (docs/pov.md, "Bounds")."""
        session = self.session
        promoter = self.engine.promoter
        budget = self.engine.budget
        if not self._brake_needed():
            return
        stats = self.engine.promoter_stats
        stats.paused_connections += 1
        stats.pauses += 1
        try:
            while session.pending_bytes > 0 and session.failure is None and self._brake_needed():
                if not budget.over or not budget.committing_elsewhere():
                    if not promoter.busy:
                        break
                    await promoter.wait_progress()
                    continue
                # --workers N: the budget is over and another worker's
                # closed runs are committing; their commits free it, but
                # that worker cannot wake this one: look again at its next
                # commit here or after BRAKE_POLL_SECONDS x this worker's
                # paused connections (one look per interval per worker, as
                # the waits for room poll).  Without this wait a worker
                # whose promoter was idle let its open runs grow on top of
                # the other's queued commits (the uncommitted peak reached
                # 2.8 x the budget).
                with trio.move_on_after(BRAKE_POLL_SECONDS * stats.paused_connections):
                    if promoter.busy:
                        await promoter.wait_progress()
                    else:
                        await trio.sleep_forever()
        finally:
            stats.paused_connections -= 1

    async def _replicate(self, request: Replicate) -> None:
        """The client is a follower (``stig_replicate``): the connection is its
        replication stream from now on (stig/replication/sender.py); shutdown
        ends it at once, as an idle connection."""
        from stig.replication.sender import serve_follower

        self._waiting_for_input = True  # nothing it sends awaits an answer
        if self.stopping:
            return
        try:
            peer = str(self.sock.getpeername())  # type: ignore[attr-defined]
        except (AttributeError, OSError):
            peer = "a follower"
        await serve_follower(self.engine, self.sock, request, peer)

    async def _report_loss(self, handler: Handler) -> None:
        """Writes answered from the POV were lost: say so instead of anything
        pending — as acknowledged writes lost only if a reply was sent after
        them (:meth:`Session.loss_message`) — and end (the open run is
        discarded: nothing after the loss is applied)."""
        self._failed = True
        await self.replies.send_loss(handler.fatal_error)

    async def _serve(self) -> None:
        stats = self.engine.stats
        session = self.session
        data = await self._receive()
        if not data:
            return
        replies = self.replies
        handler = self.handler = make_handler(self.engine, session, data[0], replies)
        reply_limit = replies.limit
        out = replies.out
        gate = replies.gate
        release = replies.release
        write = replies.write
        parser = handler.parser
        handle = handler.handle
        sock = self.sock
        plain_receive = self._idle_timeout == float("inf")
        # After replies sent at once: the scheduler pass first (PlainSocket).
        receive_next = getattr(sock, "recv_after_pass", sock.recv)
        checkpoint = trio.lowlevel.checkpoint
        promoter = self.engine.promoter
        # Counted across bursts, not per burst: a client that keeps small
        # bursts coming still meets a cancellable checkpoint (and the submit
        # and brake below) every YIELD_EVERY commands.
        budget = YIELD_EVERY
        while True:
            stats.bytes_read += len(data)
            parser.feed(data)
            mark = budget  # mark - budget: commands since this burst began (or the last yield)
            try:
                while not handler.closing:
                    budget -= 1
                    if parser.batched:  # the last call handled a run of commands
                        budget -= parser.batched
                        parser.batched = 0
                    if promoter.gil_wanted is not None:
                        promoter.lend_gil()  # the commit thread applies its group now
                    if (
                        budget <= 0 or (promoter.finish_due and mark - budget > FINISH_AFTER)
                    ) and not handler.read_run_open:
                        # A group commit finished during a long burst: yield
                        # at once, so that its completion (and the next
                        # group's dispatch) runs now, not after every
                        # connection's next 128 commands.
                        # Not inside a run of quiet gets: received with its
                        # end, it is read without awaiting anything, so one
                        # snapshot that --max-snapshot-age-ms never splits
                        # (docs/pov.md, rule 3), as a run of mg is read
                        # whole by its handler; the yield comes once it ends.
                        budget = mark = YIELD_EVERY
                        if not gate.holding:
                            # What is closed goes to the promoter now.  Not
                            # while replies wait for their commits: those runs
                            # go when the burst's replies are sent, so that
                            # all of the burst shares one group commit.
                            session.submit()
                        if session.pending_bytes and self._brake_needed():
                            # Brake inside a long burst too (a run stays open:
                            # reading pauses, nothing is split).
                            if out or gate.holding:
                                await replies.send()
                            await self._brake()
                            if session.failure is not None:
                                break  # reported just below
                        else:
                            await checkpoint()  # let the promoter's callbacks run
                    elif mark - budget >= READ_RUN_STRETCH and handler.read_run_open:
                        # A run of quiet gets longer than READ_RUN_STRETCH
                        # in one receive (a client that never sends its
                        # end): one bare scheduler pass, so that it cannot
                        # hold every other connection back for a whole
                        # receive (~10,000 gets).  No submit, no brake: a
                        # read adds nothing to commit.  Its snapshot is
                        # split here only if it is already older than
                        # --max-snapshot-age-ms (docs/pov.md, rule 3).
                        budget = mark = YIELD_EVERY
                        await checkpoint()
                    if len(out) + gate.cost >= reply_limit:
                        # Send as replies grow: bounded memory, replies held
                        # behind their commits included.  Gets read ahead
                        # stop at this bound too, and the parser hands the
                        # rest out next (TextHandler._read_run).
                        await replies.send()
                        if session.failure is not None:
                            break  # reported just below
                    event = parser.next_event()
                    if event is NEED_DATA:
                        break
                    pending = handle(event)
                    if pending is not None:
                        await pending
                        if session.failure is not None:
                            break  # reported just below (a handler stopped for it)
                    if session.wants_room and not await session.make_room(replies.drain):
                        break  # acknowledged writes were lost: reported just below
            except ProtocolError as exc:
                handler.protocol_error(exc)
                handler.closing = True
            except RunTooLarge as exc:  # or waited for room too long
                handler.fatal_error(exc.reason)
                handler.closing = True
            pending = release()  # the burst's replies may go
            if pending is not None:
                await pending
            if session.failure is not None:
                await self._report_loss(handler)
                return
            if out:
                pending = write()  # None: sent at once (a plain socket)
                if pending is not None:
                    await pending
            if handler.closing:
                takeover = handler.takeover
                if takeover is not None:
                    await self._replicate(takeover)
                return
            if session.pending_bytes and self._brake_needed():  # no coroutine otherwise
                await self._brake()
                if session.failure is not None:
                    await self._report_loss(handler)
                    return
            if self.stopping and parser.at_boundary:
                return  # shutdown: everything received is answered
            if plain_receive and not session.run_open and not handler.read_run_open:
                self._waiting_for_input = True
                data = await receive_next(RECEIVE_SIZE)  # the hot path: no cancel scope
                self._waiting_for_input = False
            else:
                data = await self._receive()
            if not data:
                if session.failure is not None:  # woken by _wake: say why
                    await self._report_loss(handler)
                return
