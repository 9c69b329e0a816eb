"""``--min-replica-acks``: a reply that acknowledges a write leaves only once
enough followers have it on disk; with too few it fails after the bound,
never silently (issue 22 item 3).  Real processes; waits poll ``stats``."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from stig_protocol.binary import Opcode, Status
from stig_testkit.process import StigProcess
from stig_testkit.replicas import data_dir_has
from stig_testkit.shapes import PRIMARY_SHAPES
from stig_testkit.waiting import wait_for_stats

Factory = Callable[..., StigProcess]
#: Followers (real and fake) without logins: a trusted network.
OPEN = "--replication-open"


@pytest.mark.parametrize("shape", PRIMARY_SHAPES)
def test_with_no_follower_a_write_fails_after_the_bound(
    stig_factory: Factory, shape: tuple[str, ...]
) -> None:
    primary = stig_factory(
        *shape, OPEN, "--min-replica-acks", "1", "--replica-ack-timeout-ms", "200"
    )
    conn = primary.connect()
    reply = conn.send_recv(b"set k 0 0 1\r\nv\r\n", b"\r\n")
    assert reply == (
        b"SERVER_ERROR only 0 of --min-replica-acks 1 followers acknowledged within 200 ms;"
        b" the writes are committed here but may be lost with this server\r\n"
    )
    assert conn.is_closed_by_peer()
    # A read acknowledges nothing: it is answered at once.
    assert primary.send_recv(b"get nothing\r\n") == b"END\r\n"
    stats = primary.stats()
    assert stats["replication_ack_timeouts"] == "1"
    binary = primary.connect_binary()
    binary.request(Opcode.Set, b"b", b"v", struct.pack(">II", 0, 0))
    response = binary.response()
    assert response.status != Status.NO_ERROR
    assert b"--min-replica-acks" in response.value


@pytest.mark.parametrize("shape", PRIMARY_SHAPES)
def test_with_one_follower_a_write_is_acknowledged_once_the_follower_has_it(
    stig_factory: Factory, shape: tuple[str, ...]
) -> None:
    primary = stig_factory(
        *shape, OPEN, "--min-replica-acks", "1", "--replica-ack-timeout-ms", "10000"
    )
    follower = stig_factory("--replica-of", f"{primary.host}:{primary.port}")
    wait_for_stats(primary, lambda s: s["connected_replicas"] == "1", what="the follower connected")
    for i in range(20):
        key = b"k%d" % i
        # A connection each: with workers, they land on both (the follower
        # streams from one; the other's replies wait all the same).
        conn = primary.connect()
        assert conn.send_recv(b"set %b 0 0 1\r\nv\r\n" % key, b"\r\n") == b"STORED\r\n"
        # No wait: the reply itself says the follower has it on disk.
        assert data_dir_has(follower.data_dir, key), key
    conn.send(b"".join(b"set q%d 0 0 1 noreply\r\nv\r\n" % i for i in range(10)))
    assert conn.barrier() == b""  # the reply that closes the run acknowledges it
    assert all(data_dir_has(follower.data_dir, b"q%d" % i) for i in range(10))
    binary = primary.connect_binary()
    response = binary.call(Opcode.Set, b"bin", b"v", struct.pack(">II", 0, 0))
    assert response.status == Status.NO_ERROR
    assert data_dir_has(follower.data_dir, b"bin")
    assert primary.stats()["replication_ack_timeouts"] == "0"


@pytest.mark.parametrize("shape", PRIMARY_SHAPES)
def test_replies_that_wait_for_the_commit_first_still_wait_for_the_follower(
    stig_factory: Factory, shape: tuple[str, ...]
) -> None:
    """A barrier (``mn``), a read of a key the run wrote and a binary GetK
    wait for the local commit on their own (to report quiet failures, to
    read the run's writes); under ``--min-replica-acks`` the reply must
    still wait for the follower, not leave once the commit is local."""
    primary = stig_factory(
        *shape, OPEN, "--min-replica-acks", "1", "--replica-ack-timeout-ms", "10000"
    )
    follower = stig_factory("--replica-of", f"{primary.host}:{primary.port}")
    wait_for_stats(primary, lambda s: s["connected_replicas"] == "1", what="the follower connected")
    meta = primary.connect()
    text = primary.connect()
    binary = primary.connect_binary()
    for i in range(30):
        meta.send(b"ms mq%d 1 q\r\nv\r\nms mr%d 1 q\r\nv\r\nmn\r\n" % (i, i))
        assert meta.recv_until(b"MN\r\n") == b"MN\r\n"
        assert data_dir_has(follower.data_dir, b"mr%d" % i), i
        text.send(b"set tq%d 0 0 1 noreply\r\nv\r\nget tq%d\r\n" % (i, i))
        assert text.recv_until(b"END\r\n") == b"VALUE tq%d 0 1\r\nv\r\nEND\r\n" % i
        assert data_dir_has(follower.data_dir, b"tq%d" % i), i
        binary.request(Opcode.SetQ, b"bq%d" % i, b"v", struct.pack(">II", 0, 0))
        response = binary.call(Opcode.GetK, b"bq%d" % i)
        assert (response.status, response.value) == (Status.NO_ERROR, b"v")
        assert data_dir_has(follower.data_dir, b"bq%d" % i), i
    assert primary.stats()["replication_ack_timeouts"] == "0"


@pytest.mark.parametrize("shape", PRIMARY_SHAPES)
def test_a_follower_acknowledging_more_than_it_was_sent_counts_for_nothing(
    stig_factory: Factory, shape: tuple[str, ...]
) -> None:
    """A false ``ACK`` (past the last group sent on its stream) must not
    satisfy ``--min-replica-acks``: the primary closes that stream."""
    primary = stig_factory(
        *shape, OPEN, "--min-replica-acks", "1", "--replica-ack-timeout-ms", "300"
    )
    fake = primary.connect()
    assert fake.send_recv(b"stig_replicate 0 1\r\n", b"\r\n") == b"REPLICATING 1 0\r\n"
    fake.send(b"ACK 999999999999\r\n")
    # The ACK has been dealt with: the stream closed, or the claim counted.
    wait_for_stats(
        primary,
        lambda s: s["connected_replicas"] == "0" or s.get("replica_0_acked_seq", "0") != "0",
        what="the false ACK handled",
    )
    conn = primary.connect()
    reply = conn.send_recv(b"set k 0 0 1\r\nv\r\n", b"\r\n")
    assert reply.startswith(b"SERVER_ERROR only 0 of --min-replica-acks 1"), reply
    assert fake.is_closed_by_peer()
