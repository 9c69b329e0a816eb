"""A follower's side (``stig serve --replica-of HOST:PORT``): follow the primary for ever.

It connects to the primary's port as any client would — over TLS
(``--replica-tls``, with ``--replica-tls-ca`` and a client certificate if
the primary asks for one) and logged in (``--replica-auth-file``: one
``user:password`` line, sent as memcached's text login) — and asks for the
groups after the last one it applied (``stig_replicate <seq> <epoch>``;
``0``: it has nothing, a snapshot first).  Then:

* a **snapshot** is spooled to a file in the data directory as it comes
  and loaded in ONE LMDB transaction once whole (reads meanwhile see the
  state before it; a crash leaves that state, and the next connection asks
  again from it);
* **groups** are applied as they come, every group received by then in one
  LMDB transaction (whole, in order, with the primary's records and cas
  values, the last sequence number stored with them): a read sees a state
  the primary had after one of its commits;
* after each transaction is on disk it sends ``ACK <seq>``.

Any failure — the primary gone, silent for :data:`SILENCE_SECONDS`, a
refusal, a torn frame — closes the connection; it reconnects after a
pause that doubles from :data:`RECONNECT_FIRST` to :data:`RECONNECT_MAX`
and resumes from its stored sequence number, so a group is never applied
twice, nor half (also after a crash: the number is in the same
transaction as the items).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import ssl
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import trio

from stig.engine.engine import Engine
from stig.engine.readiness import Hold
from stig.engine.replicas import FollowerState
from stig.engine.writer_link import StreamJobRefused, WriterDied
from stig.replication import wire
from stig.storage import replog
from stig.storage.store import MapCannotGrow, MapFull, Store

log = logging.getLogger(__name__)

RECONNECT_FIRST = 0.05
RECONNECT_MAX = 5.0
#: A primary silent this long (it sends a heartbeat every second) is given up.
SILENCE_SECONDS = 5.0
#: Groups received are applied at once past this many bytes (else when
#: nothing more has arrived).
APPLY_BYTES = 8 << 20
RECEIVE_SIZE = 256 << 10
#: A snapshot's spool file is named for the process that writes it, so a
#: stream worker restarted while the writer process still loads its
#: predecessor's spool cannot truncate that file under the load.
SPOOL_PREFIX = "replica-snapshot-"
SPOOL_SUFFIX = ".tmp"
_LENGTH = struct.Struct(">I")


class FollowError(Exception):
    """The stream cannot go on; the follower reconnects."""


#: How a connection to another server (the primary followed, a former
#: primary told of a fence) ends when it cannot be reached or answer right.
LINK_FAILURES = (
    OSError,
    ssl.SSLError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    FollowError,
    ValueError,
)


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"not HOST:PORT: {text!r}")
    return host.strip("[]"), int(port)


def read_login(path: Path) -> tuple[bytes, bytes]:
    """The ``user:password`` of ``--replica-auth-file`` (its first line)."""
    for line in path.read_bytes().splitlines():
        user, sep, password = line.strip().partition(b":")
        if sep and user:
            return user, password
    raise ValueError(f"{path}: no user:password line")


async def follow(engine: Engine, hold: Hold | None = None) -> None:
    """Follow the primary until cancelled or promoted (``stig_promote``:
    :meth:`FollowerState.stop`; this then returns), reconnecting after any
    failure.

    ``hold`` (the service manager's readiness, stig/engine/readiness.py) is
    released the first time the follower has applied every group the
    primary had when it answered (or heard of since)."""
    state = engine.follower
    assert state is not None
    remove_stale_spools(Path(engine.settings.data_dir))
    try:
        with trio.CancelScope() as state.scope:
            if not state.stop_requested:
                await _follow_for_ever(engine, state, hold)
    finally:
        state.scope = None
        state.stopped.set()


async def _follow_for_ever(engine: Engine, state: FollowerState, hold: Hold | None) -> None:
    state.applied_seq = engine.store.log_state.seq
    pause = RECONNECT_FIRST
    while True:
        applied = engine.store.log_state.seq
        try:
            await _follow_once(engine, state, hold)
        except LINK_FAILURES as exc:
            state.last_error = str(exc) or type(exc).__name__
            log.warning("replication from %s stopped: %s", state.primary, state.last_error)
        state.connected = False
        state.pending_bytes = 0
        if engine.store.log_state.seq != applied:
            pause = RECONNECT_FIRST  # it made progress: not a failing primary
        await trio.sleep(pause)
        pause = min(pause * 2, RECONNECT_MAX)


async def _connect(engine: Engine, host: str, port: int) -> trio.abc.Stream:
    settings = engine.settings
    stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    if settings.replica_tls:
        context = ssl.create_default_context(
            cafile=None if settings.replica_tls_ca is None else str(settings.replica_tls_ca)
        )
        if settings.replica_tls_cert is not None:
            key = settings.replica_tls_key
            context.load_cert_chain(
                str(settings.replica_tls_cert), None if key is None else str(key)
            )
        tls = trio.SSLStream(stream, context, server_hostname=host)
        await tls.do_handshake()
        stream = tls
    return stream


class _Reader:
    """Frames and lines from the primary, waiting at most :data:`SILENCE_SECONDS`."""

    def __init__(self, stream: trio.abc.Stream, state: FollowerState | None) -> None:
        self.stream = stream
        self.frames = wire.FrameReader()
        self._state = state

    async def more(self) -> None:
        with trio.fail_after(SILENCE_SECONDS):
            data = await self.stream.receive_some(RECEIVE_SIZE)
        if not data:
            raise FollowError("the primary closed the connection")
        self.frames.feed(data)
        if self._state is not None:
            self._state.pending_bytes = self.frames.buffered

    async def line(self) -> bytes:
        while (line := self.frames.line()) is None:
            if self.frames.buffered > 4096:
                raise FollowError("no line from the primary")
            await self.more()
        return line


def _note_progress(state: FollowerState, hold: Hold | None) -> None:
    if hold is not None and state.connected and state.applied_seq >= state.primary_seq:
        hold.release()  # caught up (a second release does nothing)


async def _log_in(engine: Engine, reader: _Reader) -> None:
    """Send ``--replica-auth-file``'s login, if any (memcached's text login)."""
    auth_file = engine.settings.replica_auth_file
    if auth_file is None:
        return
    user, password = read_login(auth_file)
    login = user + b" " + password
    await reader.stream.send_all(b"set auth 0 0 %d\r\n%b\r\n" % (len(login), login))
    answer = await reader.line()
    if answer != b"STORED":
        raise FollowError(f"login refused: {answer.decode(errors='replace')}")


async def _follow_once(engine: Engine, state: FollowerState, hold: Hold | None) -> None:
    host, port = parse_address(state.primary)
    stream = await _connect(engine, host, port)
    async with stream:
        reader = _Reader(stream, state)
        await _log_in(engine, reader)
        log_state = engine.store.log_state
        after = 0 if state.snapshot_needed else log_state.seq
        await stream.send_all(b"stig_replicate %d %d\r\n" % (after, log_state.epoch))
        answer = await reader.line()
        words = answer.split()
        if len(words) == 3 and words[0] == b"DIVERGED" and words[1].isdigit():
            await _discard_diverged(engine, state, int(words[1]))
        if len(words) != 3 or words[0] != b"REPLICATING":
            raise FollowError(f"refused: {answer.decode(errors='replace')}")
        state.primary_seq = int(words[2])
        state.connected = True
        state.connects += 1
        state.last_error = ""
        log.info(
            "following %s from group %d (it is at %d)",
            state.primary,
            log_state.seq,
            state.primary_seq,
        )
        _note_progress(state, hold)
        await _apply_stream(engine, state, reader, hold)


async def _apply_stream(
    engine: Engine, state: FollowerState, reader: _Reader, hold: Hold | None
) -> None:
    batch: list[tuple[int, bytes]] = []
    batch_bytes = 0
    spool: _Spool | None = None
    frames = reader.frames
    try:
        while True:
            frame = frames.next()
            # Apply what came so far: nothing more arrived, enough did, or a
            # snapshot begins (it replaces everything from a later group on).
            if frame is None or batch_bytes >= APPLY_BYTES or frame[0] == wire.SNAPSHOT_BEGIN:
                if batch:
                    await _apply(engine, batch)
                    last = batch[-1]
                    state.applied_seq = last[0]
                    state.applied_time_ms = replog.entry_time_ms(last[1])
                    state.groups_applied += len(batch)
                    state.pending_bytes = frames.buffered
                    batch, batch_bytes = [], 0
                    await reader.stream.send_all(b"ACK %d\r\n" % last[0])
                    _note_progress(state, hold)
                if frame is None:
                    state.pending_bytes = frames.buffered
                    await reader.more()
                    continue
            kind, payload = frame
            if kind == wire.GROUP:
                seq = wire.SEQ.unpack_from(payload)[0]
                batch.append((seq, payload[wire.SEQ.size :]))
                batch_bytes += len(payload)
                state.primary_seq = max(state.primary_seq, seq)
            elif kind == wire.HEARTBEAT:
                state.primary_seq = max(state.primary_seq, wire.SEQ.unpack_from(payload)[0])
                _note_progress(state, hold)
            elif kind == wire.SNAPSHOT_BEGIN:
                seq, epoch, last_cas = wire.SNAPSHOT.unpack_from(payload)
                starts = replog.decode_epoch_starts(payload[wire.SNAPSHOT.size :])
                if spool is not None:
                    spool.close()
                spool = _Spool(
                    spool_path(Path(engine.settings.data_dir)), seq, epoch, last_cas, starts
                )
                log.info("receiving a snapshot of %s at group %d", state.primary, seq)
                if hold is not None:
                    hold.status(f"receiving a snapshot of the primary at group {seq}")
            elif kind == wire.RECORDS:
                if spool is None:
                    raise FollowError("snapshot records outside a snapshot")
                spool.write(payload)
            elif kind == wire.SNAPSHOT_END:
                if spool is None:
                    raise FollowError("a snapshot end outside a snapshot")
                loading = spool
                try:
                    await _load(engine, loading)
                finally:
                    loading.close()
                    spool = None
                state.snapshots += 1
                state.snapshot_needed = False
                state.applied_seq = loading.seq
                state.primary_seq = max(state.primary_seq, loading.seq)
                log.info("snapshot loaded: group %d", loading.seq)
                await reader.stream.send_all(b"ACK %d\r\n" % loading.seq)
                _note_progress(state, hold)
            elif kind == wire.GIVE_UP:
                raise FollowError(f"the primary gave up: {payload.decode(errors='replace')}")
            else:
                raise FollowError(f"unknown frame {kind!r}")
    finally:
        if spool is not None:
            spool.close()  # a snapshot cut short: its file goes


async def _apply(engine: Engine, batch: list[tuple[int, bytes]]) -> None:
    """Apply groups in one transaction: on a thread, or in the writer process
    (``--workers``: it owns the write transaction; the same
    ``Store.apply_replicated``)."""
    store = engine.store
    if engine.writer is None:
        await _commit(store, functools.partial(store.apply_replicated, batch))
        return
    with _writer_failure():
        await engine.writer.apply_replicated(batch)


async def _load(engine: Engine, spool: _Spool) -> None:
    """Load a whole snapshot in one transaction (on a thread, or in the writer
    process, which reads the spool file itself: :func:`spool_records`)."""
    store = engine.store
    if engine.writer is None:
        await _commit(store, spool.load_into(store))
        return
    spool.flush()
    with _writer_failure():
        await engine.writer.load_snapshot(
            spool.path, spool.seq, spool.epoch, spool.last_cas, spool.epoch_starts
        )


@contextlib.contextmanager
def _writer_failure() -> Iterator[None]:
    """The writer refused a job or died: the stream stops, and resumes from
    what LMDB holds (a group is in it whole or not at all)."""
    try:
        yield
    except StreamJobRefused as exc:
        raise FollowError(f"the writer process refused: {exc}") from exc
    except WriterDied as exc:
        raise FollowError("the writer process died") from exc


async def _commit(store: Store, job: Callable[[], None]) -> None:
    """Run a store write on a worker thread; grow the map (on the event loop,
    no transaction open) and retry when it is full."""
    while True:
        try:
            await trio.to_thread.run_sync(job)
            return
        except MapFull:
            try:
                log.info("LMDB map grown to %d bytes", store.grow())
            except MapCannotGrow as exc:
                raise FollowError(f"the map cannot grow: {exc}") from exc


class _Spool:
    """A snapshot as it arrives: its record chunks in a file beside the data."""

    def __init__(
        self, path: Path, seq: int, epoch: int, last_cas: int, epoch_starts: dict[int, int]
    ) -> None:
        self.path = path
        self.seq = seq
        self.epoch = epoch
        self.last_cas = last_cas
        self.epoch_starts = epoch_starts
        self._file = open(path, "w+b")  # closed by close()

    def write(self, payload: bytes) -> None:
        self._file.write(_LENGTH.pack(len(payload)) + payload)

    def flush(self) -> None:
        self._file.flush()

    def _records(self) -> Iterator[tuple[bytes, bytes]]:
        handle = self._file
        handle.flush()
        handle.seek(0)
        yield from _read_records(handle)

    def load_into(self, store: Store) -> Callable[[], None]:
        return lambda: store.load_snapshot(
            self._records(), self.seq, self.epoch, self.last_cas, self.epoch_starts
        )

    def close(self) -> None:
        self._file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def spool_path(data_dir: Path, pid: int | None = None) -> Path:
    """Where this process (or ``pid``) spools a snapshot."""
    return data_dir / f"{SPOOL_PREFIX}{os.getpid() if pid is None else pid}{SPOOL_SUFFIX}"


def remove_stale_spools(data_dir: Path) -> list[Path]:
    """Remove the spool files of processes that are gone (a follower killed
    mid-snapshot), and the unnamed one of earlier versions; a live process's
    spool (a writer may be loading it) is kept.  Returns what was removed."""
    removed = []
    for path in data_dir.glob(f"replica-snapshot*{SPOOL_SUFFIX}"):
        owner = path.name[len(SPOOL_PREFIX) : -len(SPOOL_SUFFIX)]
        if owner.isdigit() and int(owner) != os.getpid() and _alive(int(owner)):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_records(handle: BinaryIO) -> Iterator[tuple[bytes, bytes]]:
    while head := handle.read(_LENGTH.size):
        (length,) = _LENGTH.unpack(head)
        yield from wire.split_records(handle.read(length))


def spool_records(path: Path) -> Iterator[tuple[bytes, bytes]]:
    """The (key, record) pairs of a snapshot spooled at ``path`` (the writer
    process loads a follower's snapshot from it: ``--workers``)."""
    with open(path, "rb") as handle:
        yield from _read_records(handle)


# -- taking over (docs/replication.md) ---------------------------------------------


def diverged_path(data_dir: Path, shared: int, epoch: int) -> Path:
    """Where a follower keeps the groups it discarded after group ``shared``
    (``epoch``: the epoch it had)."""
    return data_dir / f"diverged-after-{shared}-epoch-{epoch}.replog"


def _save_diverged(store: Store, path: Path, shared: int) -> tuple[int, int]:
    """Write the groups of the log after ``shared`` to ``path`` (durably, as
    ``G`` frames of stig/replication/wire.py); returns (groups after
    ``shared``, groups saved — fewer when the log no longer held them)."""
    txn = store.log_txn()
    try:
        entries = store.log_entries(txn, shared, 1 << 62)
    finally:
        txn.abort()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as handle:
        for seq, entry in entries:
            handle.write(wire.group(seq, entry))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return store.log_state.seq - shared, len(entries)


async def _discard_diverged(engine: Engine, state: FollowerState, shared: int) -> None:
    """The primary's history ends this server's epoch at group ``shared``: the
    groups after it were never the primary's (an old primary rejoining).
    They are saved to a file, and the next connection asks for a snapshot,
    which replaces them; the count goes to the log and ``stats``."""
    store = engine.store
    log_state = store.log_state
    path = diverged_path(Path(engine.settings.data_dir), shared, log_state.epoch)
    after, saved = await trio.to_thread.run_sync(_save_diverged, store, path, shared)
    state.groups_discarded = after
    state.groups_saved = saved
    state.snapshot_needed = True
    words = (
        f"diverged from {state.primary} after group {shared}: discarding {after} group(s) "
        f"of epoch {log_state.epoch} ({saved} saved to {path}); loading a snapshot"
    )
    log.error("%s", words)
    raise FollowError(words)


async def send_fence(engine: Engine, address: str, epoch: int) -> str:
    """Tell the server at ``address`` (a former primary) that a primary of
    ``epoch`` exists (``stig_fence``), as this server reaches its primary
    (``--replica-tls…``, ``--replica-auth-file``); its answer's line.
    Raises :data:`LINK_FAILURES` when it cannot be reached or answer."""
    host, port = parse_address(address)
    with trio.fail_after(SILENCE_SECONDS):
        stream = await _connect(engine, host, port)
    async with stream:
        reader = _Reader(stream, None)
        await _log_in(engine, reader)
        await stream.send_all(b"stig_fence %d\r\n" % epoch)
        return (await reader.line()).decode(errors="replace")
