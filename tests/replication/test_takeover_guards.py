"""Who may take a server over or fence it, and with which epochs: the
guards found by the review of issue 22 (docs/replication.md, "Who may
promote and fence").  Real servers; each case is a reply."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from stig_testkit.process import StigProcess

Factory = Callable[..., StigProcess]


def test_without_a_login_promote_and_fence_are_refused(stig_factory: Factory) -> None:
    primary = stig_factory()
    conn = primary.connect()
    assert conn.send_recv(b"stig_fence 2\r\n", b"\r\n") == (
        b"SERVER_ERROR stig_fence needs a login: run this server with --auth-file "
        b"(or --replication-open on a trusted network)\r\n"
    )
    reply = conn.send_recv(b"stig_promote\r\n", b"\r\n")
    assert reply.startswith(b"SERVER_ERROR stig_promote needs a login"), reply
    # A "follower" of a later epoch is refused, and fences nothing either.
    follower = primary.connect()
    reply = follower.send_recv(b"stig_replicate 0 2\r\n", b"\r\n")
    assert reply.startswith(b"SERVER_ERROR the follower's epoch 2 is later"), reply
    assert conn.send_recv(b"set k 0 0 1\r\nv\r\n", b"\r\n") == b"STORED\r\n"
    assert primary.stats()["replication_fenced"] == "0"


def test_a_logged_in_user_may_fence(stig_factory: Factory, tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("app:secret\n")
    primary = stig_factory("--auth-file", str(users))
    conn = primary.connect()
    assert conn.send_recv(b"set auth 0 0 10\r\napp secret\r\n", b"\r\n") == b"STORED\r\n"
    assert conn.send_recv(b"stig_fence 2\r\n", b"\r\n") == b"FENCED 2\r\n"
    reply = conn.send_recv(b"set k 0 0 1\r\nv\r\n", b"\r\n")
    assert reply.startswith(b"SERVER_ERROR fenced: a primary of epoch 2 exists"), reply
