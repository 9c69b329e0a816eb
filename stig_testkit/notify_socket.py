"""The service manager's end of sd_notify, for tests: a real datagram socket.

:class:`NotifySocket` binds a unix datagram socket — a file in a directory,
or an abstract name — as systemd does for a ``Type=notify`` unit, gives the
value to put in the server's ``$NOTIFY_SOCKET``, and reads the
notifications the server sends, each a dict of its ``NAME=value`` lines.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

#: Seconds a notification may take to come (a bound on a failing test, not a pace).
NOTIFY_TIMEOUT = 10.0


def parse(datagram: bytes) -> dict[str, str]:
    """``b"READY=1\\nSTATUS=…"`` as ``{"READY": "1", "STATUS": "…"}``."""
    fields = {}
    for line in datagram.decode().split("\n"):
        name, _, value = line.partition("=")
        fields[name] = value
    return fields


class NotifySocket:
    """A bound unix datagram socket that collects notifications."""

    def __init__(self, name: str) -> None:
        #: What ``$NOTIFY_SOCKET`` says: a path, or ``@name`` (abstract).
        self.name = name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + name[1:].encode() if name.startswith("@") else name)
        #: Every notification received so far, in order.
        self.received: list[dict[str, str]] = []

    @classmethod
    def in_directory(cls, directory: Path) -> NotifySocket:
        return cls(str(directory / "notify"))

    @classmethod
    def abstract(cls) -> NotifySocket:
        return cls(f"@stig-test-notify-{os.getpid()}-{time.monotonic_ns()}")

    def next(self, timeout: float = NOTIFY_TIMEOUT) -> dict[str, str]:
        """The next notification; AssertionError if none comes within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            datagram = self.sock.recv(65536)
        except TimeoutError:
            raise AssertionError(
                f"no notification within {timeout}s; received so far: {self.received}"
            ) from None
        fields = parse(datagram)
        self.received.append(fields)
        return fields

    def wait_for(self, name: str, timeout: float = NOTIFY_TIMEOUT) -> dict[str, str]:
        """The first notification from now on that carries ``name``."""
        deadline = time.monotonic() + timeout
        while True:
            fields = self.next(max(0.001, deadline - time.monotonic()))
            if name in fields:
                return fields

    def queued(self) -> list[dict[str, str]]:
        """The notifications already queued, without waiting for more (for a
        sender that has exited: whatever it sent is there)."""
        found = []
        self.sock.setblocking(False)
        try:
            while True:
                found.append(parse(self.sock.recv(65536)))
        except BlockingIOError:
            pass
        self.received.extend(found)
        return found

    def close(self) -> None:
        self.sock.close()
        if not self.name.startswith("@"):
            Path(self.name).unlink(missing_ok=True)
