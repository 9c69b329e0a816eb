"""Two read shapes real clients send, timed against any memcached-protocol server.

* ``nagle``: a binary GetKQ and its No-op in two writes on a socket with
  Nagle's algorithm on (libmemcached's default: pylibmc ``binary=True``,
  php-memcached).  A server that holds the GetKQ's hit until the No-op
  stalls each round by the client's wait for an ACK (~40 ms); memcached,
  and Stig since issue 23, answer the hit at once.
* ``long-line``: one ``get`` line of 10,000 keys of 38 bytes (390 KB), half
  of them present: the best of five rounds.

    python3 scripts/read_latency.py --port 11211 [--rounds 200]

Prints one line per shape.  Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import socket
import struct
import time

HEADER = struct.Struct(">BBHBBHIIQ")  # a binary request header (memcached's protocol_binary.h)
SET, NOOP, GETKQ = 0x01, 0x0A, 0x0D


def _request(opcode: int, key: bytes = b"", value: bytes = b"", extras: bytes = b"") -> bytes:
    body = len(extras) + len(key) + len(value)
    return HEADER.pack(0x80, opcode, len(key), len(extras), 0, 0, body, 0, 0) + extras + key + value


def _response(sock: socket.socket, buffer: bytearray) -> bytes:
    """One whole binary response off ``sock`` (``buffer`` keeps what follows it)."""
    while len(buffer) < 24:
        buffer += sock.recv(65536)
    size = 24 + struct.unpack_from(">I", buffer, 8)[0]
    while len(buffer) < size:
        buffer += sock.recv(65536)
    response = bytes(buffer[:size])
    del buffer[:size]
    return response


def nagle_rounds(port: int, rounds: int) -> float:
    """Seconds for ``rounds`` GetKQ-hit-then-No-op rounds, two writes each, Nagle on."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        buffer = bytearray()
        sock.sendall(_request(SET, b"nagle", b"v", struct.pack(">II", 0, 0)))
        _response(sock, buffer)
        started = time.perf_counter()
        for _ in range(rounds):
            sock.sendall(_request(GETKQ, b"nagle"))
            sock.sendall(_request(NOOP))
            _response(sock, buffer)
            _response(sock, buffer)
        return time.perf_counter() - started


def long_line(port: int, keys: int = 10_000) -> tuple[int, float]:
    """The line's size and the best of five times to its ``END``."""
    names = [b"long-line-key:%024d" % i for i in range(keys)]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sets = b"".join(b"set %b 0 0 5 noreply\r\nvalue\r\n" % key for key in names[::2])
        sock.sendall(sets + b"version\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += sock.recv(65536)
        line = b"get " + b" ".join(names) + b"\r\n"
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            sock.sendall(line)
            reply = b""
            while not reply.endswith(b"END\r\n"):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    raise ConnectionError(f"closed: {reply[-80:]!r}")
                reply += chunk
            best = min(best, time.perf_counter() - started)
        return len(line), best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=11211)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    seconds = nagle_rounds(args.port, args.rounds)
    print(f"nagle: {args.rounds} GetKQ+No-op rounds in {seconds:.3f} s")
    try:
        size, best = long_line(args.port)
    except ConnectionError as exc:
        print(f"long-line: refused ({exc})")
    else:
        print(f"long-line: a {size:,}-byte get line answered in {best * 1000:.1f} ms (best of 5)")


if __name__ == "__main__":
    main()
