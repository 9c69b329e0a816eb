"""Taking over (issue 22 item 4): ``stig promote``, epochs, a fenced old
primary, and an old primary rejoining as a follower that discards (and
saves) the groups it had alone.  Real processes, real LMDB; waits poll
``stats`` or a reply, never a sleep.
"""

from __future__ import annotations

import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import lmdb
import pytest

from stig.replication import wire
from stig_protocol.binary import Opcode, Status
from stig_testkit.crashrig import LazyMount, fuse_unavailable
from stig_testkit.process import CODE_ROOT, StigProcess, child_env, stig_check
from stig_testkit.replicas import caught_up, fenced, stopped
from stig_testkit.shapes import PRIMARY_SHAPES
from stig_testkit.waiting import wait_for_stats

Factory = Callable[..., StigProcess]
#: Every server here takes stig_promote/stig_fence without logins (a trusted
#: network); tests/replication/test_takeover_guards.py checks the default.
OPEN = "--replication-open"


def _records(data_dir: Path) -> dict[bytes, bytes]:
    env = lmdb.open(str(data_dir), readonly=True, lock=True, max_dbs=4, create=False)
    try:
        with env.begin() as txn:
            db = env.open_db(b"items", txn=txn, create=False)
            return {bytes(k): bytes(v) for k, v in txn.cursor(db=db)}
    finally:
        env.close()


def _address(server: StigProcess) -> str:
    return f"{server.host}:{server.port}"


def _promote(server: StigProcess) -> subprocess.CompletedProcess[str]:
    """``stig promote HOST:PORT``, the operator's command, as a process."""
    return subprocess.run(
        [sys.executable, "-m", "stig", "promote", _address(server)],
        cwd=CODE_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_stig_promote_makes_a_follower_a_primary_of_a_new_epoch(stig_factory: Factory) -> None:
    primary = stig_factory(OPEN)
    primary.send_recv(b"set a 0 0 1\r\n1\r\n", b"\r\n")
    follower = stig_factory(OPEN, "--replica-of", _address(primary))
    stats = caught_up(follower, primary)
    seq = int(stats["replication_applied_seq"])
    assert stats["replication_epoch"] == "1"
    done = _promote(follower)
    assert done.returncode == 0, done.stderr
    assert f"epoch 2 from group {seq + 1}" in done.stderr
    stats = follower.stats()
    assert stats["replication_role"] == "primary"
    assert stats["replication_epoch"] == "2"
    assert stats["replication_seq"] == str(seq + 1)  # the epoch's first (empty) group
    # It takes writes at once, with cas values after the primary's.
    assert follower.send_recv(b"gets a\r\n").startswith(b"VALUE a 0 1 ")
    old_cas = int(follower.send_recv(b"gets a\r\n").split()[4])
    assert follower.send_recv(b"set b 0 0 1\r\n2\r\n", b"\r\n") == b"STORED\r\n"
    assert int(follower.send_recv(b"gets b\r\n").split()[4]) > old_cas
    # The old primary, still running, hears of the new epoch and is fenced.
    fenced(primary, follower)
    refused = primary.send_recv(b"set c 0 0 1\r\n3\r\n", b"\r\n")
    assert refused.startswith(b"SERVER_ERROR fenced: a primary of epoch 2 exists")
    # Promoting a primary is refused, and says so.
    again = _promote(follower)
    assert again.returncode == 1
    assert "already a primary (epoch 2)" in again.stderr


def test_an_old_primary_is_fenced_then_rejoins_discarding_and_saving_its_own_groups(
    stig_factory: Factory,
) -> None:
    primary = stig_factory(OPEN)
    follower = stig_factory(OPEN, "--replica-of", _address(primary))
    writer = primary.connect()
    for i in range(5):
        assert writer.send_recv(b"set k%d 0 0 1\r\n%d\r\n" % (i, i), b"\r\n") == b"STORED\r\n"
    shared = int(caught_up(follower, primary)["replication_applied_seq"])
    follower.terminate()  # the follower falls behind: what comes next is the old primary's alone
    for i in range(7):
        assert writer.send_recv(b"set only%d 0 0 1\r\nx\r\n" % i, b"\r\n") == b"STORED\r\n"
    primary.settle()
    alone = int(primary.stats()["replication_seq"]) - shared  # groups: commits coalesce
    assert alone >= 1
    port = primary.port
    primary.kill()  # the primary's machine dies
    follower.start()  # the follower comes back, cannot reach it, and is promoted
    done = _promote(follower)
    assert done.returncode == 0, done.stderr
    assert follower.send_recv(b"set new 0 0 1\r\nn\r\n", b"\r\n") == b"STORED\r\n"

    # The old primary comes back as it was, on its address: the new primary
    # finds it there and fences it; it refuses writes, and after a restart too.
    primary.start(OPEN, "--port", str(port))
    fenced(primary, follower)
    words = b"SERVER_ERROR fenced: a primary of epoch 2 exists"
    assert primary.send_recv(b"set x 0 0 1\r\n1\r\n", b"\r\n").startswith(words)
    primary.restart(OPEN, "--port", str(port))
    assert primary.stats()["replication_fenced"] == "1"
    assert primary.send_recv(b"delete k1\r\n", b"\r\n").startswith(words)
    binary = primary.connect_binary()
    response = binary.call(Opcode.Set, b"x", b"1", struct.pack(">II", 0, 0))
    assert response.status != Status.NO_ERROR
    # Followers of a fenced server are refused too.
    assert primary.send_recv(b"stig_replicate 0 1\r\n", b"\r\n").startswith(b"SERVER_ERROR fenced")

    # It rejoins as a follower of the new primary: its own groups after the
    # last one both had are discarded, counted, and saved to a file.
    primary.restart(OPEN, "--port", str(port), "--replica-of", _address(follower))
    wait_for_stats(primary, lambda s: s["replication_snapshots_loaded"] == "1", 30.0)
    stats = caught_up(primary, follower)
    assert stats["replication_role"] == "replica"
    assert stats["replication_epoch"] == "2"
    assert stats["replication_groups_discarded"] == str(alone)
    assert stats["replication_groups_saved"] == str(alone)
    assert stats["replication_fenced"] == "0"
    saved = primary.data_dir / f"diverged-after-{shared}-epoch-1.replog"
    frames = wire.FrameReader()
    frames.feed(saved.read_bytes())
    seqs = []
    while (frame := frames.next()) is not None:
        assert frame[0] == wire.GROUP
        seqs.append(wire.SEQ.unpack_from(frame[1])[0])
    assert seqs == list(range(shared + 1, shared + alone + 1))
    assert _records(primary.data_dir) == _records(follower.data_dir)
    assert primary.send_recv(b"get only0 new\r\n") == b"VALUE new 0 1\r\nn\r\nEND\r\n"


def test_a_follower_started_with_min_replica_acks_keeps_it_once_promoted(
    stig_factory: Factory,
) -> None:
    """``--min-replica-acks`` on a follower applies from its promotion on: the
    new primary never acknowledges a write its own follower lacks — none at
    first (the bound, then SERVER_ERROR), then the old primary rejoined."""
    primary = stig_factory(OPEN)
    primary.send_recv(b"set a 0 0 1\r\n1\r\n", b"\r\n")
    follower = stig_factory(
        OPEN,
        "--replica-of",
        _address(primary),
        "--min-replica-acks",
        "1",
        "--replica-ack-timeout-ms",
        "300",
    )
    caught_up(follower, primary)
    refused = follower.send_recv(b"set b 0 0 1\r\n2\r\n", b"\r\n")
    assert refused.startswith(b"SERVER_ERROR read-only replica of")  # at once, no ack wait
    port = primary.port
    primary.terminate()
    assert _promote(follower).returncode == 0
    failed = follower.send_recv(b"set b 0 0 1\r\n2\r\n", b"\r\n")
    assert failed.startswith(b"SERVER_ERROR only 0 of --min-replica-acks 1 followers"), failed
    primary.start(OPEN, "--port", str(port), "--replica-of", _address(follower))
    wait_for_stats(follower, lambda s: s["connected_replicas"] == "1", what="the old primary back")
    assert follower.send_recv(b"set c 0 0 1\r\n3\r\n", b"\r\n") == b"STORED\r\n"
    assert primary.send_recv(b"get c\r\n") == b"VALUE c 0 1\r\n3\r\nEND\r\n"  # no wait: acked
    assert primary.stats()["replication_groups_discarded"] == "0"


def test_a_second_follower_repointed_to_the_promoted_one_follows_on_from_the_log(
    stig_factory: Factory,
) -> None:
    """A follower that had nothing the new primary lacks is not diverged: it
    follows on from its own group, through the new epoch's first group."""
    primary = stig_factory(OPEN)
    promoted = stig_factory(OPEN, "--replica-of", _address(primary))
    other = stig_factory(OPEN, "--replica-of", _address(primary))
    primary.send_recv(b"set a 0 0 1\r\n1\r\n", b"\r\n")
    caught_up(promoted, primary)
    caught_up(other, primary)
    primary.terminate()
    assert _promote(promoted).returncode == 0
    assert promoted.send_recv(b"set b 0 0 1\r\n2\r\n", b"\r\n") == b"STORED\r\n"
    other.restart(OPEN, "--replica-of", _address(promoted))
    stats = caught_up(other, promoted)
    assert stats["replication_epoch"] == "2"
    assert stats["replication_snapshots_loaded"] == "0"  # from the log, not a snapshot
    assert stats["replication_groups_discarded"] == "0"
    assert _records(other.data_dir) == _records(promoted.data_dir)
    # It knows where epoch 2 began, as its primary does: were it promoted in
    # turn, it would judge a rejoining server as the new primary would.
    assert other.send_recv(b"stig_promote\r\n", b"\r\n") == b"PROMOTED 3 %d\r\n" % (
        int(stats["replication_applied_seq"]) + 1
    )


class _Writer(threading.Thread):
    """Writes unique keys in one protocol until the server goes; keeps every
    write the server acknowledged, with the cas the reply gave (if any)."""

    def __init__(self, server: StigProcess, protocol: str) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.protocol = protocol
        self.acked: dict[bytes, tuple[bytes, int | None]] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if self.protocol == "binary":
                self._binary()
            else:
                self._text()
        except Exception as exc:  # the server was SIGKILLed: the end
            self.error = exc

    def _text(self) -> None:
        conn = self.server.connect(timeout=30)
        name = self.protocol.encode()
        for i in range(1_000_000):
            key, value = b"%s%d" % (name, i), b"v%d" % i
            if self.protocol == "text":
                reply = conn.send_recv(
                    b"set %b 0 0 %d\r\n%b\r\n" % (key, len(value), value), b"\r\n"
                )
                if reply != b"STORED\r\n":
                    return
                self.acked[key] = (value, None)
            else:  # meta, with the cas in the reply
                reply = conn.send_recv(b"ms %b %d c\r\n%b\r\n" % (key, len(value), value), b"\r\n")
                if not reply.startswith(b"HD c"):
                    return
                self.acked[key] = (value, int(reply.split()[1][1:]))

    def _binary(self) -> None:
        conn = self.server.connect_binary(timeout=30)
        for i in range(1_000_000):
            key, value = b"binary%d" % i, b"v%d" % i
            response = conn.call(Opcode.Set, key, value, struct.pack(">II", 0, 0))
            if response.status != Status.NO_ERROR:
                return
            self.acked[key] = (value, response.cas)


def _replicated_load(
    factory: Factory,
    at_least: int,
    primary_dir: Path | None = None,
    follower_dir: Path | None = None,
    shape: tuple[str, ...] = (),
) -> tuple[StigProcess, StigProcess, list[_Writer]]:
    """A primary under ``--min-replica-acks 1`` and one follower (their data
    in ``primary_dir``/``follower_dir`` if given: a lazyfs mount), with
    three writers (text, meta, binary) running, each with ``at_least``
    acknowledged writes: mid-load.  ``shape``: the primary's extra options
    (stig_testkit/shapes.py)."""
    primary = factory(
        *shape,
        OPEN,
        "--min-replica-acks",
        "1",
        "--replica-ack-timeout-ms",
        "20000",
        data_dir=primary_dir,
    )
    follower = factory(OPEN, "--replica-of", _address(primary), data_dir=follower_dir)
    wait_for_stats(primary, lambda s: s["connected_replicas"] == "1", what="the follower connected")
    writers = [_Writer(primary, protocol) for protocol in ("text", "meta", "binary")]
    for writer in writers:
        writer.start()
    wait_for_stats(
        primary,
        lambda s: all(len(w.acked) >= at_least for w in writers),
        60.0,
        f"{at_least} acknowledged writes per protocol",
    )
    return primary, follower, writers


def _lost_writes(server: StigProcess, writers: list[_Writer]) -> list[bytes]:
    """The acknowledged writes ``server`` lacks, or holds with another cas."""
    conn = server.connect()
    lost = []
    for writer in writers:
        for key, (value, cas) in writer.acked.items():
            reply = conn.send_recv(b"gets %b\r\n" % key)
            head = reply.split(b"\r\n")[0].split()
            if len(head) != 5 or reply.split(b"\r\n")[1] != value:
                lost.append(key)
            elif cas is not None and int(head[4]) != cas:
                lost.append(key + b" (cas)")
    conn.close()
    return lost


@pytest.mark.parametrize("shape", PRIMARY_SHAPES)
@pytest.mark.parametrize("also_kill_follower", [False, True], ids=["primary", "both"])
def test_nothing_acknowledged_under_min_replica_acks_is_lost_after_sigkill_and_promote(
    stig_factory: Factory, also_kill_follower: bool, shape: tuple[str, ...]
) -> None:
    """SIGKILL of the primary mid-load, then ``stig promote``: every write
    acknowledged in text, meta or binary is on the new primary, with its
    cas.  ``both``: the follower is SIGKILLed first and restarted, so only
    what is on its disk counts, not what its socket had received (the case
    that fails when replies do not wait for the follower's ACK).  With
    ``--workers 2`` the SIGKILL is the supervisor's (its workers and writer
    die with it) and the writers' connections are spread over both workers."""
    primary, follower, writers = _replicated_load(stig_factory, 100, shape=shape)  # mid-load
    if also_kill_follower:
        follower.kill()
    primary.kill()
    for writer in writers:
        writer.join(60)
        assert not writer.is_alive()
    if also_kill_follower:
        follower.start()
    done = _promote(follower)
    assert done.returncode == 0, done.stderr
    assert follower.stats()["replication_role"] == "primary"
    lost = _lost_writes(follower, writers)
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
    assert sum(len(w.acked) for w in writers) >= 300
    # The promoted follower takes writes.
    assert follower.send_recv(b"set after 0 0 1\r\n1\r\n", b"\r\n") == b"STORED\r\n"


@pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable()))
@pytest.mark.parametrize("seed", [20261207, 20261208])
def test_a_power_cut_of_the_follower_then_the_primary_lost_loses_nothing_acknowledged(
    stig_factory: Factory, tmp_path: Path, seed: int
) -> None:
    """The follower's data directory on lazyfs (it forgets what was not
    fsynced): under ``--min-replica-acks 1``, the follower is SIGKILLed and
    its power cut mid-load, the primary SIGKILLed; the follower restarts on
    what its disk kept and is promoted: every acknowledged write is there,
    with its cas — its ``ACK`` came only after its fsync."""
    fs = LazyMount(tmp_path / "backing", tmp_path / "mount", tmp_path / "fs-logs")
    fs.start(seed)
    follower: StigProcess | None = None
    try:
        primary, follower, writers = _replicated_load(
            stig_factory, 50, follower_dir=tmp_path / "mount" / "data"
        )
        assert follower.proc is not None
        follower.proc.send_signal(signal.SIGKILL)
        fs.cut()  # what the follower had not fsynced is gone
        follower.proc.wait(30)
        primary.kill()
        for writer in writers:
            writer.join(60)
            assert not writer.is_alive()
        follower.start()
        done = _promote(follower)
        assert done.returncode == 0, done.stderr
        lost = _lost_writes(follower, writers)
        assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
        follower.terminate()
    finally:
        if follower is not None:
            follower.kill()
        fs.kill()


def _logged_seqs(data_dir: Path) -> tuple[list[int], int]:
    """The sequence numbers in a data directory's replication log, and its stored seq."""
    env = lmdb.open(str(data_dir), readonly=True, lock=True, max_dbs=4, create=False)
    try:
        with env.begin() as txn:
            repl = env.open_db(b"repl", txn=txn, create=False)
            replog_db = env.open_db(b"replog", txn=txn, create=False)
            seqs = [
                struct.unpack(">Q", k)[0] for k in txn.cursor(db=replog_db).iternext(values=False)
            ]
            return seqs, struct.unpack(">Q", txn.get(b"seq", db=repl))[0]
    finally:
        env.close()


@pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable()))
@pytest.mark.parametrize(
    "seed, follower_behind", [(20261207, False), (20261208, True)], ids=["streaming", "behind"]
)
def test_a_power_cut_of_the_primary_mid_stream_loses_nothing_acknowledged_and_it_rejoins(
    stig_factory: Factory, tmp_path: Path, seed: int, follower_behind: bool
) -> None:
    """The primary's data directory on lazyfs, under ``--min-replica-acks 1``:
    its power is cut mid-load (what it had not fsynced is gone) and the
    follower promoted.  Every acknowledged write is on the new primary with
    its cas; the follower applied each group once and whole (its log's
    numbers contiguous up to its stored seq, ``stig check`` clean).  The cut
    primary, restarted on what its disk kept with ``--replica-of NEW``,
    rejoins — discarding exactly the groups it has past the follower's, and
    saving them — and matches the new primary record for record.

    ``behind``: the follower is stopped until the primary has committed a
    group it never acknowledged, then SIGKILLed (what its socket held is
    gone) and restarted after the cut, so the rejoin always diverges;
    ``streaming``: the follower runs through the cut (a divergence or not,
    as the timing falls)."""
    fs = LazyMount(tmp_path / "backing", tmp_path / "mount", tmp_path / "fs-logs")
    fs.start(seed)
    primary: StigProcess | None = None
    try:
        primary, follower, writers = _replicated_load(
            stig_factory, 50, primary_dir=tmp_path / "mount" / "data"
        )
        assert primary.proc is not None and follower.proc is not None
        if follower_behind:
            # Every process of it (with workers, worker 0 streams: a stopped
            # supervisor alone would leave it acknowledging).  SIGKILLed
            # while stopped: its workers die with it, never continued.
            with stopped(follower):
                wait_for_stats(
                    primary,
                    lambda s: int(s["replication_lag_groups"]) >= 1,
                    what="a group the follower has not acknowledged",
                )
                follower.kill()
        port = primary.port
        primary.proc.send_signal(signal.SIGKILL)
        fs.cut()  # what the primary had not fsynced is gone
        primary.proc.wait(30)
        for writer in writers:
            writer.join(60)
            assert not writer.is_alive()
        if follower_behind:
            follower.start()
        # Once the follower has seen its stream end it has applied every
        # group the primary sent (``streaming``: it may still be applying
        # the last ones right after the cut).
        applied = int(
            wait_for_stats(
                follower,
                lambda s: s["replication_connected"] == "0",
                what="the follower seeing its primary gone",
            )["replication_applied_seq"]
        )
        kept = _logged_seqs(primary.data_dir)[1]  # the cut primary's last group
        assert kept >= applied
        assert kept > applied or not follower_behind
        done = _promote(follower)
        assert done.returncode == 0, done.stderr
        lost = _lost_writes(follower, writers)
        assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
        assert sum(len(w.acked) for w in writers) >= 150
        seqs, seq = _logged_seqs(follower.data_dir)
        assert seqs == list(range(seqs[0], seq + 1)), "a group missing or applied twice"
        checked = stig_check(follower.data_dir)
        assert checked.returncode == 0, checked.stderr

        # The cut primary rejoins the new one, on what its disk kept.
        assert follower.send_recv(b"set after 0 0 1\r\n1\r\n", b"\r\n") == b"STORED\r\n"
        primary.start(OPEN, "--port", str(port), "--replica-of", _address(follower))
        follower.settle()
        target = int(follower.stats()["replication_seq"])
        stats = wait_for_stats(  # its own seq may be past the target: the epoch too
            primary,
            lambda s: s["replication_epoch"] == "2" and int(s["replication_applied_seq"]) >= target,
            30.0,
            f"the old primary applying group {target} of epoch 2",
        )
        assert stats["replication_role"] == "replica"
        assert stats["replication_groups_discarded"] == str(kept - applied)
        assert stats["replication_groups_saved"] == str(kept - applied)
        saved = primary.data_dir / f"diverged-after-{applied}-epoch-1.replog"
        assert saved.exists() == (kept > applied)
        assert _records(primary.data_dir) == _records(follower.data_dir)
        primary.terminate()
        checked = stig_check(primary.data_dir)
        assert checked.returncode == 0, checked.stderr
    finally:
        if primary is not None:
            primary.kill()
        fs.kill()
