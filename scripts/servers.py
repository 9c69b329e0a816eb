"""The servers the benchmark compares: how to find, start, probe and stop each.

Every server is started on 127.0.0.1 on a free port, in a new session (its
own process group) with a fresh temporary data directory, and is stopped by
signalling that whole group (SIGTERM, then SIGKILL) so nothing outlives a run.
A server that is not installed, or does not answer within its start timeout,
is reported with the reason, never replaced by a guess.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from loadgen import connect
from wire import Resp, Text

from stig_testkit.workers import is_writer

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
STARTED_PIDS: list[int] = []  # every server process started here (for leak checks)


class StartError(RuntimeError):
    """The server could not be started or never answered."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class ServerSpec:
    """One server configuration under test.

    ``argv(port, data_dir)`` builds its command line; ``missing()`` returns why
    it cannot run here (or None).  ``hit`` is False for servers that store
    nothing (gets answer a miss); ``durable`` marks servers whose write
    acknowledgements wait for the disk, whose set figures are compared with
    Redis ``appendfsync always`` rather than with the bare trio server.
    """

    name: str
    protocol: str  # "text" (memcached family) or "resp"
    argv: Callable[[int, str], list[str]]
    missing: Callable[[], str | None]
    hit: bool = True
    durable: bool = False
    batch_protocols: tuple[str, ...] = ("text",)
    note: str = ""
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)


def _which(binary: str) -> Callable[[], str | None]:
    return lambda: None if shutil.which(binary) else f"{binary} not installed"


def _stig_missing() -> str | None:
    probe = subprocess.run(
        [sys.executable, "-c", "import stig.tools.cli, stig.server.listeners"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"stig not importable: {last}"
    return None


def _memcached(port: int, _d: str) -> list[str]:
    # -t 2: one worker thread per core of this machine; -U 0: no UDP.
    return [
        "memcached",
        "-u",
        "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody"),
        "-l",
        "127.0.0.1",
        "-p",
        str(port),
        "-U",
        "0",
        "-t",
        "2",
        "-m",
        "4096",
        "-c",
        "4096",
    ]


def _redis(fsync: str) -> Callable[[int, str], list[str]]:
    def argv(port: int, d: str) -> list[str]:
        return [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            d,
            "--appendonly",
            "yes",
            "--appendfsync",
            fsync,
            "--save",
            "",
            "--auto-aof-rewrite-percentage",
            "0",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--logfile",
            os.path.join(d, "redis.log"),
        ]

    return argv


def _bare(port: int, _d: str) -> list[str]:
    return [
        sys.executable,
        str(SCRIPTS / "bare_trio_server.py"),
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def _stig(durable: bool, workers: int = 0) -> Callable[[int, str], list[str]]:
    def argv(port: int, d: str) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "stig",
            "serve",
            "--listen",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            os.path.join(d, "stig-data"),
        ]
        cmd += ["--workers", str(workers)]  # 0 too: the default is a worker per core
        extra = shlex.split(os.environ.get("STIG_SERVE_ARGS", ""))  # an A/B of an option
        return cmd + (["--durable-acks"] if durable else []) + extra

    return argv


SERVERS: dict[str, ServerSpec] = {
    s.name: s
    for s in (
        ServerSpec(
            "memcached",
            "text",
            _memcached,
            _which("memcached"),
            batch_protocols=("text", "binary"),
            note="memcached -t 2, in memory",
        ),
        ServerSpec(
            "redis-always",
            "resp",
            _redis("always"),
            _which("redis-server"),
            durable=True,
            batch_protocols=("resp",),
            note="redis-server appendonly yes, appendfsync always",
        ),
        ServerSpec(
            "redis-everysec",
            "resp",
            _redis("everysec"),
            _which("redis-server"),
            batch_protocols=("resp",),
            note="redis-server appendonly yes, appendfsync everysec",
        ),
        ServerSpec(
            "bare-trio",
            "text",
            _bare,
            lambda: None,
            hit=False,
            note="scripts/bare_trio_server.py: answers, stores nothing (gets miss)",
        ),
        ServerSpec(
            "stig",
            "text",
            _stig(False),
            _stig_missing,
            cwd=REPO,
            batch_protocols=("text", "binary"),
            note="stig serve (POV acks)",
        ),
        ServerSpec(
            "stig-durable",
            "text",
            _stig(True),
            _stig_missing,
            cwd=REPO,
            durable=True,
            batch_protocols=("text", "binary"),
            note="stig serve --durable-acks",
        ),
        ServerSpec(
            "stig-w1",
            "text",
            _stig(False, workers=1),
            _stig_missing,
            cwd=REPO,
            batch_protocols=("text", "binary"),
            note="stig serve --workers 1 (the writer in a process of its own; CPU of both)",
        ),
        ServerSpec(
            "stig-w2",
            "text",
            _stig(False, workers=2),
            _stig_missing,
            cwd=REPO,
            batch_protocols=("text", "binary"),
            note="stig serve --workers 2 (supervisor, 2 workers, the writer; CPU of all)",
        ),
        ServerSpec(
            "stig-w2-durable",
            "text",
            _stig(True, workers=2),
            _stig_missing,
            cwd=REPO,
            durable=True,
            batch_protocols=("text", "binary"),
            note="stig serve --workers 2 --durable-acks",
        ),
    )
}


def answers(host: str, port: int, protocol: str, timeout: float = 1.0) -> bool:
    """True if the server answers ``version`` (text) or ``PING`` (RESP)."""
    req, prefix = (Resp if protocol == "resp" else Text).probe()
    try:
        with connect(host, port, timeout=timeout) as sock:
            sock.sendall(req)
            got = b""
            while len(got) < len(prefix):
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                got += chunk
            return got.startswith(prefix)
    except OSError:
        return False


def stat(port: int, name: str) -> str | None:
    """One line of a memcached-protocol server's ``stats`` on 127.0.0.1
    (None: it has no such stat)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    prefix = b"STAT %b " % name.encode()
    for line in data.split(b"\r\n"):
        if line.startswith(prefix):
            return line[len(prefix) :].decode()
    return None


class RunningServer:
    """A started server: ``pid``, ``port``, ``data_dir``; a context manager.

    ``ready_s`` is the time from spawning the process to its first correct
    reply, which for Stig includes opening LMDB (restart-to-first-reply).
    """

    def __init__(
        self, spec: ServerSpec, data_dir: str | None = None, start_timeout: float = 20.0
    ) -> None:
        self.spec = spec
        self.port = free_port()
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix=f"bench-{spec.name}-")
        self.log_path = os.path.join(self.data_dir, f"{spec.name}.out")
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_s = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def pids(self) -> list[int]:
        """The server and its child processes (Stig's writer process, with
        ``--workers``): whose CPU is the server's."""
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            children = []
        return [self.pid, *map(int, children)]

    @property
    def writer_pids(self) -> list[int]:
        """Stig's writer process among :attr:`pids` (``--workers``), else none."""
        return [pid for pid in self.pids[1:] if is_writer(pid)]

    def start(self) -> RunningServer:
        env = {**os.environ, **self.spec.env}
        if self.spec.cwd is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(self.spec.cwd), env.get("PYTHONPATH")])
            )
        with open(self.log_path, "ab") as log:
            t0 = time.monotonic()
            self.proc = subprocess.Popen(
                self.spec.argv(self.port, self.data_dir),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.spec.cwd,
                env=env,
                start_new_session=True,
            )
        STARTED_PIDS.append(self.proc.pid)
        deadline = t0 + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartError(f"exited with {self.proc.returncode}: {self.log_tail()}")
            if answers("127.0.0.1", self.port, self.spec.protocol, timeout=0.5):
                self.ready_s = time.monotonic() - t0
                return self
            time.sleep(0.01)
        raise StartError(f"no answer within {self.start_timeout:.0f}s: {self.log_tail()}")

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = Path(self.log_path).read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])[-300:]

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it if still alive after ``timeout``."""
        if self.proc is None:
            return None
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        try:  # anything else left in the group (children)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return self.proc.returncode

    def cleanup(self) -> None:
        if self.own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> RunningServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            self.cleanup()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.cleanup()
