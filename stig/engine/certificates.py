"""The server's TLS certificates (``--tls-cert``/``--tls-key``, like memcached's ``-Z``).

:class:`TlsCertificates` holds the server's :class:`ssl.SSLContext` and
builds a new one on :meth:`~TlsCertificates.reload` (``refresh_certs`` or
SIGHUP): connections already open keep the context they were accepted
with, new ones get the new certificate — without a restart, as memcached.
A reload that fails (a missing or mismatched file) keeps the old context.

Server-wide state, so it lives in the engine beside the settings; wrapping a
socket in TLS is the server's (:mod:`stig.server.tls`).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable

from stig.engine.settings import Settings

log = logging.getLogger(__name__)


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
        #: With ``--workers N``: makes every worker reload (a SIGHUP through
        #: the supervisor) after ``refresh_certs`` reloaded this one's.
        self.everywhere: Callable[[], None] | None = None

    def reload(self) -> None:
        """Read the files again; raises :class:`TlsError` and keeps the old
        context if they cannot be used."""
        self.context = build_context(self.settings)
        self.loaded_at = time.monotonic()
        log.info("TLS certificates reloaded from %s", self.settings.tls_cert)

    def refresh(self) -> None:
        """``refresh_certs``: :meth:`reload`, then in every worker."""
        self.reload()
        if self.everywhere is not None:
            self.everywhere()

    @property
    def seconds_since_reload(self) -> int:
        return int(time.monotonic() - self.loaded_at)
