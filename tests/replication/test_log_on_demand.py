"""The replication log only once a follower wants it (issue 22): a server
without followers writes no log; the first ``stig_replicate`` turns it on,
durably (a restart keeps logging for that follower), and that follower
starts from a snapshot; ``--replication-log-bytes 0`` turns it off and
drops it.  Real processes; waits poll ``stats``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from stig_testkit.process import StigProcess
from stig_testkit.replicas import caught_up
from stig_testkit.shapes import PRIMARY_SHAPES

Factory = Callable[..., StigProcess]


def _write(server: StigProcess, key: bytes) -> None:
    assert server.send_recv(b"set %b 0 0 1\r\n1\r\n" % key, b"\r\n") == b"STORED\r\n"


def _log(server: StigProcess) -> tuple[str, int]:
    """``replication_log_on`` and the groups in the log, once commits are done."""
    server.settle()
    stats = server.stats()
    return stats["replication_log_on"], int(stats["replication_log_groups"])


@pytest.mark.parametrize("shape", PRIMARY_SHAPES)
def test_the_log_is_written_once_a_follower_wants_it_and_after_restarts(
    stig_factory: Factory, shape: tuple[str, ...]
) -> None:
    """With ``--workers 2`` the writer process writes the log, told by the
    worker the follower landed on; the stats come from either worker."""
    primary = stig_factory(*shape, "--replication-open")  # followers without a login
    for i in range(5):
        _write(primary, b"k%d" % i)
    assert _log(primary) == ("0", 0)  # numbered, not logged
    assert int(primary.stats()["replication_seq"]) >= 1  # commits may coalesce
    follower = stig_factory("--replica-of", f"{primary.host}:{primary.port}")
    stats = caught_up(follower, primary)
    assert stats["replication_snapshots_loaded"] == "1"  # the first follower: a snapshot
    assert _log(primary) == ("1", 0)

    # Stored at once, not by the next commit: a restart with nothing
    # written since goes on logging, and the follower resumes from the log
    # (no second snapshot) with what was written while it was away.
    follower.terminate()
    port = primary.port
    primary.restart(*shape, "--replication-open", "--port", str(port))
    assert _log(primary) == ("1", 0)
    _write(primary, b"while-away")
    assert _log(primary) == ("1", 1)
    follower.start()
    stats = caught_up(follower, primary)
    assert stats["replication_snapshots_loaded"] == "0"
    assert follower.send_recv(b"get while-away\r\n") == b"VALUE while-away 0 1\r\n1\r\nEND\r\n"
    assert follower.stats()["replication_log_on"] == "1"  # a follower logs: it may be promoted

    # --replication-log-bytes 0 drops it and refuses followers; started
    # again without it, the log stays off until a follower comes.
    follower.terminate()
    primary.restart(
        *shape, "--replication-open", "--port", str(port), "--replication-log-bytes", "0"
    )
    assert _log(primary) == ("0", 0)
    assert int(primary.stats()["replication_log_bytes"]) == 0
    refused = primary.send_recv(b"stig_replicate 0 1\r\n", b"\r\n")
    assert refused.startswith(b"SERVER_ERROR the replication log is off"), refused
    primary.restart(*shape, "--replication-open", "--port", str(port))
    _write(primary, b"unlogged")
    assert _log(primary) == ("0", 0)
