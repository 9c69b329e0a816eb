"""Write operations, and how each one is applied to the global state.

A session turns every write command into one of these.  The promoter applies
them, in order, inside one LMDB write transaction through a :class:`View`.
This module is the single place that says what a write *does* to the shared
state; it knows nothing of LMDB or of protocols.

Unconditional operations (:class:`Put`, :class:`Remove`, :class:`Adjust`,
:class:`Concat`) re-apply their intent to the state current at promotion:
an increment adds its delta to whatever value is there then, so every
increment counts.  Conditional operations (:class:`Cas`, :class:`Add`,
:class:`Replace`, :class:`CompareRemove`, :class:`Clear`) are checked against
that state and their :class:`Outcome` is what the client is told.
"""

from __future__ import annotations

import enum
from typing import Protocol

import attrs

from stig.records import STALE, Item

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

    def get(self, key: bytes) -> Item | None: ...

    def put(self, key: bytes, value: bytes, flags: int, state: int = 0) -> int:
        """Store an item under a fresh cas unique, which is returned."""
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


@attrs.frozen(slots=True)
class Put:
    key: bytes
    value: bytes
    flags: int

    def apply(self, view: View) -> Outcome:
        view.put(self.key, self.value, self.flags)
        return Outcome.STORED


@attrs.frozen(slots=True)
class Remove:
    key: bytes

    def apply(self, view: View) -> Outcome:
        return Outcome.DELETED if view.delete(self.key) else Outcome.NOT_FOUND


@attrs.frozen(slots=True)
class Adjust:
    """incr/decr by ``delta``; ``initial`` (if not None) creates a missing item."""

    key: bytes
    delta: int
    incr: bool
    initial: int | None = None
    flags: int = 0

    def apply(self, view: View) -> Outcome:
        item = view.get(self.key)
        if item is None:
            if self.initial is None:
                return Outcome.SKIPPED
            view.put(self.key, b"%d" % self.initial, self.flags)
            return Outcome.STORED
        current = parse_counter(item.value)
        if current is None:
            return Outcome.NON_NUMERIC
        result = adjust_counter(current, self.delta, self.incr)
        view.put(self.key, b"%d" % result, item.flags)
        return Outcome.STORED


@attrs.frozen(slots=True)
class Concat:
    """append/prepend; ``vivify_flags`` (if not None) creates a missing item."""

    key: bytes
    data: bytes
    prepend: bool
    vivify_flags: int | None = None

    def apply(self, view: View) -> Outcome:
        item = view.get(self.key)
        if item is None:
            if self.vivify_flags is None:
                return Outcome.NOT_STORED
            view.put(self.key, self.data, self.vivify_flags)
            return Outcome.STORED
        value = self.data + item.value if self.prepend else item.value + self.data
        view.put(self.key, value, item.flags)
        return Outcome.STORED


@attrs.frozen(slots=True)
class Cas:
    """Store only if the item's cas unique is still ``expected``."""

    key: bytes
    value: bytes
    flags: int
    expected: int

    def apply(self, view: View) -> Outcome:
        item = view.get(self.key)
        if item is None:
            return Outcome.NOT_FOUND
        if item.cas != self.expected:
            return Outcome.EXISTS
        view.put(self.key, self.value, self.flags)
        return Outcome.STORED


@attrs.frozen(slots=True)
class Add:
    """Store only if the key is absent: of concurrent adds exactly one wins."""

    key: bytes
    value: bytes
    flags: int

    def apply(self, view: View) -> Outcome:
        if view.get(self.key) is not None:
            return Outcome.NOT_STORED
        view.put(self.key, self.value, self.flags)
        return Outcome.STORED


@attrs.frozen(slots=True)
class Replace:
    """Store only if the key is present."""

    key: bytes
    value: bytes
    flags: int

    def apply(self, view: View) -> Outcome:
        if view.get(self.key) is None:
            return Outcome.NOT_STORED
        view.put(self.key, self.value, self.flags)
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
    """The meta protocol's invalidating delete: keep the value, mark it stale."""

    key: bytes
    expected: int = 0

    def apply(self, view: View) -> Outcome:
        item = view.get(self.key)
        if item is None:
            return Outcome.NOT_FOUND
        if self.expected and item.cas != self.expected:
            return Outcome.EXISTS
        view.put(self.key, item.value, item.flags, item.state | STALE)
        return Outcome.DELETED


@attrs.frozen(slots=True)
class SetState:
    """Replace an item's state bits, keeping value and flags (meta leases).

    Only applies while the item's cas unique is still ``expected``.
    """

    key: bytes
    state: int
    expected: int

    def apply(self, view: View) -> Outcome:
        item = view.get(self.key)
        if item is None:
            return Outcome.NOT_FOUND
        if item.cas != self.expected:
            return Outcome.EXISTS
        view.put(self.key, item.value, item.flags, self.state)
        return Outcome.STORED


@attrs.frozen(slots=True)
class Clear:
    """flush_all: every item goes, in one transaction."""

    def apply(self, view: View) -> Outcome:
        view.clear()
        return Outcome.DELETED


Op = Put | Remove | Adjust | Concat | Cas | Add | Replace | CompareRemove | MarkStale | SetState | Clear
