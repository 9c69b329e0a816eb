"""What a session's writes can fail with: the errors every floor above the
engine catches (the core, the handlers that word them, the connection).

They live apart from :mod:`stig.engine.session` so that the handlers, which
translate these failures into replies, need not import the session itself
(tests/protocol/test_layout.py).
"""

from __future__ import annotations


class CommitFailed(Exception):
    """A promotion of this session could not be committed (disk full)."""


class WritesRefused(CommitFailed):
    """A write refused while the disk cannot take commits (stig/engine/refusal.py):
    nothing was recorded; the message names the cause."""


class ReadOnlyReplica(WritesRefused):
    """A write sent to a follower (``--replica-of``): refused, naming the primary."""


class NotReplicated(CommitFailed):
    """A read that would see a write too few followers have acknowledged
    within ``--replica-ack-timeout-ms`` (``--min-replica-acks N``,
    stig/engine/replica_hold.py): nothing is read; the command is answered
    ``SERVER_ERROR`` with the message, which names the missing acks."""


class PromoteRefused(Exception):
    """``stig_promote`` sent to a server that cannot be promoted (a primary)."""


class RunTooLarge(Exception):
    """An open run outgrew the write budget (``--max-pending-bytes``); it has been discarded."""

    #: What the client is told (the connection then closes).
    reason = "transaction larger than --max-pending-bytes; discarded"


class RunWaitedTooLong(RunTooLarge):
    """An open run waited for room longer than ``--max-run-wait-ms``; it has
    been discarded (:meth:`stig.engine.budget.WriteBudget.wait_for_room`)."""

    reason = "transaction waited --max-run-wait-ms for room under --max-pending-bytes; discarded"
