"""Raw client connections for exact-reply tests: bytes out, bytes in.

:class:`RawConnection` reads replies until a terminator (or exactly N bytes)
with a deadline, so a missing reply fails the caller instead of hanging it;
:class:`BinaryConnection` adds the binary protocol's requests and decoded
responses.  Used by the tests' server fixtures, the power-cut clients and the
scripts alike.
"""

from __future__ import annotations

import socket
import time

#: Seconds a reply may take by default.
IO_TIMEOUT = 5.0
#: The opaque of :meth:`BinaryConnection.barrier`'s No-op.
BARRIER_OPAQUE = 0xBA771E5


class RawConnection:
    """One TCP connection speaking raw bytes; replies are read until a terminator."""

    def __init__(self, host: str, port: int, timeout: float = IO_TIMEOUT) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_until(self, until: bytes | None = b"END\r\n", timeout: float = IO_TIMEOUT) -> bytes:
        """Everything received until the data ends with ``until``.

        ``until=None`` reads until the server closes the connection.  A
        timeout raises with what had arrived, so a missing reply fails the
        test instead of hanging it.
        """
        deadline = time.monotonic() + timeout
        while until is None or not self.buffer.endswith(until):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {until!r} after {timeout}s; got {self.buffer!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                if until is None:
                    break
                raise ConnectionError(f"closed before {until!r}; got {self.buffer!r}")
            self.buffer += chunk
        data, self.buffer = self.buffer, b""
        return data

    def send_recv(
        self, data: bytes, until: bytes | None = b"END\r\n", timeout: float = IO_TIMEOUT
    ) -> bytes:
        self.send(data)
        return self.recv_until(until, timeout)

    def recv_exact(self, count: int, timeout: float = IO_TIMEOUT) -> bytes:
        """Exactly ``count`` bytes (binary protocol headers and bodies)."""
        deadline = time.monotonic() + timeout
        while len(self.buffer) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{count} bytes not received in {timeout}s; got {self.buffer!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise ConnectionError(f"closed before {count} bytes; got {self.buffer!r}")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def barrier(self, timeout: float = IO_TIMEOUT) -> bytes:
        """Every byte the server sent before its answer to a ``version`` sent now.

        The server answers in order, so once the ``VERSION`` line is here,
        its answers to everything sent before it are here too: ``== b""``
        proves that those commands said nothing, which no receive timeout
        can prove (a loaded server may just not have answered yet).  Text
        and meta connections; binary ones: :meth:`BinaryConnection.barrier`.
        """
        self.send(b"version\r\n")
        deadline = time.monotonic() + timeout
        received = b""
        while True:
            received += self.recv_until(b"\r\n", deadline - time.monotonic())
            last = received[:-2].rpartition(b"\r\n")[2]
            if last.startswith(b"VERSION "):
                return received[: len(received) - len(last) - 2]

    def is_closed_by_peer(self, timeout: float = IO_TIMEOUT) -> bool:
        """True when the server closes the connection within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buffer += chunk
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BinaryConnection(RawConnection):
    """A raw connection speaking the binary protocol: requests out, decoded responses in."""

    def request(
        self, opcode: int, key: bytes = b"", value: bytes = b"", extras: bytes = b"", **fields: int
    ) -> None:
        """Send one request (``cas``, ``opaque``, ``magic``… as keywords)."""
        from stig_protocol.binary import encode_request

        self.send(encode_request(opcode, key, value, extras, **fields))

    def response(self, timeout: float = IO_TIMEOUT):  # -> stig_protocol.binary.BinaryResponse
        """The next response, whole."""
        import struct

        from stig_protocol.binary import decode_response

        header = self.recv_exact(24, timeout)
        body_length = struct.unpack_from(">I", header, 8)[0]
        decoded = decode_response(header + self.recv_exact(body_length, timeout))
        assert decoded is not None
        return decoded[0]

    def call(
        self, opcode: int, key: bytes = b"", value: bytes = b"", extras: bytes = b"", **fields: int
    ):  # -> stig_protocol.binary.BinaryResponse
        """Send one request and return its response."""
        self.request(opcode, key, value, extras, **fields)
        return self.response()

    def barrier(self, timeout: float = IO_TIMEOUT) -> list:  # [stig_protocol.binary.BinaryResponse]
        """Every response the server sent before its answer to a No-op sent now
        (see :meth:`RawConnection.barrier`): ``== []`` proves silence."""
        from stig_protocol.binary import Opcode

        self.request(Opcode.Noop, opaque=BARRIER_OPAQUE)
        before = []
        while True:
            response = self.response(timeout)
            if response.opcode == Opcode.Noop and response.opaque == BARRIER_OPAQUE:
                return before
            before.append(response)
