"""The soak's key space and values: small, fixed, and checkable by any reader.

Nothing the soak writes grows the key space over time, so the data (and so
the server's memory and disk) can level off:

* ``sk:<i>`` shared keys, written by writers and read by readers; a value is
  ``<key>|<seq>|`` padded with dots, so a reader can tell a value of another
  key (a misrouted reply) from a right one;
* ``sc:<i>`` counters, incremented, never deleted;
* ``so:<conn>:<i>`` a writer's own keys, which only it writes: it reads back
  exactly what it wrote;
* ``tg:<g>:<j>`` transaction groups: every transaction writes one token to
  all ``GROUP_SIZE`` keys of a group, so a read of a group (one snapshot)
  must find them all equal; hostile runs that are cut mid-command write
  tokens starting ``ABORT``, which no reader may ever see;
* ``sb:<i>`` big values (floods rewrite them; never-readers ask for them);
* ``sh:<i>`` keys of half-sent commands that are sometimes finished.
"""

from __future__ import annotations

SHARED_KEYS = 4000
COUNTERS = 100
OWN_KEYS = 16
GROUPS = 64
GROUP_SIZE = 8
BIG_KEYS = 8
BIG_SIZE = 1_000_000  # below the default --max-item-size (1 MiB)
HALF_KEYS = 64
ABORT = b"ABORT"


def shared_key(i: int) -> bytes:
    return b"sk:%d" % i


def counter_key(i: int) -> bytes:
    return b"sc:%d" % i


def own_key(conn: int, i: int) -> bytes:
    return b"so:%d:%d" % (conn, i)


def group_keys(group: int) -> list[bytes]:
    return [b"tg:%d:%d" % (group, j) for j in range(GROUP_SIZE)]


def big_key(i: int) -> bytes:
    return b"sb:%d" % i


def half_key(i: int) -> bytes:
    return b"sh:%d" % i


def value(key: bytes, seq: int, size: int) -> bytes:
    """``<key>|<seq>|`` padded with dots to ``size`` bytes (or longer, never cut)."""
    head = b"%b|%d|" % (key, seq)
    return head + b"." * (size - len(head))


def belongs(key: bytes, data: bytes) -> bool:
    """Whether ``data`` is a value :func:`value` made for ``key``."""
    return data.startswith(key + b"|")


def preload() -> list[bytes]:
    """Text requests that give every shared key, counter, group and big key a
    value, in chunks each closed by ``mn`` (answered ``MN``)."""
    chunks: list[bytes] = []
    parts: list[bytes] = []

    def add(key: bytes, data: bytes) -> None:
        parts.append(b"set %b 0 0 %d noreply\r\n%b\r\n" % (key, len(data), data))
        if len(parts) >= 500:
            flush()

    def flush() -> None:
        if parts:
            chunks.append(b"".join(parts) + b"mn\r\n")
            parts.clear()

    for i in range(SHARED_KEYS):
        add(shared_key(i), value(shared_key(i), 0, 100))
    for i in range(COUNTERS):
        add(counter_key(i), b"0")
    for g in range(GROUPS):
        for key in group_keys(g):
            add(key, b"T0.0")
    flush()
    for i in range(BIG_KEYS):
        add(big_key(i), b"B" * BIG_SIZE)
        flush()
    return chunks
