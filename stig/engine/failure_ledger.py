"""A session's ledger of failed promotions: what it must still report, and how.

Each failure is reported exactly once (docs/pov.md, "The barrier", "When a
commit fails"):

* a promotion whose reply waits for its commit (``held_reply``) is reported
  by that reply;
* any other failure is *unreported* (:attr:`FailureLedger.unreported`) until
  the session's next barrier or reply waiting for a commit reports it
  (:meth:`FailureLedger.reported`);
* a failed promotion that owes quiet writes their verdicts reports its own
  failure to them (:meth:`FailureLedger.failure_to_report`), unless a barrier
  or a reply reported it first;
* a failure that lost writes already answered from the POV is the session's
  :attr:`FailureLedger.failure`: its connection reports the loss and closes,
  woken at once (``on_failure``) even when idle, saying whether the writes
  lost were acknowledged (:meth:`FailureLedger.loss_message`).

A write refused quietly (a full disk, text ``noreply``) is unreported as well
(:meth:`FailureLedger.refused_quietly`).  The ledger only keeps these facts;
the session tells it what happened (:meth:`FailureLedger.record`) and the core
asks it what to say.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from stig.engine.promoter import Promotion


def failed(promotion: Promotion) -> bool:
    """Whether a finished promotion failed to commit."""
    return promotion.error is not None or promotion.outcomes is None


class FailureLedger:
    """One session's failed promotions; see the module docstring."""

    __slots__ = ("_acked", "_reported_owed", "_words", "failure", "on_failure", "unreported")

    def __init__(self) -> None:
        #: A commit of writes answered from the POV failed: the connection ends.
        self.failure: str | None = None
        #: A failure no reply has reported yet (a barrier reports it).
        self.unreported: str | None = None
        #: Called once when :attr:`failure` is set: the connection wakes up to say so.
        self.on_failure: Callable[[], None] | None = None
        # The failure lost acknowledged writes.
        self._acked = False
        # Failed promotions owing quiet verdicts that a barrier or a reply has
        # reported already (by id: the session's ``owed`` keeps them alive).
        self._reported_owed: set[int] = set()
        # The failure is not a commit's (fail_with): said in these words.
        self._words: str | None = None

    def record(self, promotion: Promotion, acked_seq: int) -> bool:
        """``promotion`` finished with an error: it is unreported unless a
        held reply reports it, and it is the session's :attr:`failure` if it
        held writes answered from the POV (acknowledged if ``acked_seq``, the
        newest write a reply acknowledged, reaches its first).  True when
        that made it the failure (the first such): ``on_failure`` was called."""
        error = promotion.error
        if error is None:
            return False
        if not promotion.held_reply:  # else its held reply reports it
            self.unreported = error
        if not promotion.answered_early or self.failure is not None:
            return False
        self.failure = error
        self._acked = promotion.first_seq <= acked_seq
        if self.on_failure is not None:
            self.on_failure()
        return True

    def fail_with(self, words: str) -> None:
        """End the connection saying ``words`` (unless a failure ends it
        already): its writes are committed, but a promise about them could
        not be kept (``--min-replica-acks``), so no reply acknowledges them."""
        if self.failure is None:
            self.failure = self._words = words

    def refused_quietly(self, message: str) -> None:
        """A write whose client wants no reply was refused: the next barrier
        (or reply waiting for a commit) says so, unless a failure is unreported already."""
        if self.unreported is None:
            self.unreported = message

    def reported(self, owed: Iterable[tuple[Promotion, object]]) -> None:
        """A reply reports the failures so far: the unreported one, and those
        of the finished promotions in ``owed`` (closed runs owing quiet
        verdicts), which are owed nothing more."""
        self.unreported = None
        for promotion, _tags in owed:
            if promotion.finished and failed(promotion):
                self._reported_owed.add(id(promotion))

    def failure_to_report(self, promotion: Promotion) -> str | None:
        """The failure of ``promotion``, a finished run that owed quiet
        verdicts, for those writes — None when it committed, or when a
        barrier or a reply reported it already.  Each failed run is reported
        once, in its own words, and the unreported failure with it (a barrier
        after it answers success)."""
        if not failed(promotion):
            return None
        if id(promotion) in self._reported_owed:
            self._reported_owed.discard(id(promotion))
            return None
        self.unreported = None
        return promotion.error or "commit failed"

    def loss_message(self) -> str:
        """What the connection says before it closes, once :attr:`failure` is
        set: a loss of acknowledged writes only if it was one."""
        if self._words is not None:
            return self._words
        if self._acked:
            return f"{self.failure}; acknowledged writes were lost"
        return f"{self.failure}; unacknowledged writes were not stored"
