"""Clients that make list-append histories: many connections, few keys,
every protocol, every way a run can end.

Each worker thread owns one connection at a time (a *session*) in one
protocol and loops: a multi-key read, or a run of 1-4 quiet appends (now
and then twice to one key) ended by one of its protocol's closers:

=========== ===========================================================
closer      what ends the run (status of the run)
=========== ===========================================================
append/ms   a loud append as its last member (ok at its reply)
version     ``version`` / binary Version (ok at its reply)
mn / noop   meta ``mn`` / binary No-op, the barrier (ok at its reply)
get / mg    a multi-key read: text ``get``, meta ``mg … q`` run + ``mn``,
/ mgloud    loud ``mg`` run alone, binary GetK or a GetKQ run + No-op
/ getk      (ok at the read's first reply; the read itself is a
/ getkq     transaction of its own)
quit        ``quit`` / binary Quit (loud: ok at its reply) or QuitQ
disconnect  a clean close after the run (info: nothing acknowledges it)
abort       a close in the middle of a further append (fail: discarded)
=========== ===========================================================

A session that breaks (the server was killed) records what it had in
flight as ``info``; the worker then connects to the restarted server.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable
from typing import Protocol

import attrs

from stig_testkit.history import wire
from stig_testkit.history.model import Append, Read, Status, Txn
from stig_testkit.history.wire import Broken, Connection

CLOSERS: dict[str, tuple[str, ...]] = {
    "text": ("append", "version", "mn", "get", "quit", "disconnect", "abort"),
    "meta": ("ms", "version", "mn", "mg", "mgloud", "disconnect", "abort"),
    "binary": (
        "append",
        "version",
        "noop",
        "getk",
        "getkq",
        "quit",
        "quitq",
        "disconnect",
        "abort",
    ),
}
#: Closers whose reply is neither a write's own reply nor a barrier's: under
#: --durable-acks such a reply went out before the run was on disk (issue 19
#: item 1; measured with scripts/history_check.py --closers, docs/history.md).
#: A quiet ``mg`` run + ``mn`` and a GetKQ run + No-op are not among them:
#: the barrier in the same burst holds their replies until the commit.
REPLY_CLOSERS = frozenset(
    {"text:version", "text:get", "meta:version", "meta:mgloud", "binary:version"}
    | {"binary:getk", "binary:quit"}
)
READ_CLOSERS = frozenset({"get", "mg", "mgloud", "getk", "getkq"})
ALL_CLOSERS = frozenset(f"{p}:{c}" for p, closers in CLOSERS.items() for c in closers)


class KeyPool:
    """Few keys at a time: a window of ``active`` keys that slides one key
    every ``per_key`` appends, so each list stays short (reads stay cheap)
    while the history as a whole is long."""

    def __init__(self, prefix: str, total: int, active: int, per_key: int) -> None:
        self.names = [f"{prefix}{i}" for i in range(total)]
        self.active = active
        self.per_key = per_key
        self.appends = 0
        self.lock = threading.Lock()

    def window(self) -> list[str]:
        start = min(self.appends // self.per_key, len(self.names) - self.active)
        return self.names[start : start + self.active]

    def for_appends(self, rng: random.Random, count: int) -> list[str]:
        with self.lock:
            window = self.window()
            self.appends += count
        keys = [rng.choice(window) for _ in range(count)]
        if count > 1 and rng.random() < 0.3:
            keys[-1] = keys[0]  # twice to one key: an intermediate read becomes visible
        return keys

    def for_read(self, rng: random.Random) -> list[str]:
        with self.lock:
            window = self.window()
        return rng.sample(window, rng.randint(1, min(4, len(window))))

    def used(self) -> list[str]:
        with self.lock:
            last = min(self.appends // self.per_key + self.active, len(self.names))
        return self.names[:last]


class Server(Protocol):
    """What the driver needs of a server: ``start()`` (sets host and port),
    ``kill()`` (SIGKILL): :class:`stig_testkit.process.StigProcess`, or
    :class:`stig_testkit.history.servers.Memcached`."""

    host: str
    port: int

    def start(self) -> object: ...
    def kill(self) -> None: ...


@attrs.define
class Pending:
    """A transaction being made; :meth:`Recorder.finish` freezes it."""

    session: int
    protocol: str
    kind: str
    closer: str
    invoke: float
    epoch: int
    appends: tuple[Append, ...] = ()
    keys: tuple[str, ...] = ()
    complete: float | None = None
    values: dict[str, tuple[int, ...]] | None = None


class Recorder:
    """The history as it grows, shared by all workers (thread-safe)."""

    def __init__(self) -> None:
        self.txns: list[Txn] = []
        self.crashes: list[float] = []
        self.lock = threading.Lock()
        self._ids = itertools.count(1)
        self._elements = itertools.count(1)
        self._sessions = itertools.count(1)

    def element(self) -> int:
        with self.lock:
            return next(self._elements)

    def session(self) -> int:
        with self.lock:
            return next(self._sessions)

    def finish(self, pending: Pending, status: Status, conn: Connection | None) -> None:
        reads: tuple[Read, ...] = ()
        if pending.kind == "read":
            values = pending.values if status == "ok" else None
            reads = tuple(
                Read(key, None if values is None else values.get(key)) for key in pending.keys
            )
            if values is not None and any(read.elements is None for read in reads):
                raise wire.WrongReply(f"a read lacks some of {pending.keys}: {values}")
        wire_record: tuple[tuple[str, bytes], ...] = ()
        if conn is not None:
            wire_record = (("sent", conn.sent), ("received", conn.received))
        with self.lock:
            self.txns.append(
                Txn(
                    id=next(self._ids),
                    session=pending.session,
                    protocol=pending.protocol,
                    kind=pending.kind,  # type: ignore[arg-type]
                    closer=pending.closer,
                    status=status,
                    invoke=pending.invoke,
                    complete=pending.complete if status == "ok" else None,
                    epoch=pending.epoch,
                    appends=pending.appends,
                    reads=reads,
                    wire=wire_record,
                )
            )

    def __len__(self) -> int:
        return len(self.txns)


class Driver:
    """Workers against one server, crashes on demand, then the final read."""

    def __init__(
        self,
        server: Server,
        seed: int,
        workers: int = 8,
        protocols: tuple[str, ...] = ("text", "meta", "binary"),
        closers: frozenset[str] = ALL_CLOSERS,
        read_share: float = 0.4,
        keys: KeyPool | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.server = server
        self.rng = random.Random(seed)
        self.protocols = protocols
        self.closers = {p: tuple(c for c in CLOSERS[p] if f"{p}:{c}" in closers) for p in protocols}
        self.read_share = read_share
        self.keys = keys or KeyPool("h", 4000, 5, 60)
        self.timeout = timeout
        self.history = Recorder()
        self.epoch = 0
        self.up = threading.Condition()
        self.alive = True
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []
        self.unexpected_breaks = 0
        self.workers = [
            threading.Thread(target=self._work, args=(i, self.rng.randrange(2**32)), daemon=True)
            for i in range(workers)
        ]

    # -- control (main thread) ----------------------------------------------

    def create_keys(self) -> None:
        """Every key the run may use, set empty and on disk before the history starts."""
        conn = Connection(self.server.host, self.server.port, 60.0)
        try:
            names = self.keys.names
            for start in range(0, len(names), 50):
                conn.send(wire.create_keys_text(names[start : start + 50]))
                conn.expect_line(b"MN")
        finally:
            conn.close()

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def run_until(self, txns: int, check: Callable[[], None] = lambda: None) -> None:
        """Until the history holds ``txns`` transactions (or a worker failed)."""
        while len(self.history) < txns and not self.errors:
            time.sleep(0.01)
            check()
        self._raise_errors()

    def crash(self, kill: Callable[[], None] | None = None) -> None:
        """Kill the server (``kill`` may do it another way, e.g. a power cut),
        note the instant, restart it on the same data, and let workers on."""
        with self.up:
            self.alive = False
        (kill or self.server.kill)()
        self.history.crashes.append(time.monotonic())
        self.server.start()
        with self.up:
            self.epoch += 1
            self.alive = True
            self.up.notify_all()

    def stop(self) -> None:
        self.stopping.set()
        with self.up:
            self.up.notify_all()
        for worker in self.workers:
            worker.join(60)
        self._raise_errors()

    def final_read(self) -> None:
        """Every key used, read once more on a fresh connection: each list, whole."""
        conn = Connection(self.server.host, self.server.port, 60.0)
        session = self.history.session()
        try:
            names = self.keys.used()
            for start in range(0, len(names), 100):
                keys = names[start : start + 100]
                conn.mark()
                pending = Pending(
                    session, "text", "read", "final:get", time.monotonic(), self.epoch
                )
                pending.keys = tuple(keys)
                conn.send(wire.text_get(keys))
                first: list[float] = []
                pending.values = conn.text_values(first)
                pending.complete = time.monotonic()
                self.history.finish(pending, "ok", None)
        finally:
            conn.close()

    def _raise_errors(self) -> None:
        if self.errors:
            raise self.errors[0]

    # -- workers ---------------------------------------------------------------

    def _connect(self) -> tuple[Connection, int] | None:
        while not self.stopping.is_set():
            with self.up:
                while not self.alive and not self.stopping.is_set():
                    self.up.wait(1.0)
                epoch, host, port = self.epoch, self.server.host, self.server.port
            try:
                return Connection(host, port, self.timeout), epoch
            except Broken:
                with self.up:
                    if self.epoch == epoch and self.alive:
                        self.up.wait(0.05)
        return None

    def _work(self, index: int, seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not self.stopping.is_set():
                got = self._connect()
                if got is None:
                    return
                conn, epoch = got
                protocol = self.protocols[index % len(self.protocols)]
                session = Session(self, conn, protocol, epoch, rng)
                session.loop()
        except BaseException as error:  # a wrong reply: the run fails with it
            self.errors.append(error)

    def broke(self, epoch: int) -> None:
        """A connection broke: expected when the server was killed."""
        with self.up:
            if self.epoch == epoch and self.alive:
                self.unexpected_breaks += 1


class Session:
    """One connection's life: transactions until it ends or breaks."""

    def __init__(
        self, driver: Driver, conn: Connection, protocol: str, epoch: int, rng: random.Random
    ) -> None:
        self.driver = driver
        self.conn: Connection | None = conn
        self.protocol = protocol
        self.epoch = epoch
        self.rng = rng
        self.id = driver.history.session()

    def loop(self) -> None:
        while self.conn is not None and not self.driver.stopping.is_set():
            if self.rng.random() < self.driver.read_share:
                self.read()
            else:
                self.run()
        if self.conn is not None:
            self.conn.close()

    def pending(self, kind: str, closer: str) -> Pending:
        assert self.conn is not None
        self.conn.mark()
        return Pending(self.id, self.protocol, kind, f"{self.protocol}:{closer}", 0.0, self.epoch)

    def end(self) -> None:
        assert self.conn is not None
        self.conn.close()
        self.conn = None

    # -- reads ----------------------------------------------------------------

    def read(self) -> None:
        keys = self.driver.keys.for_read(self.rng)
        how = {
            "text": "get",
            "meta": self.rng.choice(("mg", "mgloud")),
            "binary": self.rng.choice(("getk", "getkq")),
        }[self.protocol]
        if how == "getk":
            keys = keys[:1]
        pending = self.pending("read", how)
        pending.keys = tuple(keys)
        self.exchange([], pending, self.read_request(how, keys), how)

    def read_request(self, how: str, keys: list[str]) -> bytes:
        if how == "get":
            return wire.text_get(keys)
        if how == "mg":
            return wire.meta_gets(keys)
        if how == "mgloud":
            return wire.meta_gets_loud(keys)
        if how == "getk":
            return wire.binary_request(wire.GETK, keys[0])
        return b"".join(wire.binary_request(wire.GETKQ, k) for k in keys) + wire.binary_request(
            wire.NOOP
        )

    # -- runs ----------------------------------------------------------------

    def run(self) -> None:
        closers = self.driver.closers[self.protocol]
        if not closers:  # no closer of this protocol chosen: this session only reads
            self.read()
            return
        closer = self.rng.choice(closers)
        count = self.rng.randint(1, 4)
        keys = self.driver.keys.for_appends(self.rng, count)
        history = self.driver.history
        run = self.pending("run", closer)
        run.appends = tuple(Append(k, history.element()) for k in keys)
        loud_last = closer in ("append", "ms")
        data = b"".join(
            self.append_bytes(a, quiet=not (loud_last and i == count - 1))
            for i, a in enumerate(run.appends)
        )
        reads: list[Pending] = []
        if closer in READ_CLOSERS:
            closing = f"{run.closer} closing a run"
            read = Pending(self.id, self.protocol, "read", closing, 0.0, self.epoch)
            read_keys = self.driver.keys.for_read(self.rng)
            read.keys = tuple(read_keys[:1] if closer == "getk" else read_keys)
            data += self.read_request(closer, list(read.keys))
            reads.append(read)
        elif closer == "abort":
            # A further append cut short: the connection drops inside it.
            victim = Append(keys[0], history.element())
            run.appends += (victim,)
            data += self.append_bytes(victim, quiet=True)[:-3]
        else:
            data += {
                "version": self.command(b"version\r\n", wire.VERSION),
                "mn": b"mn\r\n",
                "noop": wire.binary_request(wire.NOOP),
                "quit": self.command(b"quit\r\n", wire.QUIT),
                "quitq": wire.binary_request(wire.QUITQ),
            }.get(closer, b"")
        self.exchange([run], reads[0] if reads else None, data, closer)

    def command(self, text: bytes, opcode: int) -> bytes:
        return wire.binary_request(opcode) if self.protocol == "binary" else text

    def append_bytes(self, append: Append, quiet: bool) -> bytes:
        if self.protocol == "text":
            return wire.text_append(append.key, append.element, quiet)
        if self.protocol == "meta":
            return wire.meta_append(append.key, append.element, quiet)
        value = wire.element_bytes(append.element)
        return wire.binary_request(wire.APPENDQ if quiet else wire.APPEND, append.key, value)

    # -- the exchange ------------------------------------------------------------

    def exchange(self, runs: list[Pending], read: Pending | None, data: bytes, closer: str) -> None:
        """Send ``data``, read what ``closer`` answers, record every transaction."""
        conn = self.conn
        assert conn is not None
        history = self.driver.history
        everything = [*runs, *([read] if read is not None else [])]
        now = time.monotonic()
        for pending in everything:
            pending.invoke = now
        status: Status = "ok"
        try:
            conn.send(data)
            acked = self.await_reply(conn, closer, read)
            if acked is not None:
                for run in runs:
                    run.complete = acked
            if read is not None:
                read.complete = time.monotonic()
            if closer in ("quit", "quitq", "disconnect"):
                if closer == "disconnect":
                    conn.half_close()
                conn.wait_eof()
                self.end()
                status = "ok" if closer == "quit" and self.protocol == "binary" else "info"
            elif closer == "abort":
                self.end()
                status = "fail"
        except Broken:
            self.driver.broke(self.epoch)
            for pending in everything:
                if pending.complete is None or pending is read:
                    history.finish(pending, "info", conn)
                else:
                    history.finish(pending, "ok", conn)
            if self.conn is not None:
                self.end()
            return
        for pending in everything:
            history.finish(pending, status, conn)

    def await_reply(self, conn: Connection, closer: str, read: Pending | None) -> float | None:
        """Read the closer's reply; when the reply that acknowledges the run
        arrived (None: nothing acknowledges it)."""
        first: list[float] = []
        if closer in READ_CLOSERS:
            assert read is not None
            if closer == "get":
                read.values = conn.text_values(first)
            elif closer == "mg":
                read.values = conn.meta_values(first)
            elif closer == "mgloud":
                read.values = conn.meta_values(first, count=len(read.keys))
            else:
                read.values = conn.binary_values(
                    wire.GETK if closer == "getk" else wire.NOOP, first
                )
            return first[0]
        if closer == "append" and self.protocol == "binary":
            return conn.binary_expect(wire.APPEND)
        if self.protocol == "binary" and closer in ("version", "noop", "quit"):
            opcode = {"version": wire.VERSION, "noop": wire.NOOP, "quit": wire.QUIT}[closer]
            return conn.binary_expect(opcode)
        prefix = {"append": b"STORED", "ms": b"HD", "version": b"VERSION", "mn": b"MN"}.get(closer)
        if prefix is not None:
            return conn.expect_line(prefix)
        return None  # text quit, quitq, disconnect, abort: no reply
