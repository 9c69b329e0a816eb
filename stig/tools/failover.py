"""``stig promote``: tell a running follower to become the primary (docs/replication.md).

The follower is told over its own port, as any client talks to it (TLS,
logins): one text line, ``stig_promote``, answered ``PROMOTED <epoch>
<seq>`` — the new epoch and its first group — or ``SERVER_ERROR <why>``
(it is a primary already, a promotion is under way).  A text command
rather than a signal: it works from another machine, through TLS and
``--auth-file``, and the answer says whether it happened.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from stig.tools.envtools import ToolError
from stig.tools.transfer import parse_address


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ToolError(f"the server closed the connection (after {data!r})")
        data += chunk
    return data[:-2]


def promote(
    server: str,
    *,
    auth_file: Path | None = None,
    tls: bool = False,
    tls_ca: Path | None = None,
    timeout: float = 60.0,
) -> tuple[int, int]:
    """Promote the follower at ``server`` (``HOST:PORT``); (epoch, first seq)
    of its new epoch.  ToolError with the server's words if it refused."""
    host, port = parse_address(server)
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise ToolError(f"cannot reach {server}: {exc}") from None
    sock: socket.socket = raw
    try:
        if tls or tls_ca is not None:
            context = ssl.create_default_context(cafile=None if tls_ca is None else str(tls_ca))
            sock = context.wrap_socket(raw, server_hostname=host)
        if auth_file is not None:
            user, _, password = auth_file.read_bytes().splitlines()[0].strip().partition(b":")
            login = user + b" " + password
            sock.sendall(b"set auth 0 0 %d\r\n%b\r\n" % (len(login), login))
            if (answer := _read_line(sock)) != b"STORED":
                raise ToolError(f"login refused: {answer.decode(errors='replace')}")
        sock.sendall(b"stig_promote\r\n")
        answer = _read_line(sock)
    except OSError as exc:
        raise ToolError(f"{server}: {exc}") from None
    finally:
        sock.close()
    words = answer.split()
    if len(words) != 3 or words[0] != b"PROMOTED":
        raise ToolError(f"{server} refused: {answer.decode(errors='replace')}")
    return int(words[1]), int(words[2])
