"""Hostile review of the read hold and the own-keys rule across workers
(``--workers 2 --min-replica-acks 1``, docs/workers.md): real processes, a
SIGSTOPped follower, waits on ``stats``."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from stig_testkit.process import StigProcess
from stig_testkit.waiting import wait_for, wait_for_stats
from stig_testkit.workers import on_worker, stats_of

Factory = Callable[..., StigProcess]


def _pair(stig_factory: Factory, timeout_ms: int) -> tuple[StigProcess, StigProcess]:
    args = ("--min-replica-acks", "1", "--replica-ack-timeout-ms", str(timeout_ms))
    primary = stig_factory("--workers", "2", *args, "--replication-open")
    follower = stig_factory("--replica-of", f"{primary.host}:{primary.port}")
    wait_for_stats(primary, lambda s: s["connected_replicas"] == "1", what="the follower connected")
    return primary, follower


@contextmanager
def _stopped(follower: StigProcess) -> Iterator[None]:
    """The follower SIGSTOPped, continued however the block ends."""
    assert follower.proc is not None
    os.kill(follower.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(follower.proc.pid, signal.SIGCONT)


def test_a_read_of_its_own_pov_ignores_another_workers_unreplicated_flush_all(
    stig_factory: Factory,
) -> None:
    """A read of keys all taken from the session's POV is answered from it,
    as on one process, even while a flush_all of another worker lacks its
    follower's ACK: its reply then fails only as a writer's does (its own
    noreply write is unreplicated: docs/pov.md, "Which replies acknowledge
    what").  It was held as a read of the store (the other worker's
    ``cleared`` word counted although no key came from the store) and
    failed as a read "of a write this read would see" — a write it would
    never see."""
    primary, follower = _pair(stig_factory, 500)
    flusher, reader = on_worker(primary, 0), on_worker(primary, 1)
    with _stopped(follower):
        seq = int(stats_of(reader)["replication_seq"])
        flusher.send(b"flush_all\r\n")  # its reply waits for the follower
        wait_for(
            lambda: int(stats_of(reader)["replication_seq"]),
            lambda now: now > seq,
            what="the flush_all committed locally",
        )
        reply = reader.send_recv(b"set k 0 0 1 noreply\r\nv\r\nget k\r\n", b"\r\n")
        assert reply == (
            b"SERVER_ERROR only 0 of --min-replica-acks 1 followers acknowledged within"
            b" 500 ms; the writes are committed here but may be lost with this server\r\n"
        ), reply
