"""A follower reaches its primary as a client would: over TLS, logged in
(``--replica-tls-ca``, ``--replica-auth-file``); a wrong login is refused
and shown in the follower's ``stats``."""

from __future__ import annotations

import shutil
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from stig_testkit.certs import self_signed_cert
from stig_testkit.process import StigProcess
from stig_testkit.waiting import wait_for, wait_for_stats

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")

Factory = Callable[..., StigProcess]


def _tls_call(server: StigProcess, cert: Path, data: bytes, until: bytes) -> bytes:
    context = ssl.create_default_context(cafile=str(cert))
    with socket.create_connection((server.host, server.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server.host) as conn:
            conn.sendall(data)
            received = b""
            while not received.endswith(until):
                chunk = conn.recv(65536)
                assert chunk, received
                received += chunk
            return received


def test_a_follower_over_tls_with_a_login(stig_factory: Factory, tmp_path: Path) -> None:
    self_signed_cert(tmp_path)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    users = tmp_path / "users"
    users.write_text("app:secret\nreplica:s3cret\n")
    primary = stig_factory(
        "--tls-cert", str(cert), "--tls-key", str(key), "--auth-file", str(users)
    )
    login = b"set auth 0 0 10\r\napp secret\r\n"
    reply = _tls_call(primary, cert, login + b"set k 3 0 2\r\nhi\r\n", b"STORED\r\nSTORED\r\n")
    assert reply == b"STORED\r\nSTORED\r\n"

    wrong = tmp_path / "wrong-login"
    wrong.write_text("replica:nope\n")
    address = f"{primary.host}:{primary.port}"
    refused = stig_factory(
        "--replica-of", address, "--replica-tls-ca", str(cert), "--replica-auth-file", str(wrong)
    )
    stats = wait_for_stats(
        refused, lambda s: "login_refused" in s["replication_last_error"], what="a refused login"
    )
    assert stats["replication_connected"] == "0"

    right = tmp_path / "login"
    right.write_text("replica:s3cret\n")
    follower = stig_factory(
        "--replica-of", address, "--replica-tls-ca", str(cert), "--replica-auth-file", str(right)
    )
    wait_for_stats(
        follower, lambda s: s["replication_applied_seq"] != "0", what="the follower applying"
    )
    _tls_call(primary, cert, login + b"set k2 0 0 1\r\nx\r\n", b"STORED\r\nSTORED\r\n")
    query = b"get k k2\r\n"
    expected = b"VALUE k 3 2\r\nhi\r\nVALUE k2 0 1\r\nx\r\nEND\r\n"
    wait_for(lambda: follower.send_recv(query), lambda reply: reply == expected, what="k2 applied")
