"""stig backup / restore / check against a real server under write load."""

from __future__ import annotations

import base64
import socket
import threading
import time
from pathlib import Path

import pytest
from opstools import data_path, run_stig

from stig_testkit.waiting import wait_for

RUN_KEYS = 10  # keys per quiet run


def _read_dump(data_dir: Path) -> dict[bytes, tuple[bytes, int]]:
    """Every item of a data directory, through ``stig dump --data-dir``."""
    import io

    from stig.tools import dumpfmt

    out = run_stig("dump", "--data-dir", str(data_dir), "--quiet").stdout
    return {i.key: (i.value, i.flags) for i in dumpfmt.read(io.BytesIO(out)) if i is not None}


class Writer(threading.Thread):
    """Writes until stopped and records when each write was acknowledged.

    ``loud``: one ``set`` at a time (the server runs --durable-acks, so STORED
    means on disk).  Otherwise quiet runs of RUN_KEYS ``ms … q`` closed by
    ``mn`` (MN: the whole run is on disk).
    """

    def __init__(self, port: int, name: str, loud: bool) -> None:
        super().__init__(daemon=True)
        self.port, self.name_, self.loud = port, name, loud
        self.acked: list[tuple[float, list[bytes]]] = []  # (ack time, keys)
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
                n = 0
                while not self.stop.is_set():
                    if self.loud:
                        keys = [b"%s-%d" % (self.name_.encode(), n)]
                        sock.sendall(b"set %b 7 0 10\r\n%b\r\n" % (keys[0], b"%010d" % n))
                        expect = b"STORED\r\n"
                    else:
                        keys = [b"%s-%d-%d" % (self.name_.encode(), n, j) for j in range(RUN_KEYS)]
                        sock.sendall(
                            b"".join(
                                b"ms %b 10 b F9 q\r\n%b\r\n" % (base64.b64encode(k), b"%010d" % n)
                                for k in keys
                            )
                            + b"mn\r\n"
                        )
                        expect = b"MN\r\n"
                    reply = b""
                    while not reply.endswith(b"\r\n"):
                        reply += sock.recv(4096)
                    assert reply == expect, reply
                    self.acked.append((time.monotonic(), keys))
                    n += 1
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_backup_under_write_load_restores_every_acknowledged_write(stig_factory, tmp_path):
    server = stig_factory("--durable-acks")
    client = server.client()
    # Some bulk first, so the copy takes a while next to the writers.
    for start in range(0, 20_000, 1000):
        client.set_many(
            {f"bulk-{i}": b"b" * 1000 for i in range(start, start + 1000)}, noreply=False
        )
    writers = [Writer(server.port, f"loud{i}", True) for i in range(2)]
    writers += [Writer(server.port, f"quiet{i}", False) for i in range(2)]
    for writer in writers:
        writer.start()
    wait_for(
        lambda: [(len(w.acked), w.error) for w in writers],
        lambda states: all(acked >= 20 for acked, _ in states) or any(e for _, e in states),
        what="20 acknowledged writes per writer",
    )
    assert not any(w.error for w in writers), [w.error for w in writers]
    backup_dir = tmp_path / "backup"
    started = time.monotonic()
    result = run_stig("backup", str(backup_dir), "--data-dir", str(server.data_dir))
    for writer in writers:
        writer.stop.set()
        writer.join(30)
        assert writer.error is None, writer.error
    assert b"keys" in result.stdout and b"MB" in result.stdout
    # Writes went on during the backup.
    assert any(t > started for w in writers for t, _ in w.acked)

    restored = tmp_path / "restored"
    run_stig("restore", str(backup_dir), "--data-dir", str(restored))
    checked = run_stig("check", "--data-dir", str(restored))
    assert b"ok: no problems found" in checked.stdout

    items = _read_dump(restored)
    assert all(items[b"bulk-%d" % i] == (b"b" * 1000, 0) for i in range(20_000))
    for writer in writers:
        for acked_at, keys in writer.acked:
            present = [k in items for k in keys]
            if acked_at < started:
                assert all(present), f"{keys[0]!r} acknowledged before the backup, missing"
            assert all(present) or not any(present), f"run of {keys[0]!r} torn in the backup"
    # The restored directory serves.
    copy = stig_factory(data_dir=restored)
    assert copy.client().get("bulk-19999") == b"b" * 1000


def test_restore_refuses_a_directory_a_server_holds(stig_factory, tmp_path):
    server = stig_factory()
    server.client().set("live", "yes")
    backup_dir = tmp_path / "backup"
    run_stig("backup", str(backup_dir), "--data-dir", str(server.data_dir))
    for extra in ((), ("--force",)):
        proc = run_stig(
            "restore", str(backup_dir), "--data-dir", str(server.data_dir), *extra, check=False
        )
        assert proc.returncode == 1
        assert str(server.data_dir).encode() in proc.stderr and b"in use" in proc.stderr
    assert server.client().get("live") == b"yes"


def test_restore_refuses_existing_data_unless_forced(stig_factory, tmp_path):
    server = stig_factory()
    server.client().set("k", "from-backup")
    backup_dir = tmp_path / "backup"
    run_stig("backup", str(backup_dir), "--data-dir", str(server.data_dir))
    server.client().set("k", "newer")
    server.terminate()
    proc = run_stig("restore", str(backup_dir), "--data-dir", str(server.data_dir), check=False)
    assert (
        proc.returncode == 1 and b"already holds data" in proc.stderr and b"--force" in proc.stderr
    )
    run_stig("restore", str(backup_dir), "--data-dir", str(server.data_dir), "--force")
    server.start()
    assert server.client().get("k") == b"from-backup"


def test_backup_refuses_a_used_destination_and_a_missing_source(stig_server, tmp_path):
    dest = tmp_path / "used"
    dest.mkdir()
    (dest / "something").write_text("x")
    proc = run_stig("backup", str(dest), "--data-dir", str(stig_server.data_dir), check=False)
    assert proc.returncode == 1 and b"not an empty directory" in proc.stderr
    proc = run_stig(
        "backup", str(tmp_path / "b"), "--data-dir", str(tmp_path / "nothing"), check=False
    )
    assert proc.returncode == 1 and b"no Stig data" in proc.stderr


def _patch(path: Path, marker: bytes, offset: int, new: bytes) -> None:
    """Overwrite bytes at ``offset`` from the one place ``marker`` is in the file."""
    data = bytearray(path.read_bytes())
    at = data.find(marker)
    assert at > 0 and data.find(marker, at + 1) < 0
    data[at + offset : at + offset + len(new)] = new
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, message",
    [
        # the state byte is the last header byte, right before the value
        ((-1, b"\x80"), b"unknown state bits 0x80"),
        # the cas is the 8 bytes before it
        ((-9, (2**40).to_bytes(8, "big")), b"is above the stored counter"),
    ],
)
def test_check_finds_a_record_damaged_on_purpose(stig_factory, tmp_path, damage, message):
    # No replication log: it would hold the marker a second time.
    stig_server = stig_factory("--replication-log-bytes", "0")
    client = stig_server.client()
    client.set_many({f"k{i}": b"ordinary" for i in range(100)}, noreply=False)
    client.set("victim", b"UNIQUE-VALUE-MARKER", noreply=False)
    copy = tmp_path / "copy"
    run_stig("backup", str(copy), "--data-dir", str(stig_server.data_dir))
    assert b"ok" in run_stig("check", "--data-dir", str(copy)).stdout
    offset, new = damage
    _patch(data_path(copy), b"UNIQUE-VALUE-MARKER", offset, new)
    proc = run_stig("check", "--data-dir", str(copy), check=False)
    assert proc.returncode == 1
    assert b"key b'victim'" in proc.stderr and message in proc.stderr
    assert b"101 keys" in proc.stdout


def test_a_backup_is_a_data_directory_and_restore_reads_a_live_one(stig_factory, tmp_path):
    server = stig_factory()
    server.client().set_many({f"k{i}": b"v%d" % i for i in range(100)}, noreply=False)
    server.settle()
    backup_dir = tmp_path / "backup"
    run_stig("backup", str(backup_dir), "--data-dir", str(server.data_dir))
    assert [p.name for p in backup_dir.iterdir()] == ["data.mdb"]
    # SRC may be the live directory itself: read in one snapshot.
    restored = tmp_path / "restored"
    run_stig("restore", str(server.data_dir), "--data-dir", str(restored))
    assert b"ok" in run_stig("check", "--data-dir", str(restored)).stdout
    # The backup directory serves as it is.
    served = stig_factory(data_dir=backup_dir)
    assert served.client().get_many([f"k{i}" for i in range(100)]) == {
        f"k{i}": b"v%d" % i for i in range(100)
    }


def test_a_truncated_copy_is_reported_and_a_damaged_directory_can_be_restored(
    stig_server, tmp_path
):
    """A copy cut short (a full disk during cp) once killed check and restore
    with SIGBUS; and restore --force refused to replace data it could not read,
    which is when one needs it most."""
    client = stig_server.client()
    client.set_many({f"k{i}": b"v" * 200 for i in range(2000)}, noreply=False)
    good = tmp_path / "good"
    run_stig("backup", "-q", str(good), "--data-dir", str(stig_server.data_dir))
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    data_path(damaged).write_bytes(data_path(good).read_bytes()[:12288])
    proc = run_stig("check", "--data-dir", str(damaged), check=False)
    assert proc.returncode == 1 and b"truncated copy" in proc.stderr, proc
    proc = run_stig("restore", "-q", str(good), "--data-dir", str(damaged), check=False)
    assert proc.returncode == 1 and b"already holds data (unreadable" in proc.stderr, proc
    run_stig("restore", "-q", str(good), "--data-dir", str(damaged), "--force")
    assert b"2,000 keys" in run_stig("check", "--data-dir", str(damaged)).stdout


def test_an_interrupted_backup_leaves_no_data_file_that_looks_whole(tmp_path):
    """SIGKILL in the middle of the copy: DEST holds no data.mdb (serving a torn
    copy crashed the server with SIGBUS); a finished backup holds only it."""
    import signal
    import subprocess
    import sys

    from stig.storage.ops import Put
    from stig.storage.store import Store
    from stig.tools.envtools import PARTIAL_DIR
    from stig_testkit.process import CODE_ROOT as REPO

    data = tmp_path / "data"
    store = Store(data, map_size=1 << 30)
    value = b"x" * (1 << 20)
    for start in range(0, 300, 50):  # 300 MB: the copy takes a while
        store.apply([[Put(b"k%d" % i, value, 0) for i in range(start, start + 50)]])
    store.close()
    dest = tmp_path / "bk"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stig", "backup", str(dest), "--data-dir", str(data), "--quiet"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    partial = dest / PARTIAL_DIR / "data.mdb"

    def copying() -> bool:
        assert proc.poll() is None, "the backup ended before it could be interrupted"
        return partial.exists() and partial.stat().st_size > 0

    wait_for(copying, bool, 60, "the backup copying")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert not (dest / "data.mdb").exists()
    # Run to the end, a backup leaves DEST with the data file and nothing else.
    whole = tmp_path / "bk2"
    run_stig("backup", str(whole), "--data-dir", str(data), "--quiet")
    assert sorted(p.name for p in whole.iterdir()) == ["data.mdb"]
