"""The workers' ready pipe (``stig serve --workers N``): how each worker tells
the supervisor that it listens, and later that it is ready.

The supervisor alone speaks sd_notify (a unit's ``NotifyAccess=main`` would
drop a worker's datagrams), so a worker's readiness reaches the service
manager through it.  Each worker writes two messages into the one pipe the
supervisor reads (docs/workers.md, "Failures with N workers"):

* :data:`LISTENING` once its listeners listen: when every worker has, the
  supervisor prints ``stig listening on …`` (the start's deadline,
  ``START_SECONDS``, bounds this step);
* :data:`READY` when its own :class:`~stig.engine.readiness.Readiness`
  would send ``READY=1``: it listens and nothing holds it back.  Worker 0
  of a follower holds it until it has caught up with its primary, as a
  single process does (stig/server/listeners.py); the others at once.
  The supervisor sends ``READY=1`` once every worker is ready — no
  deadline: a snapshot may take long, which a unit's ``TimeoutStartSec=``
  bounds.

A message is the kind and the worker's number in 3 bytes, one ``write`` each
(atomic: at most ``PIPE_BUF``), so a read of a multiple of 3 bytes gets
whole messages; the number tells a restarted worker's second message from
another worker's first.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping

import attrs

from stig.server.sd_notify import Notifier

#: The worker listens.
LISTENING = b"L"
#: The worker is ready: ``READY=1`` as far as it is concerned.
READY = b"R"
_MESSAGE = struct.Struct("!cH")
#: Messages taken by one read.
_BATCH = 64


def send(fd: int, kind: bytes, worker: int) -> None:
    """Write one message (``kind`` from ``worker``) into the pipe ``fd``."""
    os.write(fd, _MESSAGE.pack(kind, worker))


def receive(fd: int) -> list[tuple[bytes, int]]:
    """The messages waiting in the pipe ``fd`` (read when it is readable):
    ``(kind, worker)`` pairs."""
    data = os.read(fd, _MESSAGE.size * _BATCH)
    return [(kind, worker) for kind, worker in _MESSAGE.iter_unpack(data)]


@attrs.define
class WorkerNotifier(Notifier):
    """A worker's notifier: nothing goes to a service manager; the worker's
    ``READY=1`` becomes a :data:`READY` message to the supervisor (once;
    the pipe is closed after it, or when the worker stops)."""

    ready_fd: int = -1
    worker: int = 0

    def notify(self, fields: Mapping[str, str]) -> bool:
        if fields.get("READY") == "1" and self.ready_fd >= 0:
            send(self.ready_fd, READY, self.worker)
            self.close()
            return True
        return False

    def listening(self) -> None:
        """Every listener of this worker listens: a :data:`LISTENING` message."""
        if self.ready_fd >= 0:
            send(self.ready_fd, LISTENING, self.worker)

    def close(self) -> None:
        if self.ready_fd >= 0:
            os.close(self.ready_fd)
            self.ready_fd = -1
        super().close()
