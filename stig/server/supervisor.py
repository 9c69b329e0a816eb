"""The supervisor of ``stig serve --workers N`` (N > 1): one writer, N workers.

See docs/workers.md.  The supervisor holds what must be single: the data
directory's lock, LMDB's reader table (sized for every worker), the port
(it opens one ``SO_REUSEPORT`` listening socket per worker, so the kernel
spreads the connections over them, checks that no other process listens on
that port, and hands each worker its socket) and the shared in-flight table
(a memfd).  It starts the writer process with one socket per worker, then
the workers, and prints the ready line once every worker listens.

Children die with it (``PR_SET_PDEATHSIG``: a SIGKILL of the supervisor is a
crash of the whole server, as of a single process).  SIGTERM/SIGINT (and
SIGHUP) are passed on to the workers, which stop as a single server does; the writer
stops once every worker has closed its socket.  If a worker or the writer
dies on its own, the supervisor stops the others and exits 1 (restarting
one worker alone is not built yet).
"""

from __future__ import annotations

import base64
import ctypes
import logging
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import time

import attrs

from stig.engine import shared_inflight
from stig.engine.engine import readers_for
from stig.engine.settings import Settings
from stig.engine.writer_link import START_SECONDS, launcher
from stig.server import port_check
from stig.server.listeners import ListenError
from stig.server.sd_notify import Notifier
from stig.storage.dirlock import DirLock
from stig.storage.store import Store

log = logging.getLogger(__name__)

#: The environment variable that hands a worker its settings (a pickle, base64).
SETTINGS_VARIABLE = "STIG_WORKER_SETTINGS"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the supervisor dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def encode_settings(settings: Settings) -> str:
    return base64.b64encode(pickle.dumps(settings)).decode()


def decode_settings(text: str) -> Settings:
    settings = pickle.loads(base64.b64decode(text))
    assert isinstance(settings, Settings)
    return settings


def run(settings: Settings, on_ready: object = None) -> int:
    """Serve with ``settings.workers`` workers until signalled; the exit status."""
    workers = settings.workers
    lock = DirLock(settings.data_dir)
    readers = readers_for(settings.max_connections) * workers
    # Opened first, so LMDB's reader table is sized for every worker.
    store = Store(settings.data_dir, settings.map_size, readers, lock=False)
    try:
        listening = _listen(settings, workers)
    except ListenError:
        store.close()
        lock.release()
        raise
    settings = attrs.evolve(settings, port=listening[0].getsockname()[1])
    table_fd = shared_inflight.create(workers)
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(workers)]
    python = [sys.executable, "-m", launcher()]
    writer = subprocess.Popen(
        [
            *python,
            "_writer",
            *[arg for mine, _ in pairs for arg in ("--fd", str(mine.fileno()))],
            "--table-fd",
            str(table_fd),
            "--data-dir",
            str(settings.data_dir),
            "--map-size",
            str(settings.map_size),
            "--max-readers",
            str(readers),
            "--max-value-size",
            str(settings.limits.max_item_size),
            "--log-level",
            settings.log_level,
        ],
        pass_fds=[table_fd, *(mine.fileno() for mine, _ in pairs)],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    for mine, _ in pairs:
        mine.close()
    ready_read, ready_write = os.pipe()
    env = {**os.environ, SETTINGS_VARIABLE: encode_settings(settings)}
    children: dict[int, str] = {writer.pid: "writer"}
    processes = [writer]
    for worker_id, ((_, theirs), listener) in enumerate(zip(pairs, listening, strict=True)):
        process = subprocess.Popen(
            [
                *python,
                "_worker",
                "--worker-id",
                str(worker_id),
                "--link-fd",
                str(theirs.fileno()),
                "--table-fd",
                str(table_fd),
                "--ready-fd",
                str(ready_write),
                "--listen-fd",
                str(listener.fileno()),
            ],
            pass_fds=[table_fd, theirs.fileno(), ready_write, listener.fileno()],
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        theirs.close()
        children[process.pid] = f"worker {worker_id}"
        processes.append(process)
    os.close(ready_write)
    os.close(table_fd)
    # The workers hold them now: the port is free again once they all end.
    for listener in listening:
        listener.close()
    code = 0
    if not _wait_ready(ready_read, workers, processes):
        code = 1
        _stop(processes[1:])
    else:
        print(f"stig listening on {settings.listen}:{settings.port}", flush=True)
        log.info(
            "stig listening on %s:%d with %d workers and a writer, data in %s",
            settings.listen,
            settings.port,
            workers,
            settings.data_dir,
        )
    os.close(ready_read)
    stopping = code != 0
    # The supervisor is the service's main process: it alone speaks sd_notify
    # (the workers get no notifier; a unit's NotifyAccess=main would drop
    # theirs).  No watchdog pings: it waits for its children, not a loop.
    notifier = Notifier.from_environment()
    if not stopping:
        notifier.notify({"READY": "1", "STATUS": f"serving on {settings.listen}:{settings.port}"})

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            notifier.notify({"STOPPING": "1", "STATUS": f"stopping: {signal.Signals(signum).name}"})
        stopping = True
        for process in processes[1:]:
            if process.poll() is None:
                process.send_signal(signum)

    def pass_on(signum: int, _frame: object) -> None:
        for process in processes[1:]:
            if process.poll() is None:
                process.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # A reload (a unit's ExecReload) is the workers' business, never the
    # supervisor's end (SIGHUP's default action).
    signal.signal(signal.SIGHUP, pass_on)
    by_pid = {process.pid: process for process in processes}
    while by_pid:
        # Whichever child ends first (the writer lives as long as a worker
        # does, so waiting for them in order would miss a worker's death).
        ended = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
        if ended is None or ended.si_pid not in by_pid:
            continue
        process = by_pid.pop(ended.si_pid)
        process.wait()
        # A death of its own (not a stop we asked for): stop the rest.
        if process.returncode != 0 and not stopping:
            log.error(
                "%s (pid %d) ended with %d: stopping the server",
                children[process.pid],
                process.pid,
                process.returncode,
            )
            stopping = True
            code = 1
            _stop(processes[1:])
    store.close()
    lock.release()
    return code


def _listen(settings: Settings, count: int) -> list[socket.socket]:
    """One listening socket per worker on one port (``SO_REUSEPORT``: the
    kernel spreads the connections over them); the workers inherit them.

    Raises :class:`ListenError` if the port is taken or if any socket other
    than these listens on it (stig/server/port_check.py): a second server
    must fail at start, never share the connections.
    """
    family = socket.AF_INET6 if ":" in settings.listen else socket.AF_INET
    socks: list[socket.socket] = []
    port = settings.port
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((settings.listen, port))
            sock.listen(1024)
            port = sock.getsockname()[1]  # the first picks it when --port 0
        own = {os.fstat(sock.fileno()).st_ino for sock in socks}
        # After listen: two servers starting at once then both see the other.
        strangers = port_check.listeners_on(port) - own
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise ListenError(
            f"cannot listen on {settings.listen}:{port}: {exc.strerror or exc}"
        ) from exc
    if strangers:
        for sock in socks:
            sock.close()
        raise ListenError(
            f"cannot listen on {settings.listen}:{port}: another server listens on"
            f" port {port} (it would get some of the connections)"
        )
    return socks


def _wait_ready(fd: int, count: int, processes: list[subprocess.Popen[bytes]]) -> bool:
    """Wait for ``count`` workers to say they listen; False if one died first."""
    deadline = time.monotonic() + START_SECONDS
    got = 0
    while got < count:
        if any(process.poll() is not None for process in processes):
            log.error("a worker or the writer ended before the server was ready")
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            log.error("the workers were not ready after %g s", START_SECONDS)
            return False
        readable, _, _ = select.select([fd], [], [], min(remaining, 0.1))
        if readable:
            got += len(os.read(fd, count))
    return True


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
