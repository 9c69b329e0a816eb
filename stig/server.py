"""The listener: accept connections, run the promoter, shut down cleanly.

Shutdown (SIGINT/SIGTERM, or cancelling :func:`serve`): stop accepting,
end every connection — an open run at a command boundary is committed, a torn
command discarded — let the promoter commit everything queued, close LMDB.
Everything acknowledged is then on disk.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
from typing import Callable

import trio

from stig.connection import Connection, send_all
from stig.engine import Engine
from stig.settings import Settings

log = logging.getLogger(__name__)

TOO_MANY = b"SERVER_ERROR Too many open connections\r\n"


async def _listen(settings: Settings) -> trio.socket.SocketType:
    family = socket.AF_INET6 if ":" in settings.listen else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await sock.bind((settings.listen, settings.port))
    sock.listen(1024)
    return sock


async def _reject(sock: trio.socket.SocketType) -> None:
    """memcached's answer when --max-connections is reached."""
    try:
        with trio.move_on_after(1):
            await send_all(sock, TOO_MANY)
    except OSError:
        pass
    finally:
        sock.close()


async def _handle(engine: Engine, sock: trio.socket.SocketType) -> None:
    stats = engine.stats
    stats.curr_connections += 1
    stats.total_connections += 1
    try:
        await Connection(engine, sock).serve()
    finally:
        stats.curr_connections -= 1


async def _accept_loop(
    engine: Engine, listener: trio.socket.SocketType, nursery: trio.Nursery
) -> None:
    stats = engine.stats
    limit = engine.settings.max_connections
    while True:
        try:
            sock, _ = await listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                log.warning("accept failed (%s); pausing", exc)
                await trio.sleep(0.1)
                continue
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if stats.curr_connections >= limit:
            stats.rejected_connections += 1
            nursery.start_soon(_reject, sock)
            continue
        nursery.start_soon(_handle, engine, sock)


async def serve(
    settings: Settings,
    *,
    on_ready: Callable[[str, int], None] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled or signalled; ``task_status`` gets the bound port."""
    engine = Engine(settings)
    try:
        async with trio.open_nursery() as system:
            await system.start(engine.run_promoter)
            listener = await _listen(settings)
            port = listener.getsockname()[1]
            log.info("stig listening on %s:%d, data in %s", settings.listen, port, settings.data_dir)
            if on_ready is not None:
                on_ready(settings.listen, port)
            task_status.started(port)
            with trio.CancelScope() as connections_scope:
                async with trio.open_nursery() as connections:
                    connections.start_soon(_wait_for_signal, connections_scope)
                    try:
                        await _accept_loop(engine, listener, connections)
                    finally:
                        listener.close()
            with trio.CancelScope(shield=True):
                await engine.promoter.close()
    finally:
        with trio.CancelScope(shield=True):
            await engine.close()
        log.info("stig stopped; LMDB closed")


async def _wait_for_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            scope.cancel()
            return
