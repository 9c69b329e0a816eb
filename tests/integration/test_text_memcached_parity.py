"""Text-protocol lines memcached answers in a particular way, byte for byte.

* An HTTP request line (an unknown command whose last token starts with
  ``HTTP/``) makes memcached hang up at once without a reply, so that a web
  page cannot make a browser run commands on the port (cross-protocol
  attacks).  Stig does the same.
* A storage command with the wrong number of tokens is ``ERROR``, and its
  data line is then read as a command (``ERROR`` again for plain data).

Each exchange is checked against bytes written out by hand, and, when
``/usr/bin/memcached`` is installed (.ci/run installs it), against a real
memcached given the very same bytes.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from support import memcached_ref

from stig_testkit.waiting import wait_for

IO_TIMEOUT = 5.0

#: Lines memcached closes the connection on, without a byte.
HTTP_LINES = [
    b"GET / HTTP/1.0\r\n",
    b"PUT /x HTTP/1.1\r\n",
    b"DELETE HTTP/1.1\r\n",
    b"POST /set HTTP/1.1\r\nHost: localhost\r\nContent-Length: 20\r\n\r\nset k 0 0 1\r\nx\r\n",
    b"GET / HTTP/1.1\n",
]

#: (request, reply): each ends with "mn", so every reply ends with "MN".
EXCHANGES = [
    (b"set foo 0 0\r\nmn\r\n", b"ERROR\r\nMN\r\n"),
    (b"cas foo 0 0 6 \r\nabcdef\r\nmn\r\n", b"ERROR\r\nERROR\r\nMN\r\n"),
    (b"set foo 0 0 1 2 3\r\nx\r\nmn\r\n", b"ERROR\r\nERROR\r\nMN\r\n"),
    (b"set foo 0 0 1 noreply extra\r\nx\r\nmn\r\n", b"ERROR\r\nERROR\r\nMN\r\n"),
    (b"add foo\r\nmn\r\n", b"ERROR\r\nMN\r\n"),
    (b"set foo 0 0 noreply\r\nmn\r\n", b"MN\r\n"),
    # HTTP/ as the last token of a command memcached knows is no hang-up
    (b"get k HTTP/1.1\r\nmn\r\n", b"END\r\nMN\r\n"),
    (b"set HTTP/1.1\r\nmn\r\n", b"ERROR\r\nMN\r\n"),
    (b"foo http/1.1\r\nmn\r\n", b"ERROR\r\nMN\r\n"),
]


def _exchange(host: str, port: int, request: bytes) -> tuple[bytes, bool]:
    """The reply to ``request`` (read until ``MN`` or the server hangs up)
    and whether the server closed the connection."""
    with socket.create_connection((host, port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(request)
        reply = b""
        while not reply.endswith(b"MN\r\n"):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return reply, True
            reply += chunk
        return reply, False


@pytest.mark.parametrize("request_bytes", HTTP_LINES)
def test_an_http_request_hangs_up_without_a_byte(stig_server, request_bytes: bytes) -> None:
    with stig_server.connect() as conn:
        conn.send(request_bytes)
        assert conn.is_closed_by_peer(), "the connection stayed open"
        assert conn.buffer == b""
    # The POST's body was never run as commands.
    assert stig_server.send_recv(b"get k\r\n") == b"END\r\n"


def test_replies_before_an_http_line_are_sent(stig_server) -> None:
    # memcached may drop them (docs/pov.md, Differences from memcached).
    with stig_server.connect() as conn:
        conn.send(b"version\r\nset k 0 0 1\r\nx\r\nGET / HTTP/1.1\r\n")
        assert conn.is_closed_by_peer()
        assert conn.buffer.startswith(b"VERSION ")
        assert conn.buffer.endswith(b"\r\nSTORED\r\n")


def test_commands_before_an_http_line_are_done(stig_server) -> None:
    with stig_server.connect() as conn:
        conn.send(b"set k 0 0 2 noreply\r\nhi\r\nGET / HTTP/1.1\r\n")
        assert conn.is_closed_by_peer()
        assert conn.buffer == b""
    # The run is committed after the hang-up; others see it once committed.
    reply = wait_for(
        lambda: stig_server.send_recv(b"get k\r\n"),
        lambda reply: reply != b"END\r\n",
        what="the write before the HTTP line, committed",
    )
    assert reply == b"VALUE k 0 2\r\nhi\r\nEND\r\n"


@pytest.mark.parametrize("request_bytes, reply", EXCHANGES)
def test_exact_replies(stig_server, request_bytes: bytes, reply: bytes) -> None:
    assert _exchange(stig_server.host, stig_server.port, request_bytes) == (reply, False)


# -- the same bytes to a real memcached ------------------------------------------


@pytest.fixture(scope="module")
def memcached() -> Iterator[tuple[str, int]]:
    with memcached_ref.memcached() as port:
        yield memcached_ref.HOST, port


@pytest.mark.parametrize("request_bytes", [*HTTP_LINES, *(request for request, _ in EXCHANGES)])
def test_the_same_bytes_as_memcached(
    stig_server, memcached: tuple[str, int], request_bytes: bytes
) -> None:
    ours = _exchange(stig_server.host, stig_server.port, request_bytes)
    theirs = _exchange(*memcached, request_bytes)
    assert ours == theirs
