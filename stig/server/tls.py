"""TLS for client connections (``--tls-cert``/``--tls-key``, like memcached's ``-Z``).

The certificates themselves (:class:`~stig.engine.certificates.TlsCertificates`,
reloaded by ``refresh_certs`` or SIGHUP) are server-wide state in the engine;
:func:`wrap` puts a new connection's socket in TLS with the current ones.

:class:`TlsSocket` makes a :class:`trio.SSLStream` look like the raw trio
socket the connection loop reads and writes (``recv``/``send``/``shutdown``/``close``),
so that the plain-TCP hot path stays exactly as it is and TLS costs the
loop nothing when it is off.

Closing: when the server ends a TLS connection (``quit``, an error, the idle
timeout, a stop) it sends TLS's ``close_notify`` first, so the client can
tell a clean end from a cut connection (a truncation attack).  The loop's
``close`` is synchronous, so it only marks the end; :meth:`TlsSocket.aclose`,
awaited by the server once the connection's loop is over, sends the alert.
A client that closed without one is still a clean end of input
(:meth:`TlsSocket.recv`), as many clients do.
"""

from __future__ import annotations

import logging
import ssl
from typing import cast

import trio

from stig.engine.certificates import TlsCertificates, TlsError, build_context
from stig.engine.stats import CommandStats

__all__ = ["TlsCertificates", "TlsError", "TlsSocket", "build_context", "wrap"]

log = logging.getLogger(__name__)

#: How long a client may take to finish the TLS handshake before it is dropped.
HANDSHAKE_TIMEOUT = 10.0
#: How long sending ``close_notify`` may take (a client that reads nothing and
#: has filled its window holds it up) before the socket is closed without it.
CLOSE_TIMEOUT = 2.0


def wrap(
    certificates: TlsCertificates, sock: trio.socket.SocketType, stats: CommandStats
) -> TlsSocket:
    """``sock`` as a TLS server socket with the current certificates; a failed
    handshake is counted in ``stats`` (with ``--workers N``, this worker's
    block of the shared region: every worker's are summed)."""
    # Not https_compatible: that mode never sends close_notify.  Its other
    # effect, a peer's missing close_notify raising BrokenResourceError
    # instead of reading as the end, is undone in TlsSocket.recv.
    stream = trio.SSLStream(trio.SocketStream(sock), certificates.context, server_side=True)
    return TlsSocket(stream, stats)


class TlsSocket:
    """A TLS connection with the socket methods the connection loop uses.

    The handshake runs on the first ``recv`` (bounded by
    :data:`HANDSHAKE_TIMEOUT`); a client that fails it is counted in
    ``ssl_handshake_errors`` and dropped, as a closed connection.
    """

    def __init__(self, stream: trio.SSLStream[trio.SocketStream], stats: CommandStats) -> None:
        self.stream = stream
        self._stats = stats
        self._handshaken = False
        # The wake-up (shutdown): cancels a pending receive, which then
        # reads as the end of input.  Not a real TCP shutdown: an SSLStream
        # that saw end of input is broken, and the error line could not be sent.
        self._receiving: trio.CancelScope | None = None
        self._woken = False
        self._failed_handshake = False

    async def _handshake(self) -> bool:
        self._handshaken = True
        with trio.move_on_after(HANDSHAKE_TIMEOUT):
            try:
                await self.stream.do_handshake()
                return True
            except trio.BrokenResourceError as exc:
                log.debug("TLS handshake failed: %s", exc.__cause__ or exc)
        self._stats.ssl_handshake_errors += 1
        self._failed_handshake = True
        return False

    async def recv(self, size: int) -> bytes:
        if not self._handshaken and not await self._handshake():
            return b""
        if self._woken:
            return b""
        with trio.CancelScope() as scope:
            self._receiving = scope
            try:
                # typed trio says bytes | bytearray; an SSLStream's reads are bytes
                return cast(bytes, await self.stream.receive_some(size))
            except trio.BrokenResourceError as exc:
                if isinstance(exc.__cause__, ssl.SSLEOFError):
                    return b""  # the client closed without close_notify: an end all the same
                raise
            finally:
                self._receiving = None
        return b""  # woken by shutdown()

    async def send(self, data: bytes | bytearray | memoryview) -> int:
        await self.stream.send_all(data)
        return len(data)

    def shutdown(self, how: int) -> None:
        """Stop reading (the connection's wake-up on a lost write): a pending
        or later ``recv`` sees the end of input; replies can still be sent.
        Cancelling a TLS receive while it waits for the transport loses no
        data and leaves the stream usable (trio's SSLStream breaks only on a
        cancelled send or handshake)."""
        self._woken = True
        if self._receiving is not None:
            self._receiving.cancel()

    def close(self) -> None:
        """The loop is done with the connection; :meth:`aclose` (awaited by the
        server right after) sends ``close_notify`` and closes the socket."""

    async def aclose(self) -> None:
        """Send ``close_notify`` (without waiting for the client's) and close the
        socket; at most :data:`CLOSE_TIMEOUT`, also while the server stops.
        A connection whose handshake did not succeed is closed at once."""
        stream = self.stream
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
            try:
                if self._handshaken and not self._failed_handshake:
                    await stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
                pass  # the client is gone or broke the stream: nothing to tell it
        stream.transport_stream.socket.close()
