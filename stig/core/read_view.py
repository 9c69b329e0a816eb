"""What a handler may do with a read the core hands out: the read view.

:meth:`stig.core.command_core.Core.view` and :meth:`~stig.core.command_core.Core.snapshot`
give one LMDB snapshot with the session's writes laid over it
(:class:`stig.storage.snapshot.Snapshot`).  The handlers read items from it,
render replies straight from it on their fast paths, and word its failure;
they see it through this protocol, so that no front end depends on the
storage's snapshot or on the session (tests/protocol/test_layout.py), and
what a handler may do with a read is written in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from stig.storage.records import Item


class ReadView(Protocol):
    """One snapshot of the store with this session's writes over it.

    A read that outlives the snapshot's end (the map grew, or the client
    read none of a held read's replies) raises ``lmdb.Error``; its reply
    then says :attr:`interruption`.
    """

    def __enter__(self) -> ReadView: ...

    def __exit__(self, *exc: object) -> None: ...

    def item(self, key: bytes) -> Item | None:
        """``key``'s item (this session's own write first), or None."""
        ...

    def parts(self, key: bytes) -> tuple[int, int, bytes | memoryview] | None:
        """``key``'s client flags, cas and value, or None (a text get's hot path)."""
        ...

    def render(
        self,
        keys: Sequence[bytes],
        start: int,
        line: bytes,
        with_cas: bool,
        out: bytearray,
        limit: int,
    ) -> tuple[int, int]:
        """Append each found key's ``line`` to ``out`` until ``limit``: (read, found)."""
        ...

    def render_each(
        self, keys: Sequence[bytes], hit: bytes, miss: bytes, out: bytearray, limit: int
    ) -> tuple[int, int]:
        """Answer each key as a get of its own until ``limit``: (answered, found)."""
        ...

    def hold(self, keys: Iterable[bytes] | None) -> None:
        """Keep the view across awaits, to read ``keys`` (None: any) later."""
        ...

    def forget(self, key: bytes) -> None:
        """``key`` is gone from this POV: later reads of it here miss."""
        ...

    @property
    def interruption(self) -> str:
        """The error of a read this view could not finish (it ended early)."""
        ...

    def close(self) -> None:
        """End the view (also when it ended early)."""
        ...
