"""Which link is cheaper between a worker and the writer process (docs/workers.md)?

Measures the round trip of one group-sized frame between two processes:

* ``socket``: an AF_UNIX socketpair, length-prefixed frames (what Stig uses);
* ``ring``: a ``multiprocessing.shared_memory`` buffer per direction with an
  eventfd per direction for the wake-ups.

The child echoes a small answer per frame, as the writer does. Prints the
microseconds per round trip and the CPU of both processes per round trip.
Usage: ``python3 scripts/ipc_bench.py [--size 7000] [--count 20000]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import struct
import time
from multiprocessing import shared_memory

_LEN = struct.Struct("<Q")


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _socket_child(sock: socket.socket, count: int) -> None:
    answer = b"x" * 64
    for _ in range(count):
        size = _LEN.unpack(_recv_exact(sock, 8))[0]
        _recv_exact(sock, size)
        sock.sendall(_LEN.pack(len(answer)) + answer)


def _socket_run(payload: bytes, count: int) -> None:
    parent, child = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        parent.close()
        _socket_child(child, count)
        os._exit(0)
    child.close()
    frame = _LEN.pack(len(payload)) + payload
    for _ in range(count):
        parent.sendall(frame)
        size = _LEN.unpack(_recv_exact(parent, 8))[0]
        _recv_exact(parent, size)
    os.waitpid(pid, 0)


def _ring_run(payload: bytes, count: int) -> None:
    down = shared_memory.SharedMemory(create=True, size=len(payload) + 8)
    up = shared_memory.SharedMemory(create=True, size=4096)
    to_child = os.eventfd(0)
    to_parent = os.eventfd(0)
    pid = os.fork()
    if pid == 0:
        answer = b"x" * 64
        for _ in range(count):
            os.eventfd_read(to_child)
            size = _LEN.unpack_from(down.buf, 0)[0]
            bytes(down.buf[8 : 8 + size])
            _LEN.pack_into(up.buf, 0, len(answer))
            up.buf[8 : 8 + len(answer)] = answer
            os.eventfd_write(to_parent, 1)
        os._exit(0)
    for _ in range(count):
        _LEN.pack_into(down.buf, 0, len(payload))
        down.buf[8 : 8 + len(payload)] = payload
        os.eventfd_write(to_child, 1)
        os.eventfd_read(to_parent)
        size = _LEN.unpack_from(up.buf, 0)[0]
        bytes(up.buf[8 : 8 + size])
    os.waitpid(pid, 0)
    for segment in (down, up):
        segment.close()
        segment.unlink()


def _measure(name: str, run, payload: bytes, count: int) -> None:  # type: ignore[no-untyped-def]
    before_self = resource.getrusage(resource.RUSAGE_SELF)
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    run(payload, count)
    wall = time.perf_counter() - started
    after_self = resource.getrusage(resource.RUSAGE_SELF)
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (
        after_self.ru_utime
        + after_self.ru_stime
        - before_self.ru_utime
        - before_self.ru_stime
        + after_children.ru_utime
        + after_children.ru_stime
        - before_children.ru_utime
        - before_children.ru_stime
    )
    print(
        f"{name:7} {len(payload):>8} B  {wall / count * 1e6:7.1f} us/round trip  "
        f"{cpu / count * 1e6:7.1f} us CPU (both processes)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, action="append", help="frame bytes (repeatable)")
    parser.add_argument("--count", type=int, default=20_000)
    args = parser.parse_args()
    for size in args.size or [200, 7_000, 200_000]:
        payload = os.urandom(size)
        count = max(args.count * 7_000 // max(size, 7_000), 200)
        for _ in range(2):  # alternated
            _measure("socket", _socket_run, payload, count)
            _measure("ring", _ring_run, payload, count)


if __name__ == "__main__":
    main()
