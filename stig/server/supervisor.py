"""The supervisor of ``stig serve --workers N`` (N > 1): one writer, N workers.

See docs/workers.md.  The supervisor holds what must be single: the data
directory's lock (LMDB it opens only for a look, never across a fork), the port
(it opens one ``SO_REUSEPORT`` listening socket per worker, so the kernel
spreads the connections over them, checks that no other process listens on
that port, and hands each worker its socket; a unix socket is one socket
that every worker accepts on), the shared in-flight table with the
followers' block (a memfd: stig/engine/shared_replicas.py) and the
workers' eventfds.  It starts the writer process with one socket per
worker, then the workers, each by ``os.fork`` alone (stig/server/fork.py:
their code is imported here once, no child pays an interpreter and its
imports), prints the ready line once every worker listens, and tells a
service manager ``READY=1`` once every worker is ready (a follower's worker
0: once it has caught up with its primary; stig/server/ready_pipe.py).  It
keeps the listening sockets, so that a restarted worker gets its own again
(connections that arrive meanwhile wait in its backlog).

Children die with it (``PR_SET_PDEATHSIG``: a SIGKILL of the supervisor is a
crash of the whole server, as of a single process).  SIGTERM/SIGINT (and
SIGHUP) are passed on to the workers, which stop as a single server does;
the writer stops once every worker and the supervisor have closed their
sockets to it.  A worker that dies on its own is restarted once the writer
has released its in-flight writes (stig/engine/writer.py); a writer that
dies makes the supervisor end every worker and start the group again; more
than :data:`MAX_RESTARTS` in :data:`RESTART_WINDOW` seconds stop the server
with exit status 1 (docs/workers.md, "Failures with N workers").
"""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import os
import pickle
import selectors
import signal
import socket
import time
from collections.abc import Iterator

import attrs
import trio

from stig.engine import shared_inflight, shared_region
from stig.engine import writer as writer_process
from stig.engine.engine import WorkerRole, readers_for
from stig.engine.settings import Settings
from stig.engine.shared_inflight import SharedInFlight
from stig.engine.shared_replicas import SharedReplicas
from stig.engine.writer import CONTROL_HUNG, CONTROL_LINK, CONTROL_RELEASED
from stig.engine.writer_link import START_SECONDS, ending_words
from stig.replication.follower import spool_records
from stig.server import fork, port_check, ready_pipe
from stig.server.listeners import Listener, ListenError, bind_unix
from stig.server.listeners import serve as serve_worker
from stig.server.sd_notify import Notifier
from stig.storage.dirlock import DirLock
from stig.storage.replog import LogBounds
from stig.storage.store import Store

log = logging.getLogger(__name__)

#: The name (``/proc/PID/comm``) of the writer process; a worker's is
#: ``stig-worker-N``.
WRITER_NAME = "stig-writer"


#: At most this many restarts (of a worker, or of the whole group after the
#: writer died) within :data:`RESTART_WINDOW` seconds; one more stops the
#: server with exit status 1, as a child that dies at once would otherwise
#: be restarted forever (docs/workers.md, "Failures with N workers").
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


@attrs.define(eq=False)
class _Child:
    """A process the supervisor forked: the writer (``worker`` -1) or a worker.

    Signalled through its pidfd (never a pid that may have been reused) and
    reaped once, by :meth:`wait`."""

    pid: int
    worker: int
    pidfd: int = attrs.field(init=False)
    #: Its exit status once reaped (``-N``: ended by signal N), else None.
    code: int | None = None

    def __attrs_post_init__(self) -> None:
        self.pidfd = os.pidfd_open(self.pid)

    @property
    def name(self) -> str:
        return "writer" if self.worker < 0 else f"worker {self.worker}"

    @property
    def running(self) -> bool:
        """Not reaped yet (it may have ended: its pidfd says so first)."""
        return self.code is None

    def send_signal(self, signum: int) -> None:
        if self.code is None:
            try:
                signal.pidfd_send_signal(self.pidfd, signum)
            except ProcessLookupError:
                pass

    def wait(self) -> int:
        """Reap it (blocking until it ends); its exit status."""
        if self.code is None:
            _, status = os.waitpid(self.pid, 0)
            self.code = os.waitstatus_to_exitcode(status)
        return self.code


@attrs.define(eq=False)
class _Shared:
    """What the writer and the workers of one group share: the in-flight
    table, the eventfds, the supervisor's control socket to the writer."""

    table_fd: int
    wakes: list[int]
    control: socket.socket

    def close(self) -> None:
        self.control.close()
        for fd in (self.table_fd, *self.wakes):
            os.close(fd)


def run(settings: Settings, on_ready: object = None) -> int:
    """Serve with ``settings.workers`` workers until signalled; the exit status."""
    workers = settings.workers
    lock = DirLock(settings.data_dir)
    readers = readers_for(settings.max_connections) * workers
    # Opened once before anything starts (a directory LMDB cannot open fails
    # here), then closed: a child must never inherit an open environment
    # (stig/server/fork.py).  Every child opens its own with this reader
    # table, sized for every worker.
    try:
        Store(settings.data_dir, settings.map_size, readers, lock=False).close()
        listening = _listen(settings, workers)
    except BaseException:
        lock.release()
        raise
    if settings.unix_socket is None:
        settings = attrs.evolve(settings, port=listening[0][0].getsockname()[1])
        if len(listening[0]) > 1:
            settings = attrs.evolve(settings, tls_port=listening[0][1].getsockname()[1])
    supervisor = _Supervisor(settings, listening, readers)
    try:
        return supervisor.serve()
    finally:
        supervisor.close_listeners()
        lock.release()
        # Every child has ended: the writer and the workers closed theirs.
        log.info("stig stopped; LMDB closed")


class _Supervisor:
    """Starts the writer and the workers, restarts what dies (within
    :data:`MAX_RESTARTS`), forwards signals; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        listening: list[list[socket.socket]],
        readers: int,
    ) -> None:
        self.settings = settings
        #: Per worker, its listening sockets (kept: a restarted worker gets them again).
        self.listening = listening
        self.readers = readers
        self.ready_read, self.ready_write = os.pipe()
        self.children: dict[int, _Child] = {}  # by pidfd
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.ready_read, selectors.EVENT_READ, "ready")
        self.shared: _Shared | None = None
        self.stopping = False
        self.code = 0
        self.restarts: collections.deque[float] = collections.deque()
        #: Workers dead, and workers whose runs the writer has released: a
        #: worker is restarted once it is in both.
        self.dead: set[int] = set()
        self.released: set[int] = set()
        self.notifier = Notifier.from_environment()
        #: The workers that said they listen, and that they are ready
        #: (stig/server/ready_pipe.py); a restarted worker says it again.
        self.listening_workers: set[int] = set()
        self.ready_workers: set[int] = set()
        #: Whether ``READY=1`` was sent (once: readiness is never taken back).
        self.ready_sent = False

    # -- starting --------------------------------------------------------------

    @contextlib.contextmanager
    def _store(self) -> Iterator[Store]:
        """The environment, open for one look (a dead child's reader slots, a
        promotion) and closed before the next child is forked: py-lmdb opens a
        path once per process, and LMDB forbids a child to use or close an
        environment its parent opened (stig/server/fork.py refuses to fork
        while one is open)."""
        store = Store(self.settings.data_dir, self.settings.map_size, self.readers, lock=False)
        try:
            yield store
        finally:
            store.close()

    def _start_group(self) -> None:
        """A new shared table, the writer, and every worker."""
        workers = self.settings.workers
        table_fd = shared_region.create(workers)  # the in-flight table and the shared stats
        wakes = shared_inflight.create_wakes(workers)
        control, theirs_control = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.shared = _Shared(table_fd, wakes, control)
        self.selector.register(control, selectors.EVENT_READ, "control")
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(workers)]
        links = [mine.fileno() for mine, _ in pairs]
        control_fd = theirs_control.fileno()
        writer = fork.spawn(
            WRITER_NAME,
            [table_fd, *wakes, control_fd, *links],
            lambda: self._writer_main(links, table_fd, wakes, control_fd),
            # A terminal's ^C or a SIGTERM is for the workers: the writer
            # stops once every link and the control socket reached their end.
            ignore=(signal.SIGINT, signal.SIGTERM),
        )
        theirs_control.close()
        for mine, _ in pairs:
            mine.close()
        self._adopt(_Child(writer, -1))
        for worker, (_, theirs) in enumerate(pairs):
            self._start_worker(worker, theirs)

    def _writer_main(self, links: list[int], table_fd: int, wakes: list[int], control: int) -> None:
        """The writer child's life (stig/engine/writer.py), as ``stig _writer`` runs it."""
        settings = self.settings
        workers = len(links)
        writer_process.serve(
            links,
            settings.data_dir,
            settings.map_size,
            self.readers,
            settings.limits.max_item_size,
            SharedInFlight(table_fd, workers, -1, wakes),
            control,
            log_bounds=LogBounds(settings.replication_log_bytes, settings.replication_log_seconds),
            replicas=SharedReplicas(
                table_fd, workers, -1, shared_inflight.replicas_offset(workers)
            ),
            read_spool=spool_records,
        )

    def _start_worker(self, worker: int, link: socket.socket) -> None:
        shared = self.shared
        assert shared is not None
        listening = self.listening  # close_listeners() empties it on a stop signal
        if self.stopping or worker >= len(listening):
            link.close()  # stopping: no worker starts (the writer sees its link end)
            return
        listeners = listening[worker]
        role = WorkerRole(
            worker,
            link.fileno(),
            shared.table_fd,
            listeners[0].fileno(),
            -1 if len(listeners) < 2 else listeners[1].fileno(),
            shared.wakes[worker],
        )
        keep = [shared.table_fd, shared.wakes[worker], link.fileno(), self.ready_write]
        pid = fork.spawn(
            f"stig-worker-{worker}",
            [*keep, *(listener.fileno() for listener in listeners)],
            lambda: self._worker_main(role),
            # A SIGHUP passed on (a reload, another worker's refresh_certs)
            # before its own handler is there (listeners.py) must not end it
            # (SIGHUP's default): a worker that starts loads the certificates anyway.
            ignore=(signal.SIGHUP,),
        )
        link.close()
        self._adopt(_Child(pid, worker))

    def _worker_main(self, role: WorkerRole) -> None:
        """A worker child's life: a single server's trio loop in ``role``
        (the settings as they are now: a promoted group's have no
        ``--replica-of``); it tells the supervisor on the ready pipe once it
        listens, and once it is ready (a follower's worker 0: once caught up)."""
        notifier = ready_pipe.WorkerNotifier(ready_fd=self.ready_write, worker=role.worker_id)

        def listening(_listeners: list[Listener]) -> None:
            notifier.listening()

        settings = self.settings
        gc.freeze()  # the supervisor's objects and the imports: never scanned
        trio.run(lambda: serve_worker(settings, on_ready=listening, notifier=notifier, role=role))

    def _adopt(self, child: _Child) -> None:
        self.children[child.pidfd] = child
        self.selector.register(child.pidfd, selectors.EVENT_READ, child)
        if self.stopping and child.worker >= 0:
            # A stop signal came while it was forked: fork.spawn blocks every
            # signal until the fork is done, so the handler ran as the fork
            # returned, before this child was one of those it passes signals
            # on to.  Told now, or it serves on and the supervisor waits for
            # it forever.  (If the handler ran just after the line above, it
            # is told twice: a second SIGTERM closes the connections of a
            # worker that has only begun to start.)
            child.send_signal(signal.SIGTERM)

    def _restart_worker(self, worker: int) -> None:
        """Hand the writer a socket for worker ``worker``'s successor, start it."""
        shared = self.shared
        assert shared is not None
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            socket.send_fds(shared.control, [pickle.dumps((CONTROL_LINK, worker))], [mine.fileno()])
        except OSError as exc:
            # The writer died since it released the worker's writes (or the
            # control socket was closed on its end): its death, seen on its
            # pidfd, restarts the whole group, this worker with it.
            log.warning("worker %d not restarted alone: the writer is gone (%s)", worker, exc)
            theirs.close()
            return
        finally:
            mine.close()
        self._start_worker(worker, theirs)
        log.warning("worker %d restarted", worker)

    # -- the loop --------------------------------------------------------------

    def serve(self) -> int:
        """Start everything, then handle deaths and signals until every child has ended."""
        settings = self.settings
        # The same words as one process (stig/server/listeners.py): the
        # service manager hears what the server does, whatever its shape.
        self.notifier.notify({"STATUS": f"starting: data in {settings.data_dir}"})
        # A reload (a unit's ExecReload, a worker's refresh_certs) is the
        # workers' business, never the supervisor's end (SIGHUP's default):
        # from before the first fork on.
        signal.signal(signal.SIGHUP, self._pass_on)
        self._start_group()
        deadline: float | None = time.monotonic() + START_SECONDS
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        watchdog = self.notifier.watchdog_interval
        while self.children:
            timeout = None if watchdog is None else watchdog / 2
            if deadline is not None:
                timeout = max(0.0, deadline - time.monotonic())
            events = self.selector.select(timeout)
            if deadline is not None and not events and time.monotonic() >= deadline:
                log.error("the workers were not ready after %g s", START_SECONDS)
                self._give_up()
            for key, _ in events:
                if key.data == "ready":
                    self._heard(ready_pipe.receive(self.ready_read))
                    workers = settings.workers
                    if deadline is not None and len(self.listening_workers) >= workers:
                        if not self.stopping:
                            deadline = None
                            self._serving()
                    if deadline is None and not self.stopping:
                        self._maybe_ready()
                elif key.data == "control":
                    self._control()
                else:
                    self._ended(key.data, starting=deadline is not None)
            if watchdog is not None and deadline is None and not self.stopping:
                self.notifier.notify({"WATCHDOG": "1"})
            if self.stopping:
                self.close_listeners()
                self._close_control()
        os.close(self.ready_read)
        os.close(self.ready_write)
        if self.shared is not None:
            self.shared.close()
            self.shared = None
        self.notifier.close()
        return self.code

    def _where(self) -> str:
        settings = self.settings
        if settings.unix_socket is not None:
            return f"unix:{settings.unix_socket}"
        return f"{settings.listen}:{settings.port}"

    def _serving(self) -> None:
        """Every worker listens: the ready line (``READY=1`` may wait: :meth:`_maybe_ready`)."""
        settings = self.settings
        where = self._where()
        print(f"stig listening on {where}", flush=True)
        if settings.tls_enabled and settings.tls_port is not None:
            print(f"stig listening for TLS on {settings.listen}:{settings.tls_port}", flush=True)
        log.info(
            "stig listening on %s with %d workers and a writer, data in %s",
            where,
            settings.workers,
            settings.data_dir,
        )

    def _heard(self, messages: list[tuple[bytes, int]]) -> None:
        """Note the workers' ready-pipe messages."""
        for kind, worker in messages:
            if kind == ready_pipe.LISTENING:
                self.listening_workers.add(worker)
            elif kind == ready_pipe.READY:
                self.ready_workers.add(worker)

    def _maybe_ready(self) -> None:
        """Every worker listens: ``READY=1`` if every worker is ready too,
        else a ``STATUS=`` saying what it waits for (as one process says)."""
        if self.ready_sent:
            return
        where = self._where()
        missing = sorted(set(range(self.settings.workers)) - self.ready_workers)
        # The supervisor is the service's main process: it alone speaks
        # sd_notify (a unit's NotifyAccess=main would drop the workers'),
        # and pings the watchdog from this loop.
        if not missing:
            self.ready_sent = True
            self.notifier.notify({"READY": "1", "STATUS": f"serving on {where}"})
            return
        primary = self.settings.replica_of
        if primary is not None and missing == [0]:
            reason = f"catching up with the primary at {primary}"
        else:
            reason = "waiting for worker " + ", ".join(map(str, missing))
        self.notifier.notify({"STATUS": f"listening on {where}; not ready: {reason}"})

    def _forward(self, signum: int, _frame: object) -> None:
        if not self.stopping:
            name = signal.Signals(signum).name
            grace = self.settings.shutdown_grace_ms / 1000
            status = f"stopping on {name}: the connections get up to {grace:g} s to finish"
            self.notifier.notify({"STOPPING": "1", "STATUS": status})
        self.stopping = True
        self.close_listeners()  # new connections are refused from now on
        self._pass_on(signum, _frame)

    def _pass_on(self, signum: int, _frame: object) -> None:
        for child in list(self.children.values()):
            if child.worker >= 0:
                child.send_signal(signum)

    def _give_up(self) -> None:
        """Stop the server with exit status 1: every worker is told to stop."""
        self.code = 1
        self.stopping = True
        for child in list(self.children.values()):
            if child.worker >= 0:
                child.send_signal(signal.SIGTERM)

    def _control(self) -> None:
        """The writer's word: it released a dead worker's runs, or a worker
        is hung (it holds every other worker's commits): kill it."""
        shared = self.shared
        assert shared is not None
        try:
            data = shared.control.recv(4096)
        except OSError:
            data = b""
        if not data:  # the writer ended: its own death is handled by its pidfd
            self._close_control()
            return
        message = pickle.loads(data)
        if message[0] == CONTROL_RELEASED:
            worker = message[1]
            self.released.add(worker)
            log.info("the writer released worker %d's in-flight writes", worker)
            self._maybe_restart(worker)
        elif message[0] == CONTROL_HUNG:
            self._kill_hung(message[1])

    def _kill_hung(self, worker: int) -> None:
        """SIGKILL worker ``worker``: the writer found it hung.  Its death goes
        as any other (its runs released, a successor started).  The writer
        asks before it releases that worker's link, so the child found here
        is the hung one, never a successor."""
        if self.stopping:
            return
        for child in self.children.values():
            if child.worker == worker and child.running:
                log.warning(
                    "worker %d (pid %d) holds every other worker's commits: killing it as hung",
                    worker,
                    child.pid,
                )
                child.send_signal(signal.SIGKILL)

    def _close_control(self) -> None:
        shared = self.shared
        if shared is not None and shared.control.fileno() >= 0:
            self.selector.unregister(shared.control)
            shared.control.close()

    def _maybe_restart(self, worker: int) -> None:
        if worker in self.dead and worker in self.released and not self.stopping:
            self.dead.discard(worker)
            self.released.discard(worker)
            self._restart_worker(worker)

    def _ended(self, child: _Child, starting: bool) -> None:
        """A child ended: reap it; restart it (or the group) unless stopping."""
        self.selector.unregister(child.pidfd)
        del self.children[child.pidfd]
        os.close(child.pidfd)
        code = child.wait()
        if self.stopping:
            return
        how = ending_words(code)
        if starting:
            log.error("%s ended (%s) before the server was ready", child.name, how)
            self._give_up()
            return
        now = time.monotonic()
        while self.restarts and self.restarts[0] < now - RESTART_WINDOW:
            self.restarts.popleft()
        if len(self.restarts) >= MAX_RESTARTS:
            log.error(
                "%s (pid %d) ended (%s) after %d restarts in %g s: stopping the server",
                child.name,
                child.pid,
                how,
                len(self.restarts),
                RESTART_WINDOW,
            )
            self._give_up()
            return
        self.restarts.append(now)
        # Its LMDB reader slots (LMDB frees a dead process's only when asked).
        with self._store() as store:
            store.env.reader_check()
        if child.worker >= 0:
            log.error("%s (pid %d) ended (%s): restarting it", child.name, child.pid, how)
            self.dead.add(child.worker)
            self._maybe_restart(child.worker)
        else:
            log.error(
                "the writer (pid %d) ended (%s): restarting the writer and every worker",
                child.pid,
                how,
            )
            self._restart_group()

    def _restart_group(self) -> None:
        """The writer died: the outcome of every group in flight is unknown
        to its worker, so every worker is ended (SIGKILL: their connections
        close, what they acknowledged and had not committed is lost as in a
        crash) and a new group started on the same listening sockets."""
        for child in list(self.children.values()):
            child.send_signal(signal.SIGKILL)
            child.wait()
            self.selector.unregister(child.pidfd)
            os.close(child.pidfd)
        self.children.clear()
        with self._store() as store:
            store.env.reader_check()
        shared = self.shared
        if shared is not None:
            self._keep_promotion(shared)
            self._close_control()
            shared.close()
        self.shared = None
        self.dead.clear()
        self.released.clear()
        self._start_group()

    def _keep_promotion(self, shared: _Shared) -> None:
        """A follower promoted (``stig_promote``, the writer's role words in
        the group's shared block; or the epoch LMDB holds, if the writer died
        beginning it) stays a primary in the next group: its workers are
        started without ``--replica-of``."""
        workers = self.settings.workers
        offset = shared_inflight.replicas_offset(workers)
        replicas = SharedReplicas(shared.table_fd, workers, -1, offset)
        if self.settings.replica_of is None:
            return
        promoted = replicas.promoted_epoch
        if not promoted and replicas.promoting_from:
            # The writer died beginning the epoch: stored, or not at all.
            with self._store() as store:
                store.follow_writer()
                epoch = store.refresh_log_state().epoch
            promoted = epoch if epoch > replicas.promoting_from else 0
        if promoted:
            log.warning("promoted to epoch %d: the new group is a primary", promoted)
            self.settings = attrs.evolve(self.settings, replica_of=None)

    def close_listeners(self) -> None:
        """Stop taking connections (the workers close theirs as they stop)."""
        for listeners in self.listening:
            for listener in listeners:
                listener.close()
        if self.settings.unix_socket is not None and self.listening:
            self.settings.unix_socket.unlink(missing_ok=True)
        self.listening = []


def _listen(settings: Settings, count: int) -> list[list[socket.socket]]:
    """Per worker, its listening sockets (the main one, then the TLS port's
    with ``--tls-port``); the workers inherit them.

    TCP: one ``SO_REUSEPORT`` socket per worker on one port (the kernel
    spreads the connections over them).  A unix socket has no
    ``SO_REUSEPORT``: it is bound once and every worker accepts on it.

    Raises :class:`ListenError` if the address is taken or if any socket
    other than these listens on a port (stig/server/port_check.py): a second
    server must fail at start, never share the connections.
    """
    if settings.unix_socket is not None:
        try:
            sock = bind_unix(settings.unix_socket, settings.unix_mask)
        except OSError as exc:
            raise ListenError(
                f"cannot listen on {settings.unix_socket}: {exc.strerror or exc}"
            ) from exc
        return [[sock] for _ in range(count)]
    ports = [settings.port]
    if settings.tls_enabled and settings.tls_port is not None:
        ports.append(settings.tls_port)
    per_port: list[list[socket.socket]] = []
    try:
        for port in ports:
            per_port.append(_listen_port(settings.listen, port, count))
    except ListenError:
        for socks in per_port:
            for sock in socks:
                sock.close()
        raise
    return [list(socks) for socks in zip(*per_port, strict=True)]


def _listen_port(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` ``SO_REUSEPORT`` sockets listening on ``host:port``, none of another process."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(1024)
            port = sock.getsockname()[1]  # the first picks it when the port is 0
        own = {os.fstat(sock.fileno()).st_ino for sock in socks}
        # After listen: two servers starting at once then both see the other.
        strangers = port_check.listeners_on(port) - own
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    if strangers:
        for sock in socks:
            sock.close()
        raise ListenError(
            f"cannot listen on {host}:{port}: another server listens on"
            f" port {port} (it would get some of the connections)"
        )
    return socks
