"""Connections to a real Stig engine without sockets, stepped deterministically.

A :class:`MemoryServer` is a real :class:`~stig.engine.engine.Engine` (real
LMDB in a directory the caller gives, the real promoter's commit function)
serving any number of real :class:`~stig.server.connection.Connection`
loops, each over an :class:`InboxTransport`: a client in memory whose
``recv`` waits until the test hands it bytes.  Nothing is mocked but the
socket and the clock.

Everything runs in one ``trio.run`` under :class:`trio.testing.MockClock`,
and nothing happens unless the test says so, so the same steps give the
same bytes every time:

* :meth:`MemoryServer.send` hands one connection a chunk and returns once
  every task is blocked again (:meth:`MemoryServer.settle`); while some
  connection waits for a commit (a read of a key in flight, a reply held
  behind its commit, a barrier), the promoter is stepped with
  :meth:`~stig.engine.promoter.Promoter.commit_queued_now`, which commits
  everything queued in one group; otherwise what is queued stays in flight
  (acknowledged, not committed), as between two group commits of a server;
* :meth:`MemoryServer.commit` steps the promoter once;
* :meth:`MemoryServer.pause` moves the clock past ``--batch-idle-ms``: a
  connection with an open quiet run or a held read run ends it as after a
  pause of its client (one at a time, in the order of their last input:
  the clock ticks once after each input);
* :meth:`MemoryServer.hang_up` ends a connection's input (a clean
  disconnect; a torn command is discarded).

tests/model/test_fast_paths.py feeds the same steps to two of these, fast
paths on and off (``Settings.fast_paths``, :func:`run_script`);
tests/model/test_pov_wire_model.py drives one in lockstep with the POV model
(:mod:`stig_testkit.pov_model`) from hypothesis' synchronous stateful
machine (:class:`BlockingServer`: the loop in a thread of its own).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import attrs
import trio
import trio.testing

from stig.engine.engine import Engine
from stig.engine.settings import Settings
from stig.server.connection import Connection

T = TypeVar("T")

#: The clock's step after each input (see :meth:`MemoryServer.send`): far
#: below ``--batch-idle-ms`` even after thousands of steps.
TICK = 1e-7


class InboxTransport:
    """A client in memory: its ``recv`` waits for what :meth:`put` hands it
    (one chunk per ``recv``, cut at ``size``), and ends at :meth:`hang_up`;
    every ``send`` takes all it is given and keeps it in :attr:`sent`."""

    def __init__(self) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._arrived = trio.Event()
        self._eof = False
        #: Every byte the server sent this client.
        self.sent = bytearray()
        #: The size of each send: where the server cut its replies (the
        #: ends of its inputs, ``--max-reply-bytes``).
        self.sends: list[int] = []
        #: Whether the server waits in ``recv`` now (nothing unread is left).
        self.waiting = False
        self.closed = False

    def put(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self._arrived.set()

    def hang_up(self) -> None:
        """The client closes its side: ``recv`` answers b"" once all is read."""
        self._eof = True
        self._arrived.set()

    async def recv(self, size: int, /) -> bytes:
        await trio.lowlevel.checkpoint()
        while not self._chunks and not self._eof:
            self._arrived = trio.Event()
            self.waiting = True
            try:
                await self._arrived.wait()
            finally:
                self.waiting = False
        if not self._chunks:
            return b""
        chunk = self._chunks.popleft()
        if len(chunk) > size:
            self._chunks.appendleft(chunk[size:])
            chunk = chunk[:size]
        return chunk

    async def send(self, data: bytes | bytearray | memoryview, /) -> int:
        await trio.lowlevel.checkpoint()
        if self.closed:
            raise trio.ClosedResourceError("send after close")
        self.sent += data
        self.sends.append(len(data))
        return len(data)

    def shutdown(self, how: int, /) -> None:
        """The server stops reading (acknowledged writes were lost): end of input."""
        self.hang_up()

    def close(self) -> None:
        self.closed = True


class Stuck(AssertionError):
    """A connection waits for something that is not a commit (a hang)."""


@attrs.frozen
class Outcome:
    """What a :class:`MemoryServer` made of its steps."""

    #: The bytes each connection received, in the order the connections opened.
    replies: tuple[bytes, ...]
    #: The size of each send to each connection: a handler that buffers
    #: replies past ``--max-reply-bytes`` sends them otherwise.
    sends: tuple[tuple[int, ...], ...]
    #: The command counters (``stats``: ``cmd_get``, ``get_hits``, ``bytes_read``…).
    stats: dict[str, object]
    #: Promotions committed, and those that failed.
    promotions: int
    failed_commits: int
    #: The store afterwards: every raw record by key (values, flags, cas, state).
    committed: dict[bytes, bytes]


class MemoryServer:
    """An engine and its connections, stepped by the caller; see the module
    docstring.  Use inside ``trio.run(..., clock=trio.testing.MockClock())``
    as ``async with MemoryServer(settings, clock) as server``."""

    def __init__(self, settings: Settings, clock: trio.testing.MockClock) -> None:
        self.engine = Engine(settings)
        self.clock = clock
        self._nursery: trio.Nursery | None = None
        self._manager: trio.Nursery | None = None
        #: Every connection opened, in order, and its client.
        self.connections: list[Connection] = []
        self.clients: list[InboxTransport] = []
        self._open: dict[int, int] = {}  # a slot -> its live connection's index
        self._last_input: dict[int, float] = {}  # a connection -> its last input's time
        self._done: set[int] = set()

    async def __aenter__(self) -> MemoryServer:
        self._manager = trio.open_nursery()
        self._nursery = await self._manager.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> bool | None:
        assert self._nursery is not None and self._manager is not None
        if exc_info[0] is None:
            await self.hang_up_all()
        self._nursery.cancel_scope.cancel()
        try:
            return await self._manager.__aexit__(*exc_info)  # type: ignore[arg-type]
        finally:
            self.engine.store.close()

    # -- steps ---------------------------------------------------------------------

    async def send(self, slot: int, data: bytes) -> bytes:
        """Hand ``data`` to the connection of ``slot`` (opened now if it has
        none); return what the server sent it meanwhile, once all is settled."""
        index = self._open.get(slot)
        if index is None:
            index = self._open[slot] = self._connect()
        client = self.clients[index]
        before = len(client.sent)
        self._last_input[index] = trio.current_time()
        client.put(data)
        await self.settle()
        # A tick after each input: the idle deadlines of two connections
        # differ, and :meth:`pause` passes them one at a time.
        self.clock.jump(TICK)
        if index in self._done:
            del self._open[slot]  # quit, or closed by the server
        return bytes(client.sent[before:])

    async def hang_up(self, slot: int) -> bytes:
        """End the input of ``slot``'s connection, if open; what it was sent meanwhile."""
        index = self._open.pop(slot, None)
        if index is None:
            return b""
        client = self.clients[index]
        before = len(client.sent)
        client.hang_up()
        await self.settle()
        assert index in self._done, "a connection outlived its input"
        return bytes(client.sent[before:])

    async def hang_up_all(self) -> None:
        for slot in list(self._open):
            await self.hang_up(slot)

    async def pause(self) -> None:
        """Move the clock past ``--batch-idle-ms`` with no input anywhere.

        Each connection's idle deadline (its last input plus the idle time)
        is passed on its own, in the order of those inputs, and settled: the
        runs they close are handed over in that order, always the same
        (trio runs the tasks woken together in a random order)."""
        idle = self.engine.settings.batch_idle_ms / 1000.0
        for moment in sorted(set(self._last_input.values())):
            target = moment + idle + TICK / 2
            now = trio.current_time()
            if target > now:
                self.clock.jump(target - now)
                await self.settle()
        self._last_input.clear()
        self.clock.jump(TICK)
        await self.settle()

    async def commit(self) -> None:
        """One group commit of everything queued (what is in flight lands)."""
        self.engine.promoter.commit_queued_now()
        await self.settle()

    async def settle(self) -> None:
        """Run until every task is blocked and none waits for a commit:
        commit whenever a connection waits and the promoter has work."""
        promoter = self.engine.promoter
        while True:
            await trio.testing.wait_all_tasks_blocked()
            waiting = [i for i in self._open.values() if not self._idle(i)]
            if not waiting:
                return
            if not promoter.busy:
                raise Stuck(f"connections {waiting} wait for something that is not a commit")
            promoter.commit_queued_now()

    def _idle(self, index: int) -> bool:
        return index in self._done or self.clients[index].waiting

    def _connect(self) -> int:
        assert self._nursery is not None, "use the server inside `async with`"
        client = InboxTransport()
        connection = Connection(self.engine, client)
        index = len(self.connections)
        self.connections.append(connection)
        self.clients.append(client)
        self._nursery.start_soon(self._serve, index, connection)
        return index

    async def _serve(self, index: int, connection: Connection) -> None:
        try:
            await connection.serve()
        finally:
            self._done.add(index)

    # -- what it made of them --------------------------------------------------------

    def items(self) -> dict[bytes, bytes]:
        """Every raw record of the store by key, read back from LMDB."""
        txn = self.engine.store.read_txn()
        try:
            return {bytes(k): bytes(v) for k, v in txn.cursor()}
        finally:
            txn.abort()

    def outcome(self) -> Outcome:
        """The replies, counters and store now (commit first for what is in flight)."""
        engine = self.engine
        return Outcome(
            replies=tuple(bytes(client.sent) for client in self.clients),
            sends=tuple(tuple(client.sends) for client in self.clients),
            stats=attrs.asdict(engine.stats),
            promotions=engine.promoter_stats.promotions,
            failed_commits=engine.promoter_stats.failed_commits,
            committed=self.items(),
        )


# -- a script of steps, run whole -----------------------------------------------------


@attrs.frozen
class Send:
    """Connection ``slot`` receives ``data`` (a connection opens at its first)."""

    slot: int
    data: bytes


@attrs.frozen
class Pause:
    """No input anywhere for ``--batch-idle-ms``."""


@attrs.frozen
class HangUp:
    """Connection ``slot`` hangs up; its next :class:`Send` opens a new one."""

    slot: int


@attrs.frozen
class Commit:
    """The promoter commits what is queued."""


Step = Send | Pause | HangUp | Commit


def run_script(settings: Settings, steps: Sequence[Step]) -> Outcome:
    """Serve ``steps`` on a fresh :class:`MemoryServer`; every connection
    hangs up at the end and everything acknowledged is committed."""

    async def main() -> Outcome:
        async with MemoryServer(settings, clock) as server:
            for step in steps:
                if isinstance(step, Send):
                    await server.send(step.slot, step.data)
                elif isinstance(step, HangUp):
                    await server.hang_up(step.slot)
                elif isinstance(step, Pause):
                    await server.pause()
                else:
                    await server.commit()
            await server.hang_up_all()
            await server.commit()
            return server.outcome()

    clock = trio.testing.MockClock()
    return trio.run(main, clock=clock)


# -- for synchronous callers (hypothesis' stateful machines) ---------------------------


class BlockingServer:
    """A :class:`MemoryServer` for synchronous code: its trio loop runs in a
    thread of its own (under a :class:`~trio.testing.MockClock`), and each
    method runs one step there and returns when it has settled.

    Everything touching the engine (the steps, :meth:`call`) runs on the
    loop's thread, as in a server."""

    def __init__(self, settings: Settings) -> None:
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._failure: BaseException | None = None
        self.server: MemoryServer | None = None
        self._thread = threading.Thread(target=self._run, args=(settings,), daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure

    def _run(self, settings: Settings) -> None:
        async def main() -> None:
            try:
                async with MemoryServer(settings, clock) as server:
                    self.server = server
                    self._stop = trio.Event()
                    self._token = trio.lowlevel.current_trio_token()
                    self._ready.set()
                    await self._stop.wait()
            except BaseException as exc:
                self._failure = exc
                raise

        clock = trio.testing.MockClock()
        try:
            trio.run(main, clock=clock)
        except BaseException as exc:  # reported by close()
            self._failure = exc
        finally:
            self._ready.set()

    def _step(self, fn: Callable[..., Awaitable[T]], *args: object) -> T:
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def send(self, slot: int, data: bytes) -> bytes:
        assert self.server is not None
        return self._step(self.server.send, slot, data)

    def hang_up(self, slot: int) -> bytes:
        assert self.server is not None
        return self._step(self.server.hang_up, slot)

    def pause(self) -> None:
        assert self.server is not None
        self._step(self.server.pause)

    def commit(self) -> None:
        assert self.server is not None
        self._step(self.server.commit)

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the loop's thread (a look at the engine between steps)."""
        return trio.from_thread.run_sync(fn, trio_token=self._token)

    def close(self) -> None:
        """Hang every connection up, close the store, end the thread."""
        if self._stop is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()
        if self._failure is not None:
            raise self._failure
