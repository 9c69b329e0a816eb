"""A connection whose client never lets its input run dry starves no other.

The connection loop reads and answers its socket without trio's wrappers
(stig/server/plain_socket.py), so nothing but its own checkpoints hands the
event loop to other tasks while data keeps coming.  The bound
(stig/server/connection.py): between two scheduler passes a connection
handles one receive (at most ``RECEIVE_SIZE`` bytes) and at most
``YIELD_EVERY`` commands.  A flood that fills the server's socket faster
than it is answered, while its replies are read as fast as they come, never
makes the loop wait; another connection must still be answered meanwhile.
"""

from __future__ import annotations

import socket
import threading
import time

from stig_testkit.process import StigProcess

#: One request of the flood (a miss: five bytes back) and the chunk sent at once.
REQUEST = b"get flood-key\r\n"
CHUNK = REQUEST * (1 << 16)
#: The flood stops by itself after this long at most (the test stops it first).
FLOOD_SECONDS = 60.0
#: Replies received before the flood counts as under way.
UNDER_WAY = 1 << 20


class Flood:
    """A client that sends gets without pause and reads every reply, on two threads."""

    def __init__(self, server: StigProcess) -> None:
        self.sock = socket.create_connection((server.host, server.port))
        self.stop = threading.Event()
        self.under_way = threading.Event()
        self.sending = True
        self.received = 0
        self._threads = [
            threading.Thread(target=self._send, daemon=True),
            threading.Thread(target=self._read, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _send(self) -> None:
        deadline = time.monotonic() + FLOOD_SECONDS
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                self.sock.sendall(CHUNK)
        except OSError:
            pass
        finally:
            self.sending = False

    def _read(self) -> None:
        try:
            while chunk := self.sock.recv(1 << 20):
                self.received += len(chunk)
                if self.received >= UNDER_WAY:
                    self.under_way.set()
        except OSError:
            pass

    def close(self) -> None:
        self.stop.set()
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for thread in self._threads:
            thread.join(timeout=10)


def test_a_flooding_connection_starves_no_other(stig_server: StigProcess) -> None:
    with stig_server.connect() as other:
        flood = Flood(stig_server)
        try:
            assert flood.under_way.wait(timeout=30), "the flood was never answered"
            # Answered within the IO timeout while the flood goes on: the
            # flooding connection let the event loop go meanwhile.
            assert other.send_recv(b"version\r\n", b"\r\n").startswith(b"VERSION ")
            assert flood.sending, "the flood ended first"
        finally:
            flood.close()
