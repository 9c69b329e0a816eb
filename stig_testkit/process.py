"""A Stig server as a subprocess, on a free port, for tests and scripts.

:class:`StigProcess` starts ``python -m stig serve`` on port 0 in a data
directory, reads the port it prints, and knows ``host``, ``port`` and
``data_dir``; it can ``restart()``, ``kill()`` (SIGKILL) and ``terminate()``
(SIGTERM, clean exit expected), and speaks raw bytes through
``send_recv``/``connect`` for exact-reply tests.  The tests' fixtures
(tests/conftest.py) hand these out and kill them at teardown.

A child process runs the same code as this one: :data:`CODE_ROOT` is the
directory holding the ``stig`` package this process imported, and
:func:`child_env` puts it first on the child's ``PYTHONPATH`` — from a clone
with nothing installed (``python3 -m pytest`` from its root), as from an
installed one.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import stig
from stig_testkit.connections import IO_TIMEOUT, BinaryConnection, RawConnection
from stig_testkit.waiting import wait_for_stats

READY_PREFIX = "stig listening on "
STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
#: The shape test servers take unless ``$STIG_TEST_SERVE_ARGS`` names
#: another: two worker processes and the writer process, so that every test
#: spreads its connections over workers (``stig serve``'s default is one
#: worker per core: two on the 2-core machines CI runs on; naming it keeps a
#: test run the same on a bigger machine).
TEST_SHAPE = ("--workers", "2")
#: Options every test server gets: ``$STIG_TEST_SERVE_ARGS`` if it is set
#: (run a whole suite in another shape, e.g. ``--workers 1`` or ``--workers
#: 0``, one process: docs/workers.md), else :data:`TEST_SHAPE`.  A test
#: marked ``single_process`` adds ``--workers 0`` after these
#: (stig_testkit/single_process.py).
SERVE_ARGS = tuple(shlex.split(os.environ.get("STIG_TEST_SERVE_ARGS", shlex.join(TEST_SHAPE))))
#: The directory that holds the ``stig`` (and ``stig_protocol``, ``stig_testkit``)
#: packages this process runs: a clone's root, or site-packages.
CODE_ROOT = Path(stig.__file__).resolve().parents[1]


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child that must run the same code:
    :data:`CODE_ROOT` first on ``PYTHONPATH`` (plus ``extra`` variables)."""
    env = {**os.environ, **extra}
    paths = [str(CODE_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (children, theirs, …), from ``/proc``."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as file:
                    children = [int(word) for word in file.read().split()]
            except OSError:
                continue
            found.extend(children)
            todo.extend(children)
    return found


class ServerFailed(AssertionError):
    """The server did not start or did not stop as expected."""


class StigProcess:
    """A Stig server subprocess; see the module docstring."""

    def __init__(self, data_dir: Path, log_dir: Path, args: tuple[str, ...]) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.args = tuple(args)
        self.host = "127.0.0.1"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._connections: list[RawConnection] = []
        self._clients: list[object] = []
        #: Runs in the child before exec (e.g. to set a resource limit).
        self.preexec_fn: Callable[[], None] | None = None
        #: The child's environment, made as it starts (after ``stderr_path``
        #: is created, which it may look at): by default :func:`child_env`.
        self.environment: Callable[[], dict[str, str]] = child_env

    # -- lifecycle -------------------------------------------------------

    @property
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "stig",
            "serve",
            "--listen",
            self.host,
            "--port",
            "0",
            "--data-dir",
            str(self.data_dir),
            *SERVE_ARGS,
            *self.args,
        ]

    def start(self, *args: str) -> StigProcess:
        """Start the server (``args`` replace the extra options if given) and
        wait until it listens."""
        self.spawn(*args)
        return self.wait_listening()

    def spawn(self, *args: str) -> None:
        """Start the process and return at once (:meth:`wait_listening` waits)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        if args:
            self.args = tuple(args)
        self.starts += 1
        self.stdout_path = self.log_dir / f"stdout.{self.starts}"
        self.stderr_path = self.log_dir / f"stderr.{self.starts}"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.command,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=CODE_ROOT,
                env=self.environment(),
                preexec_fn=self.preexec_fn,
            )

    def wait_listening(self) -> StigProcess:
        """Wait for the line ``stig listening on HOST:PORT`` and take its address."""
        assert self.proc is not None, "not started"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            text = self.stdout_path.read_text(errors="replace")
            for line in text.splitlines():
                if line.startswith(READY_PREFIX):
                    self.host, _, port = line[len(READY_PREFIX) :].strip().rpartition(":")
                    self.port = int(port)
                    return self
            if self.proc.poll() is not None:
                raise ServerFailed(
                    f"stig exited with {self.proc.returncode} before it was ready\n{self._output()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise ServerFailed(f"stig not ready after {STARTUP_TIMEOUT}s\n{self._output()}")
            time.sleep(0.02)

    def _output(self) -> str:
        out = self.stdout_path.read_text(errors="replace")
        err = self.stderr_path.read_text(errors="replace")
        return f"command: {' '.join(self.command)}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash.  Nothing is flushed or closed.

        Client connections stay open on the test's side (they see the server
        vanish, as a real client would) until teardown.
        """
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT)

    def kill_every_process(self) -> None:
        """SIGKILL the server and every process it started, in one go, as a
        power cut stops them (without waiting).  With ``--workers`` the
        children die with their supervisor anyway, but a moment later: a
        writer still running then commits (docs/workers.md)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        pids = [self.proc.pid, *descendants(self.proc.pid)]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def terminate(self, expect_code: int | None = 0) -> int:
        """SIGTERM: a clean shutdown; by default the exit code must be 0."""
        assert self.proc is not None and self.proc.poll() is None, "not running"
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServerFailed(
                f"stig ignored SIGTERM for {STOP_TIMEOUT}s\n{self._output()}"
            ) from None
        if expect_code is not None and code != expect_code:
            raise ServerFailed(f"stig exited with {code} after SIGTERM\n{self._output()}")
        return code

    def restart(self, *args: str, kill: bool = False) -> StigProcess:
        """Stop (SIGTERM, or SIGKILL with ``kill=True``) if running, then start again."""
        if self.running:
            if kill:
                self.kill()
            else:
                self.terminate()
        return self.start(*args)

    # -- clients ---------------------------------------------------------

    def connect(self, timeout: float = IO_TIMEOUT) -> RawConnection:
        """A raw connection, closed at teardown if the test did not."""
        conn = RawConnection(self.host, self.port, timeout)
        self._connections.append(conn)
        return conn

    def connect_binary(self, timeout: float = IO_TIMEOUT) -> BinaryConnection:
        """A binary-protocol connection, closed at teardown if the test did not."""
        conn = BinaryConnection(self.host, self.port, timeout)
        self._connections.append(conn)
        return conn

    def send_recv(
        self, data: bytes, until: bytes | None = b"END\r\n", timeout: float = IO_TIMEOUT
    ) -> bytes:
        """Send ``data`` on a fresh connection and return the exact reply bytes."""
        with RawConnection(self.host, self.port, timeout) as conn:
            return conn.send_recv(data, until, timeout)

    def client(self, **kwargs: object):  # -> pymemcache.Client
        """A pymemcache client with replies on and bounded timeouts."""
        from pymemcache.client.base import Client

        kwargs.setdefault("connect_timeout", IO_TIMEOUT)
        kwargs.setdefault("timeout", IO_TIMEOUT)
        kwargs.setdefault("default_noreply", False)
        client = Client((self.host, self.port), **kwargs)
        self._clients.append(client)
        return client

    def stats(self, group: str = "") -> dict[str, str]:
        """``stats [group]`` over a fresh connection, as a dict of strings."""
        command = b"stats %b\r\n" % group.encode() if group else b"stats\r\n"
        reply = self.send_recv(command)
        pairs = {}
        for line in reply.split(b"\r\n"):
            if line.startswith(b"STAT "):
                _, name, value = line.split(b" ", 2)
                pairs[name.decode()] = value.decode()
        return pairs

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until every submitted write is committed (visible to all connections).

        Without ``--durable-acks`` a reply comes from the writer's own point of
        view before the commit; other connections see the write once the
        promoter has committed it, i.e. once nothing is pending promotion.
        A noreply run still open on some connection is not submitted yet and
        is not waited for.
        """
        wait_for_stats(
            self,
            lambda stats: stats["stig_pending_promotion_bytes"] == "0",
            timeout,
            "no writes pending promotion",
        )

    def close_clients(self) -> None:
        """Close every connection and client handed out so far."""
        for conn in self._connections:
            conn.close()
        self._connections.clear()
        for client in self._clients:
            try:
                client.close()  # type: ignore[attr-defined]
            except Exception:
                pass
        self._clients.clear()


def stig_check(data_dir: Path) -> subprocess.CompletedProcess[str]:
    """``stig check -q`` of ``data_dir`` (this code's), its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "stig", "check", "-q", "--data-dir", str(data_dir)],
        cwd=CODE_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
