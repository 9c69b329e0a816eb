"""Replies of the memcached text protocol, as bytes.

Exact strings from memcached 1.6 ``doc/protocol.txt``; the server never
builds a reply line anywhere else.
"""

from __future__ import annotations

from collections.abc import Iterable

STORED = b"STORED\r\n"
NOT_STORED = b"NOT_STORED\r\n"
EXISTS = b"EXISTS\r\n"
NOT_FOUND = b"NOT_FOUND\r\n"
DELETED = b"DELETED\r\n"
TOUCHED = b"TOUCHED\r\n"
OK = b"OK\r\n"
END = b"END\r\n"
ERROR = b"ERROR\r\n"
RESET = b"RESET\r\n"


#: One ``VALUE`` entry as a template: ``VALUE_LINE % (key, flags, len(data), data)``.
VALUE_LINE = b"VALUE %b %d %d\r\n%b\r\n"
#: The whole reply to a get of one key found: ``% (key, flags, len(data), data)``.
ONE_VALUE = b"VALUE %b %d %d\r\n%b\r\nEND\r\n"
#: The same with the cas: ``VALUE_LINE_CAS % (key, flags, len(data), cas, data)``.
VALUE_LINE_CAS = b"VALUE %b %d %d %d\r\n%b\r\n"


def value(key: bytes, flags: int, data: bytes, cas: int | None = None) -> bytes:
    """One ``VALUE`` entry of a retrieval reply (without the closing END)."""
    if cas is None:
        head = b"VALUE %b %d %d\r\n" % (key, flags, len(data))
    else:
        head = b"VALUE %b %d %d %d\r\n" % (key, flags, len(data), cas)
    return head + data + b"\r\n"


def number(n: int) -> bytes:
    """The reply to a successful ``incr``/``decr``."""
    return b"%d\r\n" % n


def version(text: str) -> bytes:
    return b"VERSION %b\r\n" % text.encode()


def stats(pairs: Iterable[tuple[str, object]]) -> bytes:
    """``STAT name value`` lines closed by ``END``."""
    lines = [b"STAT %b %b\r\n" % (name.encode(), str(val).encode()) for name, val in pairs]
    lines.append(END)
    return b"".join(lines)


def client_error(message: str) -> bytes:
    return b"CLIENT_ERROR %b\r\n" % message.encode()


def server_error(message: str) -> bytes:
    return b"SERVER_ERROR %b\r\n" % message.encode()
