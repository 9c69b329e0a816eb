"""Which keys have a write in flight: what makes an acknowledged write visible everywhere.

A write answered from a session's POV is in LMDB only once its promotion
commits, a few milliseconds later.  Without help, another connection that
reads the key in between sees the old value although the writer already
has its reply — a stale read through any connection pool.  The rule
(docs/pov.md, "Other sessions"): once a client has a reply that acknowledges
a write, every read that starts afterwards, on any connection, sees that
write or a later one.

:class:`InFlight` is the engine-wide record that keeps the rule cheap: key →
the newest submitted promotion that writes it and has not finished yet, and
one marker for a promotion that clears every key (``flush_all``).  The
promoter *publishes* promotions as they are submitted — which is always
before any reply that acknowledges them can leave the server: a connection
sends a burst's replies only after handing its closed runs over — and
*releases* them when they finish (committed or failed).  A read checks its
keys here: if one has a promotion in flight, the read first waits for that
promotion's commit, then reads its snapshot.  The writer never waits; only
a reader of a key with a write in flight does, and only for that commit.

Why "newest wins" is enough: promotions commit in the order they are
submitted, and publishing happens at submission, so when the newest one of
a key has finished, every older one has too.  Why a finished promotion is
visible: the commit thread returns from LMDB's commit before the event loop
finishes the promotion, so a read transaction begun after that sees it.

A session's own writes are read from its POV overlay, never waited for
here.  An open run is in no promotion yet, so it stays invisible to others.

Under ``--min-replica-acks`` readers ask :class:`stig.engine.replica_hold.ReplicaHold`
instead, which asks this registry first, then holds a committed write's
keys until enough followers have it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import NamedTuple, Protocol


class _Event(Protocol):
    async def wait(self) -> None: ...


class SharedTable(Protocol):
    """What :class:`InFlight` needs of the other workers' table
    (:class:`stig.engine.shared_inflight.SharedInFlight`)."""

    def clear_for(
        self, keys: Sequence[bytes] | None, own: Collection[bytes] | Mapping[bytes, object] = ()
    ) -> bool: ...

    async def wait(
        self, keys: Sequence[bytes] | None, own: Collection[bytes] | Mapping[bytes, object] = ()
    ) -> None: ...

    def settled(self, number: int) -> bool:
        """Whether this worker's promotion ``number`` is committed (by the
        writer), although this worker may not have finished it yet."""
        ...

    def in_flight(self, keys: Iterable[bytes]) -> list[tuple[int, int]]:
        """The other workers' newest writes to ``keys`` not committed now."""
        ...

    def committed_all(self, pairs: Iterable[tuple[int, int]]) -> bool:
        """Whether every ``(worker, number)`` of ``pairs`` is committed now."""
        ...

    async def wait_for(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Wait until every ``(worker, number)`` of ``pairs`` is committed."""
        ...


class Published(Protocol):
    """What :class:`InFlight` needs of a promotion (:class:`stig.engine.promoter.Promotion`
    is one): a Protocol, so that this module, which the promoter imports, does
    not import the promoter back."""

    @property
    def key_seqs(self) -> Collection[bytes]:
        """The keys it writes."""
        ...

    @property
    def clears_all(self) -> bool:
        """Whether it holds a flush_all: every key is written."""
        ...

    @property
    def finished(self) -> bool:
        """Committed or failed."""
        ...

    @property
    def number(self) -> int:
        """Its submission number in the shared table (``--workers N``)."""
        ...

    @property
    def done(self) -> _Event:
        """Set once finished."""
        ...


class PovMarks(NamedTuple):
    """What a read that takes keys from its POV must wait for if they leave
    it (:meth:`InFlight.pov_marks`)."""

    #: key -> its newest promotion in flight here when the read began.
    newest: dict[bytes, Published | None]
    #: key -> the other workers' newest writes to it in flight then,
    #: ``(worker, number)`` (``--workers N``).
    elsewhere: dict[bytes, list[tuple[int, int]]]


#: Entries of finished promotions tolerated beyond twice the live ones.
_PURGE_SLACK = 4096


class InFlight:
    """Keys with a submitted promotion not finished yet; see the module docstring."""

    __slots__ = ("_everything", "_keys", "_live", "_live_keys", "shared", "waits")

    def __init__(self) -> None:
        #: key -> the newest promotion published for it.  Entries of finished
        #: promotions are dropped lazily (readers skip them: ``finished``):
        #: all at once when nothing is left in flight, else when they
        #: outnumber the live ones — a key-by-key release cost more than the
        #: rest of a 1,000-item batch's bookkeeping.
        self._keys: dict[bytes, Published] = {}
        self._live = 0  # published promotions not finished yet
        self._live_keys = 0  # their keys (an upper bound: a key may repeat)
        #: Reads that waited for a write in flight (``stats``: stig_read_waits).
        self.waits = 0
        #: The newest unfinished promotion that clears every key (flush_all).
        self._everything: Published | None = None
        #: The other workers' writes in flight (``--workers N``,
        #: stig/engine/shared_inflight.py); None: one process.
        self.shared: SharedTable | None = None

    def __len__(self) -> int:
        """Keys with a promotion in flight (the ``everything`` marker counts as one)."""
        live = sum([not promotion.finished for promotion in self._keys.values()])
        return live + (self._everything is not None)

    def publish(self, promotions: Iterable[Published]) -> None:
        """Record submitted promotions, oldest first (the newest of a key wins)."""
        keys = self._keys
        for promotion in promotions:
            seqs = promotion.key_seqs
            if len(seqs) == 1:  # a POV-acked write: its own run
                for key in seqs:
                    keys[key] = promotion
            else:
                keys.update(dict.fromkeys(seqs, promotion))
            self._live += 1
            self._live_keys += len(seqs)
            if promotion.clears_all:
                self._everything = promotion

    def release(self, promotion: Published) -> None:
        """A promotion finished (called just before it is marked finished)."""
        self._live -= 1
        self._live_keys -= len(promotion.key_seqs)
        if self._everything is promotion:
            self._everything = None
        keys = self._keys
        if not self._live:
            keys.clear()
        elif len(keys) > 2 * self._live_keys + _PURGE_SLACK:
            self._keys = {k: p for k, p in keys.items() if not p.finished and p is not promotion}

    def blocking(
        self, keys: Sequence[bytes] | None, own: Collection[bytes] | Mapping[bytes, object] = ()
    ) -> list[Published]:
        """The unfinished promotions a read of ``keys`` must wait for.

        ``own``: keys the reading session answers from its own POV (its
        overlay), which need no wait.  ``keys`` None: every key (a caller
        that does not know its keys yet) — then every promotion in flight.
        """
        if not self._live:
            return []
        inflight = self._keys
        everything = self._everything
        found: dict[int, Published] = {}
        if keys is None:
            candidates: list[Published | None] = list(inflight.values())
            needs_everything = True
        else:
            candidates = [inflight.get(key) for key in keys if key not in own]
            if self.shared is not None:
                candidates += self._settled_own(keys, own)
            needs_everything = bool(candidates)
        if needs_everything and everything is not None:
            candidates.append(everything)
        for promotion in candidates:
            if promotion is not None and not promotion.finished:
                found[id(promotion)] = promotion
        return list(found.values())

    def _settled_own(
        self, keys: Sequence[bytes], own: Collection[bytes] | Mapping[bytes, object]
    ) -> list[Published]:
        """``--workers N``: the promotions writing ``keys`` read from the POV
        that the writer has committed and this worker has not finished yet.
        A read must wait for them (at most a scheduler pass: their answer is
        on its way): a later write of another worker, acknowledged after that
        commit, must not hide behind this session's POV copy of the older one."""
        shared = self.shared
        assert shared is not None
        inflight = self._keys
        found: list[Published] = []
        for key in keys:
            if key in own:
                promotion = inflight.get(key)
                if (
                    promotion is not None
                    and not promotion.finished
                    and shared.settled(promotion.number)
                ):
                    found.append(promotion)
        return found

    def clear_for(
        self, keys: Sequence[bytes] | None, own: Collection[bytes] | Mapping[bytes, object] = ()
    ) -> bool:
        """True when a read of ``keys`` (None: any key) needs no wait: the hot check.

        The same answer as ``not blocking(keys, own)``, without building a list.
        """
        shared = self.shared
        if shared is not None:
            if not shared.clear_for(keys, own):
                return False
            if self._live and keys is not None and own and self._settled_own(keys, own):
                return False
        if not self._live:
            return True
        if keys is None:
            return False
        inflight = self._keys
        everything = self._everything
        if everything is None and len(keys) > 8 and inflight.keys().isdisjoint(keys):
            return True  # a multi-get: one pass in C
        for key in keys:
            if key in own:
                continue
            if everything is not None and not everything.finished:
                return False
            promotion = inflight.get(key)
            if promotion is not None and not promotion.finished:
                return False
        return True

    def pov_marks(
        self, keys: Sequence[bytes] | None, own: Collection[bytes] | Mapping[bytes, object]
    ) -> PovMarks:
        """At a read's start: the writes in flight to the keys it takes from
        its POV (``own``), which it must wait for if such a key leaves the
        POV while it waits (:meth:`left_pov_clear`)."""
        newest = {key: self._keys.get(key) for key in keys or () if key in own}
        shared = self.shared
        if shared is None or not newest:
            return PovMarks(newest, {})
        return PovMarks(newest, {key: shared.in_flight((key,)) for key in newest})

    def left_pov_clear(
        self, marks: PovMarks, own: Collection[bytes] | Mapping[bytes, object]
    ) -> bool:
        """Whether the writes of ``marks`` to the keys no longer in ``own``
        (its own write to them committed: the read takes them from the
        store) are all finished."""
        left, others = self._left_pov(marks, own)
        shared = self.shared
        return not left and (shared is None or shared.committed_all(others))

    def _left_pov(
        self, marks: PovMarks, own: Collection[bytes] | Mapping[bytes, object]
    ) -> tuple[list[Published], list[tuple[int, int]]]:
        """The unfinished promotions of ``marks`` to keys that left ``own``,
        and the other workers' writes to them (committed or not)."""
        gone = [key for key in marks.newest if key not in own]
        left = [
            promotion
            for promotion in (marks.newest[key] for key in gone)
            if promotion is not None and not promotion.finished
        ]
        return left, [pair for key in gone for pair in marks.elsewhere.get(key, ())]

    async def wait(
        self,
        keys: Sequence[bytes] | None,
        own: Collection[bytes] | Mapping[bytes, object] = (),
        marks: PovMarks | None = None,
    ) -> None:
        """Wait until every write in flight to ``keys`` (not in ``own``) has finished.

        Promotions published while this waits are writes acknowledged after
        the read began: the read may see them or not, so they are not
        waited for.  ``marks``: :meth:`pov_marks` taken at the read's start
        (by default, now).
        """
        # A key read from the POV leaves it if this session's own write to it
        # commits while this waits: the read then takes it from the store,
        # which must hold the writes to it acknowledged before the read began.
        # The newest one published now stands for them all (a key's writes
        # commit in the order they were published); with workers, the other
        # workers' newest ones in the shared table too.
        if marks is None:
            marks = self.pov_marks(keys, own)
        blocking = self.blocking(keys, own)
        if blocking:
            self.waits += 1
        for promotion in blocking:
            await promotion.done.wait()
        shared = self.shared
        if shared is not None:
            await shared.wait(keys, own)
        if marks.newest:
            await self._wait_left_pov(marks, own)

    async def _wait_left_pov(
        self, marks: PovMarks, own: Collection[bytes] | Mapping[bytes, object]
    ) -> None:
        """After a wait: wait for the writes of ``marks`` to the keys no
        longer in ``own`` until none is left unfinished.  Returns with no
        await after its last check."""
        shared = self.shared
        while not self.left_pov_clear(marks, own):
            left, others = self._left_pov(marks, own)
            for promotion in left:
                await promotion.done.wait()
            if shared is not None:
                await shared.wait_for(others)
