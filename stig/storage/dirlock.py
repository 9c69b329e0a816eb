"""One writer per data directory: an exclusive lock on ``<dir>/stig.lock``.

Two servers on one LMDB environment would each keep their own cas counter
and promoter, so cas uniques would repeat and two writers would race.  Every
process that writes the directory (``stig serve``, ``stig restore``) holds
an exclusive ``flock`` on this file for as long as it writes; a second one
fails at once with :class:`DataDirInUse`, naming the directory.  Read-only
tools (``stig backup``, ``check``, ``dump``) take no lock: LMDB readers work
beside its writer.

The kernel drops the lock when the process exits, however it ends, so a
crash never leaves a stale lock behind (the file itself stays, empty).

Permissions: a database's files are private.  A data directory this creates
gets mode 0700 and the lock file 0600 (a umask cannot widen them); the data
files LMDB creates get 0600 too (:class:`stig.storage.store.Store`).  Existing
directories and files keep their mode.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "stig.lock"
#: Mode of the files Stig creates in a data directory or a backup.
FILE_MODE = 0o600
#: Mode of the directories Stig creates.
DIR_MODE = 0o700


class DataDirInUse(Exception):
    """Another process holds the data directory's writer lock."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"data directory {str(path)!r} is in use by another Stig process "
            f"(a running server or restore holds {LOCK_NAME}); stop it first"
        )
        self.path = path


class DirLock:
    """The exclusive writer lock of one data directory, held until :meth:`release`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.mkdir(DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirInUse(self.path) from None
        self._fd: int | None = fd

    @staticmethod
    def held(path: str | os.PathLike[str]) -> bool:
        """Whether some process holds the lock of ``path`` now (False if no lock file)."""
        try:
            fd = os.open(Path(path) / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def release(self) -> None:
        """Drop the lock; safe to call twice."""
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None
