"""Connections on chosen workers of ``stig serve --workers N`` (docs/workers.md).

The kernel spreads connections over the workers (``SO_REUSEPORT``); a test
that checks a promise across workers finds connections on the workers it
needs by the ``stig_worker_id`` stat of each.
"""

from __future__ import annotations

from pathlib import Path

from stig_testkit.connections import RawConnection
from stig_testkit.process import StigProcess

#: Connections tried before a test gives up finding one on a worker.
TRIES = 48


def stats_of(conn: RawConnection, group: bytes = b"") -> dict[str, str]:
    """``stats [group]`` on this connection, as a dict of strings."""
    reply = conn.send_recv(b"stats %b\r\n" % group if group else b"stats\r\n").decode()
    return {
        parts[1]: parts[2]
        for parts in (line.split(" ", 2) for line in reply.split("\r\n"))
        if parts[0] == "STAT"
    }


def on_worker(server: StigProcess, worker: int, timeout: float = 10.0) -> RawConnection:
    """A connection served by worker ``worker`` (the others tried are closed)."""
    for _ in range(TRIES):
        conn = server.connect(timeout)
        if stats_of(conn)["stig_worker_id"] == str(worker):
            return conn
        conn.close()
    raise AssertionError(f"{TRIES} connections and none on worker {worker}")


def is_writer(pid: int) -> bool:
    """Whether ``pid`` is Stig's writer process: forked by the supervisor of
    ``--workers N`` (named ``stig-writer``), or run as ``_writer`` (``--workers 1``)."""
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() == "stig-writer":
            return True
        return b"_writer" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def writer_pid(server: StigProcess) -> int:
    """The writer process of ``--workers N``: the supervisor's child named ``stig-writer``."""
    assert server.proc is not None
    parent = server.proc.pid
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        if is_writer(int(child)):
            return int(child)
    raise AssertionError("no writer process")
