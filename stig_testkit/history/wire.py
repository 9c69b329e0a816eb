"""The bytes of the list-append workload in each protocol, and a blocking
connection that reads replies back.  No threads, no history: just encoding
and parsing, so each protocol's quirks stay in one place.

A list is held as its elements, each followed by a space (``"3 17 "``):
appending ``b"17 "`` extends it, ``split()`` reads it back.
"""

from __future__ import annotations

import socket
import struct
import time

#: Binary opcodes used here (memcached's protocol_binary.h).
GETK, GETKQ, APPEND, APPENDQ = 0x0C, 0x0D, 0x0E, 0x19
NOOP, VERSION, QUIT, QUITQ = 0x0A, 0x0B, 0x07, 0x17
REQUEST, RESPONSE = 0x80, 0x81
HEADER = struct.Struct(">BBHBBHIIQ")


class Broken(ConnectionError):
    """The connection died (or timed out) before the reply was whole."""


class WrongReply(AssertionError):
    """A reply the workload never expects: a bug of the server or of the client."""


def element_bytes(element: int) -> bytes:
    return b"%d " % element


def parse_list(data: bytes) -> tuple[int, ...]:
    try:
        return tuple(int(token) for token in data.split())
    except ValueError:
        raise WrongReply(f"not a list of integers: {data[:200]!r}") from None


# -- text and meta -------------------------------------------------------------


def text_append(key: str, element: int, noreply: bool) -> bytes:
    data = element_bytes(element)
    tail = b" noreply" if noreply else b""
    return b"append %s 0 0 %d%s\r\n%s\r\n" % (key.encode(), len(data), tail, data)


def meta_append(key: str, element: int, quiet: bool) -> bytes:
    data = element_bytes(element)
    return b"ms %s %d MA%s\r\n%s\r\n" % (key.encode(), len(data), b" q" if quiet else b"", data)


def text_get(keys: list[str]) -> bytes:
    return b"get %s\r\n" % b" ".join(k.encode() for k in keys)


def meta_gets(keys: list[str]) -> bytes:
    """A run of quiet ``mg`` read together, and ``mn`` to end it."""
    return b"".join(b"mg %s v k q\r\n" % k.encode() for k in keys) + b"mn\r\n"


def meta_gets_loud(keys: list[str]) -> bytes:
    """A run of loud ``mg`` and nothing after it: one reply per key."""
    return b"".join(b"mg %s v k\r\n" % k.encode() for k in keys)


def create_keys_text(keys: list[str]) -> bytes:
    """Every key set empty, then ``mn``: on Stig, ``MN`` means on disk."""
    return b"".join(b"set %s 0 0 0 noreply\r\n\r\n" % k.encode() for k in keys) + b"mn\r\n"


# -- binary ----------------------------------------------------------------------


def binary_request(opcode: int, key: str = "", value: bytes = b"", opaque: int = 0) -> bytes:
    raw_key = key.encode()
    body = len(raw_key) + len(value)
    return HEADER.pack(REQUEST, opcode, len(raw_key), 0, 0, 0, body, opaque, 0) + raw_key + value


class Connection:
    """A blocking TCP connection with a receive buffer.

    ``sent`` and ``received`` keep this transaction's bytes (trimmed) for the
    history; :meth:`mark` starts a new transaction's record.
    """

    def __init__(self, host: str, port: int, timeout: float) -> None:
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as error:
            raise Broken(f"connect: {error}") from error
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.sent = b""
        self.received = b""

    def mark(self) -> None:
        self.sent = b""
        self.received = b""

    def send(self, data: bytes) -> None:
        self.sent += data[:2000]
        try:
            self.sock.sendall(data)
        except OSError as error:
            raise Broken(f"send: {error}") from error

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(262144)
        except OSError as error:  # timeouts included
            raise Broken(f"recv: {error}") from error
        if not chunk:
            raise Broken("closed by the server")
        if len(self.received) < 4000:
            self.received += chunk[:4000]
        self.buffer += chunk

    def line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
        return line

    def exact(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._fill()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def expect_line(self, prefix: bytes) -> float:
        """Read one line that must start with ``prefix``; when it arrived."""
        line = self.line()
        if not line.startswith(prefix):
            raise WrongReply(f"expected {prefix!r}, got {line[:200]!r}")
        return time.monotonic()

    def wait_eof(self) -> None:
        """Until the server closes the connection (after ``quit``, or our FIN)."""
        try:
            while True:
                self._fill()
        except Broken:
            return

    def half_close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as error:
            raise Broken(f"shutdown: {error}") from error

    def close(self) -> None:
        self.sock.close()

    # -- replies of reads ---------------------------------------------------

    def text_values(self, first: list[float]) -> dict[str, tuple[int, ...]]:
        """``VALUE`` lines until ``END``; ``first`` gets the time of the first line."""
        found: dict[str, tuple[int, ...]] = {}
        while True:
            line = self.line()
            if not first:
                first.append(time.monotonic())
            if line == b"END":
                return found
            parts = line.split()
            if len(parts) < 4 or parts[0] != b"VALUE":
                raise WrongReply(f"in a get reply: {line[:200]!r}")
            found[parts[1].decode()] = parse_list(self.exact(int(parts[3]) + 2)[:-2])

    def meta_values(
        self, first: list[float], count: int | None = None
    ) -> dict[str, tuple[int, ...]]:
        """``VA`` replies (with a ``k`` flag) until ``MN``, or ``count`` of them."""
        found: dict[str, tuple[int, ...]] = {}
        while True:
            if count is not None and len(found) == count:
                return found
            line = self.line()
            if not first:
                first.append(time.monotonic())
            if line == b"MN" and count is None:
                return found
            parts = line.split()
            if len(parts) < 2 or parts[0] != b"VA":
                raise WrongReply(f"in an mg reply: {line[:200]!r}")
            keys = [p[1:].decode() for p in parts[2:] if p.startswith(b"k")]
            if len(keys) != 1:
                raise WrongReply(f"mg reply without its key: {line[:200]!r}")
            found[keys[0]] = parse_list(self.exact(int(parts[1]) + 2)[:-2])

    def binary_response(self) -> tuple[int, int, str, bytes]:
        """One response: (opcode, status, key, value)."""
        header = self.exact(24)
        magic, opcode, key_length, extras, _, status, body, _, _ = HEADER.unpack(header)
        if magic != RESPONSE:
            raise WrongReply(f"bad response magic {magic:#x}")
        payload = self.exact(body)
        key = payload[extras : extras + key_length].decode("latin-1")
        return opcode, status, key, payload[extras + key_length :]

    def binary_expect(self, opcode: int) -> float:
        got, status, _, value = self.binary_response()
        if got != opcode or status != 0:
            raise WrongReply(
                f"expected opcode {opcode:#x} ok, got {got:#x} status {status:#x} {value[:200]!r}"
            )
        return time.monotonic()

    def binary_values(self, until: int, first: list[float]) -> dict[str, tuple[int, ...]]:
        """GetK/GetKQ hits until the response of opcode ``until``."""
        found: dict[str, tuple[int, ...]] = {}
        while True:
            opcode, status, key, value = self.binary_response()
            if not first:
                first.append(time.monotonic())
            if status != 0:
                raise WrongReply(f"opcode {opcode:#x} status {status:#x}: {value[:200]!r}")
            if opcode in (GETK, GETKQ):
                found[key] = parse_list(value)
                if opcode == until:
                    return found
            elif opcode == until:
                return found
            else:
                raise WrongReply(f"unexpected opcode {opcode:#x} in a read")
