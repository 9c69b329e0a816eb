"""The ceiling for any trio server on this machine: a bare memcached-ish echo.

It answers the memcached text protocol without storing anything:

* ``get``/``gets``/``gat``/``gats`` (any number of keys) -> ``END`` (a miss),
* storage commands (``set``/``add``/``replace``/``append``/``prepend``/``cas``
  plus their data block) -> ``STORED`` (nothing with ``noreply``),
* meta ``ms <key> <datalen> [flags]`` + data block -> ``HD`` (nothing with the
  ``q`` flag), ``mg`` -> ``EN`` (nothing with ``q``), ``mn`` -> ``MN``,
* ``version`` -> ``VERSION``, ``quit`` closes, anything else -> ``ERROR``.

Why: Stig is a trio server; whatever Stig does per request costs on top of what
trio's event loop, a raw ``trio.socket`` recv and send, and the minimum of
parsing cost.  This server measures that floor so Stig's figures can be read
as a ratio to it.  It uses raw ``trio.socket`` (not ``SocketStream``, which
costs ~25 % more per round trip here), parses just enough to stay in sync with
pipelined input (many commands per ``recv``), and sends one reply per burst.

Run: ``python scripts/bare_trio_server.py --port 11311``.  It prints
``bare-trio listening on HOST:PORT`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import socket

import trio

RECV_SIZE = 256 * 1024
STORAGE = frozenset((b"set", b"add", b"replace", b"append", b"prepend", b"cas"))
RETRIEVAL = frozenset((b"get", b"gets", b"gat", b"gats"))


def respond(buf: bytearray, out: bytearray) -> tuple[int, bool]:
    """Answer every complete command in ``buf``; append replies to ``out``.

    Returns ``(consumed, close)``: how many bytes of ``buf`` were whole
    commands (the caller drops them) and whether ``quit`` was seen.  A storage
    command whose data block has not fully arrived is left in ``buf``.
    """
    pos = 0
    end = len(buf)
    while pos < end:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            break
        line = bytes(buf[pos:eol])
        tokens = line.split()
        cmd = tokens[0] if tokens else b""
        if cmd in RETRIEVAL:
            out += b"END\r\n"
            pos = eol + 2
        elif cmd in STORAGE or cmd == b"ms":
            try:
                nbytes = int(tokens[2] if cmd == b"ms" else tokens[4])
            except (IndexError, ValueError):
                out += b"CLIENT_ERROR bad command line format\r\n"
                pos = eol + 2
                continue
            block_end = eol + 2 + nbytes + 2
            if block_end > end:
                break  # wait for the rest of the data block
            pos = block_end
            if cmd == b"ms":
                if b"q" not in tokens[3:]:
                    out += b"HD\r\n"
            elif tokens[-1] != b"noreply":
                out += b"STORED\r\n"
        elif cmd == b"mg":
            if b"q" not in tokens[2:]:
                out += b"EN\r\n"
            pos = eol + 2
        elif cmd == b"mn":
            out += b"MN\r\n"
            pos = eol + 2
        elif cmd == b"version":
            out += b"VERSION bare-trio\r\n"
            pos = eol + 2
        elif cmd == b"quit":
            return eol + 2, True
        else:
            out += b"ERROR\r\n"
            pos = eol + 2
    return pos, False


async def send_all(sock: trio.socket.SocketType, data: bytes | bytearray) -> None:
    """Send every byte of ``data`` (``trio.socket.send`` may send part)."""
    view = memoryview(data)
    while view:
        sent = await sock.send(view)
        view = view[sent:]


async def serve_connection(sock: trio.socket.SocketType) -> None:
    """Read bursts, answer every whole command in them with one send."""
    buf = bytearray()
    with sock:
        try:
            while True:
                data = await sock.recv(RECV_SIZE)
                if not data:
                    return
                buf += data
                out = bytearray()
                consumed, close = respond(buf, out)
                del buf[:consumed]
                if out:
                    await send_all(sock, out)
                if close:
                    return
        except (ConnectionError, OSError):
            return


async def serve(host: str, port: int) -> None:
    """Accept connections forever; one task per connection."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = trio.socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await listener.bind((host, port))
    listener.listen(1024)
    bound = listener.getsockname()[1]
    print(f"bare-trio listening on {host}:{bound}", flush=True)
    async with trio.open_nursery() as nursery:
        while True:
            sock, _ = await listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(serve_connection, sock)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=11311, help="TCP port (0 picks a free one)")
    args = parser.parse_args()
    try:
        trio.run(serve, args.listen, args.port)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
