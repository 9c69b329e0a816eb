"""A session's open run: the writes not yet closed into a promotion, and their undo.

A run is what one atomic promotion will hold (docs/pov.md, "Runs").  While
it is open the session records into it (:class:`stig.engine.session.Session`
owns the rules: the overlay, when a run closes; its bytes are charged to the
write budget by :class:`stig.engine.charges.Charges`); this object
only keeps what the run is, and how to take it back from the POV if it is
discarded (a dropped connection, a truncated command, a run too large).

A plain class with slots: the session's hot path (every plain ``set``) reads
and writes its fields directly, with no method call per write; the methods
here run once per run or per promotion.  For the same reason the session
empties it in place when a run ends (``Session._new_run``: a loud set ends
a run per write), rather than building a new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, Protocol, TypeVar

from stig.storage.ops import Op

#: An overlay entry (the session's ``_Pending``: a seq and the item its POV saw).
P = TypeVar("P", bound="HasSeq")


class HasSeq(Protocol):
    """What the undo needs of an overlay entry: the seq of the write it holds."""

    @property
    def seq(self) -> int: ...


class OpenRun(Generic[P]):
    """The open run of one session; see the module docstring."""

    __slots__ = ("answered", "clears", "keys", "ops", "owed", "undo", "unresolved_undo")

    def __init__(self) -> None:
        #: The run's operations, in order: the promotion's ``ops``.
        self.ops: list[Op] = []
        #: key -> seq of the run's newest write to it (the promotion's ``key_seqs``).
        self.keys: dict[bytes, int] = {}
        #: The run holds writes answered from the POV.
        self.answered = False
        #: The run holds a flush_all (every key).
        self.clears = False
        #: What the run replaced, so that discarding it restores the POV: the
        #: overlay entry (None: none) of each key it wrote ...
        self.undo: dict[bytes, P | None] = {}
        #: ... and the awaited-verdict seq (None: none) of each key (None:
        #: every key) its conditional writes made unresolved.
        self.unresolved_undo: dict[bytes | None, int | None] = {}
        #: Verdicts owed to quiet clients: (tag, index of the write in ``ops``).
        self.owed: list[tuple[object, int]] = []

    @property
    def pure(self) -> bool:
        """Whether it holds only writes answered from the POV (no conditional,
        intent, flush_all or owed verdict): such a run may join the
        promotion of the pure run closed right before it."""
        return not self.unresolved_undo and not self.clears and not self.owed

    def restore(self, overlay: dict[bytes, P], unresolved: dict[bytes | None, int]) -> None:
        """Take the run back from the POV: put back in ``overlay`` and
        ``unresolved`` what its writes replaced (an older write of a closed
        run is still pending and still seen; a verdict still awaited)."""
        for key, before in self.undo.items():
            if before is None:
                overlay.pop(key, None)
            else:
                overlay[key] = before
        for ukey, useq in self.unresolved_undo.items():
            if useq is None:
                unresolved.pop(ukey, None)
            else:
                unresolved[ukey] = useq

    def committed(self, key_seqs: Mapping[bytes, int], last_seq: int) -> None:
        """A promotion committed the writes up to ``key_seqs`` (and every
        verdict up to ``last_seq``): what the run replaced that is now in the
        global state has nothing to be put back."""
        if self.unresolved_undo:
            undo_unresolved = self.unresolved_undo
            for ukey, useq in undo_unresolved.items():
                if useq is not None and useq <= last_seq:
                    undo_unresolved[ukey] = None
        undo = self.undo
        for key, seq in key_seqs.items():
            before = undo.get(key)
            if before is not None and before.seq <= seq:
                undo[key] = None
