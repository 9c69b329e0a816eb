"""Real-server fixtures: Stig as a subprocess, on a free port, in a temporary directory.

Every protocol's integration and durability tests use these:

* ``stig_server`` — a server with default options, started for the test;
* ``stig_factory`` — ``stig_factory("--durable-acks", ...)`` starts one with
  extra command-line options (call it several times for several servers).

The object handed out (:class:`StigProcess`) knows ``host``, ``port`` and
``data_dir``, can ``restart()``, ``kill()`` (SIGKILL) and ``terminate()``
(SIGTERM, clean exit expected), and speaks raw bytes through
``send_recv``/``connect`` for exact-reply tests.  Teardown always kills the
process, whatever the test did.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from support.waiting import wait_for_stats

# Hypothesis' per-example deadline is a timing assertion: on a shared 2-core
# machine (CI, or a benchmark running beside the tests) a slow example is
# load, not a bug.  Speed is measured in scripts/, never in tests.
settings.register_profile("stig", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("stig")

READY_PREFIX = "stig listening on "
STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
IO_TIMEOUT = 5.0
REPO = Path(__file__).resolve().parent.parent


class ServerFailed(AssertionError):
    """The server did not start or did not stop as expected."""


class RawConnection:
    """One TCP connection speaking raw bytes; replies are read until a terminator."""

    def __init__(self, host: str, port: int, timeout: float = IO_TIMEOUT) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_until(self, until: bytes | None = b"END\r\n", timeout: float = IO_TIMEOUT) -> bytes:
        """Everything received until the data ends with ``until``.

        ``until=None`` reads until the server closes the connection.  A
        timeout raises with what had arrived, so a missing reply fails the
        test instead of hanging it.
        """
        deadline = time.monotonic() + timeout
        while until is None or not self.buffer.endswith(until):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {until!r} after {timeout}s; got {self.buffer!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                if until is None:
                    break
                raise ConnectionError(f"closed before {until!r}; got {self.buffer!r}")
            self.buffer += chunk
        data, self.buffer = self.buffer, b""
        return data

    def send_recv(
        self, data: bytes, until: bytes | None = b"END\r\n", timeout: float = IO_TIMEOUT
    ) -> bytes:
        self.send(data)
        return self.recv_until(until, timeout)

    def recv_exact(self, count: int, timeout: float = IO_TIMEOUT) -> bytes:
        """Exactly ``count`` bytes (binary protocol headers and bodies)."""
        deadline = time.monotonic() + timeout
        while len(self.buffer) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{count} bytes not received in {timeout}s; got {self.buffer!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise ConnectionError(f"closed before {count} bytes; got {self.buffer!r}")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def recv_some(self, timeout: float = 0.3) -> bytes:
        """Whatever arrives within ``timeout`` (b"" if nothing; used to prove silence)."""
        self.sock.settimeout(timeout)
        try:
            data = self.buffer + self.sock.recv(65536)
        except TimeoutError:
            data = self.buffer
        self.buffer = b""
        return data

    def is_closed_by_peer(self, timeout: float = IO_TIMEOUT) -> bool:
        """True when the server closes the connection within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buffer += chunk
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BinaryConnection(RawConnection):
    """A raw connection speaking the binary protocol: requests out, decoded responses in."""

    def request(
        self, opcode: int, key: bytes = b"", value: bytes = b"", extras: bytes = b"", **fields: int
    ) -> None:
        """Send one request (``cas``, ``opaque``, ``magic``… as keywords)."""
        from protocol.binary import encode_request

        self.send(encode_request(opcode, key, value, extras, **fields))

    def response(self, timeout: float = IO_TIMEOUT):  # -> protocol.binary.BinaryResponse
        """The next response, whole."""
        import struct

        from protocol.binary import decode_response

        header = self.recv_exact(24, timeout)
        body_length = struct.unpack_from(">I", header, 8)[0]
        decoded = decode_response(header + self.recv_exact(body_length, timeout))
        assert decoded is not None
        return decoded[0]

    def call(
        self, opcode: int, key: bytes = b"", value: bytes = b"", extras: bytes = b"", **fields: int
    ):  # -> protocol.binary.BinaryResponse
        """Send one request and return its response."""
        self.request(opcode, key, value, extras, **fields)
        return self.response()


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
            *self.args,
        ]

    def start(self, *args: str) -> StigProcess:
        """Start the server (``args`` replace the extra options if given)."""
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
                cwd=REPO,
                preexec_fn=self.preexec_fn,
            )
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


@pytest.fixture
def stig_factory(tmp_path: Path) -> Iterator[Callable[..., StigProcess]]:
    """Start servers with extra options; each gets its own data directory."""
    servers: list[StigProcess] = []

    def start(*args: str, data_dir: Path | None = None) -> StigProcess:
        index = len(servers)
        log_dir = tmp_path / f"logs{index}"
        log_dir.mkdir()
        server = StigProcess(data_dir or tmp_path / f"data{index}", log_dir, args)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill()
        server.close_clients()


@pytest.fixture
def stig_server(stig_factory: Callable[..., StigProcess]) -> StigProcess:
    """A Stig server with default options."""
    return stig_factory()
