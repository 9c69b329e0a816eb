"""Key listings over the protocol, streamed from one LMDB snapshot.

``lru_crawler metadump`` and ``stats cachedump`` list every key.  A listing
of millions of keys must not be built in memory: :func:`stream` walks one
read transaction with a cursor and yields the reply in chunks of about
:data:`CHUNK_BYTES`, which the text handler sends one by one (waiting for
the socket between them).  So the listing is one consistent snapshot, and
the server holds one chunk of it at a time.

The snapshot's read transaction stays open across those waits, which a
short read never does.  Two consequences, both stated in docs/pov.md:

* while it is open, LMDB cannot reuse the pages that later commits free, so
  the data file can grow during a long listing (as during ``stig backup``);
* if the map must grow meanwhile, :meth:`stig.storage.store.Store.grow` ends the
  snapshot first (remapping under an open cursor is unsafe), and the
  listing ends with ``SERVER_ERROR listing interrupted …`` instead of
  ``END``: list again.  So it does when its client has read none of it for
  ``--max-read-stall-ms`` (stig/storage/held.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import lmdb

from stig.engine.stats import CommandStats
from stig.storage.held import MAP_GREW, Owner
from stig.storage.records import HEADER
from stig.storage.store import Store
from stig_protocol import listing as L

#: Roughly how many reply bytes are produced before the handler sends them.
CHUNK_BYTES = 64 * 1024


def interrupted(why: str) -> bytes:
    """The line that ends a listing whose snapshot ended early, instead of ``END``."""
    return b"SERVER_ERROR listing interrupted: %b; list again\r\n" % why.encode()


_unpack = HEADER.unpack_from
_HEADER_SIZE = HEADER.size


class _Held:
    """A listing's snapshot, as stig/storage/held.py ends it early."""

    __slots__ = ("txn", "why")

    def __init__(self, txn: lmdb.Transaction) -> None:
        self.txn = txn
        self.why = MAP_GREW

    def end(self, why: str) -> None:
        self.why = why
        try:
            self.txn.abort()
        except lmdb.Error:
            pass


def stream(
    store: Store,
    line: Callable[[bytes, memoryview], bytes | None],
    limit: int = 0,
    owner: Owner | None = None,
) -> Iterator[bytes]:
    """Reply chunks: ``line(key, record)`` for each item in key order (at most
    ``limit`` lines when non-zero; a None line leaves the item out and does not
    count), then ``END``; all from one snapshot, read for ``owner``'s client.

    Close the iterator (or exhaust it) to end the snapshot.
    """
    txn = store.read_txn(buffers=True)
    held = _Held(txn)
    store.long_reads.add(txn, held, owner)
    chunk = bytearray()
    try:
        cursor = txn.cursor()
        count = 0
        found = cursor.first()
        while found:
            text = line(bytes(cursor.key()), cursor.value())
            if text is not None:
                chunk += text
                count += 1
                if count == limit:
                    break
            if len(chunk) >= CHUNK_BYTES:
                yield bytes(chunk)
                chunk.clear()
            found = cursor.next()
        chunk += L.END
        yield bytes(chunk)
    except lmdb.Error:  # ended under us: the map grew, or the client did not read
        yield bytes(chunk) + interrupted(held.why)
    finally:
        store.long_reads.discard(txn)
        try:
            txn.abort()
        except lmdb.Error:
            pass


def metadump(store: Store, owner: Owner | None = None) -> Iterator[bytes]:
    """``lru_crawler metadump all``: every key with its cas and size."""
    now = int(time.time())

    def line(key: bytes, record: memoryview) -> bytes:
        return L.metadump_line(key, _unpack(record)[1], len(key) + len(record), now)

    return stream(store, line, owner=owner)


def cachedump(
    store: Store, limit: int, stats: CommandStats, owner: Owner | None = None
) -> Iterator[bytes]:
    """``stats cachedump 1 <limit>``: every key a text line can carry (``limit``
    of them when non-zero); the others are counted in
    ``stats.cachedump_skipped_keys`` (``stig_cachedump_skipped_keys``)."""

    def line(key: bytes, record: memoryview) -> bytes | None:
        text = L.cachedump_line(key, len(record) - _HEADER_SIZE)
        if text is None:
            stats.cachedump_skipped_keys += 1
        return text

    return stream(store, line, limit, owner)
