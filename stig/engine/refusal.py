"""Writes refused: what the server does while the disk cannot take a commit.

A commit that fails because the disk or the map cannot grow — the disk or
the quota is full (``ENOSPC``, ``EDQUOT``, ``EFBIG`` past a file size
limit), the disk fails (``EIO``), or the map is full and cannot be grown —
will fail again for the next write just the same.  Acknowledging writes
meanwhile (the default mode answers them from the POV, before their commit)
would turn every acknowledgement into a loss.  So the promoter puts the
server in the **writes refused** state (:class:`WriteRefusal`): from then on
every new write is refused at once, in every protocol, with words that name
the cause (:data:`WORDS`); reads, deletes (which free space: they answer
after their commit, see :meth:`stig.core.command_core.Core.delete`),
``stats`` and the tools go on.

The state ends when a **probe** commits: the promoter commits a ballast of
:data:`PROBE_BYTES` (and one record as large as the largest value of the
commit that failed, so that its contiguous pages are tested too) into the
meta table and deletes it again, in two transactions (:meth:`Store.probe
<stig.storage.store.Store.probe>`).  It tries that every
:data:`PROBE_SECONDS` while refused, and at once after any commit succeeds
meanwhile (a delete, a ``flush_all``): freeing space brings writes back
within one commit, an operator freeing space on the filesystem within a
second.  The pages the ballast took are free again afterwards, kept in the
data file for the writes that follow.

A ``EIO`` from LMDB may be a full disk in disguise: LMDB reports a short
write (the filesystem filled up mid-write) as ``EIO``.  :func:`classify`
calls it a full disk when the filesystem (or ``RLIMIT_FSIZE``) leaves less
room than the commit needed plus a margin, and a disk I/O error otherwise.

docs/pov.md ("When the disk is full") states what a client may lose.
"""

from __future__ import annotations

import enum
import errno
import os
import resource
import time
from pathlib import Path

import attrs
import lmdb

from stig.storage.store import MapCannotGrow

#: Bytes the probe commits (as page-sized records) before writes are accepted again.
PROBE_BYTES = 1 << 20
#: Seconds between two probes while writes are refused.
PROBE_SECONDS = 1.0
#: Room below which an ``EIO`` commit counts as a full disk (on top of what it needed).
FULL_MARGIN = 1 << 20

_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class Cause(enum.Enum):
    """Why writes are refused (``stig_writes_refused_cause``)."""

    DISK_FULL = "disk_full"
    IO_ERROR = "io_error"
    MAP_FULL = "map_full"


#: How each cause is said to clients.
WORDS = {
    Cause.DISK_FULL: "out of disk space",
    Cause.IO_ERROR: "disk I/O error",
    Cause.MAP_FULL: "database map full",
}


def classify(exc: BaseException, data_dir: Path, needed: int) -> Cause | None:
    """The cause of a failed commit that must stop writes, or None when the
    failure is this commit's own (an operation LMDB refuses, a bug): then
    only its run fails, as before.  ``needed``: the bytes the commit wrote."""
    if isinstance(exc, MapCannotGrow):
        return Cause.MAP_FULL
    if isinstance(exc, lmdb.PanicError):
        return Cause.IO_ERROR  # the meta page could not be written
    if not isinstance(exc, lmdb.Error):
        return None
    code = getattr(exc, "code", 0)
    if code in _DISK_FULL_ERRNOS:
        return Cause.DISK_FULL
    if code == errno.EIO:
        return Cause.DISK_FULL if _no_room(data_dir, needed + FULL_MARGIN) else Cause.IO_ERROR
    return None


def _no_room(data_dir: Path, needed: int) -> bool:
    """Whether the filesystem, or the file size limit, leaves less than ``needed``
    bytes for the data file: LMDB's ``EIO`` for a short write then meant a full disk."""
    try:
        fs = os.statvfs(data_dir)
        size = os.stat(data_dir / "data.mdb").st_size
    except OSError:
        return False
    if fs.f_bavail * fs.f_frsize < needed:
        return True
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return limit != resource.RLIM_INFINITY and size + needed > limit


def words_for(cause: Cause | None, error: str) -> str:
    """A commit failure as a client is told it: ``commit failed: <cause> (<LMDB's words>)``,
    or as before when it has no cause that refuses writes."""
    if cause is None:
        return f"commit failed: {error}"
    return f"commit failed: {WORDS[cause]} ({error})"


@attrs.define
class WriteRefusal:
    """The writes-refused state and its counters (``stats``); the promoter owns it."""

    #: What a refused write is told; None while writes are accepted.  Sessions
    #: read it before recording any write (the one check on the hot path).
    message: str | None = None
    cause: Cause | None = None
    since: float = 0.0  #: time.monotonic() when writes were refused
    #: The bytes the next probe must commit besides :data:`PROBE_BYTES`: the
    #: largest value of the commit that failed.
    largest: int = 0
    refused: int = 0  #: writes refused (``stig_write_refusals``)
    episodes: int = 0  #: times writes became refused
    probes: int = 0  #: probe commits tried
    last_error: str = ""  #: the last commit failure, in LMDB's words
    last_kind: str = "none"  #: its cause (``other``: one run's own failure)
    #: A follower refuses every write, for good, with these words (None: a primary).
    read_only: str | None = None

    def make_read_only(self, words: str) -> None:
        """Refuse every write from now on, deletes too (a follower: ``--replica-of``)."""
        self.read_only = self.message = words

    def lift_read_only(self) -> None:
        """Accept writes again (a follower promoted to primary), unless refused for a cause."""
        self.read_only = None
        if self.cause is None:
            self.message = None

    def failed(self, cause: Cause | None, error: str) -> None:
        """Note a commit failure (for ``stats``)."""
        self.last_error = error
        self.last_kind = "other" if cause is None else cause.value

    def enter(self, cause: Cause, largest: int) -> bool:
        """Refuse writes for ``cause``; True if they were accepted until now."""
        self.largest = max(self.largest, largest)
        entered = self.message is None
        self.cause = cause
        self.message = f"{WORDS[cause]}; writes refused"
        if entered:
            self.since = time.monotonic()
            self.episodes += 1
        return entered

    def leave(self) -> None:
        """A probe committed: writes are accepted again."""
        self.message = self.read_only
        self.cause = None
        self.largest = 0

    def sync(self) -> None:
        """Take in what other processes changed (with workers:
        stig/engine/shared_refusal.py); one process has nothing to take in."""

    @property
    def refusing(self) -> bool:
        return self.message is not None

    def reset(self) -> None:
        """``stats reset``: the counters, not the state."""
        self.refused = self.episodes = self.probes = 0
