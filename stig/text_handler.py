"""Executes text-protocol commands on a session and writes their replies.

The bridge between :mod:`protocol.text` (bytes ⇄ commands) and
:class:`stig.session.Session` (the POV).  One handler per connection; replies
are appended to :attr:`TextHandler.out` and sent by the connection once per
burst.  Meta commands arriving on the same connection are passed to the meta
handler.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Sequence

from protocol import text_replies as R
from protocol.commands import (
    Arithmetic,
    Delete,
    FlushAll,
    Quit,
    Retrieve,
    Stats,
    Store,
    StoreMode,
    Touch,
    Verbosity,
    Version,
)
from protocol.errors import InvalidCommand, ProtocolError
from protocol.text import QuietError, TextParser
from stig.engine import PROTOCOL_VERSION, Engine
from stig.core import NON_NUMERIC as NON_NUMERIC_MESSAGE, TTL_REFUSED, Core
from stig.meta_handler import MetaHandler
from stig.ops import Add, Cas, Clear, Op, Outcome, Replace
from stig.records import HEADER
from stig.session import CommitFailed, Session
from stig.stats_report import general_stats, settings_stats

EXPTIME_REJECTED = R.client_error(TTL_REFUSED)
FLUSH_DISABLED = R.client_error("flush_all not allowed")
FLUSH_DELAY = R.client_error("flush_all delay must be 0: Stig items never expire")
NON_NUMERIC = R.client_error(NON_NUMERIC_MESSAGE)

UNAUTHENTICATED = R.client_error("unauthenticated")
AUTH_FAILED = R.client_error("authentication failure")
AUTH_BAD_FORMAT = R.client_error("bad authentication token format")

_STORE_REPLIES = {
    Outcome.STORED: R.STORED,
    Outcome.NOT_STORED: R.NOT_STORED,
    Outcome.EXISTS: R.EXISTS,
    Outcome.NOT_FOUND: R.NOT_FOUND,
}
_CONDITIONAL = {StoreMode.ADD: Add, StoreMode.REPLACE: Replace}


class TextHandler:
    """Runs each text command against the session; see the module docstring."""

    def __init__(self, engine: Engine, session: Session) -> None:
        self.engine = engine
        self.session = session
        self.parser = TextParser(engine.settings.limits)
        self.out = bytearray()
        self.closing = False
        self.core = Core(engine, session)
        self._db = engine.store
        self.auth = engine.auth
        self.authenticated = self.auth is None
        self._dispatch: dict[type, Callable[[object], Awaitable[None] | None]] = {
            Retrieve: self._retrieve,  # type: ignore[dict-item]
            Store: self._store,  # type: ignore[dict-item]
            Delete: self._delete,  # type: ignore[dict-item]
            Arithmetic: self._arithmetic,  # type: ignore[dict-item]
            Touch: self._touch,  # type: ignore[dict-item]
            FlushAll: self._flush_all,  # type: ignore[dict-item]
            Version: self._version,  # type: ignore[dict-item]
            Verbosity: self._verbosity,  # type: ignore[dict-item]
            Quit: self._quit,  # type: ignore[dict-item]
            Stats: self._stats,  # type: ignore[dict-item]
            InvalidCommand: self._invalid,  # type: ignore[dict-item]
            QuietError: self._quiet_error,  # type: ignore[dict-item]
        }
        self.meta = MetaHandler(self.core, session, self.out, self.parser.next_event)
        # Each meta command type straight to its handler (which returns None
        # when done at once, or an awaitable), saving a coroutine per command.
        self._dispatch.update(self.meta.handlers)  # type: ignore[arg-type]

    def handle(self, event: object) -> Awaitable[None] | None:
        """Execute one parsed event: a plain get or gets is answered at once
        (None: no coroutine), anything else returns an awaitable to await."""
        if self._answer_now(event):
            return None
        return self._handle(event)

    async def _handle(self, event: object) -> None:
        """Execute one parsed event; a failed commit is answered SERVER_ERROR.

        A run of meta ``mg`` reads the commands behind it ahead and hands back
        the first one it did not handle, which is handled next.  After each
        command, failures of quiet meta writes whose run has closed are
        written before its reply.
        """
        if not self.authenticated:
            self._login(event)
            return
        next_event: object | None = event
        dispatch = self._dispatch
        meta = self.meta
        while next_event is not None:
            mark = len(self.out)
            try:
                result = dispatch[type(next_event)](next_event)
                next_event = None if result is None else await result
                if meta.quiet_failures_due:
                    await meta.report_quiet_failures(mark)
            except CommitFailed as exc:
                next_event = None
                self.out += R.server_error(str(exc))

    def _answer_now(self, event: object) -> bool:
        """Answer a plain get or gets, and the plain gets right behind it, at
        once when nothing needs waiting for; False (nothing done) otherwise.

        The same answer :meth:`_handle` would give: no run is open (so none
        closes here, and no quiet failure comes due), no conditional write
        awaits its verdict, no cas is asked of a pending write.
        """
        if type(event) is not Retrieve or event.touch or not self.authenticated:
            return False
        session = self.session
        if session.run_open or session.unresolved:
            return False
        if event.with_cas and session.has_pending(event.keys):
            return False
        self._read_run([event], event.with_cas)
        return True

    def _login(self, event: object) -> None:
        """memcached's text auth (``-Y``): ``set <any> <flags> <exptime> <bytes>``
        with ``user password`` as data logs in; anything else is refused."""
        assert self.auth is not None
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

    def _reply(self, noreply: bool, data: bytes) -> None:
        """Answer a write: noreply keeps the run open, a reply closes it."""
        if noreply:
            return
        self.session.close_run()
        self.session.unacked_writes = True
        self.out += data

    # -- retrieval -----------------------------------------------------------

    async def _retrieve(self, command: Retrieve) -> None:
        session = self.session
        if not command.touch and not session.unresolved:
            with_cas = command.with_cas
            session.close_run()
            if not (with_cas and session.has_pending(command.keys)):
                self._read_run([command], with_cas)
                return
        if command.touch and self.core.ttl_refused(command.exptime):
            self.session.close_run()
            self.out += EXPTIME_REJECTED
            return
        keys = command.keys
        items = await self.core.read(keys, with_cas=command.with_cas, touch=command.touch)
        out = self.out
        for key, item in zip(keys, items):
            if item is not None:
                out += R.value(key, item.flags, item.value, item.cas if command.with_cas else None)
        out += R.END

    def _read_run(self, commands: Sequence[Retrieve], with_cas: bool) -> None:
        """Answer a get or gets, and the plain gets pipelined right behind it,
        from one LMDB snapshot with this session's writes laid over it.

        The same answers as :meth:`Core.read`, whose waits none of them needs
        (no touch, no conditional write of this session awaiting its verdict,
        no cas asked of a pending write).  Nothing here awaits, so the read
        transaction never outlives this call.
        """
        out = self.out
        overlay = self.session.overlay
        unpack = HEADER.unpack_from
        end = R.END
        count = hits = 0
        txn = self._db.read_txn()
        try:
            get = txn.get
            while True:
                for command in commands:
                    keys = command.keys
                    if len(keys) == 1 and not with_cas:
                        # The commonest line, one key: its reply in one piece.
                        key = keys[0]
                        count += 1
                        if overlay and key in overlay:
                            item = overlay[key].item
                            if item is None:
                                out += end
                            else:
                                hits += 1
                                out += b"VALUE %b %d %d\r\n%b\r\nEND\r\n" % (
                                    key, item.flags, len(item.value), item.value
                                )
                            continue
                        record = get(key)
                        if record is None:
                            out += end
                        else:
                            hits += 1
                            out += b"VALUE %b %d %d\r\n%b\r\nEND\r\n" % (
                                key, unpack(record)[0], len(record) - 13, record[13:]
                            )
                        continue
                    count += len(keys)
                    for key in keys:
                        if overlay and key in overlay:
                            item = overlay[key].item
                            if item is not None:
                                hits += 1
                                out += b"VALUE %b %d %d\r\n%b\r\n" % (
                                    key, item.flags, len(item.value), item.value
                                )
                            continue
                        record = get(key)
                        if record is not None:
                            hits += 1
                            if with_cas:
                                flags, cas, _state = unpack(record)
                                out += b"VALUE %b %d %d %d\r\n%b\r\n" % (
                                    key, flags, len(record) - 13, cas, record[13:]
                                )
                            else:
                                out += b"VALUE %b %d %d\r\n%b\r\n" % (
                                    key, unpack(record)[0], len(record) - 13, record[13:]
                                )
                    out += end
                if with_cas:
                    break
                commands = self.parser.plain_gets()
                if not commands:
                    break
        finally:
            txn.abort()
            stats = self.core.stats
            stats.cmd_get += count
            stats.get_hits += hits
            stats.get_misses += count - hits

    # -- writes ----------------------------------------------------------------

    async def _store(self, command: Store) -> None:
        core = self.core
        if core.ttl_refused(command.exptime):
            core.stats.cmd_set += 1
            self._reply(command.noreply, EXPTIME_REJECTED)
            return
        mode = command.mode
        if mode is StoreMode.SET:
            core.set(command.key, command.value, command.flags)
            self._reply(command.noreply, R.STORED)
        elif mode is StoreMode.APPEND or mode is StoreMode.PREPEND:
            stored = await core.concat(command.key, command.value, mode is StoreMode.PREPEND)
            self._reply(command.noreply, R.STORED if stored else R.NOT_STORED)
        else:
            if mode is StoreMode.CAS:
                op: Op = Cas(command.key, command.value, command.flags, command.cas_unique)
            else:
                op = _CONDITIONAL[mode](command.key, command.value, command.flags)
            if command.noreply:
                core.queue_conditional(op, command.key, len(command.value))
                return
            outcome = await core.conditional(op, command.key, len(command.value))
            self.out += _STORE_REPLIES[outcome]

    async def _delete(self, command: Delete) -> None:
        found = await self.core.delete(command.key)
        self._reply(command.noreply, R.DELETED if found else R.NOT_FOUND)

    async def _arithmetic(self, command: Arithmetic) -> None:
        result = await self.core.adjust(command.key, command.delta, command.incr)
        if result is Outcome.NOT_FOUND:
            self._reply(command.noreply, R.NOT_FOUND)
        elif result is Outcome.NON_NUMERIC:
            self._reply(command.noreply, NON_NUMERIC)
        else:
            self._reply(command.noreply, R.number(result))  # type: ignore[arg-type]

    async def _touch(self, command: Touch) -> None:
        if self.core.ttl_refused(command.exptime):
            self._reply(command.noreply, EXPTIME_REJECTED)
            return
        found = await self.core.touch(command.key)
        self._reply(command.noreply, R.TOUCHED if found else R.NOT_FOUND)

    async def _flush_all(self, command: FlushAll) -> None:
        if not self.core.flush_enabled:
            self._reply(command.noreply, FLUSH_DISABLED)
            return
        if command.delay != 0:
            self._reply(command.noreply, FLUSH_DELAY)
            return
        if command.noreply:
            self.core.queue_conditional(Clear(), None)
            return
        await self.core.flush_all()
        self.out += R.OK

    # -- everything else ---------------------------------------------------

    def _version(self, command: Version) -> None:
        self.session.close_run()
        self.out += R.version(PROTOCOL_VERSION)

    def _verbosity(self, command: Verbosity) -> None:
        self._reply(command.noreply, R.OK)

    def _quit(self, command: Quit) -> None:
        self.session.close_run()
        self.closing = True

    def _stats(self, command: Stats) -> None:
        self.session.close_run()
        group = command.group
        if group == b"":
            self.out += R.stats(general_stats(self.engine))
        elif group == b"settings":
            self.out += R.stats(settings_stats(self.engine.settings))
        elif group == b"reset":
            self.engine.stats.reset()
            self.engine.promoter_stats.reset()
            self.out += R.RESET
        elif group in (b"items", b"slabs", b"sizes", b"conns", b"extstore"):
            self.out += R.END  # no slab allocator, no LRU: nothing to list
        else:
            self.out += R.ERROR

    def _invalid(self, event: InvalidCommand) -> None:
        self.session.close_run()
        self.out += event.text_reply()
        if event.close:
            self.closing = True

    def _quiet_error(self, event: QuietError) -> None:
        """A noreply command failed: memcached stays silent, so do we."""

    # -- what the connection loop asks of every handler ------------------------

    def fatal_error(self, message: str) -> None:
        self.out += R.server_error(message)

    def protocol_error(self, error: ProtocolError) -> None:
        if error.hint is not None:
            self.out += error.hint.text_reply()
