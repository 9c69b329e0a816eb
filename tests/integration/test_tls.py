"""TLS (``--tls-cert``/``--tls-key``, like memcached's ``-Z``): every protocol,
logins, client certificates, a second port, and certificate reloads.

Certificates are made for each test run by the ``openssl`` command line
tool (Debian's ``openssl``): a CA, server certificates for 127.0.0.1 and a
client certificate, all signed by it.
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import struct
import subprocess
from pathlib import Path

import pytest

from stig_testkit.waiting import wait_for
from stig_testkit.workers import on_worker, stats_of

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")

SET_EXTRAS = struct.pack(">II", 0, 0)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _signed(directory: Path, name: str, subject: str, extensions: str) -> None:
    """``name.key`` and ``name.pem``, signed by the CA in ``directory``."""
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        subject,
        cwd=directory,
    )
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-extfile",
        f"{name}.ext",
        cwd=directory,
    )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=stig-test-ca",
        cwd=directory,
    )
    server_ext = "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    _signed(directory, "server", "/CN=stig-server-one", server_ext)
    _signed(directory, "server2", "/CN=stig-server-two", server_ext)
    _signed(directory, "client", "/CN=stig-client", "extendedKeyUsage=clientAuth\n")
    return directory


def _client_context(certs: Path, client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if client_cert:
        context.load_cert_chain(certs / "client.pem", certs / "client.key")
    return context


def _tls_server(stig_factory, certs: Path, tmp_path: Path, *extra: str):
    """A server whose certificate files are copies (so that a test may replace them).

    ``--durable-acks``: a write is answered once committed, so that the
    tests' other connections see it at once.
    """
    for name in ("server.pem", "server.key"):
        shutil.copy(certs / name, tmp_path / name)
    return stig_factory(
        "--tls-cert",
        str(tmp_path / "server.pem"),
        "--tls-key",
        str(tmp_path / "server.key"),
        "--durable-acks",
        *extra,
    )


def _tls_connect(server, context: ssl.SSLContext, port: int | None = None):
    """A conftest RawConnection whose socket speaks TLS."""
    conn = server.connect()
    conn.sock = context.wrap_socket(conn.sock, server_hostname="127.0.0.1")
    return conn


def _peer_name(conn) -> str:
    subject = dict(pair[0] for pair in conn.sock.getpeercert()["subject"])
    return subject["commonName"]


def _plain_client_is_dropped(host: str, port: int) -> None:
    """A plain client on a TLS port gets no reply at all, and is counted: the
    server ends the connection (a timeout here fails the test), and all it
    sent before is at most a TLS alert."""
    with socket.create_connection((host, port), timeout=10) as plain:
        plain.sendall(b"get greeting\r\n")
        plain.settimeout(15)
        received = b""
        try:
            while chunk := plain.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
        assert b"VALUE" not in received


def test_text_meta_and_binary_over_tls(stig_factory, certs, tmp_path):
    import bmemcached
    from pymemcache.client.base import Client

    server = _tls_server(stig_factory, certs, tmp_path)
    context = _client_context(certs)
    text = Client((server.host, server.port), tls_context=context, timeout=10, connect_timeout=10)
    assert text.set("greeting", b"hello", noreply=False) is True
    assert text.get("greeting") == b"hello"
    conn = _tls_connect(server, context)
    assert conn.send_recv(b"ms m 2 c\r\nhi\r\nmg m v\r\n", b"hi\r\n").endswith(b"VA 2\r\nhi\r\n")
    binary = bmemcached.Client((f"{server.host}:{server.port}",), tls_context=context)
    assert binary.set("b", "value")
    assert binary.get("b") == "value"
    assert text.get("b") == b"value"
    _plain_client_is_dropped(server.host, server.port)
    stats = text.stats()
    assert stats[b"ssl_handshake_errors"] == 1
    settings = text.stats("settings")
    assert settings[b"ssl_enabled"] is True or settings[b"ssl_enabled"] == b"yes"


def test_openssl_s_client(stig_factory, certs, tmp_path):
    server = _tls_server(stig_factory, certs, tmp_path)
    run = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"{server.host}:{server.port}",
            "-quiet",
            "-CAfile",
            str(certs / "ca.pem"),
            "-verify_return_error",
        ],
        input=b"set k 0 0 3\r\nabc\r\nget k\r\nquit\r\n",
        capture_output=True,
        timeout=60,
    )
    assert run.stdout == b"STORED\r\nVALUE k 0 3\r\nabc\r\nEND\r\n"


def test_logins_over_tls(stig_factory, certs, tmp_path):
    import bmemcached

    users = tmp_path / "users"
    users.write_text("app:secret\n")
    server = _tls_server(stig_factory, certs, tmp_path, "--auth-file", str(users))
    context = _client_context(certs)
    conn = _tls_connect(server, context)
    assert conn.send_recv(b"get k\r\n", b"\r\n") == b"CLIENT_ERROR unauthenticated\r\n"
    assert conn.send_recv(b"set auth 0 0 10\r\napp secret\r\n", b"\r\n") == b"STORED\r\n"
    assert conn.send_recv(b"get k\r\n") == b"END\r\n"
    sasl = bmemcached.Client(
        (f"{server.host}:{server.port}",), username="app", password="secret", tls_context=context
    )
    assert sasl.set("k", "v")
    assert sasl.get("k") == "v"


def test_separate_tls_port_and_client_certificates(stig_factory, certs, tmp_path):
    server = _tls_server(
        stig_factory,
        certs,
        tmp_path,
        "--tls-port",
        "0",
        "--tls-ca",
        str(certs / "ca.pem"),
        "--tls-verify-clients",
    )
    # The main port stays plain.
    assert server.send_recv(b"set k 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
    tls_port = int(server.stats("settings")["stig_tls_port"])
    assert tls_port not in (0, server.port)
    assert f"stig listening for TLS on {server.host}:{tls_port}" in server.stdout_path.read_text()
    # With a client certificate signed by --tls-ca: served.
    with socket.create_connection((server.host, tls_port), timeout=10) as raw:
        with _client_context(certs, client_cert=True).wrap_socket(
            raw, server_hostname="127.0.0.1"
        ) as tls:
            tls.sendall(b"get k\r\n")
            reply = b""
            while not reply.endswith(b"END\r\n"):
                reply += tls.recv(4096)
            assert reply == b"VALUE k 0 1\r\nx\r\nEND\r\n"
    # Without one: the handshake (or the first read after it, in TLS 1.3) fails.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with socket.create_connection((server.host, tls_port), timeout=10) as raw:
            with _client_context(certs).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"get k\r\n")
                if not tls.recv(4096):
                    raise ConnectionError("closed")


def test_handshake_errors_are_counted_on_every_worker(stig_factory, certs, tmp_path):
    """``--workers 2`` (docs/workers.md): ``ssl_handshake_errors`` is summed
    over the workers, as the other counters: eight plain clients on the TLS
    port, spread over both workers by the kernel (all eight on one worker 1
    time in 128), are all counted in a ``stats`` on either worker."""
    server = _tls_server(stig_factory, certs, tmp_path, "--tls-port", "0", "--workers", "2")
    tls_port = int(server.stats("settings")["stig_tls_port"])
    for _ in range(8):
        _plain_client_is_dropped(server.host, tls_port)
    for worker in (0, 1):
        assert stats_of(on_worker(server, worker))["ssl_handshake_errors"] == "8"


def _wait_for_peer(server, context, name: str) -> object:

    def presented() -> object:
        conn = _tls_connect(server, context)
        if _peer_name(conn) == name:
            return conn
        conn.close()
        return None

    return wait_for(presented, lambda conn: conn is not None, 20, f"the server presenting {name}")


def _reload_the_second_certificate(server, conn, certs: Path, tmp_path: Path, how: str) -> None:
    """Put server2's files in place of the server's and reload them: by
    ``refresh_certs`` on ``conn`` or by SIGHUP to the server's process."""
    for name in ("pem", "key"):
        shutil.copy(certs / f"server2.{name}", tmp_path / f"server.{name}")
    if how == "refresh_certs":
        assert conn.send_recv(b"refresh_certs\r\n", b"\r\n") == b"OK\r\n"
    else:
        server.proc.send_signal(signal.SIGHUP)


@pytest.mark.parametrize("how", ["refresh_certs", "SIGHUP"])
def test_certificates_reload_without_restart(stig_factory, certs, tmp_path, how):
    server = _tls_server(stig_factory, certs, tmp_path)
    context = _client_context(certs)
    old = _tls_connect(server, context)
    assert _peer_name(old) == "stig-server-one"
    assert old.send_recv(b"set k 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
    _reload_the_second_certificate(server, old, certs, tmp_path, how)
    new = _wait_for_peer(server, context, "stig-server-two")
    assert new.send_recv(b"get k\r\n") == b"VALUE k 0 1\r\nx\r\nEND\r\n"
    assert old.send_recv(b"get k\r\n") == b"VALUE k 0 1\r\nx\r\nEND\r\n"  # still open
    # A broken file is refused and the working certificate stays.
    (tmp_path / "server.pem").write_text("not a certificate\n")
    assert old.send_recv(b"refresh_certs\r\n", b"\r\n").startswith(
        b"Error loading the certificate chain"
    )
    assert _peer_name(_tls_connect(server, context)) == "stig-server-two"


def test_refresh_certs_without_tls_answers_as_memcached(stig_server):
    assert stig_server.send_recv(b"refresh_certs\r\n", b"\r\n") == b"Error TLS not enabled\r\n"


def test_unusable_certificate_refuses_to_start(stig_factory, certs, tmp_path):
    from stig_testkit.process import ServerFailed

    with pytest.raises(ServerFailed, match="certificate"):
        stig_factory("--tls-cert", str(certs / "ca.key"))  # a key is no certificate


def test_connection_limit_is_answered_in_clear_before_the_handshake(stig_factory, certs, tmp_path):
    server = _tls_server(stig_factory, certs, tmp_path, "--max-connections", "1")
    first = _tls_connect(server, _client_context(certs))
    assert first.send_recv(b"version\r\n", b"\r\n").startswith(b"VERSION ")
    assert server.connect().recv_until(None) == b"ERROR Too many open connections\r\n"


def _until_end(sock: ssl.SSLSocket) -> bytes:
    """Everything the server sends until the TLS session ends; raises
    ssl.SSLEOFError if it ends without close_notify (a cut, not a close)."""
    sock.settimeout(30)
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


def _strict_connect(server, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection((server.host, server.port), timeout=30)
    # suppress_ragged_eofs=False: an end without close_notify raises SSLEOFError
    return context.wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False)


@pytest.mark.parametrize("how", ["quit", "idle-timeout", "error", "server stop"])
def test_server_close_sends_close_notify(stig_factory, certs, tmp_path, how):
    """docs/security.md: when the server ends a TLS connection it sends
    close_notify first, so the client sees a clean shutdown, not a cut."""
    server = _tls_server(stig_factory, certs, tmp_path, "--idle-timeout", "2")
    with _strict_connect(server, _client_context(certs)) as sock:
        sock.sendall(b"set k 0 0 1\r\nx\r\n")
        assert sock.recv(100) == b"STORED\r\n"
        if how == "quit":
            sock.sendall(b"quit\r\n")
        elif how == "error":  # a line over --max-line-length: memcached's error, then close
            sock.sendall(b"x" * 5000)
        elif how == "server stop":
            server.terminate()
        received = _until_end(sock)  # idle-timeout: nothing sent, the server times out
        # After close_notify, the client can answer with its own: a clean shutdown.
        assert sock.unwrap() is not None
    assert received == (b"CLIENT_ERROR line too long\r\n" if how == "error" else b"")


def test_client_closing_without_close_notify_is_a_clean_end(stig_factory, certs, tmp_path):
    """Many clients just close the socket: that still ends the input at a
    command boundary, so a quiet run before it is committed (docs/pov.md)."""
    server = _tls_server(stig_factory, certs, tmp_path)
    context = _client_context(certs)
    sock = _strict_connect(server, context)
    sock.sendall(b"set a 0 0 1 noreply\r\n1\r\nset b 0 0 1 noreply\r\n2\r\n")
    sock.shutdown(socket.SHUT_RDWR)  # a TCP shutdown: no close_notify
    sock.close()
    conn = _tls_connect(server, context)
    reply = wait_for(
        lambda: conn.send_recv(b"get a b\r\n"), lambda r: r != b"END\r\n", 30, "the run committed"
    )
    assert reply == b"VALUE a 0 1\r\n1\r\nVALUE b 0 1\r\n2\r\nEND\r\n"
    assert b"STAT ssl_handshake_errors 0\r\n" in conn.send_recv(b"stats\r\n")


def _tls_pid(conn) -> str:
    reply = conn.send_recv(b"stats\r\n").decode()
    return next(line.split()[2] for line in reply.split("\r\n") if line.startswith("STAT pid "))


@pytest.mark.parametrize("how", ["refresh_certs", "SIGHUP"])
def test_a_reload_reaches_every_worker(stig_factory, certs, tmp_path, how):
    """``--workers 2`` (docs/workers.md): each worker loads the certificates;
    ``refresh_certs`` on one worker, or SIGHUP to the supervisor, reloads them
    in every worker: new connections on either present the new certificate."""
    server = _tls_server(stig_factory, certs, tmp_path, "--workers", "2")
    context = _client_context(certs)
    old = _tls_connect(server, context)
    assert _peer_name(old) == "stig-server-one"
    _reload_the_second_certificate(server, old, certs, tmp_path, how)
    # Once a worker other than the one asked presents the new certificate ...
    asked = _tls_pid(old)
    found: dict[str, str] = {}

    def look() -> dict[str, str]:
        conn = _tls_connect(server, context)
        found[_tls_pid(conn)] = _peer_name(conn)
        conn.close()
        return found

    def reloaded(seen: dict[str, str]) -> bool:
        others = [name for pid, name in seen.items() if pid != asked]
        return len(seen) == 2 and others == ["stig-server-two"]

    wait_for(look, reloaded, 20, "the other worker presenting stig-server-two")
    # ... every new connection, on either worker, presents it.
    found.clear()
    wait_for(look, lambda seen: len(seen) == 2, 20, "new connections on both workers")
    assert set(found.values()) == {"stig-server-two"}, found
