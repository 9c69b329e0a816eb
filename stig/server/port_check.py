"""Whether a process other than this server listens on a TCP port (Linux).

``stig serve --workers N`` listens with ``SO_REUSEPORT`` (one socket per
worker, so the kernel spreads the connections over them).  The kernel lets
any other socket of the same user with ``SO_REUSEPORT`` join that group, and
then splits the connections between two servers — two databases — without a
word.  So the supervisor, once its sockets listen and before any worker
accepts, looks at every listening socket of the network namespace
(``/proc/net/tcp`` and ``tcp6``) and refuses to serve if one on its port is
not its own.  Two servers starting at once both see each other and both
stop: the check fails closed.
"""

from __future__ import annotations

from pathlib import Path

#: The kernel's tables of TCP sockets, one line per socket.
TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
_LISTEN = "0A"  #: TCP_LISTEN in the ``st`` column


def listeners_on(port: int, tables: tuple[Path, ...] = TABLES) -> set[int]:
    """The inode numbers of the sockets listening on ``port`` (any address)."""
    found: set[int] = set()
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            if int(fields[1].rpartition(":")[2], 16) == port:
                found.add(int(fields[9]))
    return found
