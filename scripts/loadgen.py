"""A cheap, verifying, multi-process load generator for memcached/Redis servers.

Why not a client library: on a 2-core machine the client shares the CPU with
the server, so every microsecond the client spends per request is taken from
the server being measured.  This generator therefore

* pre-builds every request batch and the exact reply it must get back
  (:mod:`workloads`, :mod:`wire`), so nothing is formatted while measuring;
* drives raw non-blocking sockets from a bare ``epoll`` loop, one loop per
  worker process (default 2 processes x 25 connections);
* reads with ``recv_into`` a shared scratch buffer and verifies each chunk
  with one ``memcmp`` against the expected reply (no parsing), which checks
  every reply completely: value bytes, keys, misses, error lines.

It is closed-loop: each connection keeps exactly one pipeline batch of
``depth`` requests in flight and sends the next when the last reply of the
previous one has arrived.  Latency is measured **per batch** (first byte sent
to last reply byte), which for ``depth=1`` is per request.  Completions are
counted in a window ``[warmup, warmup+duration]`` after every connection is up.

With ``rate`` (``--rate R``) it is open-loop instead: requests (pipeline
batches) are issued on a fixed schedule, ``R`` per second in aggregate, each
connection sending every ``connections / R`` seconds at its own phase (or at
exponential intervals with ``arrivals="poisson"``) whether or not its earlier
replies have arrived; they simply queue behind each other on the connection,
as a real client's would.  Latency is measured from each request's
**scheduled** send time to the last byte of its reply, so a server pause (or a
client that falls behind its schedule) shows up in the latency of every
request scheduled during it instead of being hidden by fewer requests being
sent (coordinated omission).  Requests scheduled in the window are counted;
after the window the generator stops sending and waits (at most ``DRAIN_S``)
for their replies; any still missing then are counted as ``unfinished`` with
the latency they had reached (a lower bound), so they cannot flatter the
tail.  Replies are verified exactly as in the closed loop.

A mismatch counts the batch's unanswered or wrong replies as errors, keeps a
short sample of what arrived, and reconnects that connection (the stream can
no longer be trusted).  Even so the client is Python: expect it, not the
server, to be the limit for the fastest servers; its CPU seconds are reported
(``client_cpu_s``) so that shows.

Example::

    python scripts/loadgen.py --port 11211 --workload get --depth 16 --preload
"""

from __future__ import annotations

import argparse
import heapq
import json
import multiprocessing as mp
import os
import random
import select
import socket
import sys
import threading
import time
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from wire import PROTOCOLS, Exchange, codec, key_for
from workloads import WORKLOADS, build_exchange, load_exchange, pooled_round, template_count

from stig_testkit.procstat import snapshot_all, system_busy_seconds, top_others, total_cpu

SCRATCH = 1 << 20
NS = 1_000_000_000
STALL_NS = NS  # an outstanding batch older than this (and 3x the median) at the end is "stalled"
DRAIN_S = 2.0  # open loop: how long to wait after the window for replies still due
COMPACT = 1 << 18  # open loop: drop verified expected-reply bytes past this offset
ARRIVALS = ("uniform", "poisson")
EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
EPOLLERRS = select.EPOLLERR | select.EPOLLHUP
STARTED_PIDS: list[int] = []  # every worker process started here (for leak checks)


@dataclass
class LoadSpec:
    """What to run: the target, the workload and its shape."""

    host: str = "127.0.0.1"
    port: int = 11211
    protocol: str = "text"
    workload: str = "get"
    connections: int = 50
    processes: int = 2
    depth: int = 1
    value_size: int = 100
    keyspace: int = 10_000
    duration: float = 3.0
    warmup: float = 0.5
    hit: bool = True
    mget_keys: int = 100
    batch_size: int = 1000
    batch_style: str = "meta"  # or "set": pipelined classic sets, for servers without meta
    seed: int = 1
    rate: float = 0.0  # > 0: open loop, this many batches/s in aggregate (requests/s at depth 1)
    arrivals: str = "uniform"  # open loop: "uniform" (fixed interval) or "poisson"
    server_pids: list[int] = field(default_factory=list)
    #: Stig's writer process (``--workers``), among ``server_pids``: its CPU
    #: is also reported alone, the serial part of every write.
    writer_pids: list[int] = field(default_factory=list)


def connect(host: str, port: int, timeout: float = 3.0) -> socket.socket:
    """A connected TCP socket with Nagle off."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _replace_socket(res, ep, by_fd: dict, fd: int, sock: socket.socket, spec, why: str):
    """After a bad reply: note why, drop the connection, open a new one.

    Returns the new socket, or None if reconnecting failed (also noted).
    Both the closed-loop and the fixed-rate drivers use it.
    """
    if len(res.samples) < 5:
        res.samples.append(why)
    ep.unregister(fd)
    del by_fd[fd]
    sock.close()
    res.reconnects += 1
    try:
        return connect(spec.host, spec.port)
    except OSError as exc:
        if len(res.samples) < 5:
            res.samples.append(f"reconnect failed: {exc}")
        return None


def exchange_once(sock: socket.socket, ex: Exchange, timeout: float = 10.0) -> str | None:
    """Send ``ex`` on a blocking socket and check the reply; None if it matched."""
    sock.settimeout(timeout)

    def send() -> None:
        try:
            sock.sendall(ex.request)
        except OSError:
            pass  # the reader reports what the server did instead

    sender = threading.Thread(target=send, daemon=True)
    sender.start()  # a thread, so a huge request cannot deadlock against its replies
    got = bytearray()
    want = len(ex.reply)
    try:
        while len(got) < want:
            chunk = sock.recv(SCRATCH)
            if not chunk:
                return f"connection closed after {bytes(got[:120])!r}"
            got += chunk
            if got[:want] != ex.reply[: len(got)]:
                return describe_mismatch(ex.reply, bytes(got))
    except TimeoutError:
        return f"timed out after {timeout}s, got {bytes(got[:120])!r} of {want} bytes"
    finally:
        sender.join(timeout)
    return None


def describe_mismatch(expected: bytes, got: bytes) -> str:
    """A short human description of where ``got`` first departs from ``expected``."""
    i = next(
        (j for j in range(min(len(expected), len(got))) if expected[j] != got[j]),
        min(len(expected), len(got)),
    )
    lo = max(0, i - 20)
    return f"at byte {i}: expected {expected[lo : i + 40]!r}, got {got[lo : i + 60]!r}"


def spec_exchange(spec: LoadSpec, rng: random.Random) -> Exchange:
    """One batch of ``spec``'s workload, drawn with ``rng``."""
    return build_exchange(
        spec.workload,
        spec.protocol,
        rng,
        spec.keyspace,
        spec.depth,
        spec.value_size,
        spec.hit,
        spec.mget_keys,
        spec.batch_size,
        spec.batch_style,
    )


def probe(spec: LoadSpec) -> str | None:
    """Run one batch of the workload on one connection; None if answered correctly.

    Used before a timed run so an unsupported command yields a clear reason
    instead of a row full of errors.
    """
    ex = spec_exchange(spec, random.Random(spec.seed))
    try:
        with connect(spec.host, spec.port) as sock:
            return exchange_once(sock, ex)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def preload(
    host: str, port: int, protocol: str, keyspace: int, value_size: int, chunk: int = 1000
) -> float:
    """Store every key of the key space with its value; returns seconds taken.

    Uses plain pipelined ``set`` (text) or ``MSET`` (RESP), which every target
    supports, and verifies every reply.  Raises RuntimeError on a bad reply.
    """
    c = codec(protocol)
    t0 = time.monotonic()
    with connect(host, port) as sock:
        for start in range(0, keyspace, chunk):
            keys = [key_for(i) for i in range(start, min(keyspace, start + chunk))]
            if protocol == "resp":
                req, rep = c.batch(keys, value_size)
            else:
                pairs = [c.set(k, value_size) for k in keys]
                req, rep = b"".join(p[0] for p in pairs), b"".join(p[1] for p in pairs)
            err = exchange_once(sock, Exchange(req, rep, (len(rep),), len(keys)), timeout=60)
            if err:
                raise RuntimeError(f"preload of keys {start}..: {err}")
    return time.monotonic() - t0


class _Conn:
    """One connection's state in a worker's epoll loop."""

    __slots__ = ("ex", "fd", "got", "pending", "reply", "sock", "source", "t_send", "want")

    def __init__(self, sock: socket.socket, source: Iterator[Exchange]) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.source = source
        self.ex: Exchange | None = None
        self.reply = b""
        self.want = 0
        self.got = 0
        self.t_send = 0
        self.pending: memoryview | None = None


def _cycle(templates: list[Exchange], start: int) -> Iterator[Exchange]:
    n = len(templates)
    i = start % n
    while True:
        yield templates[i]
        i = (i + 1) % n


def _bulk_source(
    protocol: str, start: int, stop: int, batch: int, value_size: int, style: str
) -> Iterator[Exchange]:
    for s in range(start, stop, batch):
        yield load_exchange(protocol, s, min(batch, stop - s), value_size, style)


@dataclass
class _WorkerResult:
    worker: int
    batches: int = 0
    items: int = 0
    errors: int = 0
    reconnects: int = 0
    stalled: int = 0
    samples: list[str] = field(default_factory=list)
    latencies: bytes = b""
    lags: bytes = b""  # open loop: how late each request was sent after its scheduled time
    from_send: bytes = b""  # open loop: latencies measured from the actual send instead
    scheduled: int = 0  # open loop: batches scheduled in the window
    unfinished: int = 0  # open loop: of those, still unanswered when the drain ended
    stale: int = 0  # pooled: reads on the other connection that missed an answered write
    fatal: str | None = None


def _drive(
    conns: list[_Conn], spec: LoadSpec, w_start: int, w_end: int, res: _WorkerResult
) -> None:
    """The epoll loop: keep one batch in flight per connection until ``w_end``.

    Completions before ``w_start`` (warm-up) are not counted.  A connection
    whose source is exhausted (bulk load) drops out; the loop also ends when
    none is left.
    """
    ep = select.epoll()
    by_fd: dict[int, _Conn] = {}
    scratch = bytearray(SCRATCH)
    lat = array("q")
    mono = time.monotonic_ns
    active = len(conns)

    def start_batch(c: _Conn, now: int) -> bool:
        ex = next(c.source, None)
        if ex is None:
            return False
        c.ex, c.reply, c.want, c.got, c.t_send = ex, ex.reply, len(ex.reply), 0, now
        sent = c.sock.send(ex.request)
        if sent < len(ex.request):
            c.pending = memoryview(ex.request)[sent:]
            ep.modify(c.fd, EPOLLIN | EPOLLOUT)
        return True

    def fail(c: _Conn, why: str, matched: int) -> _Conn | None:
        """Count the batch's failed replies, then replace the connection."""
        assert c.ex is not None
        ok = sum(1 for e in c.ex.reply_ends if e <= matched)
        res.errors += len(c.ex.reply_ends) - ok
        sock = _replace_socket(res, ep, by_fd, c.fd, c.sock, spec, why)
        if sock is None:
            return None
        sock.setblocking(False)
        nc = _Conn(sock, c.source)
        by_fd[nc.fd] = nc
        ep.register(nc.fd, EPOLLIN)
        return nc

    for c in conns:
        c.sock.setblocking(False)
        by_fd[c.fd] = c
        ep.register(c.fd, EPOLLIN)
    now = mono()
    for c in conns:
        if not start_batch(c, now):
            active -= 1

    batches = items = 0
    while active > 0:
        now = mono()
        if now >= w_end:
            break
        for fd, ev in ep.poll(0.05):
            c = by_fd.get(fd)
            if c is None:
                continue
            if ev & EPOLLOUT and c.pending is not None:
                try:
                    sent = c.sock.send(c.pending)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    nc = fail(c, f"send failed: {exc}", 0)
                    if nc is None or not start_batch(nc, mono()):
                        active -= 1
                    continue
                c.pending = c.pending[sent:] if sent < len(c.pending) else None
                if c.pending is None:
                    ep.modify(fd, EPOLLIN)
            if not ev & (EPOLLIN | EPOLLERRS):
                continue
            try:
                n = c.sock.recv_into(scratch)
            except BlockingIOError:
                continue
            except OSError as exc:
                n, why = -1, f"recv failed: {exc}"
            got = c.got
            if n > 0 and scratch[:n] == c.reply[got : got + n]:
                got += n
                if got < c.want:
                    c.got = got
                    continue
                t = mono()
                if w_start <= t:
                    batches += 1
                    items += c.ex.items  # type: ignore[union-attr]
                    lat.append(t - c.t_send)
                if not start_batch(c, t):
                    active -= 1
                continue
            if n == 0:
                why = f"server closed the connection after {got} of {c.want} reply bytes"
            elif n > 0:
                data = bytes(scratch[:n])
                why = describe_mismatch(c.reply[got:], data)
                got += next(
                    (j for j in range(min(n, c.want - got)) if data[j] != c.reply[got + j]),
                    min(n, c.want - got),
                )
            nc = fail(c, why, got)
            if nc is None or not start_batch(nc, mono()):
                active -= 1

    end = mono()
    # Outstanding much longer than usual (and than a second): stuck, not slow.
    usual = sorted(lat)[len(lat) // 2] if lat else 0
    limit = max(STALL_NS, 3 * usual)
    res.stalled = sum(
        1 for c in by_fd.values() if c.ex is not None and c.got < c.want and end - c.t_send > limit
    )
    for c in by_fd.values():
        c.sock.close()
    ep.close()
    res.batches, res.items, res.latencies = batches, items, lat.tobytes()


class _Pair:
    """The ``pooled`` workload: a writer and a reader connection sharing one key."""

    __slots__ = (
        "buf",
        "key",
        "phase",
        "read_reply",
        "read_request",
        "reader",
        "round",
        "t0",
        "want",
        "writer",
    )

    def __init__(self, writer: socket.socket, reader: socket.socket, key: bytes) -> None:
        self.writer, self.reader, self.key = writer, reader, key
        self.round = 0
        self.phase = 0  # 0: the set is in flight on the writer, 1: the get on the reader
        self.buf = bytearray()
        self.want = b""
        self.read_request = b""
        self.read_reply = b""
        self.t0 = 0


def _drive_pooled(
    pairs: list[_Pair], spec: LoadSpec, w_start: int, w_end: int, res: _WorkerResult
) -> None:
    """The epoll loop of the ``pooled`` workload (see :mod:`workloads`).

    Per pair, one round at a time: set on the writer, wait for ``STORED``,
    get on the reader, compare.  A get answering another value is a stale
    read (``res.stale``), anything else unexpected an error that ends the
    pair.  Latency is per round (set sent to get answered).
    """
    ep = select.epoll()
    by_fd: dict[int, _Pair] = {}
    lat = array("q")
    mono = time.monotonic_ns
    protocol, size = spec.protocol, spec.value_size

    def send_write(p: _Pair) -> None:
        p.round += 1
        write, write_reply, p.read_request, p.read_reply = pooled_round(
            protocol, p.key, p.round, size
        )
        p.phase, p.want, p.t0 = 0, write_reply, mono()
        p.buf.clear()
        p.writer.sendall(write)

    for p in pairs:
        for sock in (p.writer, p.reader):
            by_fd[sock.fileno()] = p
            ep.register(sock.fileno(), EPOLLIN)
    for p in pairs:
        send_write(p)
    rounds = 0
    alive = len(pairs)
    while alive and mono() < w_end:
        for fd, _ev in ep.poll(0.05):
            p = by_fd.get(fd)
            if p is None:
                continue
            sock = p.writer if p.phase == 0 else p.reader
            if fd != sock.fileno():
                continue
            try:
                data = sock.recv(SCRATCH)
            except BlockingIOError:
                continue
            except OSError as exc:
                data, why = b"", f"recv failed: {exc}"
            else:
                why = "server closed the connection"
            p.buf += data
            done = p.buf.endswith(b"END\r\n") if p.phase else len(p.buf) >= len(p.want)
            if data and not done:
                continue
            got = bytes(p.buf)
            if p.phase == 0 and got == p.want:
                p.phase, p.want = 1, p.read_reply
                p.buf.clear()
                p.reader.sendall(p.read_request)
                continue
            if p.phase == 1 and got == p.want:
                t = mono()
                if t >= w_start:
                    rounds += 1
                    lat.append(t - p.t0)
                send_write(p)
                continue
            if p.phase == 1 and data and (got.startswith(b"VALUE ") or got == b"END\r\n"):
                # another value, or none: the read missed the answered write
                if mono() >= w_start:
                    res.stale += 1
                    rounds += 1
                    if len(res.samples) < 5:
                        res.samples.append(f"stale read: {got[:60]!r}, wanted {p.want[:60]!r}")
                send_write(p)
                continue
            res.errors += 1
            if len(res.samples) < 5:
                res.samples.append(why if not data else describe_mismatch(p.want, got))
            for s_ in (p.writer, p.reader):
                ep.unregister(s_.fileno())
                by_fd.pop(s_.fileno(), None)
            alive -= 1
    for p in pairs:
        p.writer.close()
        p.reader.close()
    ep.close()
    res.batches, res.items, res.latencies = rounds, 2 * rounds, lat.tobytes()


def _tight_timers() -> None:
    """Ask Linux for 1 µs timer slack in this process (default 50 µs).

    Timed waits of a normal thread may be woken up to 50 µs late; the open
    loop would then send late, and its latency (measured from the schedule)
    would include that.  Best effort: without prctl the lag is reported.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK, in ns
    except (OSError, AttributeError):
        pass


class _OpenConn:
    """One connection's state in the open-loop driver.

    ``expect`` holds the reply bytes still owed for everything sent, ``got``
    how many of them have been verified; ``fifo`` has, per request sent,
    (absolute end offset of its reply, scheduled time ns, items, time it
    was handed to the socket ns).  Offsets
    are absolute (``shift`` + index in ``expect``) so verified bytes can be
    dropped from the front without touching the fifo.
    """

    __slots__ = ("end", "expect", "fd", "fifo", "got", "out", "shift", "sock", "source")

    def __init__(self, sock: socket.socket, source: Iterator[Exchange]) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.source = source
        self.out = bytearray()  # request bytes the socket has not taken yet
        self.expect = bytearray()
        self.got = 0
        self.shift = 0
        self.fifo: deque[tuple[int, int, int, int]] = deque()
        self.end = 0  # absolute offset of the end of everything expected


def _drive_open(
    conns: list[_OpenConn],
    spec: LoadSpec,
    first_ids: list[int],
    t0: int,
    w_start: int,
    w_end: int,
    res: _WorkerResult,
) -> None:
    """Open loop: send on a fixed schedule, verify replies, time from the schedule.

    Connection ``j`` of this worker (global id ``first_ids[j]``) sends every
    ``spec.connections / spec.rate`` seconds, phase-shifted by its global id
    so that the aggregate schedule over every worker is evenly spaced.  The
    wait for the next due send uses ``select`` on the epoll descriptor, which
    has microsecond resolution (``epoll.poll`` rounds up to milliseconds).
    """
    _tight_timers()
    ep = select.epoll()
    epfd = ep.fileno()
    by_fd: dict[int, int] = {}  # fd -> index into conns
    scratch = bytearray(SCRATCH)
    lat, lag, svc = array("q"), array("q"), array("q")
    mono = time.monotonic_ns
    interval = spec.connections / spec.rate * NS
    poisson = spec.arrivals == "poisson"
    rng = random.Random(spec.seed * 7919 + first_ids[0] if first_ids else 0)
    heap: list[tuple[int, int]] = []
    for j, cid in enumerate(first_ids):
        first = t0 + int(
            rng.expovariate(1.0) * interval if poisson else cid * interval / spec.connections
        )
        heap.append((first, j))
    heapq.heapify(heap)
    batches = items = scheduled = 0

    for j, c in enumerate(conns):
        c.sock.setblocking(False)
        by_fd[c.fd] = j
        ep.register(c.fd, EPOLLIN)

    def fail(j: int, why: str) -> None:
        """Count every reply still owed on conns[j] as failed; replace the connection."""
        c = conns[j]
        res.errors += len(c.fifo)
        sock = _replace_socket(res, ep, by_fd, c.fd, c.sock, spec, why)
        nc = _OpenConn(sock, c.source) if sock is not None else None
        if nc is None:  # keep a dead placeholder: its sends fail and count as errors
            conns[j] = c
            c.fifo.clear()
            c.sock = None  # type: ignore[assignment]
            return
        sock.setblocking(False)
        conns[j] = nc
        by_fd[nc.fd] = j
        ep.register(nc.fd, EPOLLIN)

    def flush(j: int) -> None:
        c = conns[j]
        try:
            sent = c.sock.send(c.out)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            fail(j, f"send failed: {exc}")
            return
        if sent == len(c.out):
            c.out.clear()
            ep.modify(c.fd, EPOLLIN)
        else:
            del c.out[:sent]
            ep.modify(c.fd, EPOLLIN | EPOLLOUT)

    def complete(c: _OpenConn, done: int) -> None:
        """Record every request on ``c`` whose reply ends at or before ``done``."""
        nonlocal batches, items
        fifo = c.fifo
        t = mono()
        while fifo and fifo[0][0] <= done:
            _end, due, k, sent = fifo.popleft()
            if w_start <= due < w_end:
                batches += 1
                items += k
                lat.append(t - due)
                svc.append(t - sent)

    def on_event(j: int, ev: int) -> None:
        c = conns[j]
        if ev & EPOLLOUT and c.out:
            flush(j)
            if conns[j] is not c:  # the send failed and the connection was replaced
                return
        if not ev & (EPOLLIN | EPOLLERRS):
            return
        try:
            n = c.sock.recv_into(scratch)
        except BlockingIOError:
            return
        except OSError as exc:
            fail(j, f"recv failed: {exc}")
            return
        got = c.got
        if n > 0 and scratch[:n] == c.expect[got : got + n]:
            got += n
            if c.fifo and c.fifo[0][0] <= c.shift + got:
                complete(c, c.shift + got)
            if got >= COMPACT or (not c.fifo and got == len(c.expect)):
                del c.expect[:got]
                c.shift += got
                got = 0
            c.got = got
            return
        if n == 0:
            why = f"server closed the connection with {len(c.fifo)} replies owed"
        else:
            want, data = bytes(c.expect[got : got + n]), bytes(scratch[:n])
            why = describe_mismatch(want, data)
            same = next(
                (i for i in range(min(len(want), n)) if want[i] != data[i]), min(len(want), n)
            )
            complete(c, c.shift + got + same)  # replies wholly correct before the fault
        fail(j, why)

    def step() -> int:
        return int(rng.expovariate(1.0) * interval) if poisson else int(interval)

    give_up = w_end + int(DRAIN_S * NS)
    while heap[0][0] < w_end:  # until every request due in the window has been sent
        now = mono()
        if now >= give_up:
            break  # hopelessly behind: the rest are counted below, unsent
        while heap[0][0] <= now and heap[0][0] < w_end:
            due, j = heap[0]
            heapq.heapreplace(heap, (due + step(), j))
            c = conns[j]
            ex = next(c.source)
            in_window = w_start <= due
            if in_window:
                scheduled += 1
            if c.sock is None:  # its reconnect failed: this request is lost
                if in_window:
                    res.errors += len(ex.reply_ends)
                continue
            c.expect += ex.reply
            c.end += len(ex.reply)
            c.fifo.append((c.end, due, ex.items, now))
            if in_window:
                lag.append(now - due)
            was_idle = not c.out
            c.out += ex.request
            if was_idle:
                flush(j)
        wait = min(heap[0][0], w_end) - mono()
        if wait > 0:
            select.select([epfd], [], [], wait / NS)
        for fd, ev in ep.poll(0):
            j = by_fd.get(fd)
            if j is not None:
                on_event(j, ev)

    # Drain: no more sends; wait for the replies of everything already sent.
    drain_end = mono() + int(DRAIN_S * NS)
    while any(c.fifo for c in conns if c.sock is not None):
        left = drain_end - mono()
        if left <= 0:
            break
        for fd, ev in ep.poll(min(left / NS, 0.05)):
            j = by_fd.get(fd)
            if j is not None:
                on_event(j, ev)
    end = mono()
    stuck = 0
    for due, _j in heap:  # due in the window but never sent (the client fell that far behind)
        while due < w_end:
            if due >= w_start:
                scheduled += 1
                res.unfinished += 1
                lat.append(end - due)
            due += step()
    for c in conns:
        owed = [(due, sent) for _e, due, _k, sent in c.fifo if w_start <= due < w_end]
        if owed:
            stuck += 1
        for due, sent in owed:  # a lower bound of their latency: they cannot flatter the tail
            res.unfinished += 1
            lat.append(end - due)
            svc.append(end - sent)
        if c.sock is not None:
            c.sock.close()
    ep.close()
    res.stalled = stuck
    res.batches, res.items, res.scheduled = batches, items, scheduled
    res.latencies, res.lags, res.from_send = lat.tobytes(), lag.tobytes(), svc.tobytes()


def _worker(
    index: int,
    spec: LoadSpec,
    conn_ids: list[int],
    bulk: tuple[int, int] | None,
    barrier: mp.synchronize.Barrier,
    queue: mp.Queue,
) -> None:
    """One process: connect its connections, build sources, wait, drive, report."""
    res = _WorkerResult(index)
    pairs: list[_Pair] = []
    try:
        rng = random.Random(spec.seed * 1000 + index)
        conns: list[_Conn] = []
        if spec.workload == "pooled":
            # conn_ids two by two: writer and reader; the key is beyond the
            # preloaded key space and the pair's own.
            # An odd last id has no partner: it is left out.
            for a, _b in zip(conn_ids[::2], conn_ids[1::2], strict=False):
                pairs.append(
                    _Pair(
                        connect(spec.host, spec.port),
                        connect(spec.host, spec.port),
                        key_for(spec.keyspace + a),
                    )
                )
            conn_ids = []
        if bulk is None and spec.workload != "pooled":
            first = spec_exchange(spec, rng)
            size = len(first.request) + len(first.reply)
            count = template_count(size)
            templates = [first, *(spec_exchange(spec, rng) for _ in range(count - 1))]
        for cid in conn_ids:
            if bulk is None:
                source = _cycle(templates, rng.randrange(len(templates)))
            else:
                total, nconn = bulk
                per = -(-total // nconn)
                source = _bulk_source(
                    spec.protocol,
                    cid * per,
                    min(total, (cid + 1) * per),
                    spec.batch_size,
                    spec.value_size,
                    spec.batch_style,
                )
            conn_cls = _OpenConn if spec.rate > 0 and bulk is None else _Conn
            conns.append(conn_cls(connect(spec.host, spec.port), source))
    except Exception as exc:
        res.fatal = f"worker {index}: {type(exc).__name__}: {exc}"
        barrier.abort()
        queue.put(res)
        return
    try:
        barrier.wait()
    except Exception:
        res.fatal = res.fatal or f"worker {index}: start barrier broken"
        queue.put(res)
        return
    t0 = time.monotonic_ns()
    if bulk is None:
        w_start = t0 + int(spec.warmup * NS)
        w_end = w_start + int(spec.duration * NS)
    else:
        w_start, w_end = t0, t0 + int(spec.duration * NS)
    try:
        if pairs:
            _drive_pooled(pairs, spec, w_start, w_end, res)
        elif spec.rate > 0 and bulk is None:
            _drive_open(conns, spec, conn_ids, t0, w_start, w_end, res)  # type: ignore[arg-type]
        else:
            _drive(conns, spec, w_start, w_end, res)  # type: ignore[arg-type]
    except Exception as exc:
        res.fatal = f"worker {index}: {type(exc).__name__}: {exc}"
    queue.put(res)


def _percentile(sorted_ns: array, q: float) -> float | None:
    if not sorted_ns:
        return None
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1000.0


def run(spec: LoadSpec, bulk_keys: int | None = None) -> dict:
    """Run the load; return a JSON-able dict of throughput, latency and errors.

    With ``bulk_keys`` the run is a bulk load instead: keys ``0..bulk_keys-1``
    are written once in batches of ``spec.batch_size`` split over the
    connections, and ``spec.duration`` is only a safety deadline.
    """
    nproc = max(1, min(spec.processes, spec.connections))
    groups = [list(range(i, spec.connections, nproc)) for i in range(nproc)]
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(nproc + 1, timeout=120)
    queue: mp.Queue = ctx.Queue()
    bulk = None if bulk_keys is None else (bulk_keys, spec.connections)
    procs = [
        ctx.Process(target=_worker, args=(i, spec, g, bulk, barrier, queue), daemon=True)
        for i, g in enumerate(groups)
    ]
    for p in procs:
        p.start()
        if p.pid:
            STARTED_PIDS.append(p.pid)
    out: dict = {"spec": {k: v for k, v in asdict(spec).items() if k != "server_pids"}}
    results: list[_WorkerResult] = []

    def collect(deadline: float) -> None:
        while len(results) < nproc and time.monotonic() < deadline:
            try:
                results.append(queue.get(timeout=0.2))
            except Exception:
                if not any(p.is_alive() for p in procs) and queue.empty():
                    return

    try:
        try:
            barrier.wait()
        except Exception:
            pass
        pids = [p.pid for p in procs if p.pid]
        m0 = time.monotonic()
        if bulk is None:  # CPU is charged over exactly the measured window
            time.sleep(spec.warmup)
            m0 = time.monotonic()
        procs0 = snapshot_all()
        s_cpu0, c_cpu0, b0 = total_cpu(spec.server_pids), total_cpu(pids), system_busy_seconds()
        w_cpu0 = total_cpu(spec.writer_pids)
        if bulk is None:
            time.sleep(max(0.0, m0 + spec.duration - time.monotonic()))
        else:
            collect(m0 + spec.duration + 5)
        s_cpu1, c_cpu1, m1 = total_cpu(spec.server_pids), total_cpu(pids), time.monotonic()
        w_cpu1 = total_cpu(spec.writer_pids)
        b1 = system_busy_seconds()
        others = top_others(procs0, snapshot_all(), {*pids, *spec.server_pids, os.getpid()})
        collect(time.monotonic() + 30)
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    elapsed = spec.duration if bulk is None else m1 - m0
    lat = array("q")
    for r in results:
        lat.frombytes(r.latencies)
    lat = array("q", sorted(lat))
    fatal = [r.fatal for r in results if r.fatal]
    if len(results) < nproc:
        fatal.append(f"{nproc - len(results)} worker(s) never reported")
    batches = sum(r.batches for r in results)
    items = sum(r.items for r in results)
    if spec.rate > 0 and bulk is None:
        lags = array("q")
        for r in results:
            lags.frombytes(r.lags)
        lags = array("q", sorted(lags))
        svc = array("q")
        for r in results:
            svc.frombytes(r.from_send)
        svc = array("q", sorted(svc))
        scheduled = sum(r.scheduled for r in results)
        out.update(
            # offered: what the schedule asked for; achieved: what was answered in time
            offered_per_s=spec.rate,
            scheduled=scheduled,
            scheduled_per_s=scheduled / elapsed if elapsed > 0 else 0.0,
            unfinished=sum(r.unfinished for r in results),
            send_lag_p50_us=_percentile(lags, 0.50),
            send_lag_p99_us=_percentile(lags, 0.99),
            # the same replies timed from when they were actually sent: the
            # difference to p50_us/p99_us is the client's own lateness
            p50_from_send_us=_percentile(svc, 0.50),
            p99_from_send_us=_percentile(svc, 0.99),
        )
    out.update(
        ok=not fatal,
        fatal=fatal,
        seconds=round(elapsed, 3),
        batches=batches,
        items=items,
        items_per_s=items / elapsed if elapsed > 0 else 0.0,
        batches_per_s=batches / elapsed if elapsed > 0 else 0.0,
        latency_unit=(
            "per round (set, then get elsewhere)"
            if spec.workload == "pooled"
            else "per batch"
            if spec.depth > 1 or spec.workload == "batch" or bulk
            else "per request"
        )
        + (", from its scheduled send time" if spec.rate > 0 and bulk is None else ""),
        p50_us=_percentile(lat, 0.50),
        p99_us=_percentile(lat, 0.99),
        p999_us=_percentile(lat, 0.999),
        max_us=lat[-1] / 1000 if lat else None,
        errors=sum(r.errors for r in results),
        stale=sum(r.stale for r in results),
        reconnects=sum(r.reconnects for r in results),
        stalled=sum(r.stalled for r in results),
        error_samples=[s for r in results for s in r.samples][:5],
        server_cpu_s=round(s_cpu1 - s_cpu0, 3) if spec.server_pids else None,
        client_cpu_s=round(c_cpu1 - c_cpu0, 3),
        writer_cpu_s=round(w_cpu1 - w_cpu0, 3) if spec.writer_pids else None,
        # busy CPU of everything else on the machine in the window (noise)
        other_cpu_s=round(
            max(
                0.0,
                (b1 - b0) - (c_cpu1 - c_cpu0) - ((s_cpu1 - s_cpu0) if spec.server_pids else 0.0),
            ),
            3,
        ),
        other_top=others,  # [(process, cpu s)]: who the noise was
    )
    return out


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    d = LoadSpec()
    p.add_argument("--host", default=d.host)
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=d.protocol,
        help="text (memcached text + meta for batch), binary (batch only), resp (Redis)",
    )
    p.add_argument("--workload", choices=WORKLOADS, default=d.workload)
    p.add_argument("--connections", "-c", type=int, default=d.connections)
    p.add_argument("--processes", "-P", type=int, default=d.processes, help="worker processes")
    p.add_argument("--depth", "-d", type=int, default=d.depth, help="requests per pipeline batch")
    p.add_argument("--value-size", type=int, default=d.value_size)
    p.add_argument("--keyspace", type=int, default=d.keyspace, help="keys 0..N-1")
    p.add_argument("--duration", type=float, default=d.duration, help="measured seconds")
    p.add_argument("--warmup", type=float, default=d.warmup, help="unmeasured seconds first")
    p.add_argument(
        "--miss",
        action="store_true",
        help="expect misses (for servers that store nothing, e.g. bare_trio_server)",
    )
    p.add_argument("--mget-keys", type=int, default=d.mget_keys)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument(
        "--batch-style",
        choices=("meta", "set"),
        default=d.batch_style,
        help="text batches: meta 'ms ... q' + 'mn', or pipelined classic sets",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=d.rate,
        metavar="R",
        help="open loop: send R batches/s in aggregate (requests/s at depth 1) on a "
        "fixed schedule, latency from each scheduled send time; 0: closed loop",
    )
    p.add_argument(
        "--arrivals",
        choices=ARRIVALS,
        default=d.arrivals,
        help="open loop: fixed intervals per connection, or exponential (Poisson)",
    )
    p.add_argument("--preload", action="store_true", help="store the key space first")
    p.add_argument(
        "--bulk-load",
        type=int,
        metavar="N",
        help="instead of a timed run: write keys 0..N-1 once in batches",
    )
    p.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="charge this process's CPU time in the window (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p.parse_args(argv)


def _us(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f} us"


def main(argv: list[str] | None = None) -> int:
    a = _parse_args(argv)
    spec = LoadSpec(
        host=a.host,
        port=a.port,
        protocol=a.protocol,
        workload=a.workload,
        connections=a.connections,
        processes=a.processes,
        depth=a.depth,
        value_size=a.value_size,
        keyspace=a.keyspace,
        duration=a.duration,
        warmup=a.warmup,
        hit=not a.miss,
        mget_keys=a.mget_keys,
        batch_size=a.batch_size,
        batch_style=a.batch_style,
        rate=a.rate,
        arrivals=a.arrivals,
        server_pids=a.server_pid,
    )
    if spec.rate < 0 or (spec.rate > 0 and a.bulk_load is not None):
        print("--rate must be > 0 and is not for --bulk-load", file=sys.stderr)
        return 2
    if a.preload and spec.hit:
        dialect = "resp" if spec.protocol == "resp" else "text"
        seconds = preload(spec.host, spec.port, dialect, spec.keyspace, spec.value_size)
        print(f"preloaded {spec.keyspace} keys in {seconds:.2f}s", file=sys.stderr)
    if a.bulk_load is None:
        err = probe(spec)
        # A server that shows acknowledged writes to other connections only
        # once committed (Stig before issue 9 did) gets a moment after a preload.
        deadline = time.monotonic() + (10.0 if a.preload else 0.0)
        while err and time.monotonic() < deadline:
            time.sleep(0.05)
            err = probe(spec)
        if err:
            print(f"probe failed: {err}", file=sys.stderr)
            return 2
    res = run(spec, bulk_keys=a.bulk_load)
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(
            f"{spec.workload} d={spec.depth} {spec.value_size}B c={spec.connections}: "
            f"{res['items_per_s']:,.0f} items/s, "
            f"p50 {_us(res['p50_us'])}, p99 {_us(res['p99_us'])} "
            f"({res['latency_unit']}), errors {res['errors']}, stalled {res['stalled']}, "
            + (f"stale reads {res['stale']}, " if spec.workload == "pooled" else "")
            + (f"server cpu {res['server_cpu_s']}s, " if res["server_cpu_s"] is not None else "")
            + f"client cpu {res['client_cpu_s']}s, other cpu {res['other_cpu_s']}s"
        )
        if spec.rate > 0:
            print(
                f"  open loop: offered {spec.rate:,.0f}/s, "
                f"scheduled {res['scheduled_per_s']:,.0f}/s, "
                f"answered {res['batches_per_s']:,.0f}/s, unfinished {res['unfinished']}, "
                f"send lag p50 {_us(res['send_lag_p50_us'])} p99 {_us(res['send_lag_p99_us'])}; "
                f"from the actual send: p50 {_us(res['p50_from_send_us'])} "
                f"p99 {_us(res['p99_from_send_us'])}"
            )
        for s in res["error_samples"]:
            print("  error:", s)
        for f in res["fatal"]:
            print("  fatal:", f)
    return 0 if res["ok"] and res["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
