"""Writes refused on every worker at once (``--workers N``, docs/workers.md).

One process refuses writes when a commit fails for a cause that will fail
every write alike (stig/engine/refusal.py).  With workers, the commits of
every worker fail alike too — one writer, one disk — so the state is the
server's, not a worker's: the **writer** keeps it in four words of the
shared block (stig/engine/shared_replicas.py, :data:`REFUSAL_WORD`):

* ``gen``: one more at each change (written last: a reader that sees it
  sees the other three);
* the cause's code (:data:`CODES`; 0: writes accepted);
* since when, in µs of ``time.monotonic`` (one clock for every process of
  the machine: every worker's ``stig_writes_refused_seconds`` agrees);
* the largest value of the runs whose commit failed (a probe tests it too).

The writer sets them (:func:`refuse`) **before** it answers the group whose
commit failed, so once any client is told of the failure, every worker
refuses: a worker reads the ``gen`` word each time it looks whether writes
are refused (:class:`SharedWriteRefusal`, whose ``message`` is the one
check sessions make before recording a write: one 8-byte load more) and
adopts the change.  It lifts the same way: a probe that commits — any
worker's: each refusing worker probes, as a single process does, every
:data:`~stig.engine.refusal.PROBE_SECONDS` and at once after a commit of
its own succeeds — clears the words (:func:`accept`) before its answer, and
every worker accepts writes again at its next look.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from stig.engine.refusal import WORDS, Cause, WriteRefusal
from stig.engine.shared_replicas import COMMIT_ERROR_BYTES
from stig.engine.shared_stats import Figures

_GEN, _CAUSE, _SINCE, _LARGEST = range(4)
#: Each cause's code in the cause word (0: writes accepted).
CODES = {cause: code for code, cause in enumerate(Cause, start=1)}
_CAUSES = {code: cause for cause, code in CODES.items()}


def refuse(words: memoryview, cause: Cause, largest: int) -> None:
    """A commit failed for ``cause`` (the writer): every worker refuses writes."""
    if not words[_CAUSE]:
        words[_SINCE] = int(time.monotonic() * 1e6)
        words[_LARGEST] = 0
    words[_LARGEST] = max(int(words[_LARGEST]), largest)
    words[_CAUSE] = CODES[cause]
    words[_GEN] += 1  # last: a worker that sees it sees the rest


# The last commit failure's area (``SharedReplicas.commit_error_bytes``): a
# generation word (odd while the writer rewrites it), the kind's code
# (:data:`CODES`, :data:`_OTHER`: a run's own failure), the length of LMDB's
# words, then the words (cut at :data:`_ERROR_ROOM` bytes).
_ERROR = struct.Struct("<QQQ")
_OTHER = len(CODES) + 1
_ERROR_ROOM = COMMIT_ERROR_BYTES - _ERROR.size


def note_failure(area: memoryview, cause: Cause | None, error: str) -> None:
    """A run's commit failed (the writer): every worker's ``stats`` show it
    as the last commit error (``stig_last_commit_error*``)."""
    gen = _ERROR.unpack_from(area)[0]
    data = error.encode(errors="replace")[:_ERROR_ROOM]
    code = _OTHER if cause is None else CODES[cause]
    struct.pack_into("<Q", area, 0, gen + 1)  # odd: being rewritten
    area[_ERROR.size : _ERROR.size + len(data)] = data
    _ERROR.pack_into(area, 0, gen + 1, code, len(data))
    struct.pack_into("<Q", area, 0, gen + 2)


def read_failure(area: memoryview) -> tuple[int, str, str] | None:
    """The last commit failure as the writer told it: ``(gen, kind, words)``;
    None when there was none, or the writer is rewriting it right now."""
    gen, code, length = _ERROR.unpack_from(area)
    if gen == 0 or gen % 2:
        return None
    words = bytes(area[_ERROR.size : _ERROR.size + min(length, _ERROR_ROOM)])
    if _ERROR.unpack_from(area)[0] != gen:
        return None
    kind = "other" if code == _OTHER else _CAUSES[code].value
    return gen, kind, words.decode(errors="replace")


def accept(words: memoryview) -> None:
    """A probe committed (the writer): every worker accepts writes again."""
    if words[_CAUSE]:
        words[_CAUSE] = 0
        words[_LARGEST] = 0
        words[_GEN] += 1


class SharedWriteRefusal(WriteRefusal):
    """A worker's :class:`WriteRefusal` that follows the writer's words.

    Reading :attr:`message` adopts a change of the words first; the
    promoter's own :meth:`enter`/:meth:`leave` (its failures, its probes)
    keep working as on one process, and agree with the words (the writer set
    them before it answered).  An adopted refusal counts as an episode of
    this worker too: ``stig_writes_refused_episodes`` is the largest count
    of the workers (each worker counts the episodes it took part in)."""

    __slots__ = (
        "_error_area",
        "_figures",
        "_gen",
        "_last_error",
        "_last_kind",
        "_message",
        "_words",
        "on_adopt",
    )

    def __init__(self, words: memoryview, figures: Figures, error_area: memoryview) -> None:
        self._words = words
        # The last commit failure, as the writer told every worker.
        self._error_area = error_area
        # The counters live in this worker's figures (``stats`` on another
        # worker reads them as they are: a refused write commits nothing,
        # so nothing would publish them).
        self._figures = figures
        self._gen = 0
        self._message: str | None = None
        #: Called after a change was adopted (the promoter starts or stops probing).
        self.on_adopt: Callable[[], None] | None = None
        super().__init__()

    @property
    def last_error(self) -> str:
        """The last commit failure in LMDB's words: the server's (any
        worker's run), as the writer told it."""
        told = read_failure(self._error_area)
        return self._last_error if told is None else told[2]

    @last_error.setter
    def last_error(self, value: str) -> None:
        self._last_error = value  # this worker's own, until the writer told one

    @property
    def last_kind(self) -> str:
        told = read_failure(self._error_area)
        return self._last_kind if told is None else told[1]

    @last_kind.setter
    def last_kind(self, value: str) -> None:
        self._last_kind = value

    @property
    def refused(self) -> int:
        return int(self._figures.write_refusals)

    @refused.setter
    def refused(self, value: int) -> None:
        self._figures.write_refusals = value

    @property
    def episodes(self) -> int:
        return int(self._figures.refused_episodes)

    @episodes.setter
    def episodes(self, value: int) -> None:
        self._figures.refused_episodes = value

    @property
    def probes(self) -> int:
        return int(self._figures.space_probes)

    @probes.setter
    def probes(self, value: int) -> None:
        self._figures.space_probes = value

    @property
    def message(self) -> str | None:
        """What a refused write is told (None: accepted), after the words' news."""
        if self._words[0] != self._gen:  # 0: _GEN (a constant: no global look-up)
            self._adopt()
        return self._message

    @message.setter
    def message(self, value: str | None) -> None:
        self._message = value

    def sync(self) -> None:
        """Adopt the words' news now (``stats``, the promoter's loop)."""
        if self._words[_GEN] != self._gen:
            self._adopt()

    def _adopt(self) -> None:
        words = self._words
        self._gen = int(words[_GEN])
        code = int(words[_CAUSE])
        if code:
            cause = _CAUSES[code]
            if self.cause is None:
                self.episodes += 1
            self.cause = cause
            self._message = f"{WORDS[cause]}; writes refused"
            self.since = words[_SINCE] / 1e6
            self.largest = max(self.largest, int(words[_LARGEST]))
        elif self.cause is not None:
            self.leave()
        else:
            return
        if self.on_adopt is not None:
            self.on_adopt()
