"""Executes binary-protocol requests on a session and writes their responses.

The bridge between :mod:`stig_protocol.binary` (bytes ⇄ requests, responses) and
:class:`stig.core.command_core.Core` (what each command does to the POV).  One handler per
connection; responses are appended to :attr:`BinaryHandler.out` (the
connection's :class:`~stig.core.replies.Replies`) and sent by
the connection once per burst.  The rules (docs/pov.md):

* **Quiet writes** (SetQ, AddQ, …) join the session's open run; the first
  non-quiet request closes it, so a run of them is one atomic transaction.
  They answer only on failure.  A quiet *conditional* write (AddQ, ReplaceQ,
  anything with a CAS, FlushQ) learns its verdict at the run's commit: the
  failure is written before the reply of the request that closed the run
  (or, if the idle timer closed it, before the next reply): the core keeps
  what they are owed (:meth:`stig.core.command_core.Core.verdicts`), this module words it.
  A failure the POV knows at once waits behind such a verdict sent before
  it (:meth:`BinaryHandler._reply_in_turn`): failures come in request order.
* **Loud writes whose response carries a cas** (Set, Add, Replace, Append,
  Prepend, Increment, Decrement) answer after their commit, with the cas the
  commit gave the item — the only cas a client may use in a later CAS.
  Delete, whose response has no cas, answers from the POV.
* **Quiet gets** (GetQ, GetKQ) are answered as they arrive, hits only, as
  memcached does; a run of them reads one snapshot, held from its first
  request until any other request (typically the No-op), or until
  ``--batch-idle-ms`` passes without input (:class:`QuietGetRun`).
* **No-op is a durability barrier**: it answers once everything sent before
  it is committed on disk.
* With ``--auth-file``, everything but SASL and Version gets AUTH_ERROR
  until a SASL PLAIN login succeeds.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence

import attrs
import lmdb

from stig.core.command_core import Committed, Core, Refusal, StatsAnswer, StatsKind, Verdict
from stig.core.read_view import ReadView
from stig.core.replies import Replies
from stig.engine.auth import MECHANISMS
from stig.engine.engine import PROTOCOL_VERSION
from stig.engine.errors import CommitFailed, ReadOnlyReplica, WritesRefused
from stig.storage.ops import (
    Add,
    Adjust,
    Cas,
    Clear,
    CompareRemove,
    Concat,
    Op,
    Outcome,
    Replace,
)
from stig.storage.records import Item
from stig_protocol.binary import (
    BinaryParser,
    BinaryProtocolError,
    BinaryRequest,
    InvalidBinaryRequest,
    Opcode,
    Status,
    counter_response,
    encode_response,
    error_response,
    get_miss_response,
    get_response,
    is_quiet,
    refusal_response,
    stat_end_response,
    stat_response,
)
from stig_protocol.commands import Replicate
from stig_protocol.errors import ProtocolError

#: Increment/Decrement's expiration that means "do not create a missing counter".
NO_CREATE = 0xFFFFFFFF
#: The status each refusal answers (its words are the error text).
REFUSAL_STATUS = {
    Refusal.TTL: Status.EINVAL,
    Refusal.FLUSH_DISABLED: Status.AUTH_ERROR,  # memcached -F's status
    Refusal.FLUSH_DELAY: Status.EINVAL,
}
AUTHENTICATED = b"Authenticated"

Failures = dict[Outcome, Status]
#: Per kind of write: the outcomes that are failures, and the status each gets
#: (memcached's complete_update_bin, process_bin_delete, complete_incr_bin).
CAS_FAILURES: Failures = {Outcome.EXISTS: Status.KEY_EEXISTS, Outcome.NOT_FOUND: Status.KEY_ENOENT}
ADD_FAILURES: Failures = {Outcome.NOT_STORED: Status.KEY_EEXISTS}
REPLACE_FAILURES: Failures = {Outcome.NOT_STORED: Status.KEY_ENOENT}
CONCAT_FAILURES: Failures = {
    Outcome.NOT_STORED: Status.NOT_STORED,
    Outcome.EXISTS: Status.KEY_EEXISTS,
}
DELETE_FAILURES: Failures = {
    Outcome.NOT_FOUND: Status.KEY_ENOENT,
    Outcome.EXISTS: Status.KEY_EEXISTS,
}
ADJUST_FAILURES: Failures = {
    Outcome.EXISTS: Status.KEY_EEXISTS,
    Outcome.NOT_FOUND: Status.KEY_ENOENT,
    Outcome.SKIPPED: Status.KEY_ENOENT,
    Outcome.NON_NUMERIC: Status.DELTA_BADVAL,
}
NO_FAILURES: Failures = {}

#: Requests allowed before a login when ``--auth-file`` is on (as memcached).
_WITHOUT_LOGIN = frozenset({Opcode.SASLListMechs, Opcode.SASLAuth, Opcode.SASLStep, Opcode.Version})
_QUIET_GETS = frozenset({Opcode.GetQ, Opcode.GetKQ})
#: A loud get right behind a run of quiet gets is read from the run's snapshot.
_RUN_CLOSING_GETS = frozenset({Opcode.Get, Opcode.GetK})


@attrs.frozen(slots=True)
class _Quiet:
    """What a quiet write's verdict is answered with (the tag of its :class:`Verdict`)."""

    opcode: Opcode
    opaque: int
    failures: Failures

    @classmethod
    def of(cls, request: BinaryRequest, failures: Failures) -> _Quiet | None:
        """The tag of ``request`` if it is quiet, else None (it is answered itself)."""
        return cls(request.opcode, request.opaque, failures) if request.quiet else None


class BinaryHandler:
    """Runs each binary request against the session; see the module docstring."""

    def __init__(self, core: Core, replies: Replies) -> None:
        """``core`` runs the requests over the connection's session and
        ``replies`` are the connection's, whose gate the core holds
        (:func:`stig.server.connection.make_handler` builds both)."""
        self.engine = engine = core.engine
        #: False (``Settings.fast_paths``): every request takes the general
        #: path (:meth:`_handle`), no plain SetQ at once nor run of them; the
        #: differential test (tests/model/test_fast_paths.py) checks both
        #: answer alike.
        self.fast = engine.settings.fast_paths
        self.parser = BinaryParser(engine.settings.limits)
        #: The connection's replies.
        self.replies = replies
        self.out = self.replies.out  # what every request appends its response to
        self.closing = False
        self.takeover: Replicate | None = None  #: never: replication is a text command
        #: Replies held behind their commits (the loud writes, which carry the
        #: committed cas): the connection releases them before it sends.
        self.gate = self.replies.gate
        self.core = core
        self.auth = engine.auth
        self.authenticated = self.auth is None
        #: Replies buffered past this are sent before the next request (the
        #: connection loop's bound, which the SetQ run keeps too).
        self._reply_limit = self.replies.limit
        #: The open run of GetQ/GetKQ: its snapshot, held until the run ends.
        self._gets: ReadView | None = None
        self._gets_broken = False  # Store.grow() ended that snapshot: the rest fail
        self._current: tuple[int, int] = (Opcode.Noop, 0)  # opcode and opaque being served
        handlers: dict[Opcode, Callable[[BinaryRequest], Awaitable[None]]] = {
            Opcode.Get: self._get,
            Opcode.GetK: self._get,
            Opcode.GAT: self._get,
            Opcode.GATQ: self._get,
            Opcode.GATK: self._get,
            Opcode.GATKQ: self._get,
            Opcode.Touch: self._get,
            Opcode.Set: self._store,
            Opcode.Add: self._store,
            Opcode.Replace: self._store,
            Opcode.Append: self._concat,
            Opcode.Prepend: self._concat,
            Opcode.Delete: self._delete,
            Opcode.Increment: self._adjust,
            Opcode.Decrement: self._adjust,
            Opcode.Flush: self._flush,
            Opcode.Noop: self._noop,
            Opcode.Quit: self._quit,
            Opcode.Version: self._version,
            Opcode.Verbosity: self._verbosity,
            Opcode.Stat: self._stat,
            Opcode.SASLListMechs: self._sasl_list,
            Opcode.SASLAuth: self._sasl_auth,
            Opcode.SASLStep: self._sasl_step,
        }
        # Quiet variants share their loud opcode's handler (GetQ/GetKQ are buffered).
        for quiet, loud in (
            (Opcode.SetQ, Opcode.Set), (Opcode.AddQ, Opcode.Add),
            (Opcode.ReplaceQ, Opcode.Replace), (Opcode.AppendQ, Opcode.Append),
            (Opcode.PrependQ, Opcode.Prepend), (Opcode.DeleteQ, Opcode.Delete),
            (Opcode.IncrementQ, Opcode.Increment), (Opcode.DecrementQ, Opcode.Decrement),
            (Opcode.FlushQ, Opcode.Flush), (Opcode.QuitQ, Opcode.Quit),
        ):  # fmt: skip
            handlers[quiet] = handlers[loud]
        self._handlers = handlers

    # -- the connection loop's interface -----------------------------------------

    def handle(self, event: object) -> Awaitable[None] | None:
        """Execute one request: a plain SetQ (no cas, exptime 0, no quiet get
        buffered) at once, as :meth:`_handle` would (None: no coroutine, the
        bulk of a pipelined load), then the SetQ pipelined right behind it
        (:meth:`_setq_run`); anything else returns :meth:`_handle`."""
        if not self.fast:
            return self._handle(event)
        pending = self._handle_one(event)
        if pending is None:
            return self._setq_run()
        return pending

    def _handle_one(self, event: object) -> Awaitable[None] | None:
        """One request: a plain SetQ at once (None), else :meth:`_handle`."""
        if (
            type(event) is BinaryRequest
            and event.opcode is Opcode.SetQ
            and not event.cas
            and not event.exptime
            and self.authenticated
            and self._gets is None
        ):
            self._current = (Opcode.SetQ, event.opaque)
            core = self.core
            core.count_prefix_set(event.key)
            try:
                core.set(event.key, event.value, event.flags)
            except WritesRefused as exc:
                self.out += core.quiet_reply(
                    error_response(Opcode.SetQ, event.opaque, _refused(exc), str(exc))
                )
            return None
        if (
            self._gets is not None
            and type(event) is BinaryRequest
            and event.opcode in _QUIET_GETS
            and self.authenticated
        ):
            self._current = (event.opcode, event.opaque)
            self._quiet_get(event)  # the run's snapshot is open: no coroutine
            return None
        return self._handle(event)

    def _setq_run(self) -> Awaitable[None] | None:
        """The SetQ pipelined behind a plain one (:meth:`BinaryParser.quiet_sets`),
        recorded in one loop (:meth:`Core.set_many`): they stay in the open
        run, answer nothing, count in ``cmd_set`` (and ``stats detail``), as
        one :meth:`_handle_one` each would.  From the first that is not
        plain (a cas, an exptime) or that the write budget refuses, the rest
        are handled one by one (the awaitable returned).  None of them while
        the SetQ before them must wait for room first (the connection loop
        waits, then handles them: a waiting connection keeps one write past
        the budget, not two), nor while the replies so far reach
        ``--max-reply-bytes`` (the loop sends them first)."""
        if len(self.out) + self.gate.cost >= self._reply_limit:
            return None
        if self.core.wants_room or self._gets is not None:
            # A run of quiet gets is open (the plain SetQ before was a GetKQ
            # answered at once): a write ends it, so the SetQ go one by one
            # through _handle, which ends the run first.
            return None
        requests = self.parser.quiet_sets()
        if not requests:
            return None
        items: list[tuple[bytes, bytes, int]] = []
        for request in requests:
            if request.cas or request.exptime:
                break
            items.append((request.key, request.value, request.flags))
        recorded = self.core.set_many(items, False) if items else 0
        if recorded:
            self._current = (Opcode.SetQ, requests[recorded - 1].opaque)
        if recorded < len(requests):
            return self._one_by_one(requests[recorded:])
        return None

    async def _one_by_one(self, requests: Sequence[BinaryRequest]) -> None:
        """Handle ``requests`` in order, each as the connection loop would:
        the replies so far (a quiet failure's) are sent once they reach
        ``--max-reply-bytes``, and a write waits for room as it does
        (:meth:`Session.wait_for_room`)."""
        core = self.core
        out = self.out
        gate = self.gate
        limit = self._reply_limit
        for request in requests:
            if len(out) + gate.cost >= limit and not await self.replies.sent_at_bound():
                return  # acknowledged writes were lost: the loop reports it
            pending = self._handle_one(request)
            if pending is not None:
                await pending
            if core.wants_room and not await core.make_room(self.replies.drain):
                return  # acknowledged writes were lost: the loop reports it

    async def _handle(self, event: object) -> None:
        """Execute one request; a failed commit answers EINTERNAL."""
        if isinstance(event, InvalidBinaryRequest):
            await self._refused(event)
            return
        assert isinstance(event, BinaryRequest)
        opcode = event.opcode
        self._current = (opcode, event.opaque)
        try:
            if not self.authenticated and opcode not in _WITHOUT_LOGIN:
                await self._fail(event, Status.AUTH_ERROR)
            elif opcode in _QUIET_GETS:
                if self._gets is None:
                    await self._begin_gets(event.key)
                self._quiet_get(event)
            elif opcode in _RUN_CLOSING_GETS and self._gets is not None:
                self._closing_get(event)
            else:
                self.end_read_run()
                await self._handlers[opcode](event)
        except WritesRefused as exc:  # a full disk: memcached's "out of memory"
            if not event.quiet:
                await self._settle()  # a reply closes the run, after its verdicts
            self._reply_in_turn(
                event, error_response(opcode, event.opaque, _refused(exc), str(exc))
            )
        except CommitFailed as exc:
            self.out += error_response(opcode, event.opaque, Status.EINTERNAL, str(exc))

    def fatal_error(self, message: str) -> None:
        opcode, opaque = self._current
        self.out += error_response(opcode, opaque, Status.EINTERNAL, message)

    def protocol_error(self, error: ProtocolError) -> None:
        if isinstance(error, BinaryProtocolError) and error.binary_hint is not None:
            self.out += refusal_response(error.binary_hint)

    # -- runs, verdicts and snapshots ----------------------------------------------

    async def _report_verdicts(self) -> None:
        """Write the failures of quiet writes whose runs have closed, once committed."""
        if self.core.verdicts_due:
            self._write_verdicts(await self.core.verdicts())

    def _write_verdicts(self, verdicts: list[Verdict]) -> None:
        """Each failure as the quiet write's own response (its opaque); a
        failed commit as EINTERNAL, so the request being served still gets
        its own: a loud write that committed must not be answered as failed
        (a client would retry an Increment that was counted)."""
        for verdict in verdicts:
            if verdict.reply is not None:  # decided at once, owed in its turn
                self.out += verdict.reply
                continue
            quiet: _Quiet = verdict.tag  # type: ignore[assignment]
            if verdict.outcome is None:
                message = verdict.failure or "commit failed"
                self.out += error_response(quiet.opcode, quiet.opaque, Status.EINTERNAL, message)
                continue
            status = quiet.failures.get(verdict.outcome)
            if status is not None:
                self.out += error_response(quiet.opcode, quiet.opaque, status)

    async def _settle(self) -> None:
        """Before a non-quiet reply: close the open run and report its quiet failures."""
        self.core.close_run()
        await self._report_verdicts()

    # -- a run of quiet gets: one snapshot, hits answered at once --------------

    @property
    def read_run_open(self) -> bool:
        """A run of quiet gets holds its snapshot (the connection ends it after
        ``--batch-idle-ms`` without input, as it closes an open write run)."""
        return self._gets is not None

    async def _begin_gets(self, first: bytes) -> None:
        """Open the run's snapshot, after what its reads must see.

        The run closes the open write run (its quiet failures are reported
        first).  Its snapshot must hold every write acknowledged before the
        run began (docs/pov.md, "Other sessions"): when the run's end is
        already buffered, its keys are known and only writes in flight to
        them are waited for; otherwise its later keys are not known yet, and
        every write in flight is (at most the group commit under way)."""
        await self._settle()
        ahead, ended = self.parser.quiet_gets_ahead()
        keys = [first, *ahead] if ended else None
        self._gets = await self.core.snapshot(keys, with_cas=True)
        self._gets_broken = False

    def _read_in_run(self, request: BinaryRequest) -> tuple[bool, Item | None]:
        """Read ``request``'s key from the run's snapshot: (read, item), read
        False (EINTERNAL written) once the snapshot has ended early (the map
        grew, or the client read none of the replies: stig/storage/held.py)."""
        snapshot = self._gets
        assert snapshot is not None
        item: Item | None = None
        if not self._gets_broken:
            try:
                item = snapshot.item(request.key)
            except lmdb.Error:  # the snapshot ended early: the rest is not read
                self._gets_broken = True
        if self._gets_broken:
            self.out += error_response(
                request.opcode, request.opaque, Status.EINTERNAL, snapshot.interruption
            )
            return False, None
        self.core.count_read(request.key, item is not None)
        return True, item

    def _quiet_get(self, request: BinaryRequest) -> None:
        """Answer a GetQ/GetKQ from the run's snapshot: a hit at once, a miss not
        at all; EINTERNAL once the snapshot has ended early."""
        _read, item = self._read_in_run(request)
        if item is not None:
            self.out += get_response(
                request.opcode, request.opaque, item.flags, item.cas, item.value, request.key
            )

    def _closing_get(self, request: BinaryRequest) -> None:
        """A Get/GetK right behind a run of quiet gets is the run's last read
        (python-binary-memcached's ``get_multi``: GetKQ…, GetK; the README
        promises it one snapshot): answered from the run's snapshot — whose
        wait covered its key (:meth:`BinaryParser.quiet_gets_ahead`) — then
        the run ends.  Read anew, it could see a transaction committed since
        the run began whose other keys the run read before it (docs/soak.md,
        finding 2).  Nothing is pending in the session since the run began
        (any write would have ended it), so the snapshot's cas values are
        committed ones."""
        read, item = self._read_in_run(request)
        self.end_read_run()
        if not read:
            return
        if item is not None:
            self.out += get_response(
                request.opcode, request.opaque, item.flags, item.cas, item.value, request.key
            )
        else:
            self.out += get_miss_response(request.opcode, request.opaque, request.key)

    def end_read_run(self) -> None:
        """End the run of quiet gets, if one is open: its snapshot is released."""
        snapshot = self._gets
        if snapshot is not None:
            self._gets = None
            snapshot.close()

    def close(self) -> None:
        """The connection is over: release what the handler holds, and empty
        the dispatch table, whose bound methods make this handler a
        reference cycle (freed only by a rare full collection otherwise)."""
        self.end_read_run()
        self._handlers.clear()

    async def _fail(self, request: BinaryRequest, status: Status, message: str = "") -> None:
        """Answer a failed request: quiet ones leave the run open, and come
        in their turn (:meth:`_reply_in_turn`); loud ones close it."""
        if request.quiet:
            await self._report_verdicts()
        else:
            await self._settle()
        self._reply_in_turn(
            request, error_response(request.opcode, request.opaque, status, message)
        )

    def _reply_in_turn(self, request: BinaryRequest, reply: bytes) -> None:
        """Write a reply the POV decided at once: a quiet request's behind the
        verdicts still owed to the quiet writes before it in the open run,
        which their commit decides (:meth:`Core.quiet_reply`), so that the
        failures of a run come in the order of its requests."""
        self.out += self.core.quiet_reply(reply) if request.quiet else reply

    async def _refused(self, event: InvalidBinaryRequest) -> None:
        """A request the parser refused (bad shape, key too long, too large, unknown)."""
        self._current = (event.opcode, event.opaque)
        self.end_read_run()
        if not self.authenticated and event.opcode not in _WITHOUT_LOGIN:
            reply = error_response(event.opcode, event.opaque, Status.AUTH_ERROR)
        else:
            reply = refusal_response(event)
            if event.discard_key is not None:
                self.core.count_prefix_set(event.discard_key)
                self.core.discard_too_large(event.discard_key)
        if is_quiet(event.opcode):
            await self._report_verdicts()
            reply = self.core.quiet_reply(reply)
        else:
            await self._settle()
        self.out += reply

    async def _conditional(
        self,
        request: BinaryRequest,
        op: Op,
        size: int,
        failures: Failures,
        counter: bool = False,
        exptime: int | None = None,
    ) -> None:
        """A write checked against the committed state: queued if quiet, else
        answered after its commit (held with the replies of its burst)."""
        answer = functools.partial(
            _committed_response, request.opcode, request.opaque, failures, counter
        )
        pending = self.core.conditional_reply(
            op,
            request.key or None,
            size,
            request.quiet,
            answer,
            _Quiet.of(request, failures),
            exptime,
            before=self._report_verdicts,
        )
        if pending is not None:
            await pending

    async def _commit_loud(
        self, request: BinaryRequest, failures: Failures, counter: bool = False
    ) -> None:
        """A loud unconditional write just recorded: answered after its commit,
        with its cas (held with the replies of its burst)."""
        answer = functools.partial(
            _committed_response, request.opcode, request.opaque, failures, counter
        )
        pending = self.core.reply_after_commit(answer, before=self._report_verdicts)
        if pending is not None:
            await pending

    # -- reads -------------------------------------------------------------------

    async def _get(self, request: BinaryRequest) -> None:
        """Get, GetK, Touch and GAT/GATK (and GATQ/GATKQ, read one by one)."""
        touch = request.base in (Opcode.Touch, Opcode.GAT, Opcode.GATK)
        if touch and self.core.ttl_refused(request.exptime):
            await self._refuse(request, Refusal.TTL)
            return
        await self._settle()
        [item] = await self.core.read([request.key], with_cas=True, touch=touch)
        if touch:
            self.core.touched(request.key, item is not None, request.exptime)
        if item is not None:
            self.out += get_response(
                request.opcode, request.opaque, item.flags, item.cas, item.value, request.key
            )
        elif not request.quiet:
            self.out += get_miss_response(request.opcode, request.opaque, request.key)

    # -- writes ------------------------------------------------------------------

    async def _store(self, request: BinaryRequest) -> None:
        """Set, Add, Replace (and quiet): with a CAS all three are a cas write, as in memcached."""
        core = self.core
        core.count_prefix_set(request.key)
        if core.store_refused(request.exptime):
            await self._refuse(request, Refusal.TTL)
            return
        key, value, flags, base = request.key, request.value, request.flags, request.base
        op: Op | None = None
        failures = NO_FAILURES
        if request.cas:
            op, failures = Cas(key, value, flags, request.cas), CAS_FAILURES
        elif base is Opcode.Add:
            op, failures = Add(key, value, flags), ADD_FAILURES
        elif base is Opcode.Replace:
            op, failures = Replace(key, value, flags), REPLACE_FAILURES
        if op is not None:
            # An exptime already past: checked as sent, nothing is kept (docs/pov.md).
            await self._conditional(request, op, len(value), failures, exptime=request.exptime)
        else:
            core.set(key, value, flags, request.exptime)
            if not request.quiet:
                await self._commit_loud(request, NO_FAILURES)

    async def _concat(self, request: BinaryRequest) -> None:
        self.core.count_prefix_set(request.key)
        prepend = request.base is Opcode.Prepend
        if request.cas:
            op = Concat(request.key, request.value, prepend, expected=request.cas)
            await self._conditional(request, op, len(request.value), CONCAT_FAILURES)
            return
        # A quiet one may become an intent (runs stay whole): its verdict comes later.
        tag = _Quiet.of(request, CONCAT_FAILURES)
        if not await self.core.concat(
            request.key, request.value, prepend, quiet=request.quiet, tag=tag
        ):
            await self._fail(request, Status.NOT_STORED)
        elif not request.quiet:
            await self._commit_loud(request, CONCAT_FAILURES)

    async def _delete(self, request: BinaryRequest) -> None:
        self.core.count_prefix_delete(request.key)
        if request.cas:
            await self._conditional(
                request, CompareRemove(request.key, request.cas), 0, DELETE_FAILURES
            )
            return
        tag = _Quiet.of(request, DELETE_FAILURES)
        loud = not request.quiet
        if not await self.core.delete(request.key, quiet=request.quiet, tag=tag, answered=loud):
            await self._fail(request, Status.KEY_ENOENT)
        elif loud:
            # No cas in a Delete response: answered from the POV, as in text.
            await self._report_verdicts()
            self.out += encode_response(request.opcode, Status.NO_ERROR, request.opaque)

    async def _adjust(self, request: BinaryRequest) -> None:
        """Increment/Decrement; the expiration only matters when the counter is created."""
        incr = request.base is Opcode.Increment
        create = request.expiration != NO_CREATE and self.core.creates(request.expiration)
        refused = create and self.core.ttl_refused(request.expiration)
        initial = request.initial if create and not refused else None
        if request.cas:
            op = Adjust(request.key, request.delta, incr, initial, expected=request.cas)
            await self._conditional(request, op, 8, ADJUST_FAILURES, counter=True)
            return
        tag = _Quiet.of(request, ADJUST_FAILURES)
        result = await self.core.adjust(
            request.key, request.delta, incr, initial, quiet=request.quiet, tag=tag
        )
        if result is Outcome.NOT_FOUND:
            if refused:
                await self._refuse(request, Refusal.TTL)
            else:
                await self._fail(request, Status.KEY_ENOENT)
        elif result is Outcome.NON_NUMERIC:
            await self._fail(request, Status.DELTA_BADVAL)
        elif not request.quiet:
            await self._commit_loud(request, ADJUST_FAILURES, counter=True)

    async def _flush(self, request: BinaryRequest) -> None:
        refusal = self.core.flush_refusal(request.exptime)
        if refusal is not None:
            await self._refuse(request, refusal)
        else:
            await self._conditional(request, Clear(), 0, NO_FAILURES)

    # -- everything else ------------------------------------------------------

    async def _noop(self, request: BinaryRequest) -> None:
        """The durability barrier: answered once all this connection sent is on disk."""
        self._write_verdicts(await self.core.barrier())
        self.out += encode_response(request.opcode, Status.NO_ERROR, request.opaque)

    async def _quit(self, request: BinaryRequest) -> None:
        await self._settle()
        if not request.quiet:
            self.out += encode_response(request.opcode, Status.NO_ERROR, request.opaque)
        self.closing = True

    async def _version(self, request: BinaryRequest) -> None:
        await self._settle()
        self.out += encode_response(
            request.opcode, Status.NO_ERROR, request.opaque, value=PROTOCOL_VERSION.encode()
        )

    async def _verbosity(self, request: BinaryRequest) -> None:
        await self._settle()
        self.out += encode_response(request.opcode, Status.NO_ERROR, request.opaque)

    async def _stat(self, request: BinaryRequest) -> None:
        """Stat: the groups of :meth:`Core.stats_group` (the key is the group
        and its words, as in text), answered in Stat responses."""
        await self._settle()
        group, *args = request.key.split(b" ")
        if group == b"items":  # a key listing: its own writes in it (docs/pov.md)
            await self.core.prepare_listing()
        pairs = _stat_pairs(self.core.stats_group(group, args))
        if pairs is None:
            self.out += error_response(request.opcode, request.opaque, Status.KEY_ENOENT)
            return
        out = self.out
        for name, value in pairs:
            out += stat_response(
                request.opaque, name, value if isinstance(value, bytes) else str(value)
            )
        out += stat_end_response(request.opaque)

    async def _refuse(self, request: BinaryRequest, refusal: Refusal) -> None:
        await self._fail(request, REFUSAL_STATUS[refusal], refusal.value)

    # -- SASL PLAIN -----------------------------------------------------------

    async def _sasl_list(self, request: BinaryRequest) -> None:
        await self._settle()
        if self.auth is None:
            self.out += error_response(request.opcode, request.opaque, Status.UNKNOWN_COMMAND)
        else:
            self.out += encode_response(
                request.opcode, Status.NO_ERROR, request.opaque, value=MECHANISMS
            )

    async def _sasl_auth(self, request: BinaryRequest) -> None:
        await self._settle()
        if self.auth is None:
            self.out += error_response(request.opcode, request.opaque, Status.UNKNOWN_COMMAND)
        elif request.key == MECHANISMS and self.auth.check_plain(request.value):
            self.authenticated = True
            self.out += encode_response(
                request.opcode, Status.NO_ERROR, request.opaque, value=AUTHENTICATED
            )
        else:
            self.out += error_response(request.opcode, request.opaque, Status.AUTH_ERROR)

    async def _sasl_step(self, request: BinaryRequest) -> None:
        """PLAIN finishes in one step: there is never a step to continue."""
        await self._settle()
        status = Status.UNKNOWN_COMMAND if self.auth is None else Status.AUTH_ERROR
        self.out += error_response(request.opcode, request.opaque, status)


def _committed_response(
    opcode: int, opaque: int, failures: Failures, counter: bool, committed: Committed
) -> bytes:
    """A loud write's response once its commit decided it: a failure, or
    success with the cas the commit gave its item (a counter's value too)."""
    if committed.failure is not None:
        return error_response(opcode, opaque, Status.EINTERNAL, committed.failure)
    status = failures.get(committed.outcome)  # type: ignore[arg-type]
    if status is not None:
        return error_response(opcode, opaque, status)
    item = committed.item
    cas = item.cas if item is not None else 0
    if counter:
        return counter_response(opcode, opaque, cas, int(item.value) if item is not None else 0)
    return encode_response(opcode, Status.NO_ERROR, opaque, cas)


def _stat_pairs(answer: StatsAnswer) -> Sequence[tuple[str, object]] | None:
    """A ``stats <group>`` answer (:meth:`Core.stats_group`) as binary Stat
    pairs; None: the group is unknown (KEY_ENOENT)."""
    kind = answer.kind
    if kind is StatsKind.LIST:
        return answer.pairs
    if kind is StatsKind.RESET or kind is StatsKind.DETAIL_SWITCHED:
        return ()
    if kind is StatsKind.DETAIL_DUMP:
        return [("detailed", answer.dump)]  # memcached: one stat holding the text dump
    return None


def _refused(exc: WritesRefused) -> Status:
    """The status of a refused write: a full disk is memcached's "out of
    memory"; a follower answers "not supported" (docs/pov.md)."""
    return Status.NOT_SUPPORTED if isinstance(exc, ReadOnlyReplica) else Status.ENOMEM
