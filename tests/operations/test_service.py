"""Running under systemd: readiness notification and logs the journal reads well.

docs/operations.md ("Running as a service") promises, against a real
``stig serve`` and a real unix datagram socket (a file, or an abstract name)
standing for systemd's ``$NOTIFY_SOCKET``:

* ``READY=1`` only once the port accepts connections, with a ``STATUS=`` that
  names the address; ``STOPPING=1`` as soon as SIGTERM begins the graceful
  shutdown; ``WATCHDOG=1`` pings when ``$WATCHDOG_USEC`` asks for them;
* no ``$NOTIFY_SOCKET``: nothing is sent and nothing is said; a socket that
  cannot be reached: one warning, and the server serves and stops as usual;
* when stderr is the stream ``$JOURNAL_STREAM`` names, log lines carry a
  syslog priority prefix and no timestamp; otherwise today's format.

The readiness rules themselves (a follower holding ``READY=1`` back until
it has caught up) are checked on :class:`stig.engine.readiness.Readiness`.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stig.engine.readiness import Readiness
from stig.server.sd_notify import Notifier
from stig.tools.logs import JournalFormatter, goes_to_journal
from stig_testkit.notify_socket import NotifySocket
from stig_testkit.process import READY_PREFIX, StigProcess, child_env
from stig_testkit.waiting import wait_for

#: What a service manager puts in the environment; each test sets its own.
SERVICE_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
NOTIFY_WARNING = "cannot notify the service manager"

Service = Callable[..., StigProcess]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a unix socket's path must fit in 108 bytes."""
    with tempfile.TemporaryDirectory(prefix="stig-") as name:
        yield Path(name)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """``service(env={...}, *args)``: a server process, not started yet, whose
    environment has exactly the service variables given (``env`` may be a
    callable, called as the process starts)."""
    servers: list[StigProcess] = []

    def make(*args: str, env: dict[str, str] | Callable[[], dict[str, str]]) -> StigProcess:
        index = len(servers)
        log_dir = tmp_path / f"logs{index}"
        log_dir.mkdir()
        server = StigProcess(tmp_path / f"data{index}", log_dir, args)

        def environment() -> dict[str, str]:
            base = child_env()
            for name in SERVICE_VARIABLES:
                base.pop(name, None)
            return {**base, **(env() if callable(env) else env)}

        server.environment = environment
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.kill()
        server.close_clients()


def _answers_version(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"version\r\n")
        return sock.recv(100).startswith(b"VERSION ")


# -- readiness over a real datagram socket -------------------------------------


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_ready_comes_only_once_the_port_accepts_connections(
    service: Service, short_dir: Path, kind: str
) -> None:
    notify = NotifySocket.in_directory(short_dir) if kind == "path" else NotifySocket.abstract()
    server = service(env={"NOTIFY_SOCKET": notify.name})
    server.spawn()
    ready = notify.wait_for("READY")
    # At READY=1 — before this test waits for anything else — the server
    # has said where it listens, and a first connection there is answered.
    assert ready["READY"] == "1"
    host, _, port = ready["STATUS"].removeprefix("serving on ").rpartition(":")
    assert ready["STATUS"].startswith("serving on ") and port.isdigit(), ready
    assert _answers_version(host, int(port)), "the port answers the moment READY=1 arrives"
    assert READY_PREFIX + f"{host}:{port}" in server.stdout_path.read_text()
    assert notify.received[0]["STATUS"].startswith("starting"), notify.received
    server.wait_listening()
    server.terminate()
    later = notify.queued()
    assert not [fields for fields in later if "READY" in fields], "READY=1 is sent once"
    notify.close()


def test_stopping_is_sent_when_sigterm_begins_the_graceful_shutdown(
    service: Service, short_dir: Path
) -> None:
    notify = NotifySocket.in_directory(short_dir)
    server = service("--shutdown-grace-ms", "30000", env={"NOTIFY_SOCKET": notify.name})
    server.start()
    notify.wait_for("READY")
    busy = server.connect()
    busy.send(b"set greeting 0 0 5\r\nhel")  # holds the shutdown until finished
    assert server.send_recv(b"version\r\n", b"\r\n").startswith(b"VERSION")
    server.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    stopping = notify.wait_for("STOPPING")
    assert stopping["STOPPING"] == "1"
    assert "SIGTERM" in stopping["STATUS"] and "30 s" in stopping["STATUS"], stopping
    assert server.running, "STOPPING=1 comes when the shutdown begins, not when it ends"
    assert busy.send_recv(b"lo\r\n", b"STORED\r\n") == b"STORED\r\n"
    assert server.proc.wait(15) == 0  # type: ignore[union-attr]
    assert NOTIFY_WARNING not in server.stderr
    notify.close()


def test_watchdog_pings_come_while_the_unit_asks_for_them(
    service: Service, short_dir: Path
) -> None:
    notify = NotifySocket.in_directory(short_dir)
    server = service(env={"NOTIFY_SOCKET": notify.name, "WATCHDOG_USEC": "200000"})
    server.start()
    for _ in range(3):
        assert notify.wait_for("WATCHDOG")["WATCHDOG"] == "1"
    server.terminate()
    notify.close()


def test_without_notify_socket_nothing_is_sent_and_nothing_said(
    service: Service, short_dir: Path
) -> None:
    bystander = NotifySocket.in_directory(short_dir)  # a socket nobody names
    for env in ({}, {"NOTIFY_SOCKET": ""}):
        server = service(env=env)
        server.start()
        assert _answers_version(server.host, server.port)
        server.terminate()
        assert NOTIFY_WARNING not in server.stderr
        assert "WARNING" not in server.stderr and "ERROR" not in server.stderr, server.stderr
    assert bystander.queued() == []
    assert Notifier.from_environment({}).notify({"READY": "1"}) is False
    bystander.close()


@pytest.mark.parametrize("name", ["nobody-listens-here", "@stig-test-nobody-listens"])
def test_an_unreachable_socket_is_one_warning_and_the_server_runs(
    service: Service, short_dir: Path, name: str
) -> None:
    address = str(short_dir / name) if not name.startswith("@") else f"{name}-{os.getpid()}"
    server = service(env={"NOTIFY_SOCKET": address})
    server.start()
    assert _answers_version(server.host, server.port)
    server.client().set("k", b"v")
    assert server.client().get("k") == b"v"
    server.terminate()  # STOPPING=1 fails too: still exit 0
    warnings = [line for line in server.stderr.splitlines() if NOTIFY_WARNING in line]
    assert len(warnings) == 1, server.stderr
    assert "WARNING" in warnings[0] and address in warnings[0]


def test_watchdog_usec_for_another_pid_or_malformed_is_no_watchdog() -> None:
    here = str(os.getpid())
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "4000000"}
    assert Notifier.from_environment(env).watchdog_interval == 4.0
    assert Notifier.from_environment({**env, "WATCHDOG_PID": here}).watchdog_interval == 4.0
    assert Notifier.from_environment({**env, "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier.from_environment({**env, "WATCHDOG_USEC": "x"}).watchdog_interval is None
    assert Notifier.from_environment({**env, "WATCHDOG_USEC": "0"}).watchdog_interval is None


def test_sighup_without_tls_is_ignored_not_fatal(service: Service) -> None:
    """``systemctl reload`` (ExecReload sends SIGHUP) reloads certificates;
    on a server without TLS it must not be the signal's default action, an
    exit without the graceful shutdown."""
    server = service(env={})
    server.start()
    server.client().set("k", b"v")
    server.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    wait_for(lambda: server.stderr, lambda text: "received SIGHUP" in text, what="SIGHUP logged")
    assert server.running
    assert server.client().get("k") == b"v"
    server.terminate()


# -- the hook a follower uses: READY=1 held back until it has caught up ---------


def test_a_hold_keeps_ready_back_until_released() -> None:
    sent: list[dict[str, str]] = []
    readiness = Readiness(lambda fields: sent.append(dict(fields)))
    hold = readiness.hold("catching up with the primary at db1:11211")
    readiness.listening(["127.0.0.1:11211"])
    assert not any("READY" in fields for fields in sent)
    assert "catching up with the primary" in sent[-1]["STATUS"]
    hold.status("snapshot 40%")
    assert sent[-1]["STATUS"].endswith("catching up with the primary at db1:11211: snapshot 40%")
    other = readiness.hold("a second reason")
    hold.release()
    assert not any("READY" in fields for fields in sent)
    other.release()
    assert sent[-1] == {"READY": "1", "STATUS": "serving on 127.0.0.1:11211"}
    other.release()  # twice: nothing more
    assert sum("READY" in fields for fields in sent) == 1
    with pytest.raises(RuntimeError, match="too late"):
        readiness.hold("late")


def test_a_hold_released_before_listening_waits_for_the_listeners() -> None:
    sent: list[dict[str, str]] = []
    readiness = Readiness(lambda fields: sent.append(dict(fields)))
    readiness.hold("catching up").release()
    assert not any("READY" in fields for fields in sent)
    readiness.listening(["unix:/run/stig/stig.sock"])
    assert sent[-1]["READY"] == "1"


def test_no_ready_once_stopping() -> None:
    sent: list[dict[str, str]] = []
    readiness = Readiness(lambda fields: sent.append(dict(fields)))
    hold = readiness.hold("catching up")
    readiness.listening(["127.0.0.1:11211"])
    readiness.stopping("stopping on SIGTERM")
    hold.release()
    assert not any("READY" in fields for fields in sent)
    assert sent[-1]["STOPPING"] == "1"


# -- logs the journal reads well -------------------------------------------------


def _device_inode(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_dev}:{stat.st_ino}"


def test_logs_to_the_journal_carry_priorities_and_no_timestamp(
    service: Service, short_dir: Path
) -> None:
    def env() -> dict[str, str]:  # called once stderr's file exists
        return {
            "JOURNAL_STREAM": _device_inode(server.stderr_path),
            "NOTIFY_SOCKET": str(short_dir / "nobody"),  # for a warning
        }

    server = service(env=env)
    server.start()
    server.terminate()
    lines = server.stderr.splitlines()
    assert lines, "the server logged nothing"
    assert all(re.match(r"<[2-7]>", line) for line in lines), lines
    assert not any(TIMESTAMP.search(line[3:]) for line in lines), lines
    assert any(
        line.startswith("<6>INFO stig.server.listeners: stig listening on") for line in lines
    )
    assert any(
        line.startswith(f"<4>WARNING stig.server.sd_notify: {NOTIFY_WARNING}") for line in lines
    )
    # The last word is the process that ran the server: one process's
    # listeners, or the supervisor of --workers N once its children ended.
    assert re.fullmatch(
        r"<6>INFO stig\.server\.(listeners|supervisor): stig stopped; LMDB closed", lines[-1]
    ), lines[-1]


@pytest.mark.parametrize("stream", ["another file", "malformed"])
def test_logs_elsewhere_keep_their_timestamps(service: Service, stream: str) -> None:
    def env() -> dict[str, str]:
        other = _device_inode(server.stdout_path) if stream == "another file" else "12:x"
        return {"JOURNAL_STREAM": other}  # inherited by a child whose stderr went elsewhere

    server = service(env=env)
    server.start()
    server.terminate()
    lines = server.stderr.splitlines()
    assert lines and all(TIMESTAMP.match(line) for line in lines), lines
    assert any(" INFO stig.server.listeners: stig listening on" in line for line in lines)


def test_every_line_of_a_traceback_keeps_its_priority(tmp_path: Path) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "stig.x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    lines = JournalFormatter().format(record).splitlines()
    assert lines[0] == "<3>ERROR stig.x: failed"
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)
    # The journal stream is recognised by device and inode, not by name.
    path = tmp_path / "stderr"
    with open(path, "w") as stream:
        assert goes_to_journal(stream, {"JOURNAL_STREAM": _device_inode(path)})
        assert not goes_to_journal(stream, {})
        assert not goes_to_journal(stream, {"JOURNAL_STREAM": "1:2"})
