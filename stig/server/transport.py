"""What the connection loop needs of its socket: a trio socket or a TLS socket.

The TLS one is :class:`~stig.server.tls.TlsSocket`.

A Protocol of our own rather than ``trio.socket.SocketType``: trio 0.22 is
untyped (``Any`` to mypy, see pyproject.toml), so this is what checks the
loop's calls, and the TLS wrapper needs no cast to stand in for a socket.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol


class Transport(Protocol):
    # Awaitable, not async def: typed trio (0.23 on) declares its socket's
    # methods so, and an async def (a coroutine) is one too.
    def recv(self, size: int, /) -> Awaitable[bytes]:
        """Up to ``size`` bytes; ``b""`` at the end of input."""
        ...

    def send(self, data: bytes | bytearray | memoryview, /) -> Awaitable[int]:
        """Send some of ``data``; how many bytes went."""
        ...

    def shutdown(self, how: int, /) -> None:
        """Stop reading (``socket.SHUT_RD``): a pending ``recv`` sees the end of input."""
        ...

    def close(self) -> None: ...
