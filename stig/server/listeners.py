"""The listeners: accept connections, run the promoter, shut down cleanly.

Listeners (docs/security.md): the TCP port, plain or TLS (``--tls-cert``;
with ``--tls-port`` TLS gets a port of its own beside the plain one), or a
unix domain socket instead of TCP (``--unix-socket``, as memcached's
``-s``).  Connections beyond ``--max-connections`` are told
``ERROR Too many open connections`` and closed (counted in
``rejected_connections``).  SIGHUP reloads the TLS certificates (without
TLS it is logged and ignored).

Shutdown (SIGINT/SIGTERM): stop accepting, and give the connections
``--shutdown-grace-ms`` to answer every command they have received: an idle
one closes at once, a busy one at its next command boundary
(:meth:`Connection.stop_when_idle`). When the grace ends, or at a second
signal, or when :func:`serve` is cancelled, every connection left is ended —
an open run at a command boundary is committed, a torn command discarded.
Then the promoter commits everything queued and LMDB closes: everything
acknowledged is on disk.

Under a service manager (sd_notify, stig/server/sd_notify.py): ``READY=1``
once every listener listens and nothing holds readiness back
(stig/engine/readiness.py), ``STOPPING=1`` when a signal begins the
shutdown, ``STATUS=`` lines along the way, and ``WATCHDOG=1`` pings when
the unit asks for them.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from stig.core.replies import send_all
from stig.engine.certificates import TlsCertificates, TlsError
from stig.engine.engine import Engine, WorkerRole
from stig.engine.readiness import Hold
from stig.engine.settings import Settings
from stig.server import stalled_reads
from stig.server.connection import Connection
from stig.server.plain_socket import PlainSocket
from stig.server.sd_notify import Notifier, keep_alive
from stig.server.tls import wrap as wrap_tls

log = logging.getLogger(__name__)

#: memcached's words (with its default maxconns_fast) to a connection over the limit.
TOO_MANY = b"ERROR Too many open connections\r\n"


@attrs.frozen
class Listener:
    """One listening socket and how its connections are served."""

    sock: trio.socket.SocketType
    tls: bool = False
    unix: bool = False

    @property
    def address(self) -> str:
        """What the ready line says: ``HOST:PORT`` or ``unix:PATH``."""
        if self.unix:
            return f"unix:{self.sock.getsockname()}"
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"


async def _listen_tcp(host: str, port: int) -> trio.socket.SocketType:
    """Never ``SO_REUSEPORT``: a second server on the address must fail to
    bind, not share the connections (``--workers N`` shares one socket)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await sock.bind((host, port))
    sock.listen(1024)
    return sock


class ListenError(Exception):
    """A listening socket could not be opened (address in use, no permission…)."""


def _listened_on(path: Path) -> bool:
    """Whether a process accepts connections on the unix socket ``path`` (a
    non-blocking connect: it never waits on that process)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False  # nobody listens: a stale file
    except BlockingIOError:
        return True  # listening, its backlog full
    except OSError:
        return False
    finally:
        probe.close()
    return True


def bind_unix(path: Path, mask: int) -> socket.socket:
    """Bind ``path`` with permission bits ``mask`` and listen, as memcached's ``-s``/``-a``.

    A stale socket file left by an earlier run is removed; a socket some
    process still listens on (another server: clients would silently reach
    the wrong database) and any other file there are errors.  The umask is
    set around bind, so the file is never reachable with wider permissions,
    even for a moment.  (The supervisor of ``--workers N`` binds it once and
    every worker accepts on it: a unix socket has no ``SO_REUSEPORT``.)
    """
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            if _listened_on(path):
                raise ListenError(
                    f"cannot listen on {path}: the socket is in use by a running server"
                )
            path.unlink()
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(~mask & 0o777)
    try:
        sock.bind(str(path))
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    sock.listen(1024)
    return sock


async def _listen_unix(path: Path, mask: int) -> trio.socket.SocketType:
    return trio.socket.from_stdlib_socket(bind_unix(path, mask))


async def open_listeners(settings: Settings, role: WorkerRole | None = None) -> list[Listener]:
    """The sockets the settings ask for; the first is the main one.  A
    worker (``role``) accepts on the socket its supervisor listens on.

    Raises :class:`ListenError` naming the address that failed.
    """
    if role is not None and role.listen_fd >= 0:
        main = trio.socket.from_stdlib_socket(socket.socket(fileno=role.listen_fd))
        if settings.unix_socket is not None:
            return [Listener(main, unix=True)]
        if role.tls_listen_fd < 0:
            return [Listener(main, tls=settings.tls_enabled)]
        tls_sock = trio.socket.from_stdlib_socket(socket.socket(fileno=role.tls_listen_fd))
        return [Listener(main), Listener(tls_sock, tls=True)]
    try:
        return await _open_listeners(settings)
    except OSError as exc:
        where = settings.unix_socket or f"{settings.listen}:{exc.filename or settings.port}"
        raise ListenError(f"cannot listen on {where}: {exc.strerror or exc}") from exc


async def _open_listeners(settings: Settings) -> list[Listener]:
    if settings.unix_socket is not None:
        return [Listener(await _listen_unix(settings.unix_socket, settings.unix_mask), unix=True)]
    main = await _listen_tcp(settings.listen, settings.port)
    if not settings.tls_enabled:
        return [Listener(main)]
    if settings.tls_port is None:
        return [Listener(main, tls=True)]
    return [
        Listener(main),
        Listener(await _listen_tcp(settings.listen, settings.tls_port), tls=True),
    ]


def _bound(settings: Settings, listeners: list[Listener]) -> Settings:
    """The settings with the ports actually bound (``0`` picks one), as
    ``stats settings`` shows them."""
    if settings.unix_socket is not None:
        return settings
    ports = [listener.sock.getsockname()[1] for listener in listeners]
    if settings.tls_port is not None:
        return attrs.evolve(settings, port=ports[0], tls_port=ports[1])
    return attrs.evolve(settings, port=ports[0])


async def _reject(sock: trio.socket.SocketType) -> None:
    """memcached's answer when --max-connections is reached."""
    try:
        with trio.move_on_after(1):
            await send_all(sock, TOO_MANY)
    except OSError:
        pass
    finally:
        sock.close()


@attrs.define
class Shutdown:
    """The connections being served, and the graceful end of them all."""

    connections: set[Connection] = attrs.field(factory=set)
    #: Set once a signal began the shutdown: new connections are not taken.
    begun: bool = False

    def begin(self) -> None:
        """Every connection answers what it has received, then closes."""
        self.begun = True
        for connection in list(self.connections):
            connection.stop_when_idle()


async def _handle(
    engine: Engine,
    sock: trio.socket.SocketType,
    tls: TlsCertificates | None,
    shutdown: Shutdown,
) -> None:
    """Serve one accepted connection (counted in ``curr_connections`` by the
    accept loop, which admitted it); uncount it when it ends."""
    stats = engine.stats
    try:
        if tls is None:
            # The lean hot path: the stdlib socket itself (plain_socket.py).
            await _serve_connection(Connection(engine, PlainSocket.from_trio(sock)), shutdown)
        else:
            tls_sock = wrap_tls(tls, sock, engine.stats)
            try:
                await _serve_connection(Connection(engine, tls_sock), shutdown)
            finally:
                await tls_sock.aclose()  # close_notify, then the socket
    finally:
        stats.curr_connections -= 1


async def _serve_connection(connection: Connection, shutdown: Shutdown) -> None:
    shutdown.connections.add(connection)
    try:
        if shutdown.begun:  # accepted just before the listeners closed
            connection.stop_when_idle()
        await connection.serve()
    finally:
        shutdown.connections.discard(connection)


async def _accept_loop(
    engine: Engine,
    listener: Listener,
    nursery: trio.Nursery,
    tls: TlsCertificates | None,
    shutdown: Shutdown,
) -> None:
    stats = engine.stats
    limit = engine.settings.max_connections
    tcp = not listener.unix
    listener_sock = listener.sock
    tls = tls if listener.tls else None
    while True:
        try:
            sock, _ = await listener_sock.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                log.warning("accept failed (%s); pausing", exc)
                await trio.sleep(0.1)
                continue
            raise
        if tcp:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if engine.connections() >= limit:  # every worker's (--workers N)
            # Before any TLS handshake, as memcached: the refusal is in the clear.
            stats.rejected_connections += 1
            nursery.start_soon(_reject, sock)
            continue
        # Counted now, not in its task: the next accept of a burst sees it.
        stats.curr_connections += 1
        stats.total_connections += 1
        nursery.start_soon(_handle, engine, sock, tls, shutdown)


async def serve(
    settings: Settings,
    *,
    on_ready: Callable[[list[Listener]], None] | None = None,
    notifier: Notifier | None = None,
    role: WorkerRole | None = None,
    task_status: trio.TaskStatus[list[Listener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled or signalled; ``task_status`` gets the listeners.

    ``notifier`` tells a service manager how the server is doing (the
    command line makes one from the environment; by default nothing is told).

    Raises :class:`~stig.server.tls.TlsError` before listening if the TLS files
    cannot be used.
    """
    tls = TlsCertificates(settings) if settings.tls_enabled else None
    if tls is not None and role is not None:
        # refresh_certs on one worker: the supervisor passes a SIGHUP to all.
        tls.everywhere = _ask_supervisor_to_reload
    engine = Engine(settings, role)
    engine.tls = tls
    notifier = notifier or Notifier()
    engine.readiness.notify = notifier.notify
    shutdown = Shutdown()
    signals_scope = trio.CancelScope()
    try:
        engine.readiness.status(f"starting: data in {settings.data_dir}")
        listeners = await open_listeners(settings, role)
        engine.settings = _bound(settings, listeners)
        async with trio.open_nursery() as system:
            await system.start(engine.run_promoter)
            watchdog = trio.CancelScope()
            system.start_soon(_watch_stalled_reads, engine, watchdog)
            pings = trio.CancelScope()
            system.start_soon(_keep_alive, notifier, pings)
            following = trio.CancelScope()
            fencing = trio.CancelScope()
            roles = trio.CancelScope()
            system.start_soon(_watch_role, engine, roles)
            if engine.follower is not None and engine.holds_stream:
                # Before the listeners open: READY=1 waits until it caught up.
                hold = engine.readiness.hold(
                    f"catching up with the primary at {engine.follower.primary}"
                )
                system.start_soon(_follow, engine, following, hold)
            if engine.holds_stream:
                # Former primaries not told of a promotion yet (stored in
                # LMDB: also after a restart of the group or of the server).
                system.start_soon(_fence_former_primaries, engine, fencing)
            with trio.CancelScope() as connections_scope:
                async with trio.open_nursery() as connections:
                    with trio.CancelScope() as front_scope:
                        # Signal handlers first, then "listening": a SIGTERM sent
                        # as soon as the server says it is up is a clean shutdown,
                        # never the default action (death by signal, -15).
                        await system.start(
                            _wait_for_signals,
                            signals_scope,
                            front_scope,
                            connections_scope,
                            shutdown,
                            settings.shutdown_grace_ms / 1000.0,
                            engine,
                        )
                        await _accept_until_stopped(
                            engine, listeners, connections, tls, shutdown, on_ready, task_status
                        )
            signals_scope.cancel()
            watchdog.cancel()
            following.cancel()
            fencing.cancel()
            roles.cancel()
            with trio.CancelScope(shield=True):
                await engine.promoter.close()
            pings.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await engine.close()
        log.info("stig stopped; LMDB closed")
        notifier.close()


async def _follow(engine: Engine, scope: trio.CancelScope, hold: Hold) -> None:
    """A follower (``--replica-of``): follow the primary until shutdown or a
    promotion (``stig_promote``; :func:`_fence_former_primaries` then tells
    the former primary of the new epoch); ``hold`` is released once it has
    caught up (``READY=1``), or is promoted."""
    from stig.replication.follower import follow

    state = engine.follower
    assert state is not None
    with scope:
        await follow(engine, hold)
        await state.promoted.wait()  # it stopped for a promotion: its end
        hold.release()


async def _fence_former_primaries(engine: Engine, scope: trio.CancelScope) -> None:
    """Tell each former primary due a fence of this server's epoch, until
    it heard it (stig/replication/fencer.py)."""
    from stig.replication.fencer import fence_former_primaries

    with scope:
        await fence_former_primaries(engine)


async def _watch_role(engine: Engine, scope: trio.CancelScope) -> None:
    """``--workers N``: adopt a promotion or a fence stored by another worker."""
    with scope:
        await engine.watch_role()


async def _watch_stalled_reads(engine: Engine, scope: trio.CancelScope) -> None:
    with scope:
        await stalled_reads.watch(engine)


async def _keep_alive(notifier: Notifier, scope: trio.CancelScope) -> None:
    with scope:
        await keep_alive(notifier)


async def _accept_until_stopped(
    engine: Engine,
    listeners: list[Listener],
    connections: trio.Nursery,
    tls: TlsCertificates | None,
    shutdown: Shutdown,
    on_ready: Callable[[list[Listener]], None] | None,
    task_status: trio.TaskStatus[list[Listener]],
) -> None:
    """Accept on every listener until cancelled."""
    try:
        async with trio.open_nursery() as accepting:
            for listener in listeners:
                log.info(
                    "stig listening on %s%s, data in %s",
                    listener.address,
                    " (TLS)" if listener.tls else "",
                    engine.settings.data_dir,
                )
            if on_ready is not None:
                on_ready(listeners)
            engine.readiness.listening([listener.address for listener in listeners])
            task_status.started(listeners)
            for listener in listeners:
                accepting.start_soon(_accept_loop, engine, listener, connections, tls, shutdown)
    finally:
        for listener in listeners:
            listener.sock.close()
        if engine.settings.unix_socket is not None and engine.settings.workers <= 1:
            # With workers the supervisor binds it, and removes it at its end.
            engine.settings.unix_socket.unlink(missing_ok=True)


async def _wait_for_signals(
    own_scope: trio.CancelScope,
    front_scope: trio.CancelScope,
    connections_scope: trio.CancelScope,
    shutdown: Shutdown,
    grace: float,
    engine: Engine,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The first SIGINT/SIGTERM stops accepting and gives the connections
    ``grace`` seconds to finish (the service manager hears ``STOPPING=1``);
    a second one ends them at once.  SIGHUP reloads the TLS certificates,
    from start to exit; without TLS it is logged and ignored (its default
    action would end the process with no graceful shutdown: a
    ``systemctl reload`` must never do that)."""
    readiness = engine.readiness
    signums = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    with own_scope, trio.open_signal_receiver(*signums) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                _reload(engine.tls)
                continue
            if shutdown.begun:
                log.info("received %s again: closing every connection now", name)
                readiness.status(f"stopping: {name} again, closing every connection now")
                connections_scope.cancel()
                continue
            log.info(
                "received %s: shutting down; %d connections get up to %g s to finish",
                name,
                len(shutdown.connections),
                grace,
            )
            readiness.stopping(
                f"stopping on {name}: {len(shutdown.connections)} connections"
                f" get up to {grace:g} s to finish"
            )
            front_scope.cancel()
            shutdown.begin()
            connections_scope.deadline = trio.current_time() + grace


def _ask_supervisor_to_reload() -> None:
    """A worker's ``refresh_certs``: its supervisor sends every worker SIGHUP."""
    os.kill(os.getppid(), signal.SIGHUP)


def _reload(tls: TlsCertificates | None) -> None:
    """SIGHUP: reload the certificates, as ``refresh_certs`` does."""
    if tls is None:
        log.info("received SIGHUP: nothing to reload without TLS; serving on")
        return
    try:
        tls.reload()
    except TlsError as exc:
        log.error("SIGHUP: certificates not reloaded, the old ones stay: %s", exc)
