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
import struct
import threading
import time

import pytest

from stig_testkit.process import StigProcess

#: One request of the flood (a miss: five bytes back).
REQUEST = b"get flood-key\r\n"
#: A binary GetKQ of a key that is there, never followed by the No-op that
#: ends its run: the run is read without awaiting anything, one stretch of
#: READ_RUN_STRETCH gets at a time (the hostile review of issue 22).
GETKQ = struct.pack(">BBHBBHIIQ", 0x80, 0x0D, 9, 0, 0, 0, 9, 0, 0) + b"flood-key"
#: The flood stops by itself after this long at most (the test stops it first).
FLOOD_SECONDS = 60.0
#: Replies received before the flood counts as under way.
UNDER_WAY = 1 << 20


class Flood:
    """A client that sends gets without pause and reads every reply, on two threads."""

    def __init__(self, server: StigProcess, request: bytes) -> None:
        self.sock = socket.create_connection((server.host, server.port))
        self.chunk = request * ((1 << 20) // len(request))
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
                self.sock.sendall(self.chunk)
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


@pytest.mark.parametrize("request_", [REQUEST, GETKQ], ids=["get", "getkq-run"])
def test_a_flooding_connection_starves_no_other(stig_server: StigProcess, request_: bytes) -> None:
    with stig_server.connect() as other:
        assert other.send_recv(b"set flood-key 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
        flood = Flood(stig_server, request_)
        try:
            assert flood.under_way.wait(timeout=30), "the flood was never answered"
            # Answered within the IO timeout while the flood goes on: the
            # flooding connection let the event loop go meanwhile.
            assert other.send_recv(b"version\r\n", b"\r\n").startswith(b"VERSION ")
            assert flood.sending, "the flood ended first"
        finally:
            flood.close()
