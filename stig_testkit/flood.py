"""Floods and hostile clients against a real Stig server: memory, commit lag, loss window.

Each scenario starts ``python -m stig serve`` from a given checkout (so that
two versions can be compared in one run, on the same box, as ratios), drives
it, and prints one JSON line of numbers:

* ``noreply``: N connections each write runs of 20 ``set … noreply`` closed by
  ``version``, sent as fast as the server reads them for S seconds; ``stats`` is
  sampled for the commit lag and ``/proc`` for RSS; with ``--kill`` the server
  is then SIGKILLed under the flood, restarted, and the acknowledged runs
  that were lost are found: the loss window is how long before the kill the
  oldest of them was acknowledged (client-side clocks).
* ``add``: the same with ``add … noreply`` runs that are never closed.
* ``unread``: C clients each send G ``get big`` (a 1 MB value) and never read;
  RSS is read once the server stops sending.

    python3 scripts/flood.py noreply --repo /work/main --kill
    python3 scripts/flood.py unread --repo . --clients 1 --gets 300

scripts/flood.py is the command line; the tests in
tests/durability/test_flood_bounds.py and test_read_bounds.py call the same
functions (and :func:`big_reply`, :func:`pending_getq` are tests' only).
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Protocol

READY = "stig listening on "


class Server:
    """``python -m stig serve --workers 0`` from ``repo`` on a free port: one
    process, whose memory (:meth:`rss_mib`) is the server's."""

    def __init__(self, repo: Path, data_dir: Path, *args: str) -> None:
        self.repo, self.data_dir, self.args = repo, data_dir, args
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> Server:
        log = open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stig",
                "serve",
                "--port",
                "0",
                "--data-dir",
                str(self.data_dir),
                "--workers",
                "0",
                *self.args,
            ],
            cwd=self.repo,
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert line.startswith(READY), line
        self.port = int(line.rsplit(":", 1)[1])
        return self

    def rss_mib(self, field: str = "VmRSS") -> float:
        """Resident memory now (``VmHWM``: the peak so far), in MiB."""
        with open(f"/proc/{self.proc.pid}/status") as f:  # type: ignore[union-attr]
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        raise AssertionError("no " + field)

    def stats(self) -> dict[str, str]:
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall(b"stats\r\n")
            data = _recv_until(sock, b"END\r\n")
        return {
            parts[1].decode(): parts[2].decode()
            for parts in (line.split(b" ", 2) for line in data.split(b"\r\n"))
            if len(parts) == 3 and parts[0] == b"STAT"
        }

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def _writer(port: int, index: int, seconds: float, command: str, log_path: str) -> None:
    """One flooding connection: runs of 20 noreply writes, each closed by
    ``version``, sent as fast as the server takes them (a thread reads the
    replies); logs ``run ack_time`` per acknowledged run."""
    import threading

    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    value = b"v" * 100
    closer = b"version\r\n" if command == "set" else b""

    def read_acks() -> None:
        buffer = b""
        acked = 0
        with open(log_path, "w") as log:
            try:
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    now = time.time()
                    buffer += chunk
                    while b"\r\n" in buffer:
                        line, buffer = buffer.split(b"\r\n", 1)
                        if not line.startswith(b"VERSION"):
                            log.write(f"error {line[:80]!r}\n")
                            return
                        log.write(f"{acked} {now:.6f}\n")
                        acked += 1
            except OSError:
                return

    reader = threading.Thread(target=read_acks, daemon=True)
    reader.start()
    deadline = time.monotonic() + seconds
    sent = 0
    try:
        while time.monotonic() < deadline:
            sock.sendall(
                b"".join(
                    b"%s c%d-%d-%d 0 0 100 noreply\r\n%s\r\n"
                    % (command.encode(), index, sent, i, value)
                    for i in range(20)
                )
                + closer
            )
            sent += 1
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    reader.join(60)


def flood(
    repo: Path,
    conns: int = 8,
    seconds: float = 4.0,
    kill: bool = False,
    command: str = "set",
    extra: tuple[str, ...] = (),
) -> dict[str, object]:
    """The noreply (or add) flood; see the module docstring."""
    tmp = Path(tempfile.mkdtemp(prefix="stig-flood-"))
    server = Server(repo, tmp / "data", *extra).start()
    logs = [str(tmp / f"writer{i}.log") for i in range(conns)]
    ctx = multiprocessing.get_context("fork")
    writers = [
        ctx.Process(
            target=_writer, args=(server.port, i, seconds + (10 if kill else 0), command, logs[i])
        )
        for i in range(conns)
    ]
    for w in writers:
        w.start()
    lags: list[int] = []
    rss: list[float] = []
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        time.sleep(0.1)
        try:
            stats = server.stats()
        except (OSError, AssertionError):
            break
        lags.append(int(stats.get("stig_commit_lag_ms", -1)))
        rss.append(server.rss_mib())
        cmd_set, items = int(stats["cmd_set"]), int(stats["curr_items"])
    result: dict[str, object] = {
        "conns": conns,
        "seconds": seconds,
        "command": command,
        "rss_max_mib": round(max(rss), 1) if rss else None,
        "lag_sampled_max_ms": max(lags) if lags else None,
        "behind_at_end": cmd_set - items,
    }
    try:
        final = server.stats()
        result["lag_max_at_commit_ms"] = int(final.get("stig_commit_lag_max_ms", -1))
        result["uncommitted_peak"] = int(final.get("stig_uncommitted_bytes_peak", -1))
        result["commit_avg_us"] = int(final["stig_commit_latency_avg_us"])
        result["commit_max_us"] = int(final["stig_commit_latency_max_us"])
        result["group_avg"] = final["stig_group_commit_avg"]
        result["pauses"] = int(final.get("stig_pauses", -1))
        result["alive"] = True
    except (OSError, AssertionError):
        result["alive"] = False
    if kill:
        killed_at = time.time()
        server.kill()
        for w in writers:
            w.join(30)
        server = Server(repo, tmp / "data", *extra).start()
        result["loss_window_ms"] = _loss_window(server, logs, killed_at)
    else:
        for w in writers:
            w.join(seconds + 60)
    result["errors"] = sorted(
        {
            line.split(" ", 1)[1]
            for path in logs
            for line in Path(path).read_text().splitlines()
            if line.startswith("error ")
        }
    )
    server.stop()
    return result


def _loss_window(server: Server, logs: list[str], killed_at: float) -> float:
    """How long before the kill the oldest lost acknowledged run was acknowledged (ms)."""
    oldest_lost = None
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        for index, path in enumerate(logs):
            acks = [line.split() for line in Path(path).read_text().splitlines()]
            acks = [(int(a), float(t)) for a, t in acks if a != "error"]
            # Runs commit in order per connection: find the first acked one missing.
            low, high = 0, len(acks)
            while low < high:
                mid = (low + high) // 2
                sock.sendall(b"get c%d-%d-0\r\n" % (index, acks[mid][0]))
                data = _recv_until(sock, b"END\r\n")
                if data.startswith(b"VALUE"):
                    low = mid + 1
                else:
                    high = mid
            if low < len(acks):
                ack_time = acks[low][1]
                oldest_lost = ack_time if oldest_lost is None else min(oldest_lost, ack_time)
    return 0.0 if oldest_lost is None else round((killed_at - oldest_lost) * 1000, 1)


def _recv_until(sock: socket.socket, end: bytes) -> bytes:
    """Everything received until it ends with ``end``."""
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(65536)
        assert chunk, f"closed before {end!r}"
        data += chunk
    return data


def _server_with_big_value(repo: Path, prefix: str) -> Server:
    """A fresh server holding one 1 MB value, ``big``."""
    server = Server(repo, Path(tempfile.mkdtemp(prefix=prefix)) / "data").start()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        value = b"b" * 1_000_000
        sock.sendall(b"set big 0 0 %d\r\n%s\r\n" % (len(value), value))
        assert _recv_until(sock, b"\r\n") == b"STORED\r\n"
    time.sleep(0.3)  # the baseline RSS is read next: let the write's buffers go first
    return server


class HasStats(Protocol):
    """Anything whose ``stats()`` gives the server's ``stats`` (this script's
    :class:`Server`, the tests' server fixtures)."""

    def stats(self) -> dict[str, str]: ...


def wait_until_sending_stops(server: HasStats) -> int:
    """Until the server's ``bytes_written`` stays put (under 64 KiB more, as the
    stats replies themselves count) for five looks 0.2 s apart: the clients'
    receive buffers are full.  Returns ``bytes_written`` then.  (No event says
    "blocked on a full socket"; this quiet spell is the observable sign.)"""
    last, still = -1, 0
    while still < 5:
        time.sleep(0.2)
        written = int(server.stats()["bytes_written"])
        still = still + 1 if written - last < 65536 else 0
        last = written
    return last


def _set_then_get(sock: socket.socket, key: bytes) -> None:
    """A normal client's exchange, checked byte for byte."""
    sock.sendall(b"set %b 0 0 1\r\nx\r\nget %b\r\n" % (key, key))
    data = _recv_until(sock, b"END\r\n")
    assert data == b"STORED\r\nVALUE %b 0 1\r\nx\r\nEND\r\n" % key, data


def unread(repo: Path, clients: int = 1, gets: int = 300, idle: int = 0) -> dict[str, object]:
    """Clients that ask for big values and never read them; RSS once sending stops."""
    server = _server_with_big_value(repo, "stig-unread-")
    base = server.rss_mib()
    idlers = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(idle)]
    hostile = []
    for _ in range(clients):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"get big\r\n" * gets)
        hostile.append(sock)
    wait_until_sending_stops(server)
    rss = server.rss_mib()
    # A normal client is still served.
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        for i in range(100):
            _set_then_get(sock, b"n%d" % i)
    normal_ms = (time.monotonic() - started) * 1000
    for sock in hostile + idlers:
        sock.close()
    server.stop()
    return {
        "clients": clients,
        "gets": gets,
        "idle": idle,
        "rss_base_mib": round(base, 1),
        "rss_mib": round(rss, 1),
        "growth_mib": round(rss - base, 1),
        "normal_client_100_set_get_ms": round(normal_ms, 1),
    }


def big_reply(repo: Path, request: bytes) -> dict[str, object]:
    """One client sends ``request`` (a few KB asking for a 1 MB value many
    times over) and never reads; the server's peak RSS growth once it stops
    sending, and whether a normal client is still answered."""
    server = _server_with_big_value(repo, "stig-bigreply-")
    base = server.rss_mib("VmHWM")
    hostile = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    hostile.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    hostile.sendall(request)
    wait_until_sending_stops(server)
    peak = server.rss_mib("VmHWM")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        _set_then_get(sock, b"n")
    hostile.close()
    server.stop()
    return {
        "request_bytes": len(request),
        "peak_base_mib": round(base, 1),
        "peak_mib": round(peak, 1),
        "peak_growth_mib": round(peak - base, 1),
    }


def pending_getq(repo: Path, count: int, key: bytes = b"k") -> dict[str, object]:
    """One binary client sends ``count`` GetKQ of a missing key (no reply:
    misses are silent), then a No-op; the server's peak RSS growth once the
    No-op is answered (every request was read).  Each quiet get is read when
    it arrives (only its snapshot is held for the run): nothing is buffered."""
    tmp = Path(tempfile.mkdtemp(prefix="stig-getq-"))
    server = Server(repo, tmp / "data").start()
    time.sleep(0.3)
    base = server.rss_mib("VmHWM")
    header = struct.Struct(">BBHBBHIIQ")
    one = header.pack(0x80, 0x0D, len(key), 0, 0, 0, len(key), 0, 0) + key
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(one * count + header.pack(0x80, 0x0A, 0, 0, 0, 0, 0, 7, 0))
        reply = b""
        while len(reply) < 24:
            chunk = sock.recv(65536)
            assert chunk, "closed"
            reply += chunk
        assert reply[:2] == b"\x81\x0a" and len(reply) == 24, reply
    peak = server.rss_mib("VmHWM")
    server.stop()
    return {
        "requests": count,
        "request_bytes": len(one) * count + 24,
        "peak_base_mib": round(base, 1),
        "peak_mib": round(peak, 1),
        "peak_growth_mib": round(peak - base, 1),
    }
