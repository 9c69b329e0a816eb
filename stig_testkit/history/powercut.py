"""Power cuts for history runs: Stig's data directory on lazyfs (a FUSE
filesystem that forgets what was never synced, :mod:`stig_testkit.lazyfs`,
mounted by :class:`stig_testkit.crashrig.LazyMount`), and a crash that
SIGKILLs Stig *and* cuts the power."""

from __future__ import annotations

from collections.abc import Callable

from stig_testkit.crashrig import MOUNT_TIMEOUT, LazyMount, fuse_unavailable
from stig_testkit.process import StigProcess

__all__ = ["LazyMount", "cut_under", "fuse_unavailable"]


def cut_under(mount: LazyMount, server: StigProcess) -> Callable[[], None]:
    """A crash for :meth:`Driver.crash`: SIGKILL ``server``, cut the power
    (unsynced pages dropped or torn, then a fresh mount), reap the process
    (one stuck in a FUSE request dies once the cut answers it)."""

    def crash() -> None:
        assert server.proc is not None
        server.kill_every_process()  # a worker must not answer from the cut disk
        mount.cut()
        server.proc.wait(MOUNT_TIMEOUT)

    return crash
