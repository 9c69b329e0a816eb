"""Who may take a server over or fence it, and with which epochs: the
guards found by the review of issue 22 (docs/replication.md, "Who may
promote and fence").  Real servers; each case is a reply."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import lmdb

from stig_testkit.process import StigProcess
from stig_testkit.waiting import wait_for_stats

Factory = Callable[..., StigProcess]
U64 = struct.Struct(">Q")


def _put_repl(data_dir: Path, key: bytes, value: int) -> None:
    """Write a number into the stopped server's ``repl`` database, as a
    server before these guards could have left it."""
    env = lmdb.open(str(data_dir), max_dbs=8)
    try:
        repl = env.open_db(b"repl")
        with env.begin(write=True) as txn:
            txn.put(key, U64.pack(value), db=repl)
    finally:
        env.close()


def test_without_a_login_promote_and_fence_are_refused(stig_factory: Factory) -> None:
    primary = stig_factory()
    conn = primary.connect()
    assert conn.send_recv(b"stig_fence 2\r\n", b"\r\n") == (
        b"SERVER_ERROR stig_fence needs a login: run this server with --auth-file "
        b"(or --replication-open on a trusted network)\r\n"
    )
    reply = conn.send_recv(b"stig_promote\r\n", b"\r\n")
    assert reply.startswith(b"SERVER_ERROR stig_promote needs a login"), reply
    # A follower is refused too (its ACKs would count toward
    # --min-replica-acks), and a later epoch fences nothing.
    follower = primary.connect()
    assert follower.send_recv(b"stig_replicate 0 2\r\n", b"\r\n") == (
        b"SERVER_ERROR stig_replicate needs a login: run this server with --auth-file "
        b"(or --replication-open on a trusted network)\r\n"
    )
    assert follower.send_recv(b"stig_replicate 0 1\r\n", b"\r\n").startswith(
        b"SERVER_ERROR stig_replicate needs a login"
    )
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


def test_epochs_beyond_u32_are_a_client_error(stig_factory: Factory) -> None:
    primary = stig_factory("--replication-open")
    conn = primary.connect()
    for line in (
        b"stig_fence 9999999999",
        b"stig_fence 4294967296",
        b"stig_replicate 0 4294967296",
    ):
        reply = conn.send_recv(line + b"\r\n", b"\r\n")
        assert reply == b"CLIENT_ERROR bad command line format\r\n", (line, reply)
    assert primary.stats()["replication_fenced"] == "0"


def test_a_fence_too_far_past_this_servers_epoch_is_not_believed(stig_factory: Factory) -> None:
    primary = stig_factory("--replication-open")
    conn = primary.connect()
    for epoch in (4294967295, 102):
        reply = conn.send_recv(b"stig_fence %d\r\n" % epoch, b"\r\n")
        assert reply.startswith(b"SERVER_ERROR epoch %d is not believed" % epoch), reply
    follower = primary.connect()
    reply = follower.send_recv(b"stig_replicate 0 500\r\n", b"\r\n")
    assert reply.startswith(b"SERVER_ERROR the follower's epoch 500 is not believed"), reply
    assert conn.send_recv(b"set k 0 0 1\r\nv\r\n", b"\r\n") == b"STORED\r\n"
    assert primary.stats()["replication_fenced"] == "0"
    # 100 failovers missed is still believed.
    assert conn.send_recv(b"stig_fence 101\r\n", b"\r\n") == b"FENCED 101\r\n"
    assert primary.stats()["replication_fenced"] == "1"


def test_an_absurd_fence_stored_before_the_guards_is_ignored(stig_factory: Factory) -> None:
    """A fence no epoch can reach (stored by a server before the parser
    checked) does not fence, and a promotion past it works."""
    server = stig_factory()
    server.terminate()
    _put_repl(server.data_dir, b"fenced_epoch", 9999999999)
    server.start("--replica-of", "127.0.0.1:1", "--replication-open")
    reply = server.send_recv(b"stig_promote\r\n", b"\r\n")
    assert reply.startswith(b"PROMOTED 2 "), reply
    assert server.send_recv(b"set k 0 0 1\r\nv\r\n", b"\r\n") == b"STORED\r\n"


def test_a_failed_promotion_can_be_tried_again(stig_factory: Factory) -> None:
    """With no epoch left, stig_promote is refused, stores nothing and
    leaves no promotion "under way": the next one gets the same answer."""
    server = stig_factory()
    server.terminate()
    _put_repl(server.data_dir, b"epoch", 2**32 - 1)
    server.start("--replica-of", "127.0.0.1:1", "--replication-open")
    conn = server.connect()
    for _ in range(2):
        reply = conn.send_recv(b"stig_promote\r\n", b"\r\n")
        assert reply == (
            b"SERVER_ERROR cannot begin a new epoch: no epoch left after 4294967295\r\n"
        ), reply
    assert server.send_recv(b"get k\r\n") == b"END\r\n"


def test_a_wrong_fence_is_cleared_by_promoting_past_it(stig_factory: Factory) -> None:
    """docs/replication.md, clearing a wrong fence: restart as a follower of
    nothing, promote; the data stays and writes are taken again."""
    server = stig_factory("--replication-open")
    assert server.send_recv(b"set k 0 0 1\r\nv\r\n", b"\r\n") == b"STORED\r\n"
    assert server.send_recv(b"stig_fence 7\r\n", b"\r\n") == b"FENCED 7\r\n"
    server.restart("--replica-of", "127.0.0.1:1", "--replication-open")
    assert server.send_recv(b"stig_promote\r\n", b"\r\n").startswith(b"PROMOTED 8 ")
    server.restart("--replication-open")
    assert server.send_recv(b"set j 0 0 1\r\nw\r\n", b"\r\n") == b"STORED\r\n"
    assert server.send_recv(b"get k\r\n") == b"VALUE k 0 1\r\nv\r\nEND\r\n"
    assert server.stats()["replication_fenced"] == "0"


def test_a_follower_without_a_login_is_refused_and_counts_for_nothing(
    stig_factory: Factory,
) -> None:
    """Without ``--auth-file`` or ``--replication-open`` a real follower is
    refused (it says why in its stats and retries): it streams nothing, turns
    no log on, and its ``ACK`` cannot satisfy ``--min-replica-acks``."""
    primary = stig_factory("--min-replica-acks", "1", "--replica-ack-timeout-ms", "300")
    follower = stig_factory("--replica-of", f"{primary.host}:{primary.port}")
    stats = wait_for_stats(
        follower,
        lambda s: "stig_replicate_needs_a_login" in s["replication_last_error"],  # spaces: _
        what="the follower refused",
    )
    assert stats["replication_connected"] == "0"
    stats = primary.stats()
    assert stats["connected_replicas"] == "0" and stats["replication_log_on"] == "0"
    reply = primary.send_recv(b"set k 0 0 1\r\nv\r\n", b"\r\n")
    assert reply.startswith(b"SERVER_ERROR only 0 of --min-replica-acks 1"), reply
