"""A follower's progress in shared memory (``--replica-of`` with ``--workers N``).

One worker holds the stream from the primary (worker 0, docs/workers.md);
``stats`` on any worker shows the same replication lines, so that worker
publishes its :class:`~stig.engine.replicas.FollowerState` here as it
changes (each field set is one 8-byte store; the last error is a length
word and up to :data:`ERROR_BYTES` bytes) and the others read it when they
answer ``stats``.  The block is part of the followers' block
(stig/engine/shared_replicas.py, ``follower_bytes``): one writer, any
number of readers; a reader may see one field newer than another (a few
microseconds apart), as ``stats`` across workers does anyway.
"""

from __future__ import annotations

from typing import Any

#: The numeric fields of FollowerState shared, in word order.
FIELDS = (
    "connected",
    "applied_seq",
    "primary_seq",
    "pending_bytes",
    "applied_time_ms",
    "connects",
    "snapshots",
    "groups_applied",
    "groups_discarded",
    "groups_saved",
)
_INDEX = {name: index for index, name in enumerate(FIELDS)}
_ERROR_LENGTH = len(FIELDS)  # the word holding the error's length
_ERROR_START = 8 * (len(FIELDS) + 1)


class SharedFollower:
    """The progress block over ``block`` (bytes of the shared segment)."""

    __slots__ = ("_error", "_words")

    def __init__(self, block: memoryview) -> None:
        self._words = block[:_ERROR_START].cast("Q")
        self._error = block[_ERROR_START:]

    @property
    def error_bytes(self) -> int:
        """The longest last error kept (a longer one is cut)."""
        return len(self._error)

    def publish(self, name: str, value: Any) -> None:
        """The worker holding the stream set field ``name`` of its state."""
        index = _INDEX.get(name)
        if index is not None:
            self._words[index] = int(value)
        elif name == "last_error":
            data = str(value).encode(errors="replace")[: len(self._error)]
            self._words[_ERROR_LENGTH] = 0
            self._error[: len(data)] = data
            self._words[_ERROR_LENGTH] = len(data)

    def publish_all(self, state: Any) -> None:
        """Every shared field of ``state`` (the worker starts holding the stream)."""
        for name in (*FIELDS, "last_error"):
            self.publish(name, getattr(state, name))

    def load(self) -> dict[str, Any]:
        """The fields as last published, by name."""
        words = self._words
        fields: dict[str, Any] = {name: int(words[index]) for name, index in _INDEX.items()}
        fields["connected"] = bool(fields["connected"])
        length = min(int(words[_ERROR_LENGTH]), len(self._error))
        fields["last_error"] = bytes(self._error[:length]).decode(errors="replace")
        return fields
