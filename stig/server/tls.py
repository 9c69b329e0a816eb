"""TLS for client connections (``--tls-cert``/``--tls-key``, like memcached's ``-Z``).

:class:`TlsCertificates` holds the server's :class:`ssl.SSLContext` and
builds a new one on :meth:`~TlsCertificates.reload` (``refresh_certs`` or
SIGHUP): connections already open keep the context they were accepted
with, new ones get the new certificate — without a restart, as memcached.
A reload that fails (a missing or mismatched file) keeps the old context.

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
import time
from typing import cast

import trio

from stig.engine.settings import Settings

log = logging.getLogger(__name__)

#: How long a client may take to finish the TLS handshake before it is dropped.
HANDSHAKE_TIMEOUT = 10.0
#: How long sending ``close_notify`` may take (a client that reads nothing and
#: has filled its window holds it up) before the socket is closed without it.
CLOSE_TIMEOUT = 2.0


class TlsError(Exception):
    """The certificate, key or CA file cannot be used."""


def build_context(settings: Settings) -> ssl.SSLContext:
    """A server context from the settings' files: TLS 1.2 or newer (memcached's
    default ``ssl_min_version``), client certificates required against
    ``--tls-ca`` when ``--tls-verify-clients`` is on."""
    assert settings.tls_cert is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(
            f"loading the certificate chain {settings.tls_cert}: {_reason(exc)}"
        ) from exc
    if settings.tls_ca is not None:
        try:
            context.load_verify_locations(cafile=settings.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"loading the CA file {settings.tls_ca}: {_reason(exc)}") from exc
    if settings.tls_verify_clients:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


class TlsCertificates:
    """The current server context; :meth:`reload` swaps in a new one."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.context = build_context(settings)
        self.loaded_at = time.monotonic()
        self.handshake_errors = 0

    def reload(self) -> None:
        """Read the files again; raises :class:`TlsError` and keeps the old
        context if they cannot be used."""
        self.context = build_context(self.settings)
        self.loaded_at = time.monotonic()
        log.info("TLS certificates reloaded from %s", self.settings.tls_cert)

    @property
    def seconds_since_reload(self) -> int:
        return int(time.monotonic() - self.loaded_at)

    def wrap(self, sock: trio.socket.SocketType) -> TlsSocket:
        # Not https_compatible: that mode never sends close_notify.  Its other
        # effect, a peer's missing close_notify raising BrokenResourceError
        # instead of reading as the end, is undone in TlsSocket.recv.
        stream = trio.SSLStream(trio.SocketStream(sock), self.context, server_side=True)
        return TlsSocket(stream, self)


class TlsSocket:
    """A TLS connection with the socket methods the connection loop uses.

    The handshake runs on the first ``recv`` (bounded by
    :data:`HANDSHAKE_TIMEOUT`); a client that fails it is counted in
    ``ssl_handshake_errors`` and dropped, as a closed connection.
    """

    def __init__(
        self, stream: trio.SSLStream[trio.SocketStream], certificates: TlsCertificates
    ) -> None:
        self.stream = stream
        self._certificates = certificates
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
        self._certificates.handshake_errors += 1
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
