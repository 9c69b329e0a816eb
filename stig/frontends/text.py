"""Executes text-protocol commands on a session and writes their replies.

The bridge between :mod:`stig_protocol.text` (bytes ⇄ commands) and the command
core (:class:`stig.core.command_core.Core`, the rules over the session's POV).
One handler per connection; replies are appended to :attr:`TextHandler.out`
(the connection's :class:`~stig.core.replies.Replies`) and sent by the connection once per
burst.  Meta commands arriving on the same connection are passed to the meta
handler.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence

import lmdb

from stig.core import listing
from stig.core.command_core import NON_NUMERIC as NON_NUMERIC_MESSAGE
from stig.core.command_core import Committed, Core, Refusal, StatsAnswer, StatsKind
from stig.core.read_view import ReadView
from stig.core.replies import Replies
from stig.engine.certificates import TlsError
from stig.engine.engine import PROTOCOL_VERSION
from stig.engine.errors import CommitFailed, PromoteRefused
from stig.frontends.meta import HD_LINE, MetaHandler
from stig.frontends.streamed_get import StreamedGet
from stig.storage.ops import Add, Cas, Op, Outcome, Replace
from stig.storage.replog import ImplausibleEpoch, not_later_words
from stig_protocol import listing as L
from stig_protocol import text_replies as R
from stig_protocol.commands import (
    Arithmetic,
    Delete,
    Fence,
    FlushAll,
    LruCrawler,
    Promote,
    Quit,
    RefreshCerts,
    Replicate,
    Retrieve,
    RetrieveEnd,
    RetrieveKeys,
    RetrieveStart,
    Stats,
    Store,
    StoreMode,
    Touch,
    Verbosity,
    Version,
)
from stig_protocol.errors import InvalidCommand, ProtocolError
from stig_protocol.meta_commands import MetaArithmetic, MetaDelete, MetaGet, MetaSet
from stig_protocol.text import QuietError, TextParser

#: Each refusal as a text reply.
REFUSALS = {refusal: R.client_error(refusal.value) for refusal in Refusal}
EXPTIME_REJECTED = REFUSALS[Refusal.TTL]
NON_NUMERIC = R.client_error(NON_NUMERIC_MESSAGE)

UNAUTHENTICATED = R.client_error("unauthenticated")
AUTH_FAILED = R.client_error("authentication failure")
AUTH_BAD_FORMAT = R.client_error("bad authentication token format")
DETAIL_USAGE = R.client_error("usage: stats detail on|off|dump")
TLS_OFF = b"Error TLS not enabled\r\n"  #: memcached's words, as they are
#: Meta writes that may be quiet (``q``): their failures come in their turn.
_QUIET_WRITES = frozenset({MetaSet, MetaDelete, MetaArithmetic})
#: _answer_now's "not answered here" (None means "answered, nothing to await").
_NOT_NOW = object()

_STORE_REPLIES = {
    Outcome.STORED: R.STORED,
    Outcome.NOT_STORED: R.NOT_STORED,
    Outcome.EXISTS: R.EXISTS,
    Outcome.NOT_FOUND: R.NOT_FOUND,
}
_CONDITIONAL: dict[StoreMode, type[Add | Replace]] = {
    StoreMode.ADD: Add,
    StoreMode.REPLACE: Replace,
}


class TextHandler:
    """Runs each text command against the session; see the module docstring."""

    def __init__(self, core: Core, replies: Replies) -> None:
        """``core`` runs the commands over the connection's session and
        ``replies`` are the connection's, whose gate the core holds
        (:func:`stig.server.connection.make_handler` builds both)."""
        self.engine = engine = core.engine
        #: False (``Settings.fast_paths``): every command takes the general
        #: path (:meth:`_handle`, the general read), the meta handler its own,
        #: and the parser its own (``TextParser(fast=False)``): the
        #: differential test (tests/model/test_fast_paths.py) checks that both
        #: give the same replies, stats and committed state.
        self.fast = fast = engine.settings.fast_paths
        self.parser = TextParser(engine.settings.limits, fast=fast)
        #: The connection's replies: ``drain`` sends them from inside a
        #: command, so a long read or key listing goes out as it grows.
        self.replies = replies
        self.out = self.replies.out  # what every command appends its reply to
        self.closing = False
        #: A follower's ``stig_replicate``: once the replies so far are sent,
        #: the connection becomes its replication stream (stig/replication/).
        self.takeover: Replicate | None = None
        #: Replies held behind their commits (add/replace/cas, meta writes
        #: that return a cas): the connection releases them before it sends.
        self.gate = self.replies.gate
        self.core = core
        # Replies are sent as they grow: gets read ahead stop once this much
        # is waiting and go back to the parser, handled after a send (_read_run).
        self._reply_limit = self.replies.limit
        self.auth = engine.auth
        self.authenticated = self.auth is None
        self._refusal = engine.promoter.refusal  # writes refused: a full disk
        self._dispatch: dict[type, Callable[[object], Awaitable[object | None] | None]] = {
            Retrieve: self._retrieve,  # type: ignore[dict-item]
            RetrieveStart: self._streamed_start,  # type: ignore[dict-item]
            Store: self._store,  # type: ignore[dict-item]
            Delete: self._delete,  # type: ignore[dict-item]
            Arithmetic: self._arithmetic,  # type: ignore[dict-item]
            Touch: self._touch,  # type: ignore[dict-item]
            FlushAll: self._flush_all,  # type: ignore[dict-item]
            Version: self._version,  # type: ignore[dict-item]
            Verbosity: self._verbosity,  # type: ignore[dict-item]
            Quit: self._quit,  # type: ignore[dict-item]
            Stats: self._stats,  # type: ignore[dict-item]
            RefreshCerts: self._refresh_certs,  # type: ignore[dict-item]
            Replicate: self._replicate,  # type: ignore[dict-item]
            Promote: self._promote,  # type: ignore[dict-item]
            Fence: self._fence,  # type: ignore[dict-item]
            LruCrawler: self._lru_crawler,  # type: ignore[dict-item]
            InvalidCommand: self._invalid,  # type: ignore[dict-item]
            QuietError: self._quiet_error,  # type: ignore[dict-item]
        }
        self.meta = MetaHandler(self.core, self.replies, self.parser.next_event)
        #: The read of a get line too long to parse whole, as its keys arrive.
        self.streamed = StreamedGet(self.core, self.replies, EXPTIME_REJECTED)
        self._dispatch[RetrieveKeys] = self.streamed.keys  # type: ignore[assignment]
        self._dispatch[RetrieveEnd] = self.streamed.end  # type: ignore[assignment]
        # Each meta command type straight to its handler (which returns None
        # when done at once, or an awaitable), saving a coroutine per command.
        self._dispatch.update(self.meta.handlers)

    def handle(self, event: object) -> Awaitable[None] | None:
        """Execute one parsed event: None when it was answered at once (a
        plain get, a plain ``set`` or ``ms`` and the plain sets pipelined
        behind it: no coroutine), else the awaitable that finishes it.

        Any command but a get runs its handler here directly: a handler
        does what it can at once and returns an awaitable only when it must
        wait (:meth:`_finish` then completes it as :meth:`_handle` would).
        What follows it is exactly :meth:`_handle`'s: the verdicts owed to
        quiet meta writes whose run it closed are written before its reply
        (by :meth:`_finish`), a failed commit is answered ``SERVER_ERROR``.

        Any command but an ``mg`` ends a run of mg held open from an earlier
        input (:attr:`MetaHandler.run`).
        """
        if self.meta.run is not None and type(event) is not MetaGet:
            self.meta.end_read_run()
        if not self.fast:
            return self._handle(event)
        if type(event) is Retrieve:
            result = self._answer_now(event)
            if result is _NOT_NOW:
                return self._handle(event)
            return result  # type: ignore[return-value]
        if not self.authenticated:
            return self._handle(event)
        pending = self._start(event)
        if pending is None and (type(event) is Store or type(event) is MetaSet):
            return self._set_run()  # the plain sets right behind it, if any
        return pending

    def _start(self, event: object) -> Awaitable[None] | None:
        """Run ``event``'s handler: None when it is done, else the awaitable
        (:meth:`_finish`) that completes it as :meth:`_handle` would."""
        if self._refusal.message is not None and self._refused_quietly(event):
            return None
        out = self.out
        mark = len(out)
        try:
            pending = self._dispatch[type(event)](event)
        except CommitFailed as exc:
            out += self._failed(event, exc)
            return None
        if pending is None and not self.core.verdicts_due:
            return None
        return self._finish(pending, mark)

    async def _finish(self, pending: Awaitable[object | None] | None, mark: int) -> None:
        """The rest of :meth:`_handle` for a command :meth:`handle` began at
        ``out[mark]``: await what it must wait for, write the verdicts its
        run owes before its reply, then handle the event it read ahead."""
        try:
            next_event = None if pending is None else await pending
            if self.core.verdicts_due:
                await self.meta.report_verdicts(mark)
        except CommitFailed as exc:
            next_event = None
            self.out += R.server_error(str(exc))
        if next_event is not None:
            await self._handle(next_event)

    async def _handle(self, event: object) -> None:
        """Execute one parsed event; a failed commit is answered SERVER_ERROR.

        A run of meta ``mg`` reads the commands behind it ahead and hands back
        the first one it did not handle, which is handled next.  After each
        command, the verdicts owed to quiet meta writes whose run has closed
        are written before its reply.
        """
        if not self.authenticated:
            self._login(event)
            return
        next_event: object | None = event
        dispatch = self._dispatch
        meta = self.meta
        core = self.core
        while next_event is not None:
            if self._refusal.message is not None and self._refused_quietly(next_event):
                return
            mark = len(self.out)
            try:
                event = next_event
                result = dispatch[type(event)](event)
                next_event = None if result is None else await result
                if core.verdicts_due:
                    await meta.report_verdicts(mark)
            except CommitFailed as exc:
                next_event = None
                self.out += self._failed(event, exc)

    def _failed(self, event: object, error: CommitFailed) -> bytes:
        """The reply of a command whose write failed (writes refused, a
        commit lost): a quiet meta write's in its turn, behind the verdicts
        owed to the quiet writes before it (:meth:`Core.quiet_reply`)."""
        reply = R.server_error(str(error))
        if type(event) in _QUIET_WRITES and event.quiet:  # type: ignore[attr-defined]
            return self.core.quiet_reply(reply)
        return reply

    def _answer_now(self, event: object) -> object:
        """Answer a plain get or gets, and the plain gets right behind it, at
        once when nothing needs waiting for (None, or the awaitable that sends
        the rest of a big multi-get); ``_NOT_NOW`` (nothing done) otherwise.

        The same answer :meth:`_handle` would give: no run is open (so none
        closes here, and no quiet failure comes due), no conditional write
        awaits its verdict, no cas is asked of a pending write.
        """
        if type(event) is not Retrieve or event.touch or not self.authenticated:
            return _NOT_NOW
        if not self.core.answers_now(event.keys, event.with_cas):
            return _NOT_NOW
        return self._read_run([event], event.with_cas)

    def _login(self, event: object) -> None:
        """memcached's text auth (``-Y``): ``set <any> <flags> <exptime> <bytes>``
        with ``user password`` as data logs in; anything else is refused."""
        assert self.auth is not None
        if isinstance(event, RetrieveKeys | RetrieveEnd):
            return  # a long get line: refused once, at its head
        if isinstance(event, Store) and event.mode is StoreMode.SET:
            verdict = self.auth.check_text(event.value)
            if verdict is None:
                self.out += AUTH_BAD_FORMAT
            elif verdict:
                self.authenticated = True
                self.out += R.STORED
            else:
                self.out += AUTH_FAILED
            return
        self.out += UNAUTHENTICATED
        if isinstance(event, InvalidCommand) and event.close:
            self.closing = True

    def _refused_quietly(self, event: object) -> bool:
        """While writes are refused (stig/engine/refusal.py): a write sent
        ``noreply`` is refused without a word, as memcached's errors under
        noreply are (a reply would put the client's stream out of step);
        the next barrier reports it.  A write that expects a reply is
        refused by the session (``SERVER_ERROR``, :class:`WritesRefused`)."""
        kind = type(event)
        if (kind is Store or kind is Arithmetic) and event.noreply:  # type: ignore[attr-defined]
            self.core.refused_quietly()
            return True
        return False

    def _reply(self, noreply: bool, data: bytes) -> None:
        """Answer a command that wrote nothing (a refusal, ``verbosity``):
        a reply closes the open run, noreply keeps it open.  (A write closes
        its own run: ``answered`` to the core.)"""
        if not noreply:
            self.core.close_run()
            self.out += data

    # -- retrieval -----------------------------------------------------------

    async def _retrieve(self, command: Retrieve) -> None:
        core = self.core
        # Every read closes the open run: close it first, so that the verdicts
        # its quiet meta writes are owed come before this reply, which may be
        # sent in parts (so never inserted at its start afterwards).
        core.close_run()
        if core.verdicts_due:
            await self.meta.report_verdicts(len(self.out))
        if not command.touch and not core.prefixes.enabled and self.fast:
            # Wait for what the answer depends on (if anything), then the
            # read from one snapshot that the fast path makes.
            await core.prepare_read(command.keys, command.with_cas)
            rest = self._read_run([command], command.with_cas)
            if rest is not None:
                await rest
            return
        if command.touch and self.core.ttl_refused(command.exptime):
            self.core.close_run()
            self.out += EXPTIME_REJECTED
            return
        await self._read_streamed(command)

    async def _streamed_start(self, head: RetrieveStart) -> None:
        """A get line too long to parse whole begins: its run closes and the
        verdicts that run owes come first, then its snapshot (:class:`StreamedGet`)."""
        self.core.close_run()
        if self.core.verdicts_due:
            await self.meta.report_verdicts(len(self.out))
        await self.streamed.start(head)

    async def _read_streamed(self, command: Retrieve) -> None:
        """The general read (``gat``/``gats``, any get while ``stats detail
        on``): one snapshot held while the reply is sent as it grows, so a few
        bytes of request never hold more than ``--max-reply-bytes`` plus one
        item of reply (docs/pov.md, "Bounds")."""
        core = self.core
        keys = command.keys
        with_cas = command.with_cas
        touch = command.touch
        out = self.out
        limit = self._reply_limit
        drain = self.replies.drain
        with await core.snapshot(keys, with_cas) as snapshot:
            try:
                for key in keys:
                    if len(out) >= limit:
                        await drain()
                    item = snapshot.item(key)
                    found = item is not None
                    core.count_read(key, found, touch=touch)
                    if item is not None:
                        out += R.value(key, item.flags, item.value, item.cas if with_cas else None)
                        del item
                    if touch:
                        core.touched(key, found, command.exptime, snapshot)
                out += R.END
            except lmdb.Error:  # ended under us: the map grew, or the client did not read
                out += R.server_error(snapshot.interruption)
            except CommitFailed as exc:  # the drain found this session's writes lost
                out += R.server_error(str(exc))

    def _read_run(self, commands: Sequence[Retrieve], with_cas: bool) -> Awaitable[None] | None:
        """Answer a get or gets, and the plain gets pipelined right behind it,
        from one LMDB snapshot with this session's writes laid over it.

        The same answers as :meth:`Core.read`, whose waits none of them needs
        (no touch, no conditional write of this session awaiting its verdict,
        no cas asked of a pending write).  Nothing here awaits, so the read
        transaction never outlives this call.

        The caller checked ``commands``; each get read ahead behind them (from
        :meth:`TextParser.plain_gets`, or — the commonest burst, one-key gets
        while no write is in flight anywhere — as bare keys from
        :meth:`TextParser.single_get_keys`, answered by
        :meth:`stig.storage.snapshot.Snapshot.render_each`) is checked here before it is answered:
        it must see every acknowledged write (no write of another session in
        flight to its keys, :meth:`Core.read_ready`), and fewer than
        ``--max-reply-bytes`` may be waiting to be sent.  The first that fails
        either goes back to the parser (:meth:`TextParser.give_back`) with the
        gets behind it: the connection sends what is written, then hands it
        to :meth:`handle` again — which answers it, or waits for the write in
        flight the general way.

        A get of many keys whose reply passes ``--max-reply-bytes`` is not
        built whole: the snapshot is held (:meth:`stig.storage.snapshot.Snapshot.hold`)
        and the awaitable returned (:meth:`_rest_of_get`) writes and sends
        the rest of that reply from it, so a few bytes of request never hold
        more than the bound plus one item of reply.
        """
        out = self.out
        parser = self.parser
        limit = self._reply_limit
        # No write in flight anywhere (the common case): no get read ahead
        # needs a check of its own.  Nothing changes that during this call;
        # asked once, when the first get is read ahead.
        all_clear: bool | None = None
        read_ready = self.core.read_ready
        end = R.END
        count = hits = 0
        ahead = False  # whether ``commands`` were read ahead (and need the checks)
        snapshot = self.core.view()
        parts = snapshot.parts
        render = snapshot.render
        line = R.VALUE_LINE_CAS if with_cas else R.VALUE_LINE
        one_value = R.ONE_VALUE
        handed_over = False
        try:
            while True:
                for index, command in enumerate(commands):
                    keys = command.keys
                    if ahead and (len(out) >= limit or not (all_clear or read_ready(keys))):
                        parser.give_back(commands[index:])
                        return None
                    if len(keys) == 1 and not with_cas:
                        # The commonest line, one key: its reply in one piece.
                        key = keys[0]
                        count += 1
                        found = parts(key)
                        if found is None:
                            out += end
                        else:
                            hits += 1
                            flags, _cas, value = found
                            out += b"VALUE %b %d %d\r\n%b\r\nEND\r\n" % (  # type: ignore[str-format]  # %b takes any buffer
                                key,
                                flags,
                                len(value),
                                value,
                            )
                        continue
                    count += len(keys)
                    read, answered = render(keys, 0, line, with_cas, out, limit)
                    hits += answered
                    if read < len(keys):
                        # A big reply: the rest from this snapshot, sent as it grows.
                        parser.give_back(commands[index + 1 :])
                        rest = keys[read:]
                        snapshot.hold(rest)
                        handed_over = True
                        return self._rest_of_get(snapshot, rest, with_cas)
                    out += end
                if with_cas or parser.idle:
                    break
                if all_clear is None:
                    all_clear = read_ready(None)
                if all_clear:
                    # The commonest burst, one-key gets: answered as keys, no event each.
                    singles = parser.single_get_keys()
                    if singles:
                        read, answered = snapshot.render_each(singles, one_value, end, out, limit)
                        count += read
                        hits += answered
                        if read < len(singles):
                            parser.give_back_keys(singles[read:])
                            return None
                        commands = ()
                        continue
                commands = parser.plain_gets()
                if not commands:
                    break
                ahead = True
        finally:
            if not handed_over:
                snapshot.close()
            self.core.count_gets(count, hits)
        return None

    async def _rest_of_get(self, snapshot: ReadView, keys: Sequence[bytes], with_cas: bool) -> None:
        """The rest of a big multi-get's reply (see :meth:`_read_run`): each
        key from the held ``snapshot``, sending whenever ``--max-reply-bytes``
        wait.

        Ends the snapshot.  If :meth:`stig.storage.store.Store.grow` ended it first,
        the reply ends with ``SERVER_ERROR read interrupted …`` instead of
        ``END``.  (Hits and misses were counted when the read began, as
        misses; the hits found here are counted here.)
        """
        out = self.out
        limit = self._reply_limit
        drain = self.replies.drain
        render = snapshot.render
        line = R.VALUE_LINE_CAS if with_cas else R.VALUE_LINE
        hits = 0
        try:
            position = 0
            while position < len(keys):
                if len(out) >= limit:
                    await drain()
                position, found = render(keys, position, line, with_cas, out, limit)
                hits += found
            out += R.END
        except lmdb.Error:  # ended under us: the map grew, or the client did not read
            out += R.server_error(snapshot.interruption)
        except CommitFailed as exc:  # the drain found this session's writes lost
            out += R.server_error(str(exc))
        finally:
            snapshot.close()
            self.core.count_gets(0, hits)  # counted as misses when the rest was handed over

    # -- writes ----------------------------------------------------------------

    def _set_run(self) -> Awaitable[None] | None:
        """The plain ``set`` and ``ms`` commands pipelined right behind a
        plain set (:meth:`TextParser.plain_sets`), recorded in one loop per
        stretch of alike ones (:meth:`Core.set_many`), with one reply
        append: the replies, stats and promotions one :meth:`handle` per
        command would give.

        A stretch is answered sets (each closes its run: ``STORED``, ``HD``)
        or quiet ones (``noreply``, ``q``: they stay in the open run), all
        with exptime 0.  The first command that is not so — an exptime, a
        loud set whose run owes quiet writes their verdicts (they come before
        its reply), a set the write budget refuses — and every command after
        it are handled one by one, as :meth:`handle` would (the awaitable
        returned).  With ``stats detail on`` all are, to count each key.
        None of them while the set before them must wait for room first (the
        connection loop waits, then handles them: a waiting connection keeps
        one write past the budget, not two).  The replies stop at
        ``--max-reply-bytes`` as the connection loop's do: a stretch ends
        where the loop would send, and the rest go one by one (which send
        there first), so that the runs closed so far are handed over apart.
        """
        parser = self.parser
        if parser.idle:
            return None  # nothing behind it (a set alone in its burst: d=1)
        out = self.out
        gate = self.gate
        limit = self._reply_limit
        if self.core.wants_room or len(out) + gate.cost >= limit:
            return None  # the loop sends first (or waits), then handles them
        events = parser.plain_sets()
        if not events:
            return None
        if self.core.prefixes.enabled:
            return self._one_by_one(events)
        core = self.core
        count = len(events)
        done = 0
        while done < count:
            first = events[done]
            loud = not (first.noreply if type(first) is Store else first.quiet)  # type: ignore[union-attr]
            # The loop would send before the next command once this reaches
            # the bound (quiet sets add no reply: only a loud stretch grows it).
            size = len(out) + gate.cost
            if size >= limit:
                break
            items: list[tuple[bytes, bytes, int]] = []
            replies: list[bytes] = []
            for event in events[done:] if done else events:
                if size >= limit:
                    break
                if type(event) is Store:
                    if event.exptime or event.noreply is loud:
                        break
                    items.append((event.key, event.value, event.flags))
                    reply = R.STORED
                else:
                    if event.ttl or event.quiet is loud:  # type: ignore[union-attr]
                        break
                    items.append((event.key, event.value, event.client_flags))  # type: ignore[union-attr]
                    reply = HD_LINE
                replies.append(reply)
                if loud:
                    size += len(reply)
            if not items:
                break
            recorded = core.set_many(items, loud)
            if loud and recorded:
                out += b"".join(replies[:recorded])
            done += recorded
            if recorded < len(items):
                break
        if done < count:
            return self._one_by_one(events[done:])
        return None

    async def _one_by_one(self, events: Sequence[object]) -> None:
        """Handle ``events`` in order, each as :meth:`handle` and the
        connection loop would: the replies so far are sent once they reach
        ``--max-reply-bytes`` (handing over the runs closed so far), and a
        write whose open run passed the write budget waits for room before
        the next (:meth:`Session.wait_for_room`)."""
        core = self.core
        out = self.out
        gate = self.gate
        limit = self._reply_limit
        for event in events:
            if len(out) + gate.cost >= limit and not await self.replies.sent_at_bound():
                return  # acknowledged writes were lost: the loop reports it
            pending = self._start(event)
            if pending is not None:
                await pending
            if core.wants_room and not await core.make_room(self.replies.drain):
                return  # acknowledged writes were lost: the loop reports it

    def _store(self, command: Store) -> Awaitable[None] | None:
        """A storage command: done at once (None) unless it must wait — an
        append or prepend whose POV answer waits for a verdict, or an
        ``add``/``replace``/``cas`` whose run owes quiet writes their verdicts.

        ``add``/``replace``/``cas`` answer after their commit: the reply is
        held (stig/core/reply_gate.py) and the burst goes on, so that the
        conditional writes of one burst share one group commit."""
        core = self.core
        mode = command.mode
        if mode is StoreMode.SET and not command.exptime:  # the common one
            core.count_prefix_set(command.key)
            core.set(command.key, command.value, command.flags, answered=not command.noreply)
            if not command.noreply:
                self.out += R.STORED
            return None
        if mode is StoreMode.APPEND or mode is StoreMode.PREPEND:
            return self._concat(command)
        core.count_prefix_set(command.key)
        if core.store_refused(command.exptime):
            self._reply(command.noreply, EXPTIME_REJECTED)
            return None
        if mode is StoreMode.SET:
            loud = not command.noreply
            core.set(command.key, command.value, command.flags, command.exptime, loud)
            if loud:
                self.out += R.STORED
            return None
        if mode is StoreMode.CAS:
            op: Op = Cas(command.key, command.value, command.flags, command.cas_unique)
        else:
            op = _CONDITIONAL[mode](command.key, command.value, command.flags)
        return core.conditional_reply(
            op,
            command.key,
            len(command.value),
            command.noreply,
            _store_answer,
            exptime=command.exptime,
        )

    async def _concat(self, command: Store) -> None:
        core = self.core
        core.count_prefix_set(command.key)
        # memcached ignores their exptime: the item keeps its own.
        prepend = command.mode is StoreMode.PREPEND
        loud = not command.noreply
        stored = await core.concat(
            command.key, command.value, prepend, quiet=command.noreply, answered=loud
        )
        if loud:
            self.out += R.STORED if stored else R.NOT_STORED

    async def _delete(self, command: Delete) -> None:
        self.core.count_prefix_delete(command.key)
        loud = not command.noreply
        found = await self.core.delete(command.key, quiet=command.noreply, answered=loud)
        if loud:
            self.out += R.DELETED if found else R.NOT_FOUND

    async def _arithmetic(self, command: Arithmetic) -> None:
        loud = not command.noreply
        result = await self.core.adjust(
            command.key, command.delta, command.incr, quiet=command.noreply, answered=loud
        )
        if not loud:
            return
        if result is Outcome.NOT_FOUND:
            self.out += R.NOT_FOUND
        elif result is Outcome.NON_NUMERIC:
            self.out += NON_NUMERIC
        else:
            self.out += R.number(result)  # type: ignore[arg-type]

    async def _touch(self, command: Touch) -> None:
        if self.core.ttl_refused(command.exptime):
            self._reply(command.noreply, EXPTIME_REJECTED)
            return
        loud = not command.noreply
        found = await self.core.touch(command.key, command.exptime, answered=loud)
        if loud:
            self.out += R.TOUCHED if found else R.NOT_FOUND

    async def _flush_all(self, command: FlushAll) -> None:
        refusal = self.core.flush_refusal(command.delay)
        if refusal is not None:
            self._reply(command.noreply, REFUSALS[refusal])
            return
        await self.core.flush_all(quiet=command.noreply)
        if not command.noreply:
            self.out += R.OK

    # -- everything else ---------------------------------------------------

    def _version(self, command: Version) -> None:
        self.core.close_run()
        self.out += R.version(PROTOCOL_VERSION)

    def _verbosity(self, command: Verbosity) -> None:
        self._reply(command.noreply, R.OK)

    def _quit(self, command: Quit) -> None:
        self.core.close_run()
        self.closing = True

    def _stats(self, command: Stats) -> Awaitable[None] | None:
        self.core.close_run()
        if command.group == b"cachedump":  # a key listing: text only
            request = L.parse_cachedump(command.args)
            if isinstance(request, bytes):
                self.out += request
            elif not request.lists_items:
                self.out += R.END
            else:
                return self._stream(self.core.cachedump(request.limit))
            return None
        if command.group == b"items":  # a key listing too: its own writes in it
            return self._stats_items(command)
        self.out += _stats_reply(self.core.stats_group(command.group, command.args))
        return None

    async def _stats_items(self, command: Stats) -> None:
        await self.core.prepare_listing()
        self.out += _stats_reply(self.core.stats_group(command.group, command.args))

    def _lru_crawler(self, command: LruCrawler) -> Awaitable[None] | None:
        self.core.close_run()
        request = L.parse_metadump(command.spec)
        if isinstance(request, bytes):
            self.out += request
        elif not request.lists_items:
            self.out += R.END
        else:
            return self._stream(self.core.metadump())
        return None

    async def _stream(self, chunks: Iterator[bytes]) -> None:
        """Write a listing chunk by chunk, sending each before making the next,
        so the reply never sits whole in memory (see :mod:`stig.core.listing`)."""
        out = self.out
        if self.core.verdicts_due:  # they come before this reply, which
            await self.meta.report_verdicts(len(out))  # leaves in parts
        # The snapshot is taken at the first chunk, once every write in
        # flight is committed (the run this command closed included).
        await self.core.prepare_listing()
        drain = self.replies.drain
        with contextlib.closing(chunks):  # type: ignore[type-var]
            for chunk in chunks:
                out += chunk
                if len(out) >= listing.CHUNK_BYTES:
                    await drain()

    def _replicate(self, command: Replicate) -> None:
        """A follower asks for the stream: the connection hands itself over
        (stig/server/connection.py) once this command's turn comes.

        A follower's ``ACK`` counts toward ``--min-replica-acks`` and its
        epoch may fence this server, so it needs what ``stig_promote``
        needs: a login, or ``--replication-open``; refused, the connection
        stays a client's."""
        self.core.close_run()
        refused = self._needs_login("stig_replicate")
        if refused is not None:
            self.out += refused
            return
        self.takeover = command
        self.closing = True

    def _needs_login(self, name: str) -> bytes | None:
        """The refusal of a replication command to a client that did not log
        in, unless ``--replication-open`` (a trusted network); None: allowed.
        Under ``--auth-file`` every client that reaches a command logged in."""
        engine = self.engine
        if engine.auth is None and not engine.settings.replication_open:
            return R.server_error(
                f"{name} needs a login: run this server with --auth-file "
                "(or --replication-open on a trusted network)"
            )
        return None

    def _replication_refused(self, name: str) -> bytes | None:
        """The refusal of ``stig_promote``/``stig_fence`` here, or None.

        Without ``--auth-file`` any client could take a follower over or
        fence a primary: allowed only with ``--replication-open`` (a trusted
        network).  With ``--workers`` the writer process stores either and
        every worker adopts it before the answer (docs/workers.md)."""
        return self._needs_login(name)

    async def _promote(self, command: Promote) -> None:
        """``stig_promote`` (``stig promote``): this follower becomes a primary
        of a new epoch; ``PROMOTED <epoch> <seq>`` (the epoch's first group)."""
        self.core.close_run()
        refused = self._replication_refused("stig_promote")
        if refused is not None:
            self.out += refused
            return
        try:
            state = await self.engine.promote()
        except PromoteRefused as exc:
            self.out += R.server_error(str(exc))
            return
        self.out += b"PROMOTED %d %d\r\n" % (state.epoch, state.seq)

    async def _fence(self, command: Fence) -> None:
        """``stig_fence <epoch>``: a primary of that epoch exists (a follower
        promoted from this server's followers tells it): ``FENCED <epoch>``
        when that epoch is later than this server's — a primary then
        refuses writes and followers — else ``SERVER_ERROR``."""
        self.core.close_run()
        refused = self._replication_refused("stig_fence")
        if refused is not None:
            self.out += refused
            return
        store = self.engine.store
        try:
            await self.engine.fence(command.epoch, "told by stig_fence")
        except (ImplausibleEpoch, PromoteRefused) as exc:
            self.out += R.server_error(str(exc))
            return
        if store.fence_state.epoch >= command.epoch > store.log_state.epoch:
            self.out += b"FENCED %d\r\n" % command.epoch
        else:
            self.out += R.server_error(not_later_words(command.epoch, store.log_state.epoch))

    def _refresh_certs(self, command: RefreshCerts) -> None:
        """Reload the TLS certificates: new connections get them (memcached)."""
        self.core.close_run()
        tls = self.engine.tls
        if tls is None:
            self.out += TLS_OFF
            return
        try:
            tls.refresh()
        except TlsError as exc:
            self.out += b"Error %b\r\n" % str(exc).encode(errors="replace")
            return
        self.out += R.OK

    def _invalid(self, event: InvalidCommand) -> None:
        if event.discard_key is not None:
            self.core.discard_too_large(event.discard_key)
        self.core.close_run()
        self.out += event.text_reply()
        if event.close:
            self.closing = True

    def _quiet_error(self, event: QuietError) -> None:
        """A noreply command failed: memcached stays silent, so do we."""
        if event.error.discard_key is not None:
            self.core.discard_too_large(event.error.discard_key)

    # -- what the connection loop asks of every handler ------------------------

    @property
    def read_run_open(self) -> bool:
        """A run of quiet mg holds its snapshot until its next input."""
        return self.meta.run is not None

    def end_read_run(self) -> None:
        self.meta.end_read_run()

    def close(self) -> None:
        """The connection is over: release the snapshots held for it, and
        empty the dispatch table, whose bound methods make this handler a
        reference cycle (freed only by a rare full collection otherwise)."""
        self.meta.close()
        self.streamed.close()
        self._dispatch.clear()

    def fatal_error(self, message: str) -> None:
        self.out += R.server_error(message)

    def protocol_error(self, error: ProtocolError) -> None:
        if error.hint is not None:
            self.out += error.hint.text_reply()


def _store_answer(committed: Committed) -> bytes:
    """The reply of an ``add``/``replace``/``cas`` once its commit decided it."""
    if committed.failure is not None:
        return R.server_error(committed.failure)
    return _STORE_REPLIES[committed.outcome]  # type: ignore[index]


def _stats_reply(answer: StatsAnswer) -> bytes:
    """A ``stats <group>`` answer (:meth:`Core.stats_group`) in text words."""
    kind = answer.kind
    if kind is StatsKind.LIST:
        return R.stats(answer.pairs)
    if kind is StatsKind.RESET:
        return R.RESET
    if kind is StatsKind.DETAIL_SWITCHED:
        return R.OK
    if kind is StatsKind.DETAIL_DUMP:
        return answer.dump
    if kind is StatsKind.DETAIL_USAGE:
        return DETAIL_USAGE
    return R.ERROR
