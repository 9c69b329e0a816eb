"""The power-cut rig: Stig on a lazyfs mount, clients that keep ledgers, and the checks.

One :class:`PowerCutRun` drives one protocol through many power cuts on one
data directory.  A cycle:

1. mount lazyfs (``tests/support/lazyfs.py``) over the backing directory,
   choosing at random how the coming cut tears unsynced pages (none, a
   random subset, a prefix);
2. start Stig with its ``--data-dir`` on the mount;
3. check the restarted server against every client's ledger (below) and
   that its fresh cas is above every cas any client ever saw;
4. run the clients, each on its own connection, for a random time;
5. SIGKILL Stig, then cut the power (SIGUSR1 to lazyfs: unsynced pages
   dropped or torn, the mount goes away);
6. open the backing directory's LMDB environment directly, read-only, and
   walk every record: it must open as it is, with no recovery step.

The ledger: each client owns its keys and sends one *group* at a time (one
write, or a run closed by its barrier).  Before sending, the group is
*pending*: a list of atomic steps (a step is one transaction: ``{key:
value or None}``).  On its acknowledgement the steps join the client's
*state*, the writes that must survive.  After a cut, the server must show
each client's state plus some prefix of its pending steps (a commit not yet
answered may have landed or not) — never less than the state (a lost
acknowledged write), never part of a step (a torn transaction), and with
the cas each acknowledged reply reported.  Every run's keys are fresh and
never written again, so runs are also checked one by one: all present or
all absent, and all present if acknowledged.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

SUPPORT = Path(__file__).resolve().parent
REPO = SUPPORT.parents[1]
LAZYFS = SUPPORT / "lazyfs.py"
BROKEN = SUPPORT / "broken_stig.py"
if str(SUPPORT) not in sys.path:
    sys.path.insert(0, str(SUPPORT))
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

from conftest import RawConnection, StigProcess  # noqa: E402

MOUNT_TIMEOUT = 20.0
READY = "lazyfs mounted on "  # lazyfs.READY (not imported: it needs pyfuse3)
PROTOCOLS = ("text", "meta", "binary")
#: Server options per protocol.  Text replies promise durability only under
#: --durable-acks; meta and binary are run without it, so ``mn``, No-op and
#: the after-commit replies of conditional and binary loud writes are tested
#: on their own.
SERVER_ARGS = {"text": ("--durable-acks",), "meta": (), "binary": ()}


def fuse_unavailable() -> str | None:
    """Why lazyfs cannot run here, or None when it can."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine"
    if os.geteuid() != 0:
        return "not root: mounting FUSE needs root here"
    if shutil.which("fusermount3") is None:
        return "fusermount3 missing (Debian package fuse3)"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as error:
        return f"/dev/fuse cannot be opened ({error})"
    try:
        import pyfuse3  # noqa: F401
    except ImportError as error:
        return f"pyfuse3 not importable ({error}); pip install pyfuse3"
    return None


class RigFailure(AssertionError):
    """The rig itself could not do its job (mount, start, ...)."""


# -- the filesystem ---------------------------------------------------------


class LazyMount:
    """One lazyfs process over ``backing``, mounted at ``mount``, remounting after each cut."""

    def __init__(self, backing: Path, mount: Path, log_dir: Path) -> None:
        self.backing, self.mount, self.log_dir = backing, mount, log_dir
        for path in (backing, mount, log_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _lines(self) -> list[str]:
        return self.out_path.read_text().splitlines()

    def _mounted_count(self) -> int:
        return sum(line.startswith(READY) for line in self._lines())

    def _wait_mounted(self, count: int) -> None:
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not (self._mounted_count() >= count and os.path.ismount(self.mount)):
            if not self.running or time.monotonic() > deadline:
                self.kill()
                raise RigFailure(f"lazyfs did not mount:\n{self.out_path.read_text()}")
            time.sleep(0.01)

    def start(self, seed: int, torn: str = "random", dirs: str = "journal") -> None:
        """Mount; each cut keeps what ``torn`` says (random: chosen per cut)."""
        self.starts += 1
        self.out_path = self.log_dir / f"lazyfs.{self.starts}.out"
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(LAZYFS), str(self.backing), str(self.mount), "--remount",
                 "--torn", torn, "--seed", str(seed), "--dirs", dirs],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        self._wait_mounted(1)

    def _counters(self) -> dict[str, object]:
        lines = [line for line in self._lines() if line.startswith("{")]
        if not lines:
            raise RigFailure(f"lazyfs printed no counters:\n{self.out_path.read_text()}")
        return json.loads(lines[-1])

    def cut(self) -> dict[str, object]:
        """Power cut, then a fresh mount of what the disk kept; the cut's counters."""
        assert self.proc is not None
        mounted = self._mounted_count()
        self.proc.send_signal(signal.SIGUSR1)
        self._wait_mounted(mounted + 1)
        return self._counters()

    def freeze(self, timeout: float = 3.0) -> bool:
        """Freeze the disk a few write/fsync requests from now (lazyfs SIGUSR2).

        True once it froze; False if nothing wrote within ``timeout``.
        """
        assert self.proc is not None
        before = sum(line.startswith("frozen") for line in self._lines())
        self.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(line.startswith("frozen") for line in self._lines()) > before:
                return True
            time.sleep(0.005)
        return False

    def stop(self) -> dict[str, object]:
        """Clean shutdown: everything synced, unmounted."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(MOUNT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RigFailure(f"lazyfs did not exit:\n{self.out_path.read_text()}")
        self.proc = None
        self._unmount()
        return self._counters()

    def _unmount(self) -> None:
        if os.path.ismount(self.mount):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mount)], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill(self) -> None:
        """Whatever state it is in: gone, and unmounted."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(MOUNT_TIMEOUT)
        self.proc = None
        self._unmount()


class RigStig(StigProcess):
    """Stig on the mount; ``broken`` runs tests/support/broken_stig.py instead."""

    def __init__(self, data_dir: Path, log_dir: Path, args: tuple[str, ...], broken: str | None) -> None:
        super().__init__(data_dir, log_dir, args)
        self.broken = broken

    @property
    def command(self) -> list[str]:
        command = super().command
        if self.broken:
            assert command[1:3] == ["-m", "stig"]
            command[1:3] = [str(BROKEN), self.broken]
        return command


def lmdb_walk(backing_data: Path) -> int:
    """Open the environment as the cut left it, read-only, and read every record.

    LMDB has no recovery step: if this raises, the cut left it unusable.
    Returns the number of items (0 when the environment was never synced).
    """
    import lmdb

    if not (backing_data / "data.mdb").exists():
        return 0
    env = lmdb.open(str(backing_data), readonly=True, lock=False, max_dbs=2, create=False)
    try:
        try:
            items = env.open_db(b"items", create=False)
            meta = env.open_db(b"meta", create=False)
        except lmdb.NotFoundError:  # cut before Stig's first commit
            return 0
        count = 0
        with env.begin() as txn:
            for db in (items, meta):
                for _key, value in txn.cursor(db=db):
                    count += db is items
                    assert value is not None
        return count
    finally:
        env.close()


# -- clients and their ledgers ----------------------------------------------

Step = dict[bytes, "bytes | None"]


def _brief(value: bytes | None) -> str:
    """A value as its first write tag and length (values repeat ``key#seq:``)."""
    if value is None:
        return "absent"
    return f"{value.split(b':', 1)[0].decode(errors='replace')}:.. ({len(value)} B)"


class Client:
    """One connection's workload and its ledger (see the module docstring)."""

    protocol = ""

    def __init__(self, index: int, seed: int) -> None:
        self.name = b"%s%d" % (self.protocol[0].encode(), index)
        self.rng = random.Random(seed)
        self.state: dict[bytes, bytes | None] = {}
        self.cas: dict[bytes, int] = {}  # committed cas reported by acknowledged replies
        self.pending: list[Step] = []
        self.runs: list[tuple[dict[bytes, bytes], bool]] = []  # (run, acknowledged)
        self.singles: list[bytes] = []  # keys that overwrite/cas/delete may touch
        self.counter = self.name + b".ctr"
        self.seq = 0
        self.max_cas = 0
        self.acked_groups = 0
        self.error: str | None = None
        self.cycle = 0  # set by the rig: the cycle writes are acknowledged in
        self.written_at: dict[bytes, int] = {}
        self.lost = 0  # acknowledged writes found missing or wrong, over all checks
        self.half_runs = 0  # runs found partly present

    # ledger ------------------------------------------------------------

    def fresh(self, tag: str = "") -> bytes:
        self.seq += 1
        return b"%s.%s%d" % (self.name, tag.encode(), self.seq)

    def value(self, key: bytes) -> bytes:
        """A value naming its key and write, sometimes spanning pages."""
        size = self.rng.choice((8, 40, 200, 1500, 6000))
        self.seq += 1
        head = b"%s#%d:" % (key, self.seq)
        return (head * (size // len(head) + 1))[:size]

    def begin(self, *steps: Step) -> None:
        assert not self.pending, "one group at a time"
        self.pending = [dict(step) for step in steps]

    def acked(self, cas: dict[bytes, int] | None = None) -> None:
        for step in self.pending:
            self.state.update(step)
            for key in step:
                self.cas.pop(key, None)
                self.written_at[key] = self.cycle
        if cas:
            self.cas.update(cas)
            self.max_cas = max(self.max_cas, *cas.values())
        for index, (run, done) in enumerate(self.runs):
            if not done and any(run.items() <= step.items() for step in self.pending):
                self.runs[index] = (run, True)
        self.pending = []
        self.acked_groups += 1

    def forget(self, before: int) -> None:
        """Stop checking keys last acknowledged before cycle ``before`` (long runs stay linear)."""
        old = {k for k, cycle in self.written_at.items() if cycle < before and k != self.counter}
        if not old:
            return
        for key in old:
            self.state.pop(key, None)
            self.cas.pop(key, None)
            del self.written_at[key]
        self.singles = [k for k in self.singles if k not in old]
        self.runs = [(run, done) for run, done in self.runs if not run.keys() & old]

    def saw_cas(self, cas: int) -> None:
        self.max_cas = max(self.max_cas, cas)

    def new_run(self, run: dict[bytes, bytes]) -> None:
        self.runs.append((run, False))

    def existing_single(self) -> bytes | None:
        alive = [key for key in self.singles if self.state.get(key) is not None]
        return self.rng.choice(alive) if alive else None

    def keys(self) -> set[bytes]:
        keys = set(self.state)
        for step in self.pending:
            keys.update(step)
        for run, _ in self.runs:
            keys.update(run)
        return keys

    def check(self, observed: dict[bytes, tuple[bytes, int]]) -> list[str]:
        """Problems found in what the restarted server shows; the ledger then follows it."""
        problems: list[str] = []
        keys = self.keys()
        seen = {key: observed[key][0] if key in observed else None for key in keys}
        matched = None
        expect = dict(self.state)
        for applied in range(len(self.pending) + 1):
            if applied:
                expect.update(self.pending[applied - 1])
            touched = {k for step in self.pending[:applied] for k in step}
            values_match = all(seen[k] == expect.get(k) for k in keys)
            cas_match = all(observed[k][1] == c for k, c in self.cas.items()
                            if k in observed and k not in touched)
            if values_match and cas_match:
                matched = applied
                break
        if matched is None:
            lost = [k for k, v in self.state.items() if seen.get(k) != v
                    and not any(k in step and seen.get(k) == step[k] for step in self.pending)]
            self.lost += len(lost)
            if lost:
                problems.append(f"{self.name.decode()}: {len(lost)} acknowledged writes lost or wrong, "
                                f"e.g. (key, acknowledged, found) {[(k, _brief(self.state[k]), _brief(seen.get(k))) for k in lost[:3]]}")
            bad_cas = [k for k, c in self.cas.items() if k in observed and observed[k][1] != c]
            if bad_cas:
                problems.append(f"{self.name.decode()}: cas changed for {bad_cas[:3]}")
            if not problems:
                problems.append(f"{self.name.decode()}: state matches no prefix of the pending steps")
        for run, acknowledged in self.runs:
            present = sum(seen.get(k) == v for k, v in run.items())
            if 0 < present < len(run):
                self.half_runs += 1
                problems.append(f"{self.name.decode()}: half a run: {present} of {len(run)} keys, "
                                f"e.g. {next(iter(run))!r}")
            elif acknowledged and present == 0:  # its keys are counted in `lost` too
                problems.append(f"{self.name.decode()}: acknowledged run of {len(run)} lost, "
                                f"e.g. {next(iter(run))!r}")
        # Follow what the server shows, so later cycles check from here.
        self.state = {k: v for k, v in seen.items() if v is not None or k in self.state}
        for key in self.state:
            self.written_at.setdefault(key, self.cycle)
        self.cas = {k: observed[k][1] for k in keys if k in observed}
        for key, (_, cas) in observed.items():
            if key in keys:
                self.max_cas = max(self.max_cas, cas)
        self.pending = []
        self.runs = [(run, True) for run, _ in self.runs
                     if all(seen.get(k) == v for k, v in run.items())]
        return problems

    # driving -----------------------------------------------------------

    def connect(self, host: str, port: int) -> None:
        self.conn = RawConnection(host, port, timeout=10.0)

    def run(self, host: str, port: int, stop: threading.Event) -> None:
        """Groups until the server dies (expected once ``stop`` is set)."""
        try:
            self.connect(host, port)
            while True:
                self.step()
        except (ConnectionError, OSError, TimeoutError):
            if not stop.is_set():
                self.error = traceback.format_exc()
        except Exception:  # a bad reply (AssertionError) or a bug: fails the cycle
            if not stop.is_set():
                self.error = traceback.format_exc()
        finally:
            try:
                self.conn.close()
            except Exception:
                pass

    def step(self) -> None:
        raise NotImplementedError

    def expect(self, reply: bytes, wanted: bytes) -> None:
        assert reply == wanted, f"{self.name!r}: expected {wanted!r}, got {reply!r}"


class TextClient(Client):
    """Text protocol under --durable-acks: replying writes, noreply runs, incr/decr, add, cas, delete."""

    protocol = "text"

    def _set(self, verb: bytes, key: bytes, value: bytes, tail: bytes = b"") -> bytes:
        return b"%s %s 0 0 %d%s\r\n%s\r\n" % (verb, key, len(value), tail, value)

    def step(self) -> None:
        conn, rng = self.conn, self.rng
        if self.state.get(self.counter) is None:
            self.begin({self.counter: b"1000"})
            self.expect(conn.send_recv(self._set(b"add", self.counter, b"1000"), b"\r\n"), b"STORED\r\n")
            return self.acked()
        pick = rng.random()
        if pick < 0.25:  # a replying set of a fresh key, or an overwrite
            key = self.existing_single() if rng.random() < 0.3 else None
            key = key or self.fresh()
            value = self.value(key)
            self.begin({key: value})
            self.singles.append(key)
            self.expect(conn.send_recv(self._set(b"set", key, value), b"\r\n"), b"STORED\r\n")
            self.acked()
        elif pick < 0.5:  # a noreply run, closed by a replying set (part of it, or just after)
            run = {}
            for _ in range(rng.randint(2, 40)):
                key = self.fresh("r")
                run[key] = self.value(key)
            close = self.fresh("c")
            self.new_run(run)
            self.begin(run, {close: b"closed"})
            payload = b"".join(self._set(b"set", k, v, b" noreply") for k, v in run.items())
            self.expect(conn.send_recv(payload + self._set(b"set", close, b"closed"), b"\r\n"), b"STORED\r\n")
            self.acked()
        elif pick < 0.7:  # incr / decr of the client's own counter
            current = int(self.state[self.counter])
            delta = rng.randint(1, 50)
            if rng.random() < 0.5 and current >= delta:
                verb, new = b"decr", current - delta
            else:
                verb, new = b"incr", current + delta
            self.begin({self.counter: b"%d" % new})
            self.expect(conn.send_recv(b"%s %s %d\r\n" % (verb, self.counter, delta), b"\r\n"),
                        b"%d\r\n" % new)
            self.acked()
        elif pick < 0.8:  # add: fresh (stored) or existing (refused)
            key = self.existing_single() if rng.random() < 0.3 else None
            if key is not None:
                self.expect(conn.send_recv(self._set(b"add", key, b"x"), b"\r\n"), b"NOT_STORED\r\n")
                return
            key = self.fresh("a")
            value = self.value(key)
            self.begin({key: value})
            self.singles.append(key)
            self.expect(conn.send_recv(self._set(b"add", key, value), b"\r\n"), b"STORED\r\n")
            self.acked()
        elif pick < 0.92:  # gets + cas
            key = self.existing_single()
            if key is None:
                return
            reply = conn.send_recv(b"gets %s\r\n" % key)
            header = reply.split(b"\r\n", 1)[0].split()
            assert header[:2] == [b"VALUE", key], reply[:80]
            cas = int(header[4])
            self.saw_cas(cas)
            value = self.value(key)
            self.begin({key: value})
            self.expect(conn.send_recv(self._set(b"cas", key, value, b" %d" % cas), b"\r\n"), b"STORED\r\n")
            self.acked()
        else:  # delete
            key = self.existing_single()
            if key is None:
                return
            self.begin({key: None})
            self.expect(conn.send_recv(b"delete %s\r\n" % key, b"\r\n"), b"DELETED\r\n")
            self.acked()


class MetaClient(Client):
    """Meta protocol without --durable-acks: quiet runs closed by mn, cas and add modes, ma + mn."""

    protocol = "meta"

    def step(self) -> None:
        conn, rng = self.conn, self.rng
        if self.state.get(self.counter) is None:
            self.begin({self.counter: b"1000"})
            self.expect(conn.send_recv(b"ms %s 4 q\r\n1000\r\nmn\r\n" % self.counter, b"MN\r\n"), b"MN\r\n")
            return self.acked()
        pick = rng.random()
        if pick < 0.5:  # a quiet run of ms (fresh keys), md, ma; closed by mn
            run: dict[bytes, bytes] = {}
            step: Step = {}
            parts = []
            for _ in range(rng.randint(2, 40)):
                key = self.fresh("r")
                run[key] = value = self.value(key)
                parts.append(b"ms %s %d q\r\n%s\r\n" % (key, len(value), value))
            victim = self.existing_single()
            if victim is not None and rng.random() < 0.3:
                step[victim] = None
                parts.append(b"md %s q\r\n" % victim)
            if rng.random() < 0.5:
                delta = rng.randint(1, 50)
                step[self.counter] = b"%d" % (int(self.state[self.counter]) + delta)
                parts.append(b"ma %s q D%d\r\n" % (self.counter, delta))
            rng.shuffle(parts)
            step.update(run)
            self.new_run(run)
            self.begin(step)
            self.expect(conn.send_recv(b"".join(parts) + b"mn\r\n", b"MN\r\n"), b"MN\r\n")
            self.acked()
        elif pick < 0.65:  # a single quiet ms + mn
            key = self.fresh()
            value = self.value(key)
            self.begin({key: value})
            self.singles.append(key)
            self.expect(conn.send_recv(b"ms %s %d q\r\n%s\r\nmn\r\n" % (key, len(value), value), b"MN\r\n"),
                        b"MN\r\n")
            self.acked()
        elif pick < 0.8:  # add mode: answered after its commit, with the committed cas
            existing = self.existing_single() if rng.random() < 0.3 else None
            if existing is not None:
                self.expect(conn.send_recv(b"ms %s 1 ME\r\nx\r\n" % existing, b"\r\n"), b"NS\r\n")
                return
            key = self.fresh("a")
            value = self.value(key)
            self.begin({key: value})
            self.singles.append(key)
            reply = conn.send_recv(b"ms %s %d ME c\r\n%s\r\n" % (key, len(value), value), b"\r\n")
            assert reply.startswith(b"HD c"), reply
            self.acked({key: int(reply[4:-2])})
        elif pick < 0.92:  # compare-and-swap with C, answered after its commit
            key = self.existing_single()
            if key is None:
                return
            reply = conn.send_recv(b"mg %s c\r\n" % key, b"\r\n")
            assert reply.startswith(b"HD c"), reply
            cas = int(reply[4:-2])
            self.saw_cas(cas)
            value = self.value(key)
            self.begin({key: value})
            reply = conn.send_recv(b"ms %s %d C%d c\r\n%s\r\n" % (key, len(value), cas, value), b"\r\n")
            assert reply.startswith(b"HD c"), reply
            self.acked({key: int(reply[4:-2])})
        else:  # a loud ma (a POV reply) made durable by mn
            delta = rng.randint(1, 50)
            new = int(self.state[self.counter]) + delta
            self.begin({self.counter: b"%d" % new})
            reply = conn.send_recv(b"ma %s D%d v\r\nmn\r\n" % (self.counter, delta), b"MN\r\n")
            self.expect(reply, b"VA %d\r\n%d\r\nMN\r\n" % (len(b"%d" % new), new))
            self.acked()


_REQUEST = struct.Struct(">BBHBBHIIQ")
SET, ADD, INCR, NOOP, SETQ, DELETEQ, INCRQ = 0x01, 0x02, 0x05, 0x0A, 0x11, 0x14, 0x15


def _binary(opcode: int, key: bytes = b"", value: bytes = b"", extras: bytes = b"",
            cas: int = 0, opaque: int = 0) -> bytes:
    body = len(extras) + len(key) + len(value)
    return _REQUEST.pack(0x80, opcode, len(key), len(extras), 0, 0, body, opaque, cas) + extras + key + value


class BinaryClient(Client):
    """Binary protocol without --durable-acks: SetQ/DeleteQ/IncrementQ runs + No-op, loud Set/Add/Increment, cas."""

    protocol = "binary"

    def response(self) -> tuple[int, int, int, bytes]:
        """(opcode, status, cas, value) of the next response."""
        header = self.conn.recv_exact(24)
        magic, opcode, keylen, extlen, _dt, status, body, _opaque, cas = _REQUEST.unpack(header)
        assert magic == 0x81, header
        payload = self.conn.recv_exact(body) if body else b""
        return opcode, status, cas, payload[extlen + keylen :]

    def loud(self, request: bytes) -> tuple[int, int, int, bytes]:
        self.conn.send(request)
        return self.response()

    def step(self) -> None:
        rng = self.rng
        flags = struct.pack(">II", 0, 0)
        if self.state.get(self.counter) is None:
            self.begin({self.counter: b"1000"})
            op, status, cas, value = self.loud(_binary(INCR, self.counter, extras=struct.pack(">QQI", 0, 1000, 0)))
            assert (op, status, value) == (INCR, 0, struct.pack(">Q", 1000)), (op, status, value)
            return self.acked({self.counter: cas})
        pick = rng.random()
        if pick < 0.5:  # a quiet run closed by No-op
            run: dict[bytes, bytes] = {}
            step: Step = {}
            parts = []
            for _ in range(rng.randint(2, 40)):
                key = self.fresh("r")
                run[key] = value = self.value(key)
                parts.append(_binary(SETQ, key, value, flags))
            victim = self.existing_single()
            if victim is not None and rng.random() < 0.3:
                step[victim] = None
                parts.append(_binary(DELETEQ, victim))
            if rng.random() < 0.5:
                delta = rng.randint(1, 50)
                step[self.counter] = b"%d" % (int(self.state[self.counter]) + delta)
                parts.append(_binary(INCRQ, self.counter, extras=struct.pack(">QQI", delta, 0, 0)))
            rng.shuffle(parts)
            step.update(run)
            self.new_run(run)
            self.begin(step)
            op, status, _, _ = self.loud(b"".join(parts) + _binary(NOOP, opaque=7))
            assert (op, status) == (NOOP, 0), f"a quiet write failed: opcode {op:#x} status {status}"
            self.acked()
        elif pick < 0.7:  # loud Set (fresh or overwrite), answered after its commit
            key = self.existing_single() if rng.random() < 0.3 else None
            key = key or self.fresh()
            value = self.value(key)
            self.begin({key: value})
            self.singles.append(key)
            op, status, cas, _ = self.loud(_binary(SET, key, value, flags))
            assert (op, status) == (SET, 0), (op, status)
            self.acked({key: cas})
        elif pick < 0.8:  # Add: fresh (stored) or existing (refused)
            existing = self.existing_single() if rng.random() < 0.3 else None
            if existing is not None:
                op, status, _, _ = self.loud(_binary(ADD, existing, b"x", flags))
                assert (op, status) == (ADD, 0x02), (op, status)
                return
            key = self.fresh("a")
            value = self.value(key)
            self.begin({key: value})
            self.singles.append(key)
            op, status, cas, _ = self.loud(_binary(ADD, key, value, flags))
            assert (op, status) == (ADD, 0), (op, status)
            self.acked({key: cas})
        elif pick < 0.9:  # Set with the committed cas
            key = self.existing_single()
            if key is None or key not in self.cas:
                return
            value = self.value(key)
            self.begin({key: value})
            op, status, cas, _ = self.loud(_binary(SET, key, value, flags, cas=self.cas[key]))
            assert (op, status) == (SET, 0), (op, status)
            self.acked({key: cas})
        else:  # loud Increment, answered after its commit
            delta = rng.randint(1, 50)
            new = int(self.state[self.counter]) + delta
            self.begin({self.counter: b"%d" % new})
            op, status, cas, value = self.loud(_binary(INCR, self.counter, extras=struct.pack(">QQI", delta, 0, 0)))
            assert (op, status, value) == (INCR, 0, struct.pack(">Q", new)), (op, status, value)
            self.acked({self.counter: cas})


CLIENTS: dict[str, type[Client]] = {"text": TextClient, "meta": MetaClient, "binary": BinaryClient}


# -- the run ------------------------------------------------------------------


def read_all(server: StigProcess, keys: list[bytes], chunk: int = 100) -> dict[bytes, tuple[bytes, int]]:
    """``gets`` every key over one text connection: key -> (value, cas)."""
    found: dict[bytes, tuple[bytes, int]] = {}
    with RawConnection(server.host, server.port, timeout=30.0) as conn:
        for start in range(0, len(keys), chunk):
            reply = conn.send_recv(b"gets %s\r\n" % b" ".join(keys[start : start + chunk]), timeout=30.0)
            position = 0
            while not reply.startswith(b"END\r\n", position):
                eol = reply.index(b"\r\n", position)
                _, key, _flags, size, cas = reply[position:eol].split()
                start_value = eol + 2
                found[key] = (reply[start_value : start_value + int(size)], int(cas))
                position = start_value + int(size) + 2
    return found


class PowerCutRun:
    """One protocol's clients through many power cuts on one data directory."""

    def __init__(self, workdir: Path, protocol: str, seed: int, clients: int = 3,
                 broken: str | None = None, log: Callable[[str], None] = lambda _: None,
                 min_load: float = 0.1, max_load: float = 0.5, window: int = 0,
                 dirs: str = "journal") -> None:
        self.protocol = protocol
        self.rng = random.Random(seed)
        self.seed = seed
        self.log = log
        self.min_load, self.max_load = min_load, max_load
        self.window = window  # >0: check only keys written in the last `window` cycles
        self.dirs = dirs
        self.fs = LazyMount(workdir / "backing", workdir / "mount", workdir / "logs")
        self.server = RigStig(workdir / "mount" / "data", workdir / "logs", SERVER_ARGS[protocol], broken)
        self.clients = [CLIENTS[protocol](i, self.rng.randrange(2**32)) for i in range(clients)]
        self.cuts = 0
        self.error: BaseException | None = None  # set by a driver whose cycle raised
        self.failures: list[str] = []  # "cut N: problem"
        self.checked_keys = 0
        self.cut_pages = {"kept_pages": 0, "dropped_pages": 0}
        self.torn_counts = {"none": 0, "subset": 0, "prefix": 0}
        self.cas_ceiling = 0  # the largest cas any client saw before the latest cut
        self.frozen = 0  # cuts that froze the disk mid-write first
        self.cas_reused = 0  # restarts whose fresh cas was not above every cas seen

    @property
    def acked_groups(self) -> int:
        return sum(client.acked_groups for client in self.clients)

    def close(self) -> None:
        """Kill whatever is left (always call: a test may fail midway)."""
        if self.server.running:
            self.server.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        self.fs.kill()  # answers a frozen request, if any, so the server can die
        try:
            self.server.kill()
        finally:
            self.server.close_clients()

    def _boot(self) -> None:
        if not self.fs.running:
            self.fs.start(self.rng.randrange(2**32), dirs=self.dirs)
        self.server.start()

    def _check(self) -> None:
        clients = self.clients
        keys = sorted(set().union(*(client.keys() for client in clients)))
        observed = read_all(self.server, keys)
        self.checked_keys += sum(len(client.state) for client in clients)
        for client in clients:
            for problem in client.check(observed):
                self.failures.append(f"cut {self.cuts}: {problem}")
        # cas values are never reused: a fresh write's cas exceeds all seen.
        probe = b"%s.probe%d" % (self.protocol.encode(), self.cuts)
        with RawConnection(self.server.host, self.server.port, timeout=30.0) as conn:
            assert conn.send_recv(b"set %s 0 0 1\r\np\r\n" % probe, b"\r\n", 30.0) == b"STORED\r\n"
            reply = conn.send_recv(b"gets %s\r\n" % probe, timeout=30.0)
        fresh = int(reply.split(b"\r\n")[0].split()[4])
        if fresh <= self.cas_ceiling:
            self.cas_reused += 1
            self.failures.append(f"cut {self.cuts}: cas reused: a fresh write got {fresh}, "
                                 f"a client had seen {self.cas_ceiling} before the cut")
        for client in clients:
            client.saw_cas(fresh)
            client.cycle = self.cuts
            if self.window:
                client.forget(self.cuts - self.window)

    def cycle(self) -> None:
        """Boot, check (after a cut), load, kill, cut."""
        self._boot()
        if self.cuts:
            self._check()
        stop = threading.Event()
        threads = [threading.Thread(target=c.run, args=(self.server.host, self.server.port, stop), daemon=True)
                   for c in self.clients]
        for thread in threads:
            thread.start()
        time.sleep(self.rng.uniform(self.min_load, self.max_load))
        # Half the cuts land at a random instant; the other half freeze the
        # disk a few requests on first, so that Stig dies in mid-commit.
        froze = self.rng.random() < 0.5 and self.fs.freeze()
        self.frozen += froze
        stop.set()
        # SIGKILL first; a process stuck in a frozen FUSE request dies only
        # once that request is answered, which the cut does (EIO, after
        # dropping what was unsynced), so reap it after the cut.
        assert self.server.proc is not None
        self.server.proc.send_signal(signal.SIGKILL)
        counters = self.fs.cut()
        self.server.proc.wait(MOUNT_TIMEOUT)
        for thread in threads:
            thread.join(30)
        for client in self.clients:
            if client.error:
                raise RigFailure(f"client {client.name!r} failed before the cut:\n{client.error}\n"
                                 f"server stderr:\n{self.server.stderr}")
        self.cuts += 1
        torn = str(counters["torn"])
        self.torn_counts[torn] += 1
        self.cas_ceiling = max(client.max_cas for client in self.clients)
        for name in self.cut_pages:
            self.cut_pages[name] += int(counters[name])  # type: ignore[call-overload]
        try:
            lmdb_walk(self.fs.backing / "data")
        except Exception as error:  # noqa: BLE001 - any error is the finding
            self.failures.append(f"cut {self.cuts}: LMDB does not open as the cut left it: {error!r}")
        self.log(f"{self.protocol} cut {self.cuts} ({torn}{', frozen' if froze else ''}): acked groups so far {self.acked_groups}, "
                 f"pages dropped {counters['dropped_pages']} kept {counters['kept_pages']}, "
                 f"failures so far {len(self.failures)}")

    def finish(self) -> None:
        """Boot once more, check the last cut, and shut down cleanly."""
        self._boot()
        self._check()
        self.server.terminate()
        self.fs.stop()

    def summary(self) -> dict[str, object]:
        return {
            "protocol": self.protocol, "seed": self.seed, "cuts": self.cuts,
            "acked_groups": self.acked_groups, "keys_checked": self.checked_keys,
            "runs_checked": sum(len(c.runs) for c in self.clients),
            "torn": self.torn_counts, "frozen_mid_write": self.frozen, **self.cut_pages,
            "lost": sum(c.lost for c in self.clients),
            "half_runs": sum(c.half_runs for c in self.clients),
            "cas_reused": self.cas_reused,
            "failures": len(self.failures),
        }
