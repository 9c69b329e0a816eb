"""A follower run as a ``Type=notify`` service says ``READY=1`` only once it
has caught up with its primary (stig/engine/readiness.py's hold), over a
real datagram socket standing for systemd's ``$NOTIFY_SOCKET``: as one
process, and with workers (worker 0 holds the stream and tells the
supervisor, which alone speaks sd_notify, once it has caught up:
stig/server/ready_pipe.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stig_testkit.notify_socket import NotifySocket
from stig_testkit.process import StigProcess, child_env

Factory = Callable[..., StigProcess]


@pytest.mark.parametrize("shape", ["0", "2"], ids=["one-process", "workers-2"])
def test_ready_waits_until_the_follower_has_caught_up(
    stig_factory: Factory, tmp_path: Path, shape: str
) -> None:
    primary = stig_factory("--replication-open")  # followers without a login
    conn = primary.connect()
    value = b"x" * 1000
    for start in range(0, 20_000, 1000):  # ~20 MB: a snapshot that takes a while
        conn.send(
            b"".join(
                b"set k%d 0 0 1000 noreply\r\n%b\r\n" % (i, value)
                for i in range(start, start + 1000)
            )
        )
        assert conn.barrier() == b""
    primary.settle()
    target = int(primary.stats()["replication_seq"])

    notify = NotifySocket.abstract()
    log_dir = tmp_path / "follower-logs"
    log_dir.mkdir()
    follower = StigProcess(
        tmp_path / "follower",
        log_dir,
        ("--workers", shape, "--replica-of", f"{primary.host}:{primary.port}"),
    )
    follower.environment = lambda: {**child_env(), "NOTIFY_SOCKET": notify.name}
    try:
        follower.spawn()
        ready = notify.wait_for("READY", timeout=60)
        assert ready["READY"] == "1"
        follower.wait_listening()
        # At READY=1 the follower had applied every group the primary had.
        assert int(follower.stats()["replication_applied_seq"]) >= target
    finally:
        follower.kill()
        follower.close_clients()
        notify.close()
