"""The primary's side of one follower: the log from where it is, or a snapshot first.

A connection that sent ``stig_replicate <after_seq> <epoch>`` (and, under
``--auth-file``, logged in first — without it the server must run with
``--replication-open``, else the command is refused before it gets here;
under TLS, over TLS) is handed here by the server.  The stream (stig/replication/wire.py):

1. If the follower has nothing (``after_seq`` 0) or is behind the oldest
   group the log still holds, a **snapshot**: one LMDB read transaction,
   every item's record (flags, cas, state bits) and the sequence number
   that transaction saw — the items and the number agree, as both are
   written by each commit.  The snapshot is registered as a held read, so
   a map that must grow, or a follower that takes none of it for
   ``--max-read-stall-ms``, ends it (and the stream: the follower comes
   back).
2. Then every group after that point, read from the log in short read
   transactions, sent as committed; a heartbeat every
   :data:`HEARTBEAT_SECONDS` while there is nothing to send.
3. Meanwhile the follower's ``ACK <seq>`` lines go to the
   :class:`~stig.engine.replicas.ReplicaHub` (``--min-replica-acks``); an
   ``ACK`` past the last group sent on this stream is a false claim: the
   stream is closed.

Epochs (taking over, docs/replication.md): a follower of an earlier epoch
whose groups go past the end of that epoch in this server's history has
groups this server never had (its former primary's, after the follower
promoted here last heard of it): it is answered ``DIVERGED <seq> <epoch>``
— ``seq`` the last group both share — and discards its later groups
(stig/replication/follower.py).  A follower of a *later* epoch proves a
newer primary exists: this server fences itself (refuses writes and
followers, durably) and refuses it.  A follower ahead of the primary in
the same epoch is refused.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import lmdb
import trio

from stig.engine.engine import Engine
from stig.engine.errors import PromoteRefused
from stig.engine.replicas import Replica, TooManyFollowers
from stig.engine.shared_replicas import SLOTS_PER_WORKER
from stig.replication import wire
from stig.storage import replog
from stig_protocol.commands import Replicate

log = logging.getLogger(__name__)

#: Seconds between heartbeats on an idle stream (a follower gives up after
#: a few missed ones and reconnects).
HEARTBEAT_SECONDS = 1.0
#: About this many bytes of groups are read per log read and sent at once.
SEND_BYTES = 1 << 20
#: A snapshot is sent in chunks of about this many bytes.
CHUNK_BYTES = 256 << 10
#: The longest ``ACK`` line a follower sends.
MAX_ACK_LINE = 64


class Stream(Protocol):
    """What the sender needs of the connection's socket (TCP, TLS or unix)."""

    def recv(self, size: int, /) -> object: ...
    def send(self, data: bytes | bytearray | memoryview, /) -> object: ...


class _Refused(Exception):
    """The follower cannot follow this server; the message says why."""


class _Snapshot:
    """A held snapshot's holder and owner (stig/storage/held.py)."""

    def __init__(self, txn: lmdb.Transaction[bytes]) -> None:
        self._txn = txn
        self.ended: str | None = None
        self.replies_blocked_since: float | None = None

    def end(self, why: str) -> None:
        self.ended = why
        self._txn.abort()


async def _send_all(sock: Stream, data: bytes) -> None:
    with memoryview(data) as whole:
        start = 0
        while start < len(whole):
            start += await sock.send(whole[start:])  # type: ignore[misc]


async def serve_follower(engine: Engine, sock: Stream, request: Replicate, peer: str) -> None:
    """Stream to one follower until it goes, the server stops, or it falls out of step."""
    store = engine.store
    try:
        await _check(engine, request, peer)
    except _Refused as exc:
        log.warning("follower %s refused: %s", peer, exc)
        await _send_all(sock, b"SERVER_ERROR %b\r\n" % str(exc).encode())
        return
    except _Diverged as exc:
        log.warning(
            "follower %s (epoch %d) has groups after %d this server never had: "
            "told to discard them",
            peer,
            request.epoch,
            exc.seq,
        )
        await _send_all(sock, b"DIVERGED %d %d\r\n" % (exc.seq, store.log_state.epoch))
        return
    hub = engine.replicas
    try:
        replica = hub.connect(peer)
    except TooManyFollowers:
        why = f"this worker streams to {SLOTS_PER_WORKER} followers already; connect again"
        log.warning("follower %s refused: %s", peer, why)
        await _send_all(sock, b"SERVER_ERROR %b\r\n" % why.encode())
        return
    state = store.log_state
    try:
        await _send_all(sock, b"REPLICATING %d %d\r\n" % (state.epoch, state.seq))
    except BaseException:
        hub.disconnect(replica)
        raise
    if request.epoch == state.epoch and request.after_seq:
        # It resumes after the groups it has on disk: its acknowledgement of
        # them (a restarted primary holds reads until it: replica_hold.py).
        replica.sent_seq = request.after_seq
        hub.acked(replica, request.after_seq)
    log.info("follower %s connected after group %d", peer, request.after_seq)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_acks, sock, engine, replica, nursery.cancel_scope)
            try:
                await _stream(engine, sock, replica, request.after_seq)
            except _Refused as exc:
                log.warning("follower %s: %s; closing its stream", peer, exc)
                await _send_all(sock, wire.frame(wire.GIVE_UP, str(exc).encode()))
                nursery.cancel_scope.cancel()
    finally:
        hub.disconnect(replica)
        log.info("follower %s gone (acknowledged group %d)", peer, replica.acked_seq)


class _Diverged(Exception):
    """The follower has groups after ``seq`` that this server's history lacks."""

    def __init__(self, seq: int) -> None:
        super().__init__(seq)
        self.seq = seq


async def _check(engine: Engine, request: Replicate, peer: str) -> None:
    store = engine.store
    if engine.follower is not None:
        raise _Refused(f"this server is a replica of {engine.follower.primary}")
    if not engine.settings.replication_log_bytes:
        raise _Refused("the replication log is off (--replication-log-bytes 0)")
    if engine.writer is not None:
        # The writer process commits: this worker's numbers are as of its
        # last answer, or older (docs/workers.md); and whether it logs.
        store.log_enabled = store.refresh_log_state().logging
    state = store.log_state
    if request.epoch > state.epoch:
        # A fence of a believable epoch (the follower logged in, or the
        # network is trusted: stig/frontends/text.py); refused either way.
        # With --workers the writer stores it and every worker adopts it.
        try:
            await engine.fence(request.epoch, f"a follower of epoch {request.epoch} at {peer}")
        except replog.ImplausibleEpoch as exc:
            raise _Refused(f"the follower's {exc}") from exc
        except PromoteRefused as exc:
            raise _Refused(str(exc)) from exc
        raise _Refused(f"the follower's epoch {request.epoch} is later than {state.epoch}")
    if store.fenced:
        raise _Refused(engine.fenced_words())
    if request.epoch < state.epoch:
        txn = store.log_txn()
        try:
            end = replog.end_of_epoch(store.epoch_starts(txn), request.epoch)
        finally:
            txn.abort()
        # No later epoch in this history (never, as the epoch is later): the
        # common part cannot be known, so the follower starts again.
        shared = 0 if end is None else end
        if request.after_seq > shared:
            raise _Diverged(shared)
    if request.after_seq > state.seq:
        raise _Refused(f"the follower is at group {request.after_seq}, past this {state.seq}")
    if not store.log_enabled:
        # The first follower: the log starts with the next commit, and is
        # stored as on (a restart keeps logging); this follower, behind the
        # empty log, starts from a snapshot.  With workers the writer
        # process commits, so it is the one told.
        if engine.writer is None:
            await trio.to_thread.run_sync(store.start_logging)
        elif not await engine.writer.start_logging():
            raise _Refused("the writer process died; connect again")
        else:
            store.log_enabled = True
        log.info("replication log on: a follower (%s) wants it", peer)


async def _read_acks(
    sock: Stream, engine: Engine, replica: Replica, scope: trio.CancelScope
) -> None:
    """The follower's ``ACK <seq>`` lines, until it closes (the stream ends too)."""
    buffer = bytearray()
    try:
        while True:
            data = await sock.recv(4096)  # type: ignore[misc]
            if not data:
                return
            buffer += data
            while (end := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:end]).strip()
                del buffer[: end + 1]
                word, _, number = line.partition(b" ")
                if word != b"ACK" or not number.isdigit() or len(number) > 20:
                    log.warning("follower %s sent %r; closing", replica.peer, line[:40])
                    return
                acked = int(number)
                if acked > replica.sent_seq:
                    # A follower has on disk at most what it was sent: more is
                    # a false claim that would satisfy --min-replica-acks.
                    log.warning(
                        "follower %s acknowledged group %d, past the %d sent; closing",
                        replica.peer,
                        acked,
                        replica.sent_seq,
                    )
                    return
                engine.replicas.acked(replica, acked)
            if len(buffer) > MAX_ACK_LINE:
                return
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        return
    finally:
        scope.cancel()


async def _stream(engine: Engine, sock: Stream, replica: Replica, after: int) -> None:
    store = engine.store
    hub = engine.replicas
    position = after
    while True:
        event = hub.commit_event  # before the read: a commit after it sets it
        txn = store.log_txn()
        try:
            state = store.read_log_state(txn)
            newest = state.seq
            if position < state.log_first - 1 or (position == 0 < state.seq):
                position = await _snapshot(engine, sock, replica, txn, state.seq, state.epoch)
                replica.snapshots += 1
                hub.snapshot_sent()
                continue
            groups = store.log_entries(txn, position, SEND_BYTES)
        finally:
            txn.abort()
        if groups:
            if groups[0][0] != position + 1:  # trimmed between two reads: never, but
                raise _Refused(f"the log lost group {position + 1}")
            # Before the send: the follower may apply and acknowledge the
            # first groups while the last are still being sent.
            position = replica.sent_seq = groups[-1][0]
            await _send_all(sock, b"".join(wire.group(seq, entry) for seq, entry in groups))
            continue
        with trio.move_on_after(HEARTBEAT_SECONDS):
            await hub.wait_commit(event, position)
            continue
        await _send_all(sock, wire.frame(wire.HEARTBEAT, wire.SEQ.pack(newest)))


async def _snapshot(
    engine: Engine,
    sock: Stream,
    replica: Replica,
    txn: lmdb.Transaction[bytes],
    seq: int,
    epoch: int,
) -> int:
    """Send every item as ``txn`` sees it, taken at group ``seq``; returns ``seq``.

    ``txn`` is held across the sends, registered in the store's held reads
    (a map growth or a stalled follower ends it, and this stream)."""
    store = engine.store
    header = wire.SNAPSHOT.pack(seq, epoch, store.cas_counter(txn)) + replog.encode_epoch_starts(
        store.epoch_starts(txn)
    )
    holder = _Snapshot(txn)
    store.long_reads.add(txn, holder, holder)
    started = time.monotonic()
    sent = 0
    try:
        await _send_all(sock, wire.frame(wire.SNAPSHOT_BEGIN, header))
        cursor = store.item_records(txn)
        more = cursor.first()
        while more:
            chunk: list[tuple[bytes, bytes]] = []
            size = 0
            try:
                while more and size < CHUNK_BYTES:
                    key, record = cursor.item()
                    chunk.append((key, record))
                    size += len(key) + len(record)
                    more = cursor.next()
            except lmdb.Error as exc:
                raise _Refused(f"snapshot ended: {holder.ended or exc}") from exc
            holder.replies_blocked_since = trio.current_time()
            await _send_all(sock, wire.records(chunk))
            holder.replies_blocked_since = None
            sent += len(chunk)
        replica.sent_seq = seq  # the follower may acknowledge it once it has the end
        await _send_all(sock, wire.frame(wire.SNAPSHOT_END))
    finally:
        store.long_reads.discard(txn)
    log.info(
        "snapshot of %d items at group %d sent in %.1f s", sent, seq, time.monotonic() - started
    )
    return seq
