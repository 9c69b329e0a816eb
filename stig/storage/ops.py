"""Write operations, and how each one is applied to the global state.

A session turns every write command into one of these.  The promoter applies
them, in order, inside one LMDB write transaction through a :class:`View`.
This module is the single place that says what a write *does* to the shared
state; it knows nothing of LMDB or of protocols.

Unconditional operations (:class:`Put`, :class:`Remove`, :class:`Adjust`,
:class:`Concat`) re-apply their intent to the state current at promotion:
an increment adds its delta to whatever value is there then, so every
increment counts.  Conditional operations (:class:`Cas`, :class:`Add`,
:class:`Replace`, :class:`CompareRemove`, :class:`Clear`, and the meta
protocol's :class:`MarkStale`, :class:`Blank`, :class:`Vivify`,
:class:`SetState`) are checked against that state and their
:class:`Outcome` is what the client is told.

A ``new_cas`` (meta ``E``) stores the item under that cas instead of a
fresh one; see :meth:`View.put` for what it does to the cas counter.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import NamedTuple, Protocol, overload

import attrs

from stig.storage.records import STALE, WIN_SENT, Item

U64 = 2**64


class Outcome(enum.Enum):
    STORED = "stored"
    NOT_STORED = "not_stored"
    EXISTS = "exists"
    NOT_FOUND = "not_found"
    DELETED = "deleted"
    NON_NUMERIC = "non_numeric"
    SKIPPED = "skipped"  # an unconditional write that found nothing to change


class View(Protocol):
    """The global state as a write transaction sees it."""

    #: The largest value an append/prepend may make (``--max-item-size``).
    max_value_size: int

    def get(self, key: bytes) -> Item | None: ...

    def put(
        self, key: bytes, value: bytes, flags: int, state: int = 0, cas: int | None = None
    ) -> int:
        """Store an item under ``cas`` (None: a fresh cas unique); its cas is returned."""
        ...

    def delete(self, key: bytes) -> bool: ...

    def clear(self) -> None: ...


def parse_counter(value: bytes) -> int | None:
    """The number an ``incr``/``decr`` may act on: decimal digits, < 2**64.

    Trailing spaces are allowed because memcached may space-pad after a decr.
    """
    digits = value.rstrip(b" ")
    if not digits.isdigit():
        return None
    # Leading zeros are fine (memcached's strtoull takes them: "007" is 7);
    # the length bound only keeps int() away from huge digit strings.
    if len(digits) > 20 and len(digits.lstrip(b"0")) > 20:
        return None
    number = int(digits)
    return number if number < U64 else None


def adjust_counter(current: int, delta: int, incr: bool) -> int:
    """memcached's arithmetic: incr wraps at 2**64, decr stops at 0."""
    if incr:
        return (current + delta) % U64
    return max(current - delta, 0)


class Put(NamedTuple):
    """set; ``new_cas`` (meta ``E``) stores under that cas instead of a fresh one.

    A NamedTuple rather than a frozen attrs class like the other ops: one is
    built per set on the event loop, and a tuple is about twice as cheap to
    build.  (Like every op it is immutable.)
    """

    key: bytes
    value: bytes
    flags: int
    new_cas: int | None = None

    def apply(self, view: View) -> Outcome:
        view.put(self.key, self.value, self.flags, cas=self.new_cas)
        return Outcome.STORED


class PutRun(Sequence[Put]):
    """A run of plain sets (``Put`` without ``new_cas``) as three columns.

    How such a run crosses to the writer process (``frame_group`` in
    stig/engine/writer_link.py): three lists pickle and unpickle in C, where
    a ``Put`` each cost a reduce call in the worker and a tuple built in
    the writer (4.5 µs a set together, more than the writer's LMDB put);
    :meth:`stig.storage.store.Store.apply` puts its records in one tight
    loop.  It is a sequence of the ``Put`` it stands for, so that every
    other reader of a run (a failed commit's report) sees the same ops.
    """

    __slots__ = ("flags", "keys", "values")

    def __init__(self, keys: list[bytes], values: list[bytes], flags: list[int]) -> None:
        self.keys = keys
        self.values = values
        self.flags = flags

    @classmethod
    def of(cls, ops: Sequence[object]) -> PutRun | None:
        """``ops`` as columns, or None if one of them is not a plain set."""
        put = Put
        for op in ops:
            if op.__class__ is not put or op.new_cas is not None:
                return None
        return cls(
            [op.key for op in ops],  # type: ignore[attr-defined]
            [op.value for op in ops],  # type: ignore[attr-defined]
            [op.flags for op in ops],  # type: ignore[attr-defined]
        )

    def __reduce__(self) -> tuple[type[PutRun], tuple[list[bytes], list[bytes], list[int]]]:
        return PutRun, (self.keys, self.values, self.flags)

    def __len__(self) -> int:
        return len(self.keys)

    @overload
    def __getitem__(self, index: int) -> Put: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Put]: ...

    def __getitem__(self, index: int | slice) -> Put | Sequence[Put]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return Put(self.keys[index], self.values[index], self.flags[index])


@attrs.frozen(slots=True)
class Remove:
    key: bytes

    def apply(self, view: View) -> Outcome:
        return Outcome.DELETED if view.delete(self.key) else Outcome.NOT_FOUND


@attrs.frozen(slots=True)
class Adjust:
    """incr/decr by ``delta``; ``initial`` (if not None) creates a missing item.

    A non-zero ``expected`` makes it conditional (binary Increment with a
    cas): an existing item whose cas differs is left alone, EXISTS.
    """

    key: bytes
    delta: int
    incr: bool
    initial: int | None = None
    flags: int = 0
    expected: int = 0
    new_cas: int | None = None  #: meta ``ma E``: store under this cas

    def apply(self, view: View) -> Outcome:
        item = view.get(self.key)
        if item is None:
            if self.initial is None:
                return Outcome.SKIPPED
            view.put(self.key, b"%d" % self.initial, self.flags, cas=self.new_cas)
            return Outcome.STORED
        if self.expected and item.cas != self.expected:
            return Outcome.EXISTS
        current = parse_counter(item.value)
        if current is None:
            return Outcome.NON_NUMERIC
        result = adjust_counter(current, self.delta, self.incr)
        view.put(self.key, b"%d" % result, item.flags, cas=self.new_cas)
        return Outcome.STORED


@attrs.frozen(slots=True)
class Concat:
    """append/prepend; ``vivify_flags`` (if not None) creates a missing item.

    A non-zero ``expected`` makes it conditional (binary Append with a cas):
    an existing item whose cas differs is left alone, EXISTS.
    """

    key: bytes
    data: bytes
    prepend: bool
    vivify_flags: int | None = None
    expected: int = 0
    new_cas: int | None = None  #: meta ``ms E``: store under this cas

    def apply(self, view: View) -> Outcome:
        item = view.get(self.key)
        if item is None:
            if self.vivify_flags is None:
                return Outcome.NOT_STORED
            view.put(self.key, self.data, self.vivify_flags, cas=self.new_cas)
            return Outcome.STORED
        if self.expected and item.cas != self.expected:
            return Outcome.EXISTS
        if len(item.value) + len(self.data) > view.max_value_size:
            return Outcome.NOT_STORED  # memcached's answer too: the item stays as it was
        value = self.data + item.value if self.prepend else item.value + self.data
        view.put(self.key, value, item.flags, cas=self.new_cas)
        return Outcome.STORED


@attrs.frozen(slots=True)
class Cas:
    """Store only if the item's cas unique is still ``expected``.

    ``invalidate`` (meta ``ms I``): when ``expected`` is *older* than the
    item's cas, store anyway but marked stale, keeping a win already handed
    out — as memcached does, so a late writer cannot make stale data fresh.
    """

    key: bytes
    value: bytes
    flags: int
    expected: int
    new_cas: int | None = None
    invalidate: bool = False

    def apply(self, view: View) -> Outcome:
        item = view.get(self.key)
        if item is None:
            return Outcome.NOT_FOUND
        state = 0
        if item.cas != self.expected:
            if not (self.invalidate and self.expected < item.cas):
                return Outcome.EXISTS
            state = STALE | (item.state & WIN_SENT)
        view.put(self.key, self.value, self.flags, state, cas=self.new_cas)
        return Outcome.STORED


@attrs.frozen(slots=True)
class Add:
    """Store only if the key is absent: of concurrent adds exactly one wins."""

    key: bytes
    value: bytes
    flags: int
    new_cas: int | None = None

    def apply(self, view: View) -> Outcome:
        if view.get(self.key) is not None:
            return Outcome.NOT_STORED
        view.put(self.key, self.value, self.flags, cas=self.new_cas)
        return Outcome.STORED


@attrs.frozen(slots=True)
class Replace:
    """Store only if the key is present."""

    key: bytes
    value: bytes
    flags: int
    new_cas: int | None = None

    def apply(self, view: View) -> Outcome:
        if view.get(self.key) is None:
            return Outcome.NOT_STORED
        view.put(self.key, self.value, self.flags, cas=self.new_cas)
        return Outcome.STORED


@attrs.frozen(slots=True)
class CompareRemove:
    """Delete only if the cas unique still matches (``expected`` 0: any)."""

    key: bytes
    expected: int = 0

    def apply(self, view: View) -> Outcome:
        item = view.get(self.key)
        if item is None:
            return Outcome.NOT_FOUND
        if self.expected and item.cas != self.expected:
            return Outcome.EXISTS
        view.delete(self.key)
        return Outcome.DELETED


@attrs.frozen(slots=True)
class MarkStale:
    """The meta protocol's invalidating delete (``md I``): keep the value, mark it stale.

    The cas is bumped (or set to ``new_cas``) and any win already handed out
    is withdrawn, so that the next reader wins the right to recache.
    ``blank_flags`` (``md I x``) also empties the value and sets these flags.
    """

    key: bytes
    expected: int = 0
    new_cas: int | None = None
    blank_flags: int | None = None

    def apply(self, view: View) -> Outcome:
        item = view.get(self.key)
        if item is None:
            return Outcome.NOT_FOUND
        if self.expected and item.cas != self.expected:
            return Outcome.EXISTS
        value, flags = item.value, item.flags
        if self.blank_flags is not None:
            value, flags = b"", self.blank_flags
        view.put(self.key, value, flags, (item.state | STALE) & ~WIN_SENT, cas=self.new_cas)
        return Outcome.DELETED


@attrs.frozen(slots=True)
class Blank:
    """``md x``: empty the value and set ``flags``, keeping the item and its cas."""

    key: bytes
    flags: int = 0
    expected: int = 0
    new_cas: int | None = None

    def apply(self, view: View) -> Outcome:
        item = view.get(self.key)
        if item is None:
            return Outcome.NOT_FOUND
        if self.expected and item.cas != self.expected:
            return Outcome.EXISTS
        cas = item.cas if self.new_cas is None else self.new_cas
        view.put(self.key, b"", self.flags, cas=cas)
        return Outcome.DELETED


@attrs.frozen(slots=True)
class Vivify:
    """``mg N`` on a miss: create an empty placeholder whose creator wins the lease.

    Of concurrent vivifying reads of one absent key exactly one is STORED
    (it won); the others find the placeholder (NOT_STORED).
    """

    key: bytes
    new_cas: int | None = None

    def apply(self, view: View) -> Outcome:
        if view.get(self.key) is not None:
            return Outcome.NOT_STORED
        view.put(self.key, b"", 0, WIN_SENT, cas=self.new_cas)
        return Outcome.STORED


@attrs.frozen(slots=True)
class SetState:
    """Replace an item's state bits, keeping value, flags and cas (meta win hand-out).

    Only applies while the item is unchanged: its cas unique is still
    ``expected`` and its state bits still ``previous``, so of concurrent
    readers of a stale item exactly one takes the win.
    """

    key: bytes
    state: int
    expected: int
    previous: int

    def apply(self, view: View) -> Outcome:
        item = view.get(self.key)
        if item is None:
            return Outcome.NOT_FOUND
        if item.cas != self.expected or item.state != self.previous:
            return Outcome.EXISTS
        view.put(self.key, item.value, item.flags, self.state, cas=item.cas)
        return Outcome.STORED


@attrs.frozen(slots=True)
class Clear:
    """flush_all: every item goes, in one transaction."""

    def apply(self, view: View) -> Outcome:
        view.clear()
        return Outcome.DELETED


class ExpiredMode(enum.Enum):
    """Which conditional store an :class:`ExpiredStore` stands for."""

    ADD = "add"
    REPLACE = "replace"
    CAS = "cas"


@attrs.frozen(slots=True)
class ExpiredStore:
    """add/replace/cas with an exptime already past: memcached stores an item
    that is expired at once, so nothing is kept (docs/pov.md).

    The verdict is the store's own: ``add`` of a present key NOT_STORED (what
    libmemcached's ``memcached_exist`` relies on), else STORED and nothing
    written; ``replace`` and ``cas`` that would store remove the key instead.
    """

    key: bytes
    mode: ExpiredMode
    expected: int = 0  #: the cas unique a CAS compares

    def apply(self, view: View) -> Outcome:
        item = view.get(self.key)
        if self.mode is ExpiredMode.ADD:
            return Outcome.STORED if item is None else Outcome.NOT_STORED
        if item is None:
            return Outcome.NOT_FOUND if self.mode is ExpiredMode.CAS else Outcome.NOT_STORED
        if self.mode is ExpiredMode.CAS and item.cas != self.expected:
            return Outcome.EXISTS
        view.delete(self.key)
        return Outcome.STORED


Op = (
    Put
    | Remove
    | Adjust
    | Concat
    | Cas
    | Add
    | Replace
    | CompareRemove
    | MarkStale
    | Blank
    | Vivify
    | SetState
    | Clear
    | ExpiredStore
)
