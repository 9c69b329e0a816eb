"""``stats detail``: per-prefix counts of gets, hits, sets and deletes.

memcached's detail statistics: off until ``stats detail on``; a key's prefix
is what comes before its first ``:`` (keys without one are not counted);
``stats detail dump`` lists ``PREFIX <p> get <n> hit <n> set <n> del <n>``
lines, then ``END``.  As in memcached, the text and binary get, storage and
delete commands are counted (touch, incr/decr and the meta commands are
not), and ``stats reset`` forgets every prefix.

At most :data:`MAX_PREFIXES` prefixes are tracked (memcached's bound too);
keys of further prefixes are not counted.  Shown in ``stats settings``.
"""

from __future__ import annotations

from collections.abc import Sequence

#: memcached's MAX_PREFIX_COUNT: the counters' memory is bounded.
MAX_PREFIXES = 1 << 16
DELIMITER = b":"


class PrefixStats:
    """The counters, by prefix: ``[gets, hits, sets, deletes]``."""

    def __init__(self) -> None:
        self.enabled = False
        self._counts: dict[bytes, list[int]] = {}

    def _slot(self, key: bytes) -> list[int] | None:
        prefix, found, _ = key.partition(DELIMITER)
        if not found:
            return None
        counts = self._counts.get(prefix)
        if counts is None:
            if len(self._counts) >= MAX_PREFIXES:
                return None
            counts = self._counts[prefix] = [0, 0, 0, 0]
        return counts

    def record_gets(self, keys: Sequence[bytes], hits: Sequence[bool]) -> None:
        for key, hit in zip(keys, hits):  # noqa: B905 (hot path)
            counts = self._slot(key)
            if counts is not None:
                counts[0] += 1
                counts[1] += hit

    def record_set(self, key: bytes) -> None:
        counts = self._slot(key)
        if counts is not None:
            counts[2] += 1

    def record_delete(self, key: bytes) -> None:
        counts = self._slot(key)
        if counts is not None:
            counts[3] += 1

    def clear(self) -> None:
        self._counts.clear()

    @property
    def count(self) -> int:
        return len(self._counts)

    def dump(self) -> bytes:
        """memcached's dump: one line per prefix (in the order first seen), then END."""
        lines = [
            b"PREFIX %b get %d hit %d set %d del %d\r\n" % (prefix, gets, hits, sets, deletes)
            for prefix, (gets, hits, sets, deletes) in self._counts.items()
        ]
        return b"".join(lines) + b"END\r\n"
