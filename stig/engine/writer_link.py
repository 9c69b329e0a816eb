"""The server's side of the writer process: start it, send it jobs, restart it.

See docs/workers.md and stig/engine/writer.py (the frames).  The promoter,
given a :class:`WriterLink`, hands each group to :meth:`WriterLink.commit`
instead of its commit thread; the link answers with the same results the
thread would have, so the promoter's rules (failed runs, refusal, probes)
are unchanged.

When the writer dies (SIGKILL, a crash) the link sees end of file, starts a
new one and looks at LMDB's last transaction id: unchanged since the last
answer, the group in flight was not applied and is sent again; moved on,
it reached the disk but its answer (its runs' outcomes) died with the
process, so its runs are failed with :data:`DIED_AFTER_COMMIT` — the
client is told, never silently (docs/pov.md, "When a commit fails").
"""

from __future__ import annotations

import copyreg
import io
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from stig.engine.group_commit import Failed, failed
from stig.engine.writer import LENGTH, PROBE_FAILED, WriterState, decode_results, frame
from stig.storage.ops import Op, Put, PutRun
from stig.storage.replog import Fence, ImplausibleEpoch, LogState
from stig.storage.store import Applied, Store

log = logging.getLogger(__name__)

#: How long a new writer may take to open the environment and say it is ready.
START_SECONDS = 30.0
#: The pause before a writer that died is started again; it doubles (up to
#: 1 s) while new writers fail to start, so that one that dies at once is not
#: restarted in a busy loop.
RESTART_PAUSE = 0.05
#: What the runs of a group are told when the writer died after committing it.
DIED_AFTER_COMMIT = (
    "commit failed: the writer process died during the commit (the run may be stored)"
)


def _reduce_put(op: Put) -> tuple[Any, ...]:
    """A ``Put`` pickled as ``tuple.__new__(Put, fields)``: the default
    (``object.__reduce_ex__`` calling the NamedTuple's Python
    ``__getnewargs__``, then its Python ``__new__`` in the writer) costs two
    Python frames per set; this is one here and none in the writer."""
    return _TUPLE_NEW, (Put, tuple(op))


_TUPLE_NEW = tuple.__new__


#: How a group is pickled for the writer: ``Put`` records through :func:`_reduce_put`.
_GROUP_DISPATCH = {**copyreg.dispatch_table, Put: _reduce_put}


def frame_group(message: tuple[Any, ...]) -> bytes:
    """:func:`stig.engine.writer.frame` for a group commit: the same message
    on the link, the same objects unpickled in the writer (see _reduce_put)."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _GROUP_DISPATCH
    pickler.dump(message)
    body = buffer.getvalue()
    return LENGTH.pack(len(body)) + body


#: Runs of plain sets this long or longer cross as columns (:class:`PutRun`):
#: measured per set, worker + writer, columns against ``Put`` records: 4.28
#: vs 3.05 µs in runs of 1 (a POV-acked set), 1.04 vs 1.79 in runs of 4,
#: 0.33 vs 2.59 in runs of 1,000.
COLUMNS_FROM = 4


def _as_sent(ops: Sequence[Op]) -> Sequence[Op]:
    """A run as the writer is sent it: columns for a long run of plain sets."""
    if len(ops) >= COLUMNS_FROM:
        run = PutRun.of(ops)
        if run is not None:
            return run
    return list(ops)


class WriterDied(Exception):
    """The writer process's socket reached end of file."""


class StreamJobRefused(Exception):
    """The writer did not do a follower's job (its words say why)."""


def launcher() -> str:
    """The module the server was started as (``stig``, or a test launcher that
    patches the store: stig_testkit/fault_server.py), so that the writer runs
    the same code."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None) or "stig"
    return name.removesuffix(".__main__")


def ending_words(code: int) -> str:
    """How a child process ended (``code``: ``Popen.wait``'s, ``-N`` for
    signal N), for a log line: the signal's name, its number when Python has
    no name for it (the real-time signals between SIGRTMIN and SIGRTMAX),
    else the exit status."""
    if code >= 0:
        return f"status {code}"
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class WriterLink:
    """The writer process and the socket to it; see the module docstring."""

    def __init__(self, store: Store, log_level: str = "info", fd: int | None = None) -> None:
        """``fd``: the socket to a writer the supervisor started (``--workers
        N``): no writer of this link's own, none started when it dies."""
        self.store = store
        self.log_level = log_level
        #: Whether this link starts (and restarts) its writer itself.
        self.owns_writer = fd is None
        self.restarts = 0  #: writers started after the first
        self.state: WriterState | None = None  #: as of the writer's last answer
        self._process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        #: A job is in flight (one at a time: the answers come in order);
        #: another caller waits for :attr:`_idle`.
        self._busy = False
        self._idle: trio.Event | None = None
        if fd is not None:
            self._sock = socket.socket(fileno=fd)
            ready = self._receive_blocking()
            self.state = WriterState(*ready[2])
            store.log_state = LogState(*self.state.log)
            self._sock.setblocking(False)

    @property
    def pid(self) -> int:
        return 0 if self._process is None else self._process.pid

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Start the writer and wait (blocking) until it has opened the environment."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        store = self.store
        command = [
            sys.executable,
            "-m",
            launcher(),
            "_writer",
            "--fd",
            str(theirs.fileno()),
            "--data-dir",
            str(store.path),
            "--map-size",
            str(store.map_size),
            "--max-readers",
            str(store.max_readers),
            "--max-value-size",
            str(store.max_value_size),
            "--log-level",
            self.log_level,
            "--replication-log-bytes",
            str(store.log_bounds.max_bytes),
            "--replication-log-seconds",
            str(store.log_bounds.max_seconds),
        ]
        try:
            self._process = subprocess.Popen(
                command,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                # Not in the server's process group: a terminal's ^C goes to
                # the server, which stops the writer after its last commit.
                start_new_session=True,
                env={**os.environ, "PYTHONPATH": _python_path()},
            )
        finally:
            theirs.close()
        mine.settimeout(START_SECONDS)
        self._sock = mine
        self._buffer.clear()
        try:
            ready = self._receive_blocking()
        except (OSError, WriterDied) as exc:
            self._kill()
            raise RuntimeError(f"the writer process did not start: {exc}") from exc
        self.state = WriterState(*ready[2])
        store.log_state = LogState(*self.state.log)
        mine.setblocking(False)
        log.info("writer process %d started", self._process.pid)

    def close(self) -> None:
        """Stop the writer: end of file on its socket; it closes LMDB and exits."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        process, self._process = self._process, None
        if process is not None:
            try:
                process.wait(timeout=START_SECONDS)
            except subprocess.TimeoutExpired:
                log.error("writer process %d did not stop: killed", process.pid)
                process.kill()
                process.wait()

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self.close()

    async def _restart(self, why: str) -> None:
        """Reap the writer that died and start another (until one starts)."""
        if not self.owns_writer:
            raise WriterDied()  # the supervisor's writer: it stops the server
        process = self._process
        if process is not None:
            code = await trio.to_thread.run_sync(process.wait)
            how = ending_words(code)
            log.error("writer process %d died (%s) %s; starting another", process.pid, how, why)
        self._process = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        pause = RESTART_PAUSE
        while True:
            await trio.sleep(pause)
            try:
                await trio.to_thread.run_sync(self.start)
            except RuntimeError as exc:
                pause = min(pause * 2, 1.0)
                log.error("%s; trying again in %g s", exc, pause)
                continue
            self.restarts += 1
            return

    # -- jobs ----------------------------------------------------------------

    async def commit(
        self,
        batches: Sequence[Sequence[Op]],
        numbers: Sequence[int] | None = None,
        afters: Sequence[tuple[tuple[int, int], ...]] | None = None,
    ) -> list[Applied | Failed]:
        """Commit one group in the writer: per run its result or failure.
        ``numbers``, ``afters``: each run's submission number and the other
        workers' runs it must follow (``--workers N``, stig/engine/shared_inflight.py)."""
        assert self.state is not None
        job = frame_group(("g", [_as_sent(ops) for ops in batches], numbers, afters))
        while True:
            before = self.state.last_txnid
            try:
                answer = await self._call(job)
            except WriterDied:
                try:
                    await self._restart("with a group commit in flight")
                except WriterDied:
                    return [failed(DIED_AFTER_COMMIT, None, "writer died")] * len(batches)
                if self._txnid() == before:
                    log.warning("the group in flight was not applied: sent to the new writer")
                    continue
                log.error("the group in flight was committed but its outcomes are lost")
                return [failed(DIED_AFTER_COMMIT, None, "writer died")] * len(batches)
            return decode_results(answer[1])

    async def probe(self, largest: int, nbytes: int) -> tuple[str, str]:
        """Run a disk-space probe in the writer (stig/engine/writer.py, ``probe``)."""
        try:
            answer = await self._call(frame(("p", largest, nbytes)))
        except WriterDied:
            if self.owns_writer:
                await self._restart("with a probe in flight")
            return PROBE_FAILED, "the writer process died"
        status, why = answer[1]
        return status, why

    async def start_logging(self) -> bool:
        """A follower wants the replication log: the writer writes it from its
        next commit on (stored at once); whether it does (False: the writer
        died meanwhile; ask again)."""
        try:
            answer = await self._call(frame(("l",)))
        except WriterDied:
            if self.owns_writer:
                await self._restart("while turning the replication log on")
            return False
        on: bool = answer[1]
        return on

    # -- a follower's stream (--replica-of with workers) ---------------------------

    async def apply_replicated(self, groups: list[tuple[int, bytes]]) -> None:
        """Apply a primary's groups in the writer (``Store.apply_replicated``)."""
        await self._stream_job(("a", groups))

    async def load_snapshot(
        self, path: Path, seq: int, epoch: int, last_cas: int, epoch_starts: dict[int, int]
    ) -> None:
        """Load the snapshot spooled at ``path`` in the writer (``Store.load_snapshot``)."""
        await self._stream_job(("s", str(path), seq, epoch, last_cas, epoch_starts))

    async def begin_epoch(self, former_primary: str | None = None) -> LogState:
        """``stig_promote``: the writer begins a new epoch and refuses the
        stream's jobs from then on (``former_primary`` must hear of the
        epoch: ``Store.begin_epoch``); the new state."""
        await self._stream_job(("e", former_primary))
        return self.store.log_state

    async def fence_heard(self, address: str, epoch: int) -> bool:
        """The former primary at ``address`` heard of ``epoch``: the writer
        forgets it was due (``Store.fence_heard``).  False when it did not
        (it failed, or the writer died: tell it again later)."""
        with trio.CancelScope(shield=True):  # an answer nobody waits for would desync the link
            try:
                answer = await self._call(frame(("h", address, epoch)))
            except WriterDied:
                if self.owns_writer:
                    await self._restart("while forgetting a fence due")
                return False
        return bool(answer[1])

    async def fence(self, epoch: int, by: str) -> bool:
        """``stig_fence``: the writer stores the fence; whether it is news.
        Raises :class:`~stig.storage.replog.ImplausibleEpoch` as ``Store.fence``."""
        news, error = await self._stream_job(("f", epoch, by))
        if error is not None:
            raise ImplausibleEpoch(error)
        self.store.fence_state = Fence(epoch, by) if news else self.store.fence_state
        return bool(news)

    async def _stream_job(self, job: tuple[Any, ...]) -> Any:
        """Send a follower's job and return its answer's payload; raises
        :class:`StreamJobRefused` with the writer's words when it failed
        (nothing of it stored), :class:`WriterDied` when the writer died
        (restarted first if this link owns it: the caller asks again, from
        what LMDB holds).  Never cut by a cancellation: the answer is
        awaited (a group being applied is finished, as on a thread)."""
        with trio.CancelScope(shield=True):
            try:
                answer = await self._call(frame(job))
            except WriterDied:
                if self.owns_writer:
                    await self._restart(f"with a follower's job {job[0]!r} in flight")
                raise
        payload = answer[1]
        if job[0] != "f" and payload is not None:
            raise StreamJobRefused(payload)
        return payload

    def _txnid(self) -> int:
        return int(self.store.env.info()["last_txnid"])

    async def _call(self, job: bytes) -> tuple[Any, ...]:
        """Send one job and wait for its answer (after any job in flight:
        the promoter's groups and probes, a sender's ``("l",)``)."""
        while self._busy:
            if self._idle is None:
                self._idle = trio.Event()
            await self._idle.wait()
        self._busy = True
        try:
            return await self._call_alone(job)
        finally:
            self._busy = False
            idle, self._idle = self._idle, None
            if idle is not None:
                idle.set()

    async def _call_alone(self, job: bytes) -> tuple[Any, ...]:
        """Send one job and wait for its answer; adopt the state it reports."""
        sock = self._sock
        if sock is None:
            raise WriterDied()
        view = memoryview(job)
        try:
            while view:
                try:
                    sent = sock.send(view)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)
                    continue
                view = view[sent:]
            answer = await self._receive()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise WriterDied() from exc
        state = self.state = WriterState(*answer[2])
        store = self.store
        store.last_cas = state.last_cas
        store.total_bytes = state.total_bytes
        store.log_state = LogState(*state.log)
        if state.map_size > store.map_size:
            # On the event loop between two tasks: no short read is open.
            log.info("LMDB map grown to %d bytes by the writer", store.adopt_map())
        return answer

    async def _receive(self) -> tuple[Any, ...]:
        sock = self._sock
        assert sock is not None
        while True:
            message = self._take()
            if message is not None:
                return message
            try:
                chunk = sock.recv(1 << 16)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            if not chunk:
                raise WriterDied()
            self._buffer += chunk

    def _receive_blocking(self) -> tuple[Any, ...]:
        sock = self._sock
        assert sock is not None
        while True:
            message = self._take()
            if message is not None:
                return message
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise WriterDied()
            self._buffer += chunk

    def _take(self) -> tuple[Any, ...] | None:
        """The first whole message in the buffer (taken out of it), or None."""
        buffer = self._buffer
        if len(buffer) < LENGTH.size:
            return None
        end = LENGTH.size + LENGTH.unpack_from(buffer)[0]
        if len(buffer) < end:
            return None
        message: tuple[Any, ...] = pickle.loads(buffer[LENGTH.size : end])
        del buffer[:end]
        return message


def _python_path() -> str:
    """The server's import path for the writer: the same ``stig`` (a clone's
    root first, as the server itself found it)."""
    root = str(Path(__file__).resolve().parents[2])
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return os.pathsep.join(dict.fromkeys(paths))
