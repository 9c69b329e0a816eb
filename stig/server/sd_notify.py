"""The sd_notify protocol: tell the service manager how the server is doing.

systemd (``Type=notify``) names a unix datagram socket in ``$NOTIFY_SOCKET``
(a path, or an abstract address when it starts with ``@``); a service sends
it datagrams of ``NAME=value`` lines: ``READY=1``, ``STOPPING=1``,
``STATUS=…``, ``WATCHDOG=1`` (sd_notify(3)).  This is that protocol in a few
lines of the standard library, with no dependency on libsystemd.

A notification is advice, never a condition of serving: without
``$NOTIFY_SOCKET`` nothing is sent, and a socket that cannot be reached (gone,
refused, full) is logged once as a warning, and again only after a
notification got through in between; the server goes on.  The socket is
non-blocking: a service manager that stops reading never stalls the event
loop, the datagram is dropped.

The watchdog (``WatchdogSec=`` in the unit, ``$WATCHDOG_USEC`` here):
:func:`keep_alive` sends ``WATCHDOG=1`` every half period from a trio task,
so it proves the event loop runs — a loop blocked by a stuck call, or a
process stopped, misses its pings and systemd restarts it.  It does not
prove commits progress: the commit thread may wait on a slow disk while the
loop serves reads, and a commit that takes long (a map growing, a large
transaction's fsync) must not get the database killed.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Mapping

import attrs
import trio

log = logging.getLogger(__name__)


def _address(name: str) -> str | bytes:
    """``$NOTIFY_SOCKET`` as ``sendto`` takes it: ``@name`` is abstract
    (a leading NUL byte), anything else a path."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


def message(fields: Mapping[str, str]) -> bytes:
    """One datagram: ``NAME=value`` lines (a value holds no newline)."""
    lines = (f"{name}={value}".replace("\n", " ") for name, value in fields.items())
    return "\n".join(lines).encode()


@attrs.define
class Notifier:
    """Sends notifications to ``$NOTIFY_SOCKET``; does nothing without one."""

    #: The socket's name as the environment gives it; None: no service manager.
    socket_name: str | None = None
    #: ``$WATCHDOG_USEC`` in seconds when it applies to this process; None: no watchdog.
    watchdog_interval: float | None = None
    _failing: bool = attrs.field(default=False, init=False)
    _sock: socket.socket | None = attrs.field(default=None, init=False)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier the environment asks for (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        name = env.get("NOTIFY_SOCKET") or None
        return cls(name, _watchdog_interval(env) if name else None)

    def notify(self, fields: Mapping[str, str]) -> bool:
        """Send ``fields`` in one datagram; whether it was sent (False without
        a socket, and on any error, which is logged, never raised)."""
        if self.socket_name is None or not fields:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(message(fields), _address(self.socket_name))
        except OSError as exc:
            if not self._failing:
                why = "its queue is full" if exc.errno == errno.EAGAIN else exc.strerror or exc
                log.warning(
                    "cannot notify the service manager at NOTIFY_SOCKET=%s (%s); serving anyway",
                    self.socket_name,
                    why,
                )
            else:
                log.debug("notification to %s not sent: %s", self.socket_name, exc)
            self._failing = True
            return False
        self._failing = False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """``$WATCHDOG_USEC`` in seconds, if set, positive and meant for this
    process (``$WATCHDOG_PID``, when set, is our pid), as sd_watchdog_enabled(3)."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = environ.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 1e6


async def keep_alive(notifier: Notifier) -> None:
    """``WATCHDOG=1`` every half watchdog period until cancelled (returns at
    once when there is no watchdog)."""
    if notifier.watchdog_interval is None:
        return
    while True:
        notifier.notify({"WATCHDOG": "1"})
        await trio.sleep(notifier.watchdog_interval / 2)
