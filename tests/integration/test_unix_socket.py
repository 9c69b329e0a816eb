"""A unix domain socket instead of TCP (``--unix-socket``/``--unix-mask``,
like memcached's ``-s``/``-a``), with real clients."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stig_testkit.process import CODE_ROOT as REPO
from stig_testkit.process import STARTUP_TIMEOUT, STOP_TIMEOUT
from stig_testkit.waiting import wait_for


class UnixServer:
    def __init__(self, tmp_path: Path, *args: str, path: Path | None = None) -> None:
        # A short path: sun_path holds at most 107 bytes.
        self.path = path or Path(f"/tmp/stig-test-{os.getpid()}-{time.monotonic_ns()}.sock")
        self.log = tmp_path / "stdout"
        command = [
            sys.executable,
            "-m",
            "stig",
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            "--unix-socket",
            str(self.path),
            *args,
        ]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, stdin=subprocess.DEVNULL
            )

        def log() -> str:
            assert self.proc.poll() is None, self.log.read_text()
            return self.log.read_text()

        ready = f"stig listening on unix:{self.path}"
        wait_for(log, lambda text: ready in text, STARTUP_TIMEOUT, "the server listening")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(STOP_TIMEOUT)


@pytest.fixture
def unix_server(tmp_path: Path) -> Iterator[UnixServer]:
    # --durable-acks: a write is answered once committed, so that another
    # connection (another client) sees it at once.
    server = UnixServer(tmp_path, "--unix-mask", "770", "--durable-acks")
    yield server
    server.stop()
    if server.proc.poll() is None:
        server.proc.kill()


def test_clients_over_a_unix_socket(unix_server):
    import pylibmc
    from pymemcache.client.base import Client

    assert stat.S_IMODE(unix_server.path.stat().st_mode) == 0o770
    text = Client(str(unix_server.path), timeout=10, default_noreply=False)
    assert text.set("k", b"v") is True
    assert text.get("k") == b"v"
    for binary in (False, True):
        client = pylibmc.Client([str(unix_server.path)], binary=binary)
        assert client.set(f"p{binary}", "x")
        assert client.get("k") == b"v"
        client.disconnect_all()
    settings = text.stats("settings")
    assert settings[b"domain_socket"] == str(unix_server.path).encode()
    assert settings[b"tcpport"] == 0
    # Raw bytes too: the same protocol as on TCP.
    with socket.socket(socket.AF_UNIX) as raw:
        raw.settimeout(10)
        raw.connect(str(unix_server.path))
        raw.sendall(b"mg k v\r\n")
        assert raw.recv(100) == b"VA 1\r\nv\r\n"
    # A clean stop removes the socket file.
    unix_server.stop()
    assert unix_server.proc.returncode == 0
    assert not unix_server.path.exists()


def test_stale_socket_file_is_replaced(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = UnixServer(tmp_path / "a")
    first.proc.kill()  # a crash leaves the socket file behind
    first.proc.wait(STOP_TIMEOUT)
    assert first.path.exists()
    second = UnixServer(tmp_path / "b", path=first.path)
    try:
        assert stat.S_IMODE(first.path.stat().st_mode) == 0o700  # memcached's default mask
        with socket.socket(socket.AF_UNIX) as raw:
            raw.settimeout(10)
            raw.connect(str(first.path))
            raw.sendall(b"version\r\n")
            assert raw.recv(100).startswith(b"VERSION ")
    finally:
        second.stop()


def test_a_file_that_is_not_a_socket_is_left_alone(tmp_path):
    path = Path(f"/tmp/stig-test-{os.getpid()}-{time.monotonic_ns()}.notsock")
    path.write_text("precious\n")
    try:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "stig",
                "serve",
                "--data-dir",
                str(tmp_path / "data"),
                "--unix-socket",
                str(path),
            ],
            cwd=REPO,
            capture_output=True,
            timeout=60,
        )
        assert run.returncode != 0
        assert path.read_text() == "precious\n"
    finally:
        path.unlink()


def test_a_socket_another_server_listens_on_is_not_taken_over(tmp_path):
    """Only a stale socket is replaced: a second server given the path of a
    live one (another data directory!) once unlinked it and took its clients."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = UnixServer(tmp_path / "a")
    try:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "stig",
                "serve",
                "--data-dir",
                str(tmp_path / "b" / "data"),
                "--unix-socket",
                str(first.path),
            ],
            cwd=REPO,
            capture_output=True,
            timeout=60,
        )
        assert run.returncode == 1 and b"in use by a running server" in run.stderr, run
        with socket.socket(socket.AF_UNIX) as raw:
            raw.settimeout(10)
            raw.connect(str(first.path))
            raw.sendall(b"stats settings\r\n")
            reply = b""
            while not reply.endswith(b"END\r\n"):
                chunk = raw.recv(65536)
                assert chunk, reply
                reply += chunk
        assert f"STAT stig_data_dir {tmp_path / 'a' / 'data'}\r\n".encode() in reply
    finally:
        first.stop()
