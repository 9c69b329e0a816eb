"""One connection of a real Stig served from memory: the handler targets' only door into stig.

Every import of Stig's internals that the fuzz targets need is here, so that
moving Stig's modules means editing this one module.

:func:`serve` builds a real :class:`~stig.engine.engine.Engine` (real LMDB, its
promoter and commit thread) in a fresh data directory, runs the real
:class:`~stig.server.connection.Connection` loop over :class:`MemoryTransport` — a
client that sends the given chunks, one per ``recv``, then half-closes — and
returns what the server sent, the data it kept, and every error it logged.
Nothing is mocked but the socket.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import tempfile
from collections import deque
from collections.abc import Iterable
from pathlib import Path

import attrs
import trio

from stig.engine.engine import Engine
from stig.engine.settings import Settings
from stig.server.connection import Connection
from stig_protocol.limits import Limits

#: The handlers the connection imports on its first byte: imported here too,
#: so that they are imported (and instrumented by the fuzz runner) with the rest.
HANDLER_MODULES = ("stig.frontends.text", "stig.frontends.binary")
for _name in HANDLER_MODULES:
    importlib.import_module(_name)

#: A connection that takes longer than this is a hang (a finding), not a slow input.
HANG_SECONDS = 20.0

#: Data directories on tmpfs where there is one: an fsync costs nothing there,
#: and what is fuzzed is the handlers, not the disk.
_SCRATCH = Path("/dev/shm") if Path("/dev/shm").is_dir() else None


@attrs.frozen
class Variant:
    """The server settings one input runs under (the targets pick one per input)."""

    name: str
    durable_acks: bool = False
    limits: Limits = Limits()
    max_reply_bytes: int = 1 << 20
    #: ``--auth-file`` with the one user :data:`USER` (password :data:`PASSWORD`)
    auth: bool = False

    def settings(self, data_dir: Path) -> Settings:
        auth_file = None
        if self.auth:
            auth_file = data_dir.parent / "auth"
            auth_file.write_bytes(USER + b":" + PASSWORD + b"\n")
        return Settings(
            data_dir=data_dir,
            durable_acks=self.durable_acks,
            limits=self.limits,
            max_reply_bytes=self.max_reply_bytes,
            # No quiet run is closed by a pause: the client never pauses, and a
            # slow machine must not move a transaction edge between feedings.
            batch_idle_ms=3_600_000.0,
            map_size=1 << 20,  # small: the map grows under the fuzzer, as in production
            auth_file=auth_file,
        )


#: The login of the ``auth`` variant.
USER, PASSWORD = b"u", b"p"

#: The default server; a tight one: small limits reach every "too large" and
#: "too long" path in a few bytes, replies go out every 64 bytes, and each
#: burst waits for its commit (``--durable-acks``); one that asks clients to
#: log in first (``--auth-file``: text ``set`` with ``u p``, binary SASL PLAIN).
VARIANTS = (
    Variant("default"),
    Variant(
        "tight",
        durable_acks=True,
        limits=Limits(max_key_length=16, max_item_size=64, max_line_length=96,
                      retrieval_window=256),
        max_reply_bytes=64,
    ),
    Variant("auth", auth=True),
)  # fmt: skip


class MemoryTransport:
    """A client that sends ``chunks`` (one per ``recv``), then half-closes,
    and reads every reply (each ``send`` takes all it is given)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = deque(chunk for chunk in chunks if chunk)
        self.sent = bytearray()
        self.read_shut = False
        self.closed = False

    async def recv(self, size: int, /) -> bytes:
        await trio.lowlevel.checkpoint()
        if self.read_shut or self.closed or not self._chunks:
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
        return len(data)

    def shutdown(self, how: int, /) -> None:
        self.read_shut = True

    def close(self) -> None:
        self.closed = True


class _Errors(logging.Handler):
    """Collects what stig logs at ERROR and above (a connection's internal
    error, a failed completion callback, a failed commit)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@attrs.frozen
class Served:
    """What one connection did: the bytes the client received, the items the
    store holds afterwards (raw records by key), what stig logged at ERROR."""

    replies: bytes
    items: dict[bytes, bytes]
    errors: tuple[str, ...]


def serve(chunks: Iterable[bytes], variant: Variant = VARIANTS[0]) -> Served:
    """Serve one connection that sends ``chunks`` on a fresh real store."""
    data_dir = Path(tempfile.mkdtemp(prefix="stig-fuzz-", dir=_SCRATCH))
    errors = _Errors()
    stig_log = logging.getLogger("stig")
    stig_log.addHandler(errors)
    try:
        transport = MemoryTransport(chunks)
        items = trio.run(_serve, variant.settings(data_dir / "data"), transport)
    finally:
        stig_log.removeHandler(errors)
        shutil.rmtree(data_dir, ignore_errors=True)
    messages = tuple(_describe(record) for record in errors.records)
    return Served(bytes(transport.sent), items, messages)


def _describe(record: logging.LogRecord) -> str:
    text = f"{record.name}: {record.getMessage()}"
    if record.exc_info and record.exc_info[1] is not None:
        text += f" ({record.exc_info[1]!r})"
    return text


async def _serve(settings: Settings, transport: MemoryTransport) -> dict[bytes, bytes]:
    engine = Engine(settings)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run_promoter)
            with trio.fail_after(HANG_SECONDS):
                await Connection(engine, transport).serve()
            await engine.promoter.close()  # every run it acknowledged is committed
            nursery.cancel_scope.cancel()
        txn = engine.store.read_txn()
        try:
            return dict(txn.cursor())
        finally:
            txn.abort()
    finally:
        await engine.close()
