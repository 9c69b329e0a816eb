"""The LMDB map and the disk: a full map grows unseen; a full disk refuses writes, never data.

A full disk is made real with RLIMIT_FSIZE on the process that writes the
data file — the server, or with ``--workers`` its writer process — set with
prlimit(2) once it runs: once the data file would pass the limit, the kernel
refuses the write (EFBIG) exactly where a full disk refuses it (ENOSPC),
inside LMDB's commit.  Only that process is limited: with workers the
supervisor's shared memory (a memfd of several MiB, sized with ftruncate,
which the limit bounds too) must still be made, by a restart of the group.
No root is needed (a process may lower the limits of its own user's
processes).  A real small filesystem, in every protocol and both ack modes:
test_disk_full.py (root: it mounts a tmpfs).
"""

from __future__ import annotations

import resource

from stig_testkit.process import StigProcess
from stig_testkit.workers import writer_pid

VALUE = b"v" * 100_000


def test_a_full_map_grows_and_the_client_never_notices(stig_factory):
    server = stig_factory("--map-size", "1m")
    client = server.client()
    for index in range(60):  # ~6 MB through a 1 MiB initial map
        assert client.set(f"k{index}", VALUE) is True
    server.settle()
    assert int(server.stats()["limit_maxbytes"]) > 1 << 20
    reader = server.client()
    assert all(reader.get(f"k{index}") == VALUE for index in range(60))
    assert server.stats()["stig_failed_commits"] == "0"


def _limit_data_file(server: StigProcess, limit: int) -> None:
    """RLIMIT_FSIZE ``limit`` on the process that writes the data file: the
    server itself (one process), or its writer process (``--workers N``)."""
    assert server.proc is not None
    single = server.stats()["stig_workers"] == "0"
    pid = server.proc.pid if single else writer_pid(server)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_refuses_writes_keeps_reads_and_corrupts_nothing(stig_factory):
    server = stig_factory("--durable-acks")
    _limit_data_file(server, 3 << 20)
    stored: list[str] = []
    refused = None
    with server.connect() as conn:
        for index in range(100):  # ~10 MB against a 3 MiB file limit
            reply = conn.send_recv(
                b"set k%d 0 0 %d\r\n%b\r\n" % (index, len(VALUE), VALUE), b"\r\n"
            )
            if reply == b"STORED\r\n":
                stored.append(f"k{index}")
                continue
            refused = reply
            break
    assert stored, "some writes fit before the disk was full"
    # EFBIG, or LMDB's EIO for a write cut short at the limit: a full disk either way,
    # and the write was never acknowledged (its reply waited for the commit).
    assert refused is not None and refused.startswith(
        b"SERVER_ERROR commit failed: out of disk space (mdb_txn_commit: "
    ), refused
    assert refused.endswith(b"; unacknowledged writes were not stored\r\n"), refused
    assert 10 < len(stored) < 40, len(stored)  # the limit, not something else, stopped it
    assert server.running
    reply = server.send_recv(b"set later 0 0 %d\r\n%b\r\n" % (len(VALUE), VALUE), b"\r\n")
    assert reply == b"SERVER_ERROR out of disk space; writes refused\r\n"

    # Reads go on; the refused write is not there.
    reader = server.client()
    assert reader.get(stored[0]) == VALUE
    assert reader.get(stored[-1]) == VALUE
    assert reader.get(f"k{len(stored)}") is None
    assert int(server.stats()["stig_failed_commits"]) >= 1

    # After a crash and a restart with room on disk, every acknowledged write
    # is there and the store takes writes again.
    server.restart(kill=True)  # new processes, without the limit
    after = server.client()
    assert all(after.get(key) == VALUE for key in stored)
    assert after.get(f"k{len(stored)}") is None
    assert after.set("again", VALUE) is True
    assert after.get("again") == VALUE
