"""Just enough of the three memcached protocols for the soak's clients, over trio.

:class:`Wire` is a buffered trio stream (receive up to a terminator, or an
exact count); the ``text_*``, ``meta_*`` and ``bin_*`` functions build
requests and read their replies, raising :class:`WrongReply` on anything a
correct server would not answer.  Clients here check what they read; they
never interpret an error as a result.
"""

from __future__ import annotations

import socket
import struct

import attrs
import trio

HEADER = struct.Struct(">BBHBBHIIQ")
REQUEST, RESPONSE = 0x80, 0x81
GET, SET, DELETE, INCREMENT, NOOP, GETK, SETQ, GETKQ = (
    0x00,
    0x01,
    0x04,
    0x05,
    0x0A,
    0x0C,
    0x11,
    0x0D,
)
KEY_ENOENT = 0x0001


class WrongReply(Exception):
    """A reply no correct server would send to this request (or none at all)."""


class Wire:
    """A trio TCP stream with a receive buffer."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    @classmethod
    async def connect(cls, port: int, rcvbuf: int = 0) -> Wire:
        """A connection to 127.0.0.1:``port`` (``rcvbuf``: a small receive buffer, for
        clients that stop reading, so the server notices soon)."""
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rcvbuf:
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        return cls(stream)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> None:
        chunk = await self.stream.receive_some(65536)
        if not chunk:
            raise WrongReply(f"connection closed by the server; had {bytes(self.buffer[:120])!r}")
        self.buffer += chunk

    async def line(self) -> bytes:
        """One line, without its ``\\r\\n``."""
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                return line
            if len(self.buffer) > 4096:
                raise WrongReply(f"line too long: {bytes(self.buffer[:120])!r}")
            await self._fill()

    async def exact(self, count: int) -> bytes:
        while len(self.buffer) < count:
            await self._fill()
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    async def drain(self, count: int) -> None:
        """Read and drop ``count`` bytes (big values nobody checks)."""
        while count > 0:
            if not self.buffer:
                await self._fill()
            taken = min(count, len(self.buffer))
            del self.buffer[:taken]
            count -= taken

    async def close(self) -> None:
        """A clean close (FIN)."""
        with trio.move_on_after(5):
            await self.stream.aclose()

    async def reset(self) -> None:
        """An abortive close (RST): SO_LINGER with a zero timeout."""
        try:
            self.stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        await self.close()


# -- text ---------------------------------------------------------------------------------


def text_set(key: bytes, value: bytes, noreply: bool = False) -> bytes:
    tail = b" noreply" if noreply else b""
    return b"set %b 0 0 %d%b\r\n%b\r\n" % (key, len(value), tail, value)


def text_get(*keys: bytes) -> bytes:
    return b"get " + b" ".join(keys) + b"\r\n"


async def text_values(wire: Wire) -> dict[bytes, bytes]:
    """The ``VALUE`` blocks of a get reply, up to ``END``."""
    values: dict[bytes, bytes] = {}
    while True:
        line = await wire.line()
        if line == b"END":
            return values
        parts = line.split()
        if len(parts) < 4 or parts[0] != b"VALUE":
            raise WrongReply(f"get answered {line[:120]!r}")
        data = await wire.exact(int(parts[3]) + 2)
        if data[-2:] != b"\r\n":
            raise WrongReply(f"value of {parts[1]!r} not followed by CRLF")
        values[parts[1]] = data[:-2]


async def expect_line(wire: Wire, *accepted: bytes, prefix: bool = False) -> bytes:
    """The next line, which must be one of ``accepted`` (or start with one)."""
    line = await wire.line()
    if any(line.startswith(a) if prefix else line == a for a in accepted):
        return line
    raise WrongReply(f"expected {accepted!r}, got {line[:120]!r}")


# -- meta ---------------------------------------------------------------------------------


def meta_set(key: bytes, value: bytes, quiet: bool = False) -> bytes:
    tail = b" q" if quiet else b""
    return b"ms %b %d T0%b\r\n%b\r\n" % (key, len(value), tail, value)


def meta_get(key: bytes) -> bytes:
    return b"mg %b v k\r\n" % key


async def meta_value(wire: Wire) -> tuple[bytes, bytes] | None:
    """The reply of one ``mg … v k``: (key, value), or None for a miss."""
    line = await wire.line()
    if line == b"EN" or line.startswith(b"EN "):  # a miss, with the flags asked for
        return None
    parts = line.split()
    if len(parts) < 3 or parts[0] != b"VA" or not parts[2].startswith(b"k"):
        raise WrongReply(f"mg answered {line[:120]!r}")
    data = await wire.exact(int(parts[1]) + 2)
    if data[-2:] != b"\r\n":
        raise WrongReply("meta value not followed by CRLF")
    return parts[2][1:], data[:-2]


# -- binary -------------------------------------------------------------------------------


def bin_request(
    opcode: int, key: bytes = b"", value: bytes = b"", extras: bytes = b"", opaque: int = 0
) -> bytes:
    body = len(extras) + len(key) + len(value)
    head = HEADER.pack(REQUEST, opcode, len(key), len(extras), 0, 0, body, opaque, 0)
    return head + extras + key + value


def bin_set(key: bytes, value: bytes, quiet: bool = False, opaque: int = 0) -> bytes:
    return bin_request(SETQ if quiet else SET, key, value, struct.pack(">II", 0, 0), opaque)


def bin_incr(key: bytes, delta: int = 1, opaque: int = 0) -> bytes:
    extras = struct.pack(">QQI", delta, 0, 0xFFFFFFFF)  # never create the counter
    return bin_request(INCREMENT, key, b"", extras, opaque)


@attrs.frozen
class BinReply:
    """One binary response."""

    opcode: int
    status: int
    opaque: int
    key: bytes
    value: bytes


async def bin_reply(wire: Wire) -> BinReply:
    head = await wire.exact(24)
    magic, opcode, keylen, extlen, _dt, status, body, opaque, _cas = HEADER.unpack(head)
    if magic != RESPONSE:
        raise WrongReply(f"binary reply with magic {magic:#x}")
    data = await wire.exact(body)
    return BinReply(opcode, status, opaque, data[extlen : extlen + keylen], data[extlen + keylen :])


async def bin_expect(wire: Wire, opcode: int, *statuses: int, opaque: int = 0) -> BinReply:
    """The next response, which must answer ``opcode``/``opaque`` with one of ``statuses``."""
    reply = await bin_reply(wire)
    if reply.opcode != opcode or reply.status not in statuses or reply.opaque != opaque:
        raise WrongReply(
            f"binary {opcode:#x} answered opcode {reply.opcode:#x} status {reply.status:#x} "
            f"opaque {reply.opaque}: {reply.value[:120]!r}"
        )
    return reply
