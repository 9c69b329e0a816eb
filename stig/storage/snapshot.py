"""One snapshot read: a run of keys from one LMDB snapshot, a session's writes laid over it.

Every read of a run of keys — a text multi-get, the get lines pipelined
behind it, a run of meta ``mg``, a binary GetQ/GetKQ run, ``gat``/``gats``
— goes through a :class:`Snapshot` (made by :meth:`stig.engine.session.Session.snapshot`),
so that no handler knows how a record is laid out in LMDB (:mod:`stig.storage.records`).

A snapshot answers a key with its :class:`~stig.storage.records.Item`
(:meth:`Snapshot.item`), or, on the hot path of a text get, with its client
flags, cas and value without building one (:meth:`Snapshot.parts`); a text
multi-get has its found keys written into its reply by :meth:`Snapshot.render`,
one loop with no call per key but LMDB's.

While nothing awaits, the session's overlay is read as it is.  A reply too
big to build whole is sent as it grows, so its snapshot must outlive an
``await``: :meth:`Snapshot.hold` first copies this session's uncommitted
writes to the keys still to be read (a commit meanwhile moves them out of
the overlay, and the snapshot predates that commit), then registers the
read transaction in ``Store.long_reads`` as a key listing does, so that
:meth:`stig.storage.store.Store.grow` can end it before it remaps the file,
and the server's watchdog once its client has read none of the reply for
``--max-read-stall-ms`` (stig/storage/held.py).  A read of a snapshot ended
so raises ``lmdb.Error``: the handler ends its reply with
:attr:`Snapshot.interruption` instead.

A held snapshot older than ``--max-snapshot-age-ms`` is *released* by the
same watchdog (:meth:`Snapshot.release`): its transaction ends at once, and
the read goes on from a new snapshot taken at its next key, with this
session's uncommitted writes laid over it again — the read is split into
consecutive snapshots, each one consistent (docs/pov.md, rule 3).  No
handler sees it: the next read of a key simply comes from the new one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import lmdb

from stig.storage.held import MAP_GREW, Owner, read_interrupted
from stig.storage.records import HEADER, Item, decode
from stig.storage.store import Store

_unpack = HEADER.unpack_from
_HEADER_SIZE = HEADER.size
#: From this size on a value is handed out as a view of its record, not a copy.
_VIEW_FROM = 4096


class _Pending(Protocol):
    @property
    def item(self) -> Item | None: ...


class Snapshot:
    """Items of one LMDB snapshot, with one session's uncommitted writes over it."""

    __slots__ = (
        "_ended",
        "_get",
        "_mine",
        "_overlay",
        "_owner",
        "_released",
        "_store",
        "_txn",
        "held",
    )

    def __init__(
        self, store: Store, overlay: Mapping[bytes, _Pending], owner: Owner | None = None
    ) -> None:
        self._store = store
        self._txn = txn = store.begin_read()
        #: Reads one record of the snapshot (:meth:`_renewed_get` once released).
        self._get: Callable[[bytes], bytes | None] = txn.get
        self._overlay = overlay  # live: read as it is while nothing awaits
        self._owner = owner  # whose replies it feeds (the stall watchdog asks it)
        self._mine: dict[bytes, Item | None] | None = None  # frozen by hold()
        self._ended = MAP_GREW  # why it ended early, once it has
        self._released = False  # released for its age: the next read takes a new one
        self.held = False

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _mine_of(self, key: bytes) -> tuple[bool, Item | None]:
        """This session's uncommitted write of ``key``: (found, item or None)."""
        mine = self._mine
        if mine is not None:
            if key in mine:
                return True, mine[key]
            return False, None
        overlay = self._overlay
        if overlay:
            pending = overlay.get(key)
            if pending is not None:
                return True, pending.item
        return False, None

    def item(self, key: bytes) -> Item | None:
        """``key``'s item in this snapshot (this session's own write first), or None."""
        found, item = self._mine_of(key)
        if found:
            return item
        record = self._get(key)
        return None if record is None else decode(record)

    def parts(self, key: bytes) -> tuple[int, int, bytes | memoryview] | None:
        """``key``'s client flags, cas and value, or None: the hot path of a
        text get, which needs no :class:`Item`.  A big value is a view of its
        record (no second copy); it stays valid after the snapshot ends."""
        if self._overlay or self._mine is not None:
            found, item = self._mine_of(key)
            if found:
                return None if item is None else (item.flags, item.cas, item.value)
        record = self._get(key)
        if record is None:
            return None
        flags, cas, _state = _unpack(record)
        if len(record) < _VIEW_FROM:
            return flags, cas, record[_HEADER_SIZE:]
        return flags, cas, memoryview(record)[_HEADER_SIZE:]

    def render(
        self,
        keys: Sequence[bytes],
        start: int,
        line: bytes,
        with_cas: bool,
        out: bytearray,
        limit: int,
    ) -> tuple[int, int]:
        """Append ``line % (key, flags, len(value), value)`` — with ``cas``
        before the value when ``with_cas`` — to ``out`` for each key of
        ``keys[start:]`` found, in order; stop before a key once ``out``
        holds ``limit`` bytes (the first key is always read).

        Returns the position of the first key not read (``len(keys)``: all
        were) and how many of those read were found.
        The loop of a text multi-get: with no write of this session to lay
        over the snapshot (the common case), each key costs one LMDB get and
        one format, no call of ours.
        """
        if self._overlay or self._mine is not None:
            return self._render_mine(keys, start, line, with_cas, out, limit)
        get = self._get
        unpack = _unpack
        header = _HEADER_SIZE
        hits = 0
        # enumerate, not range and index: fewer steps per key.  A start past
        # 0 (the rest of a streamed reply) slices once per --max-reply-bytes sent.
        for position, key in enumerate(keys[start:] if start else keys, start):
            record = get(key)
            if record is None:
                continue
            hits += 1
            size = len(record) - header
            value = record[header:] if size < _VIEW_FROM else memoryview(record)[header:]
            if with_cas:
                flags, cas, _state = unpack(record)
                out += line % (key, flags, size, cas, value)
            else:
                out += line % (key, unpack(record)[0], size, value)
            if len(out) >= limit:
                return position + 1, hits
        return len(keys), hits

    def render_each(
        self, keys: Sequence[bytes], hit: bytes, miss: bytes, out: bytearray, limit: int
    ) -> tuple[int, int]:
        """Answer each key of ``keys`` as a get of its own: append
        ``hit % (key, flags, len(value), value)`` when it is found, ``miss``
        when not; stop before a key once ``out`` holds ``limit`` bytes.

        Returns how many keys were answered and how many were found.  The
        loop of a burst of pipelined one-key text gets: no call of ours per get.
        """
        if self._overlay or self._mine is not None:
            return self._render_each_mine(keys, hit, miss, out, limit)
        get = self._get
        unpack = _unpack
        hits = 0
        for position, key in enumerate(keys):
            if len(out) >= limit:
                return position, hits
            record = get(key)
            if record is None:
                out += miss
                continue
            hits += 1
            size = len(record) - _HEADER_SIZE
            value = (
                record[_HEADER_SIZE:] if size < _VIEW_FROM else memoryview(record)[_HEADER_SIZE:]
            )
            out += hit % (key, unpack(record)[0], size, value)
        return len(keys), hits

    def _render_each_mine(
        self, keys: Sequence[bytes], hit: bytes, miss: bytes, out: bytearray, limit: int
    ) -> tuple[int, int]:
        """:meth:`render_each` with this session's writes laid over the snapshot."""
        parts = self.parts
        hits = 0
        for position, key in enumerate(keys):
            if len(out) >= limit:
                return position, hits
            found = parts(key)
            if found is None:
                out += miss
                continue
            hits += 1
            flags, _cas, value = found
            out += hit % (key, flags, len(value), value)
        return len(keys), hits

    def _render_mine(
        self,
        keys: Sequence[bytes],
        start: int,
        line: bytes,
        with_cas: bool,
        out: bytearray,
        limit: int,
    ) -> tuple[int, int]:
        """:meth:`render` with this session's writes laid over the snapshot."""
        parts = self.parts
        hits = 0
        for position in range(start, len(keys)):
            key = keys[position]
            found = parts(key)
            if found is None:
                continue
            hits += 1
            flags, cas, value = found
            if with_cas:
                out += line % (key, flags, len(value), cas, value)
            else:
                out += line % (key, flags, len(value), value)
            if len(out) >= limit:
                return position + 1, hits
        return len(keys), hits

    def hold(self, keys: Iterable[bytes] | None) -> None:
        """Keep this snapshot across awaits, to read ``keys`` (and only them;
        None: any key, for a read whose keys are still arriving) later.

        Copies this session's uncommitted writes to ``keys`` now, and
        registers the snapshot so that ``Store.grow()`` can end it.
        """
        if self.held:
            return
        overlay = self._overlay
        if not overlay:
            self._mine = {}
        elif keys is None:
            self._mine = {k: pending.item for k, pending in overlay.items()}
        else:
            self._mine = {k: overlay[k].item for k in keys if k in overlay}
        self._store.long_reads.add_renewable(self._txn, self, self._owner)
        self.held = True

    def release(self) -> None:
        """It is older than ``--max-snapshot-age-ms`` (stig/storage/held.py,
        which has unregistered it): end the transaction now, so that LMDB may
        reuse the pages it pinned.  The read goes on from a new snapshot
        taken at its next key (:meth:`_renewed_get`)."""
        try:
            self._txn.abort()
        except lmdb.Error:
            pass
        self._released = True
        self._get = self._renewed_get

    def _renewed_get(self, key: bytes) -> bytes | None:
        """Read ``key`` after :meth:`release`: first take the new snapshot —
        this session's uncommitted writes laid over it again, as :meth:`hold`
        did (those committed meanwhile are in it), registered anew and
        counted (``stig_snapshot_renewals``).  A read loop that bound the old
        ``_get`` comes here for each of its remaining keys; only the first
        takes a snapshot."""
        if self._released:
            store = self._store
            try:
                self._txn = txn = store.begin_read()
            except lmdb.Error:
                self._ended = "a new snapshot could not be taken"
                raise
            self._released = False
            self._get = txn.get
            overlay = self._overlay
            self._mine = {k: pending.item for k, pending in overlay.items()} if overlay else {}
            held = store.long_reads
            held.add_renewable(txn, self, self._owner)
            held.renewed()
        return self._get(key)

    def end(self, why: str) -> None:
        """End it early (stig/storage/held.py): the next read raises
        ``lmdb.Error``, and :attr:`interruption` says ``why``."""
        self._ended = why
        try:
            self._txn.abort()
        except lmdb.Error:
            pass

    @property
    def interruption(self) -> str:
        """The error of a read this snapshot could not finish (it ended early)."""
        return read_interrupted(self._ended)

    def forget(self, key: bytes) -> None:
        """``key`` is gone from this POV (touched to a time already past, its
        removal just recorded): later reads of it here miss.  Read live, the
        overlay already says so; held, the frozen copy of it must too."""
        if self._mine is not None:
            self._mine[key] = None

    def close(self) -> None:
        """End the snapshot (also when ``Store.grow()`` already ended it)."""
        if self.held:
            self._store.long_reads.discard(self._txn)
        try:
            self._txn.abort()
        except lmdb.Error:  # ended by grow() already
            pass
