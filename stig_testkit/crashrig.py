"""The power-cut rig: Stig on a lazyfs mount, clients that keep ledgers, and the checks.

One :class:`PowerCutRun` drives one protocol through many power cuts on one
data directory.  A cycle:

1. (first cycle) mount lazyfs (``python -m stig_testkit.lazyfs --remount
   --torn random``) over the backing directory: each cut keeps none, a random
   subset or a prefix of the unsynced pages;
2. start Stig with its ``--data-dir`` on the mount;
3. check the restarted server against every client's ledger and that its
   fresh cas is above every cas any client ever saw;
4. run the clients, each on its own connection, for a random time;
5. in half the cycles, freeze the disk a few requests ahead (SIGUSR2), so
   Stig stops mid-write;
6. SIGKILL Stig, then cut the power (SIGUSR1: unsynced pages dropped or
   torn, then a fresh mount of what the disk kept);
7. open the backing directory's LMDB environment directly, read-only, and
   walk every record: it must open as it is, with no recovery step.

The clients and their ledgers are in :mod:`stig_testkit.powercut_clients`;
tests/powercut and scripts/powercut.py drive the runs.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from stig_testkit.connections import RawConnection
from stig_testkit.powercut_clients import CLIENTS
from stig_testkit.process import ServerFailed, StigProcess, child_env

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


def _listed_in_proc_mounts(path: Path) -> bool:
    target = os.path.realpath(path)
    try:
        with open("/proc/mounts") as mounts:
            return any(line.split()[1] == target for line in mounts if len(line.split()) > 1)
    except OSError:
        return os.path.ismount(path)


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
                [
                    sys.executable,
                    "-m",
                    "stig_testkit.lazyfs",
                    str(self.backing),
                    str(self.mount),
                    "--remount",
                    "--torn",
                    torn,
                    "--seed",
                    str(seed),
                    "--dirs",
                    dirs,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env(),
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
            raise RigFailure(f"lazyfs did not exit:\n{self.out_path.read_text()}") from None
        self.proc = None
        self._unmount()
        return self._counters()

    def _unmount(self) -> None:
        # /proc/mounts, not os.path.ismount: once the FUSE process is dead a
        # stat of the mount point fails (ENOTCONN) and ismount says False,
        # which left dead mounts behind in /tmp.
        if _listed_in_proc_mounts(self.mount):
            subprocess.run(
                ["fusermount3", "-u", "-z", str(self.mount)],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def kill(self) -> None:
        """Whatever state it is in: gone, and unmounted."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(MOUNT_TIMEOUT)
        self.proc = None
        self._unmount()


class RigStig(StigProcess):
    """Stig on the mount; ``broken`` runs :mod:`stig_testkit.broken_stig` instead."""

    def __init__(
        self, data_dir: Path, log_dir: Path, args: tuple[str, ...], broken: str | None
    ) -> None:
        super().__init__(data_dir, log_dir, args)
        self.broken = broken

    @property
    def command(self) -> list[str]:
        command = super().command
        if self.broken:
            assert command[1:3] == ["-m", "stig"]
            command[1:3] = ["-m", "stig_testkit.broken_stig", self.broken]
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


# -- the run ------------------------------------------------------------------


def read_all(
    server: StigProcess, keys: list[bytes], chunk: int = 100
) -> dict[bytes, tuple[bytes, int]]:
    """``gets`` every key over one text connection: key -> (value, cas)."""
    found: dict[bytes, tuple[bytes, int]] = {}
    with RawConnection(server.host, server.port, timeout=30.0) as conn:
        for start in range(0, len(keys), chunk):
            reply = conn.send_recv(
                b"gets %s\r\n" % b" ".join(keys[start : start + chunk]), timeout=30.0
            )
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

    def __init__(
        self,
        workdir: Path,
        protocol: str,
        seed: int,
        clients: int = 3,
        broken: str | None = None,
        log: Callable[[str], None] = lambda _: None,
        min_load: float = 0.1,
        max_load: float = 0.5,
        window: int = 0,
        dirs: str = "journal",
    ) -> None:
        self.protocol = protocol
        self.rng = random.Random(seed)
        self.seed = seed
        self.log = log
        self.min_load, self.max_load = min_load, max_load
        self.window = window  # >0: check only keys written in the last `window` cycles
        self.dirs = dirs
        self.fs = LazyMount(workdir / "backing", workdir / "mount", workdir / "logs")
        self.server = RigStig(
            workdir / "mount" / "data", workdir / "logs", SERVER_ARGS[protocol], broken
        )
        self.clients = [CLIENTS[protocol](i, self.rng.randrange(2**32)) for i in range(clients)]
        self.cuts = 0
        self.error: BaseException | None = None  # set by a driver whose cycle raised
        self.failures: list[str] = []  # "cut N: problem"
        self.dead = False  # Stig could not start after a cut: the run ended there
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

    def _boot(self) -> bool:
        """Start the filesystem and Stig; False (a finding, recorded) when Stig
        cannot start on what a power cut left: the run is over."""
        if not self.fs.running:
            self.fs.start(self.rng.randrange(2**32), dirs=self.dirs)
        try:
            self.server.start()
        except ServerFailed as error:
            if not self.cuts:
                raise  # before any cut: the rig itself is broken
            self.dead = True
            self.failures.append(
                f"cut {self.cuts}: Stig does not start on what the cut left, "
                f"so every acknowledged write is lost: "
                f"{str(error).splitlines()[0]}\n{self.server.stderr[-600:]}"
            )
            return False
        return True

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
            self.failures.append(
                f"cut {self.cuts}: cas reused: a fresh write got {fresh}, "
                f"a client had seen {self.cas_ceiling} before the cut"
            )
        for client in clients:
            client.saw_cas(fresh)
            client.cycle = self.cuts
            if self.window:
                client.forget(self.cuts - self.window)

    def cycle(self) -> None:
        """Boot, check (after a cut), load, kill, cut.  Nothing once the run is
        dead (Stig could not start after a cut)."""
        if self.dead or not self._boot():
            return
        if self.cuts:
            self._check()
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=c.run, args=(self.server.host, self.server.port, stop), daemon=True
            )
            for c in self.clients
        ]
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
                raise RigFailure(
                    f"client {client.name!r} failed before the cut:\n{client.error}\n"
                    f"server stderr:\n{self.server.stderr}"
                )
        self.cuts += 1
        torn = str(counters["torn"])
        self.torn_counts[torn] += 1
        self.cas_ceiling = max(client.max_cas for client in self.clients)
        for name in self.cut_pages:
            self.cut_pages[name] += int(counters[name])  # type: ignore[call-overload]
        try:
            lmdb_walk(self.fs.backing / "data")
        except Exception as error:
            self.failures.append(
                f"cut {self.cuts}: LMDB does not open as the cut left it: {error!r}"
            )
        self.log(
            f"{self.protocol} cut {self.cuts} ({torn}{', frozen' if froze else ''}): "
            f"acked groups so far {self.acked_groups}, "
            f"pages dropped {counters['dropped_pages']} kept {counters['kept_pages']}, "
            f"failures so far {len(self.failures)}"
        )

    def finish(self) -> None:
        """Boot once more, check the last cut, and shut down cleanly."""
        if self.dead or not self._boot():
            self.fs.stop()
            return
        self._check()
        self.server.terminate()
        self.fs.stop()

    def summary(self) -> dict[str, object]:
        return {
            "protocol": self.protocol,
            "seed": self.seed,
            "cuts": self.cuts,
            "acked_groups": self.acked_groups,
            "keys_checked": self.checked_keys,
            "runs_checked": sum(len(c.runs) for c in self.clients),
            "torn": self.torn_counts,
            "frozen_mid_write": self.frozen,
            **self.cut_pages,
            "lost": sum(c.lost for c in self.clients),
            "half_runs": sum(c.half_runs for c in self.clients),
            "cas_reused": self.cas_reused,
            "failures": len(self.failures),
        }
