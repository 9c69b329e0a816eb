"""Executes meta commands (``mg ms md ma mn me``) on a session and writes their replies.

The text handler passes every meta command here; both share the session,
the :class:`~stig.core.command_core.Core` and the reply buffer.  What each command does is
decided by the core and the operations of :mod:`stig.storage.ops`; this module only
maps flags to them and outcomes to meta replies (docs/pov.md, "Meta
commands").

* ``ms`` in set/append/prepend mode, ``md`` and ``ma`` without ``C``/``E``/
  ``I``/``x`` answer from the POV.  ``ms`` with ``C`` or ``E`` or in add/
  replace mode, ``md`` with ``C``/``I``/``x``, ``ma`` with ``C``/``E`` are
  conditional writes answered after their commit.  A reply that must carry
  a cas (``c``) waits for the commit that assigns it.
* A run of ``mg`` read together (one burst of pipelined input, as clients
  send a multi-get) reads one snapshot: the handler pulls the following
  ``mg`` commands from the parser before it reads, and hands back the first
  other event.  A run whose input ends on a quiet ``mg`` (``q``: its client
  must still send the ``mn`` that tells it of its misses) goes on in the
  next input from the same snapshot, held until another command arrives
  or ``--batch-idle-ms`` passes without input.
* The win of a lease (``mg N`` on a miss) or of a stale item is a
  conditional write checked at promotion: of any number of readers on any
  connections exactly one gets ``W``.
* Quiet (``q``) writes stay in the open run, so a run of them closed by
  ``mn`` (or any command that replies) is one transaction.  ``mn`` answers
  ``MN`` once all of it is on disk (:meth:`stig.core.command_core.Core.barrier`).  A quiet
  conditional write's failure is known only at its commit
  (:meth:`stig.core.command_core.Core.verdicts`); it is written before the reply of the
  command during which its run was closed (:meth:`MetaHandler.report_verdicts`).
  A reply the POV gives a later quiet write at once (``NF`` of a missing
  key, a refusal) waits behind it (:meth:`MetaHandler._reply_in_turn`), so
  a run's failures come in the order of its writes.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import lmdb

from stig.core.command_core import NON_NUMERIC, Answer, Committed, Core, Refusal, Verdict
from stig.core.read_view import ReadView
from stig.core.replies import Replies
from stig.engine.errors import CommitFailed
from stig.storage.ops import (
    Add,
    Adjust,
    Blank,
    Cas,
    CompareRemove,
    Concat,
    MarkStale,
    Op,
    Outcome,
    Put,
    Replace,
)
from stig.storage.records import Item
from stig_protocol.errors import ProtocolError
from stig_protocol.events import NEED_DATA
from stig_protocol.meta import (
    EN,
    EX,
    HD,
    MN,
    NF,
    NS,
    VA,
    ArithmeticMode,
    ItemFacts,
    MetaArithmetic,
    MetaDebug,
    MetaDelete,
    MetaGet,
    MetaNoop,
    MetaResponse,
    MetaSet,
    ReturnFlag,
    SetMode,
    debug_response,
    encode_meta_response,
    meta_response,
    suppressed_in_quiet,
)
from stig_protocol.text_replies import client_error, server_error

TTL_REJECTED = client_error(Refusal.TTL.value)
NON_NUMERIC_REPLY = client_error(NON_NUMERIC)
#: A stored ms with no flag to return (what :meth:`MetaHandler._write_reply` writes then).
HD_LINE = encode_meta_response(MetaResponse(HD))

#: The meta code for each outcome of a write.
_CODES = {
    Outcome.STORED: HD,
    Outcome.DELETED: HD,
    Outcome.NOT_STORED: NS,
    Outcome.EXISTS: EX,
    Outcome.NOT_FOUND: NF,
    Outcome.SKIPPED: NF,  # an arithmetic that found no item at promotion
}

Keyed = MetaGet | MetaSet | MetaDelete | MetaArithmetic


def _facts(item: Item, won: bool = False) -> ItemFacts:
    """What a reply may say about ``item``; ``won``: this reader took its win."""
    return ItemFacts(
        cas=item.cas,
        client_flags=item.flags,
        size=len(item.value),
        stale=item.stale,
        win_sent=item.win_sent and not won,  # memcached never sends W with Z
        won=won,
    )


class MetaHandler:
    """Runs the meta commands of one text connection; see the module docstring."""

    command_types = (MetaGet, MetaSet, MetaDelete, MetaArithmetic, MetaNoop, MetaDebug)

    def __init__(self, core: Core, replies: Replies, next_event: Callable[[], object]) -> None:
        self.core = core
        #: The connection's replies: a run of mg sends them as they grow.
        self.replies = replies
        self.out = replies.out
        self.gate = core.gate  # replies held behind their commits
        self._next_event = next_event  # the parser's, to read a run of mg ahead
        self._reply_limit = replies.limit
        #: False (``Settings.fast_paths``): every ms takes :meth:`_set`, every
        #: mg :meth:`_get_one` (tests/model/test_fast_paths.py compares).
        self.fast = core.engine.settings.fast_paths
        #: The snapshot of a run of mg that goes on in the next input (None: none does).
        self.run: ReadView | None = None
        self._run_broken = False  # Store.grow() ended that snapshot: the rest fail
        #: command type -> a function that executes the command and returns
        #: None (done, nothing to wait for) or an awaitable giving what
        #: :meth:`handle` returns.  The text handler calls these directly, so
        #: that a common ``ms`` costs no coroutine.
        self.handlers: dict[type, Callable[[object], Awaitable[object] | None]] = {
            MetaGet: self._get_run,  # type: ignore[dict-item]
            MetaSet: self._set_now if self.fast else self._set,  # type: ignore[dict-item]
            MetaDelete: self._delete,  # type: ignore[dict-item]
            MetaArithmetic: self._arithmetic,  # type: ignore[dict-item]
            MetaNoop: self._noop,  # type: ignore[dict-item]
            MetaDebug: self._debug,  # type: ignore[dict-item]
        }

    async def handle(self, command: object) -> object | None:
        """Execute one meta command.

        Returns an event the handler read ahead and did not handle (the
        command after a run of ``mg``), or None.
        """
        result = self.handlers[type(command)](command)
        return None if result is None else await result

    # -- replies ---------------------------------------------------------------

    def _reply(
        self, command: Keyed, code: bytes, item: ItemFacts | None = None, value: bytes | None = None
    ) -> None:
        """Write ``code`` for ``command``, unless quiet mode hides it."""
        if not suppressed_in_quiet(command, code):
            self.out += encode_meta_response(meta_response(command, code, item, value))

    @staticmethod
    def _reply_bytes(
        command: Keyed, code: bytes, item: ItemFacts | None = None, value: bytes | None = None
    ) -> bytes:
        """What :meth:`_reply` writes, for a reply held behind its commit."""
        if suppressed_in_quiet(command, code):
            return b""
        return encode_meta_response(meta_response(command, code, item, value))

    def _reply_in_turn(self, command: Keyed, reply: bytes) -> None:
        """Write a reply a write got at once: a quiet write's (a failure or
        a refusal: quiet mode hides the rest) behind the verdicts still owed
        to the quiet writes before it in the open run, which their commit
        decides (:meth:`Core.quiet_reply`); a loud command's after closing
        the run — its reply acknowledges it — so that the verdicts the run
        owes come first (written at the command's mark).  Either way the
        client is told in the order it sent its commands."""
        if command.quiet:
            self.out += self.core.quiet_reply(reply)
        else:
            self.core.close_run()
            self.out += reply

    # -- quiet writes: their verdicts, once their run has committed --------------

    async def report_verdicts(self, mark: int) -> None:
        """Write what quiet writes whose run has closed are owed, at ``out[mark]``:
        where the reply of the command being handled begins, so they come first."""
        if self.core.verdicts_due:
            self.gate.insert(mark, self._verdict_lines(await self.core.verdicts()))

    @staticmethod
    def _verdict_lines(verdicts: list[Verdict]) -> bytes:
        """Quiet mode hides the nominal replies only: each failure, in its
        write's place — a failed commit as a ``SERVER_ERROR`` line, so the
        replies of the commands behind it still follow in step."""
        lines = bytearray()
        for verdict in verdicts:
            if verdict.reply is not None:  # decided at once, owed in its turn
                lines += verdict.reply
                continue
            command: Keyed = verdict.tag  # type: ignore[assignment]
            outcome = verdict.outcome
            if outcome is None:
                lines += server_error(verdict.failure or "commit failed")
            elif outcome is Outcome.NON_NUMERIC:
                lines += NON_NUMERIC_REPLY
            elif not suppressed_in_quiet(command, code := _CODES[outcome]):
                lines += encode_meta_response(meta_response(command, code))
        return bytes(lines)

    def _conditional(
        self, command: Keyed, op: Op, answer: Answer, size: int = 0, exptime: int | None = None
    ) -> Awaitable[None] | None:
        """A conditional write: queued if quiet, its verdict owed; else
        ``answer`` writes its reply after its commit, held with the replies of
        its burst (:meth:`Core.conditional_reply`)."""
        return self.core.conditional_reply(
            op, command.key, size, command.quiet, answer, command, exptime
        )

    def _code_answer(self, command: Keyed, committed: Committed) -> bytes:
        """A conditional write's reply: the code of its outcome (or the failure)."""
        if committed.failure is not None:
            return server_error(committed.failure)
        return self._reply_bytes(command, _CODES[committed.outcome])  # type: ignore[index]

    # -- mg: a run of them reads one snapshot ------------------------------------

    async def _get_run(self, first: MetaGet) -> object | None:
        """Read ``first`` and every mg right behind it in one snapshot.

        The run is what the parser holds (at most one receive of input), so
        its commands cost memory in proportion to that input; its replies are
        sent as they grow (:meth:`_get_many`)."""
        mark = len(self.out)  # where this run's replies begin
        commands = [first]
        leftover: object | None = None
        error: ProtocolError | None = None
        while True:
            try:
                event = self._next_event()
            except ProtocolError as exc:
                error = exc  # raised once the run before it is answered
                break
            if not isinstance(event, MetaGet):
                leftover = None if event is NEED_DATA else event
                break
            commands.append(event)
        # The input ended inside a quiet run: the rest of it comes next.
        goes_on = leftover is None and error is None and commands[-1].quiet
        try:
            await self._get_many(commands, mark, goes_on)
        finally:
            if not goes_on:
                self.end_read_run()
        if error is not None:
            raise error
        return leftover

    def close(self) -> None:
        """The connection is over: end a run of mg, and empty :attr:`handlers`
        (bound methods of this handler: a reference cycle otherwise)."""
        self.end_read_run()
        self.handlers.clear()

    def end_read_run(self) -> None:
        """End a run of mg held open for the next input: release its snapshot."""
        snapshot = self.run
        if snapshot is not None:
            self.run = None
            snapshot.close()

    async def _open_run(
        self, commands: list[MetaGet], keys: list[bytes], mark: int, goes_on: bool
    ) -> bool:
        """Take the snapshot of a new run of mg (:attr:`run`), after what its
        reads must see: False, every mg answered, if that wait failed.

        The read closes the open write run: its quiet writes' verdicts come
        first, before any reply is sent — and before the read waits for
        commits, which would report their failure once for the whole run
        instead.  A run that ``goes_on`` in later input does not know all its
        keys yet: it waits for every write in flight (acknowledged before the
        run began: docs/pov.md, "Other sessions"), and promotes all of this
        session's pending writes if it has any (a later mg may ask a cas)."""
        core = self.core
        core.close_run()
        await self.report_verdicts(mark)
        with_cas = goes_on or any(c.wants(ReturnFlag.CAS) for c in commands)
        try:
            # Held: a win or a lease awaits its commit, replies are sent as they grow.
            self.run = await core.snapshot(None if goes_on else keys, with_cas)
        except CommitFailed as exc:
            for _command in commands:  # one reply per mg: the client stays in step
                self.out += server_error(str(exc))
            return False
        self._run_broken = False
        return True

    async def _get_many(self, commands: list[MetaGet], mark: int, goes_on: bool) -> None:
        """Answer a run of mg from one snapshot, in order, sending the replies
        whenever ``--max-reply-bytes`` of them wait (a client that does not
        read them is not read either): a run never holds more than that bound
        plus one reply (docs/pov.md, "Bounds").  ``goes_on``: the run
        continues in the next input (its snapshot stays held)."""
        refused = [self.core.ttl_refused(c.ttl, c.vivify_ttl) for c in commands]
        keys = [c.key for c, no in zip(commands, refused, strict=True) if not no]
        out = self.out
        if self.run is None:
            if not keys and not goes_on:
                self.core.close_run()  # a read: its replies come after the verdicts owed
                for _command in commands:
                    out += TTL_REJECTED
                return
            if not await self._open_run(commands, keys, mark, goes_on):
                return
        snapshot = self.run
        assert snapshot is not None
        core = self.core
        limit = self._reply_limit
        drain = self.replies.drain
        fast = self.fast
        index = 0
        if not self._run_broken:
            try:
                for index, command in enumerate(commands):
                    if len(out) >= limit:
                        await drain()
                    if refused[index]:
                        out += TTL_REJECTED
                        continue
                    item = snapshot.item(command.key)
                    core.count_read(command.key, item is not None, detail=False)
                    if command.ttl is not None:
                        core.touched(command.key, item is not None, command.ttl, snapshot)
                    if fast and not core.lease_due(item, command.vivify_ttl):
                        self._answer(command, item)  # no lease to hand out: no coroutine
                    else:
                        try:
                            await self._get_one(command, item)
                        except CommitFailed as exc:
                            out += server_error(str(exc))
                    del item
            except lmdb.Error:  # the snapshot ended early: the rest is not read
                self._run_broken = True
                for _command in commands[index:]:
                    out += server_error(snapshot.interruption)
        else:  # a run going on from a snapshot that ended early
            for _command in commands:
                out += server_error(snapshot.interruption)

    async def _get_one(self, command: MetaGet, item: Item | None) -> None:
        """Answer one mg, handing out the win its read found due
        (:meth:`Core.lease_due`); the general path of every mg (fast paths
        off) comes here too."""
        won = False
        if self.core.lease_due(item, command.vivify_ttl):
            item, won = await self.core.lease(command.key, item, command.new_cas)
        # R (recache when the TTL left is below its token) never wins in
        # Stig: items never expire, the TTL left is always infinite.
        self._answer(command, item, won)

    def _answer(self, command: MetaGet, item: Item | None, won: bool = False) -> None:
        """Reply to one mg with ``item`` (None: a miss), the win handed out or not."""
        if command.ttl is not None:
            self.core.count_touch(item is not None)
        if item is None:
            self._reply(command, EN)
            return
        if command.return_value:
            self._reply(command, VA, _facts(item, won), item.value)
        else:
            self._reply(command, HD, _facts(item, won))

    # -- ms --------------------------------------------------------------------

    def _plain(self, command: MetaSet) -> bool:
        """Whether ``command`` is a plain set, stored in the POV at once with
        nothing for a commit to decide: mode S without C, E or N (no cas to
        compare, none to give, no lease), and no T refused or already past.
        :meth:`_set` decides with it; :meth:`_set_now` shares the decision."""
        ttl = command.ttl
        return (
            command.mode is SetMode.SET
            and command.cas is None
            and command.new_cas is None
            and command.vivify_ttl is None
            and not (ttl and (self.core.ttl_refused(ttl) or self.core.expired(ttl)))
        )

    def _set_now(self, command: MetaSet) -> Awaitable[None] | None:
        """A plain set (:meth:`_plain`, the bulk of a pipelined load) that
        asks for no cas (which would wait for the commit), answered at once
        as a text ``set`` is: a quiet one stays in the open run, its HD
        hidden; a loud one without return flags closes the run and answers
        HD.  Any other ms goes to :meth:`_set`, which answers these alike."""
        if (command.quiet or not command.returns) and self._plain(command):
            self.core.set(
                command.key, command.value, command.client_flags, answered=not command.quiet
            )
            if not command.quiet:
                self.out += HD_LINE
            return None
        return self._set(command)

    def _set(self, command: MetaSet) -> Awaitable[None] | None:
        """Any ms: done at once (None) — a reply after its commit is held
        with the replies of its burst — or what to await (an append whose
        POV answer waits for a verdict, a run owing quiet verdicts)."""
        if self._plain(command):
            self.core.set(command.key, command.value, command.client_flags)
            return self._pov_write_reply(command, Outcome.STORED)
        appends = command.mode is SetMode.APPEND or command.mode is SetMode.PREPEND
        ttl = None if appends else command.ttl  # memcached ignores T when appending
        if self.core.store_refused(ttl, command.vivify_ttl):
            self._reply_in_turn(command, TTL_REJECTED)
            return None
        op = self._conditional_set(command)
        if isinstance(op, Put) and self.core.expired(ttl):
            op = None  # E alone, already expired: nothing to store under it
        if op is not None:
            answer = functools.partial(self._set_answer, command, None)
            return self._conditional(command, op, answer, len(command.value), ttl)
        if command.mode is SetMode.SET:
            self.core.set(command.key, command.value, command.client_flags, ttl or 0)
            return self._pov_write_reply(command, Outcome.STORED)
        return self._concat(command)

    async def _concat(self, command: MetaSet) -> None:
        """ms in append/prepend mode: its POV answer may wait for a verdict."""
        vivify = command.client_flags if command.vivify_ttl is not None else None
        prepend = command.mode is SetMode.PREPEND
        stored = await self.core.concat(
            command.key, command.value, prepend, vivify, quiet=command.quiet, tag=command
        )
        pending = self._pov_write_reply(command, Outcome.STORED if stored else Outcome.NOT_STORED)
        if pending is not None:
            await pending

    def _conditional_set(self, command: MetaSet) -> Op | None:
        """The conditional op an ms stands for, or None if it answers from the POV."""
        key, value, flags = command.key, command.value, command.client_flags
        mode, cas, new_cas = command.mode, command.cas, command.new_cas
        if mode is SetMode.ADD:
            return Add(key, value, flags, new_cas)  # memcached ignores C in add mode
        if cas is not None and mode in (SetMode.SET, SetMode.REPLACE):
            return Cas(key, value, flags, cas, new_cas, command.invalidate)
        if mode is SetMode.REPLACE:
            return Replace(key, value, flags, new_cas)
        if cas is None and new_cas is None:
            return None
        if mode is SetMode.SET:
            return Put(key, value, flags, new_cas)
        vivify = flags if command.vivify_ttl is not None else None
        return Concat(key, value, mode is SetMode.PREPEND, vivify, cas or 0, new_cas)

    def _pov_write_reply(self, command: MetaSet, outcome: Outcome) -> Awaitable[None] | None:
        """Answer an ms made in the POV; a cas to return exists only once
        committed, so that reply is held until then (:meth:`Core.reply_after_commit`)."""
        if (
            outcome is Outcome.STORED
            and command.wants(ReturnFlag.CAS)
            and not suppressed_in_quiet(command, HD)
        ):
            answer = functools.partial(self._set_answer, command, outcome)
            return self.core.reply_after_commit(answer)
        self._reply_in_turn(command, self._write_reply(command, outcome, None))
        return None

    def _set_answer(self, command: MetaSet, outcome: Outcome | None, committed: Committed) -> bytes:
        """An ms's reply once committed: its ``outcome`` (None: the commit's
        verdict) with the item and cas the commit stored."""
        if committed.failure is not None:
            return server_error(committed.failure)
        if outcome is None:
            outcome = committed.outcome
        return self._write_reply(command, outcome, committed.item)  # type: ignore[arg-type]

    def _write_reply(self, command: MetaSet, outcome: Outcome, written: Item | None) -> bytes:
        facts = None
        if outcome is Outcome.STORED:
            facts = ItemFacts(
                cas=written.cas if written is not None else 0,
                client_flags=command.client_flags,
                size=len(written.value) if written is not None else len(command.value),
            )
        return self._reply_bytes(command, _CODES[outcome], facts)

    # -- md --------------------------------------------------------------------

    async def _delete(self, command: MetaDelete) -> None:
        if command.invalidate and self.core.ttl_refused(command.ttl):
            self._reply_in_turn(command, TTL_REJECTED)
            return
        key, expected, new_cas = command.key, command.cas or 0, command.new_cas
        op: Op | None = None
        # Invalidated to a TTL already past: memcached's stale item is gone at once.
        invalidate = command.invalidate and not self.core.expired(command.ttl)
        if invalidate:
            blank = 0 if command.remove_value else None
            op = MarkStale(key, expected, new_cas, blank)
        elif command.remove_value and not command.invalidate:
            op = Blank(key, 0, expected, new_cas)
        elif command.cas is not None:
            op = CompareRemove(key, command.cas)
        if op is None:
            found = await self.core.delete(
                key, quiet=command.quiet, tag=command, answered=not command.quiet
            )
            self._reply_in_turn(command, self._reply_bytes(command, HD if found else NF))
            return
        pending = self._conditional(command, op, functools.partial(self._code_answer, command))
        if pending is not None:
            await pending

    # -- ma --------------------------------------------------------------------

    async def _arithmetic(self, command: MetaArithmetic) -> None:
        if self.core.ttl_refused(command.ttl, command.vivify_ttl):
            self._reply_in_turn(command, TTL_REJECTED)
            return
        key, delta = command.key, command.delta
        incr = command.mode is ArithmeticMode.INCREMENT
        vivify = self.core.creates(command.vivify_ttl)
        initial = command.initial if vivify else None
        if command.cas is not None or command.new_cas is not None:
            op = Adjust(key, delta, incr, initial, 0, command.cas or 0, command.new_cas)
            answer = functools.partial(self._adjusted_answer, command)
            pending = self._conditional(command, op, answer)
            if pending is not None:
                await pending
            return
        # A quiet ma that wants its value (v) waits for it: it cannot be an intent.
        quiet = command.quiet and not command.return_value
        number = await self.core.adjust(key, delta, incr, initial, quiet=quiet, tag=command)
        if number is Outcome.NOT_FOUND:
            self._reply_in_turn(command, self._reply_bytes(command, NF))
            return
        if number is Outcome.NON_NUMERIC:
            self._reply_in_turn(command, NON_NUMERIC_REPLY)
            return
        value = b"%d" % number  # type: ignore[str-format]
        if command.wants(ReturnFlag.CAS) and not suppressed_in_quiet(command, HD):
            # The cas exists once committed: answer the committed item, so
            # that value and cas belong together (held until then).
            answer = functools.partial(self._counted_answer, command, value)
            pending = self.core.reply_after_commit(answer)
            if pending is not None:
                await pending
            return
        self._reply_in_turn(command, self._number_reply(command, value, 0))

    def _adjusted_answer(self, command: MetaArithmetic, committed: Committed) -> bytes:
        """A conditional ma's reply once its commit decided it."""
        if committed.failure is not None:
            return server_error(committed.failure)
        outcome, written = committed.outcome, committed.item
        if outcome is Outcome.NON_NUMERIC:
            return NON_NUMERIC_REPLY
        if outcome is Outcome.STORED and written is not None:
            return self._number_reply(command, written.value, written.cas)
        return self._reply_bytes(command, _CODES[outcome])  # type: ignore[index]

    def _counted_answer(self, command: MetaArithmetic, value: bytes, committed: Committed) -> bytes:
        """An ma that returns a cas, once committed: the committed value and
        its cas (``value``, this POV's, if the commit stored nothing)."""
        if committed.failure is not None:
            return server_error(committed.failure)
        written = committed.item
        if written is None:
            return self._number_reply(command, value, 0)
        return self._number_reply(command, written.value, written.cas)

    def _number_reply(self, command: MetaArithmetic, value: bytes, cas: int) -> bytes:
        facts = ItemFacts(cas=cas, size=len(value))
        if command.return_value:
            return self._reply_bytes(command, VA, facts, value)
        return self._reply_bytes(command, HD, facts)

    # -- mn, me ----------------------------------------------------------------

    async def _noop(self, command: MetaNoop) -> None:
        """The barrier: MN once everything this connection sent is committed on
        disk, after what its quiet writes are owed (or the barrier's error)."""
        self.out += self._verdict_lines(await self.core.barrier())
        self.out += encode_meta_response(MetaResponse(MN))

    async def _debug(self, command: MetaDebug) -> None:
        (item,) = await self.core.read([command.key], with_cas=True, detail=False)
        if item is None:
            self.out += encode_meta_response(MetaResponse(EN))
            return
        self.out += encode_meta_response(debug_response(command, _facts(item)))
