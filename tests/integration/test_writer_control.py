"""The writer's control socket to the supervisor (``--workers N``) ends
quietly however the supervisor closes it (issue 20).

As the workers stop, the writer tells the supervisor that it released each
one's in-flight writes; a supervisor that is stopping closes its end
without reading the last of them, and the writer's next read of the socket
is then a reset, not an end of file.  It ended the writer with a traceback
on stderr — lines without the log's format, which
tests/operations/test_service.py's ``test_logs_elsewhere_keep_their_timestamps``
caught about 1 run in 5 under ``--workers 2``.
"""

from __future__ import annotations

import selectors
import socket

from stig.engine import writer
from stig.engine.writer import CONTROL_RELEASED


def _pair() -> tuple[socket.socket, socket.socket]:
    """The supervisor's end and the writer's, as the supervisor makes them."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def test_a_control_socket_closed_with_messages_unread_ends_the_writers_loop() -> None:
    supervisor, mine = _pair()
    writer._tell(mine, (CONTROL_RELEASED, 0))  # never read
    supervisor.close()
    with mine, selectors.DefaultSelector() as selector:
        assert writer._control(mine, [], None, selector) is False  # type: ignore[arg-type]


def test_a_control_socket_closed_cleanly_ends_the_writers_loop() -> None:
    supervisor, mine = _pair()
    supervisor.close()
    with mine, selectors.DefaultSelector() as selector:
        assert writer._control(mine, [], None, selector) is False  # type: ignore[arg-type]
