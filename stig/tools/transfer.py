"""``stig dump`` and ``stig load``: move items as a stream of meta commands.

* :func:`dump_dir` reads a data directory directly, in ONE read transaction:
  the dump is one consistent snapshot even while a server writes.
* :func:`dump_server` reads any memcached-protocol server that has
  ``lru_crawler metadump`` and ``mg`` (memcached 1.6, Stig): the keys come
  from the listing, the values from pipelined ``mg`` in batches.  Each batch
  of values is one snapshot on Stig, the whole dump is not: a key deleted
  meanwhile is skipped, a key written meanwhile may have its newer value.
* :func:`load_server` replays a dump into a server in transactions of N
  items, each closed by ``mn``; on Stig each is atomic and durable when
  ``MN`` arrives.  A batch with an error is replayed item by item, loudly,
  to name every refused key.

The format is :mod:`stig.tools.dumpfmt`.  All blocking I/O: these run in the CLI,
never in the server.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import attrs

from stig.storage.records import HEADER
from stig.tools import dumpfmt
from stig.tools.dumpfmt import DumpItem
from stig.tools.envtools import ToolError, open_readonly
from stig.tools.progress import Progress
from stig_protocol.listing import url_decode

DEFAULT_BATCH = 1000
FETCH_BATCH = 500
IO_TIMEOUT = 60.0
#: The largest transaction ``load`` sends, in bytes of memory cost on the
#: server (value, key and ~400 bytes of bookkeeping per item): far below
#: Stig's default ``--max-pending-bytes`` (64 MiB), which a single
#: transaction must not exceed — the server drops the connection then.
MAX_BATCH_COST = 16 << 20
ITEM_OVERHEAD = 512
#: A Stig server's batch budget is a quarter of its --max-pending-bytes, as
#: up to four transactions are in flight.
WINDOW = 4


@attrs.define
class TransferReport:
    items: int = 0
    value_bytes: int = 0
    refused: list[tuple[bytes, str]] = attrs.field(factory=list)


def _write_items(
    items: Iterable[DumpItem], out: BinaryIO, batch: int, progress: Progress
) -> TransferReport:
    report = TransferReport()
    encode = dumpfmt.encode_item
    in_batch = 0
    for key, value, flags in items:
        out.write(encode(key, value, flags))
        report.items += 1
        report.value_bytes += len(value)
        in_batch += 1
        if in_batch == batch:
            out.write(dumpfmt.BARRIER)
            in_batch = 0
            progress.add(batch, 0)
            progress.bytes = report.value_bytes
    if in_batch or not report.items:
        out.write(dumpfmt.BARRIER)
    progress.add(in_batch, 0)
    progress.bytes = report.value_bytes
    out.flush()
    return report


# -- dump from a data directory -------------------------------------------------


def dump_dir(data_dir: Path, out: BinaryIO, batch: int, quiet: bool) -> TransferReport:
    env = open_readonly(data_dir)
    try:
        txn = env.begin()
        try:
            total = int(txn.stat(env.items)["entries"])
            progress = Progress("dump", total=total, quiet=quiet)
            unpack = HEADER.unpack_from
            header = HEADER.size

            def items() -> Iterator[DumpItem]:
                for key, record in txn.cursor():
                    yield DumpItem(bytes(key), bytes(record[header:]), unpack(record)[0])

            report = _write_items(items(), out, batch, progress)
        finally:
            txn.abort()
    finally:
        env.close()
    progress.done()
    return report


# -- a plain blocking memcached text connection ---------------------------------


class TextConn:
    """A plain blocking connection speaking the text protocol (the tools' client)."""

    def __init__(self, address: tuple[str, int]) -> None:
        try:
            self.sock = socket.create_connection(address, timeout=IO_TIMEOUT)
        except OSError as exc:
            raise ToolError(f"cannot connect to {address[0]}:{address[1]}: {exc}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ToolError("the server closed the connection")
        self.buf += chunk

    def line(self) -> bytes:
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[: end + 1])
                del self.buf[: end + 1]
                return line
            self._fill()

    def exactly(self, count: int) -> bytes:
        while len(self.buf) < count:
            self._fill()
        data = bytes(self.buf[:count])
        del self.buf[:count]
        return data

    def close(self) -> None:
        self.sock.close()


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ToolError(f"--server wants HOST:PORT, not {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


# -- dump from a server ------------------------------------------------------------


def listed(conn: TextConn) -> Iterator[tuple[bytes, int]]:
    """Every (key, cas) of ``lru_crawler metadump all``, read as they arrive."""
    conn.send(b"lru_crawler metadump all\r\n")
    first = True
    while True:
        line = conn.line()
        if line == b"END\r\n":
            return
        if first and not line.startswith(b"key="):
            raise ToolError(
                f"the server cannot list its keys ('lru_crawler metadump all' answered "
                f"{line.strip().decode(errors='replace')!r})"
            )
        first = False
        fields = line.split()
        cas = next((int(f[4:]) for f in fields if f.startswith(b"cas=")), 0)
        yield url_decode(fields[0][len(b"key=") :]), cas


def _listed_keys(conn: TextConn) -> Iterator[bytes]:
    """The keys of ``lru_crawler metadump all``, read as they arrive."""
    for key, _cas in listed(conn):
        yield key


def _fetched(conn: TextConn, keys: list[bytes]) -> Iterator[DumpItem]:
    """Values and flags of ``keys`` by pipelined ``mg``; keys gone meanwhile are skipped."""
    conn.send(b"".join(b"mg %b%b f v\r\n" % dumpfmt.key_token(k) for k in keys))
    for key in keys:
        line = conn.line()
        if line.startswith(b"VA "):
            tokens = line.split()
            length = int(tokens[1])
            flags = 0
            for token in tokens[2:]:
                if token.startswith(b"f"):
                    flags = int(token[1:])
            value = conn.exactly(length + 2)[:-2]
            yield DumpItem(key, value, flags)
        elif line != b"EN\r\n":
            raise ToolError(f"mg of key {key[:60]!r} answered {line.strip()[:80]!r}")


def dump_server(address: tuple[str, int], out: BinaryIO, batch: int, quiet: bool) -> TransferReport:
    try:
        return _dump_server(address, out, batch, quiet)
    except OSError as exc:
        raise ToolError(f"connection to the server lost: {exc}") from None


def _dump_server(
    address: tuple[str, int], out: BinaryIO, batch: int, quiet: bool
) -> TransferReport:
    lister, fetcher = TextConn(address), TextConn(address)
    try:
        progress = Progress("dump", quiet=quiet)

        def items() -> Iterator[DumpItem]:
            pending: list[bytes] = []
            for key in _listed_keys(lister):
                pending.append(key)
                if len(pending) == FETCH_BATCH:
                    yield from _fetched(fetcher, pending)
                    pending = []
            if pending:
                yield from _fetched(fetcher, pending)

        report = _write_items(items(), out, batch, progress)
    finally:
        lister.close()
        fetcher.close()
    progress.done()
    return report


# -- load -----------------------------------------------------------------------


def _batches(
    stream: BinaryIO, batch: int, max_cost: int = MAX_BATCH_COST
) -> Iterator[list[DumpItem]]:
    """Items in groups of at most ``batch`` items and ``max_cost`` bytes of
    server memory (an item bigger than that goes alone); a barrier in the
    stream also ends a group."""
    group: list[DumpItem] = []
    cost = 0
    for entry in dumpfmt.read(stream):
        if entry is None:
            if group:
                yield group
                group, cost = [], 0
            continue
        item_cost = len(entry.key) + len(entry.value) + ITEM_OVERHEAD
        if group and cost + item_cost > max_cost:
            yield group
            group, cost = [], 0
        group.append(entry)
        cost += item_cost
        if len(group) == batch:
            yield group
            group, cost = [], 0
    if group:
        yield group


def batch_budget(conn: TextConn) -> int:
    """The largest transaction to send: :data:`MAX_BATCH_COST`, or less when
    the server is a Stig whose ``--max-pending-bytes`` is small."""
    conn.send(b"stats settings\r\n")
    budget = MAX_BATCH_COST
    while True:
        line = conn.line()
        if line == b"END\r\n" or not line.startswith(b"STAT "):
            return budget
        fields = line.split()
        if len(fields) == 3 and fields[1] == b"stig_max_pending_bytes" and fields[2].isdigit():
            budget = min(budget, max(int(fields[2]) // WINDOW, 1))


def load_server(
    address: tuple[str, int], stream: BinaryIO, batch: int, quiet: bool, window: int = WINDOW
) -> TransferReport:
    """Send every item, ``batch`` at a time, each batch a quiet run closed by ``mn``.

    Up to ``window`` batches are in flight, so the server's commit of one
    overlaps the sending of the next.  A batch is also cut at
    :func:`batch_budget` bytes, so that no transaction exceeds what the
    server accepts.
    """
    conn = TextConn(address)
    report = TransferReport()
    progress = Progress("load", quiet=quiet)
    in_flight: deque[list[DumpItem]] = deque()
    encode = dumpfmt.encode_item

    def settle_oldest() -> None:
        """Read the oldest batch's replies up to its ``MN``.  If it had errors,
        first read every later batch's replies too (they are already on the
        wire), then find the refused keys of each batch that had errors."""
        errored = []
        while True:
            group = in_flight.popleft()
            if _replies_have_errors(conn):
                errored.append(group)
            progress.add(len(group), sum(len(item.value) for item in group))
            if not errored or not in_flight:
                break
        for group in errored:
            _name_refused(conn, group, report)

    try:
        try:
            budget = batch_budget(conn)
            for group in _batches(stream, batch, budget):
                conn.send(b"".join([encode(*item) for item in group]) + dumpfmt.BARRIER)
                in_flight.append(group)
                report.items += len(group)
                report.value_bytes += sum(len(item.value) for item in group)
                if len(in_flight) >= window:
                    settle_oldest()
            while in_flight:
                settle_oldest()
        except dumpfmt.DumpFormatError as exc:
            while in_flight:
                settle_oldest()
            raise ToolError(f"bad dump: {exc}") from None
        except OSError as exc:
            raise ToolError(f"connection to the server lost: {exc}") from None
    finally:
        conn.close()
    progress.done()
    return report


def _replies_have_errors(conn: TextConn) -> bool:
    """Read one batch's replies up to its ``MN``; whether any error came before it."""
    errors = False
    while True:
        line = conn.line()
        if line == b"MN\r\n":
            return errors
        errors = True


def _name_refused(conn: TextConn, group: list[DumpItem], report: TransferReport) -> None:
    """A quiet batch answered errors, which do not say their key: send each item
    again loudly (rewriting a value is harmless), each followed by ``mn`` so
    that a reply of several lines (memcached answers a bad command line, then
    ``ERROR`` for the value it did not read) cannot shift the next one, and
    record the ones refused."""
    for key, value, flags in group:
        token, b_flag = dumpfmt.key_token(key)
        conn.send(
            b"ms %b %d%b F%d\r\n%b\r\n" % (token, len(value), b_flag, flags, value)
            + dumpfmt.BARRIER
        )
        replies = []
        while (line := conn.line()) != b"MN\r\n":
            replies.append(line.strip().decode(errors="replace"))
        if replies[:1] != ["HD"]:
            report.refused.append((key, " / ".join(replies) or "no reply"))
