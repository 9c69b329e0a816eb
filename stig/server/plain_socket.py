"""A plain (TCP or unix) connection's socket, used directly: the lean hot path.

trio's socket wrapper costs two scheduler passes per receive that had to
wait (the wait, then a checkpoint after the data came) and one per send,
plus a coroutine per call; issue 20 measured 14-24 % of the server's CPU per
request in it.  :class:`PlainSocket` calls the non-blocking stdlib socket
itself and falls back to ``trio.lowlevel.wait_readable``/``wait_writable``
only when the call would block, so trio still does the scheduling, the
timeouts and the cancellation:

* :meth:`PlainSocket.recv` is **exactly one scheduler pass**: it parks in
  ``wait_readable`` when nothing is there (cancellable: nothing was taken
  from the socket yet), or, when data was already there, takes it and passes
  through the scheduler once without being cancellable — what was received
  is never lost to a timeout or a shutdown, as with trio's own ``recv``.
  One receive is one burst of requests for the connection loop, so a
  connection whose client keeps data waiting still lets every other task
  run once per burst (stig/server/connection.py states the whole bound);
* :meth:`PlainSocket.recv_after_pass` is the receive right after replies
  left with :meth:`send_now`: the pass first, then the receive, which then
  mostly finds the client's next request already there (one pass), where
  a receive at once mostly found nothing yet (``EAGAIN``, an ``epoll_ctl``,
  a park in ``wait_readable`` and the wake-up: issue 20);
* :meth:`PlainSocket.send_now` sends what the kernel takes at once, with no
  scheduler pass and no coroutine: the end of a burst whose client reads
  (the common case) costs one ``send`` system call
  (:meth:`stig.core.replies.Replies.write`); :meth:`PlainSocket.send` is the
  trio-like fallback for the rest (one scheduler pass, parking in
  ``wait_writable`` while the client does not read).

TLS connections keep trio's streams (stig/server/tls.py).
"""

from __future__ import annotations

import socket

import trio

_wait_readable = trio.lowlevel.wait_readable
_wait_writable = trio.lowlevel.wait_writable
_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint


class PlainSocket:
    """A connected, non-blocking stdlib socket with the methods of
    :class:`stig.server.transport.Transport`, plus :meth:`send_now`."""

    __slots__ = ("_sock",)

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock

    @classmethod
    def from_trio(cls, sock: trio.socket.SocketType) -> PlainSocket:
        """Take over an accepted trio socket (which is left closed: its file
        descriptor belongs to the new object)."""
        return cls(socket.socket(fileno=sock.detach()))

    async def recv(self, size: int, /) -> bytes:
        """Up to ``size`` bytes, ``b""`` at the end of input; exactly one
        scheduler pass (see the module docstring)."""
        sock = self._sock
        try:
            data = sock.recv(size)
        except BlockingIOError:
            pass
        else:
            await _shielded_checkpoint()
            return data
        while True:
            await _wait_readable(sock)
            try:
                return sock.recv(size)
            except BlockingIOError:  # a spurious wake-up: wait again
                pass

    async def recv_after_pass(self, size: int, /) -> bytes:
        """:meth:`recv` for the first receive after replies left with
        :meth:`send_now`: the scheduler pass comes first, then the receive.
        The client has only just been sent its replies, so a receive at once
        mostly finds nothing (``EAGAIN``, then an ``epoll_ctl`` and a park in
        ``wait_readable``); after the other connections' turns its next
        request is mostly there, taken with no wait.  One pass when it is,
        two when it is not (the pass, then the park)."""
        await _shielded_checkpoint()
        sock = self._sock
        while True:
            try:
                return sock.recv(size)
            except BlockingIOError:
                pass
            await _wait_readable(sock)

    def send_now(self, data: bytes | bytearray | memoryview, /) -> int:
        """Send what the kernel takes now (0 when it takes nothing): no
        scheduler pass, no coroutine."""
        try:
            return self._sock.send(data)
        except BlockingIOError:
            return 0

    async def send(self, data: bytes | bytearray | memoryview, /) -> int:
        """Send some of ``data`` (at least one byte); one scheduler pass, as
        :meth:`recv`, parking while the client does not read."""
        sock = self._sock
        try:
            sent = sock.send(data)
        except BlockingIOError:
            pass
        else:
            await _shielded_checkpoint()
            return sent
        while True:
            await _wait_writable(sock)
            try:
                return sock.send(data)
            except BlockingIOError:
                pass

    def shutdown(self, how: int, /) -> None:
        """Stop reading (``socket.SHUT_RD``): a task parked in :meth:`recv`
        wakes and reads the end of input."""
        self._sock.shutdown(how)

    def getpeername(self) -> object:
        return self._sock.getpeername()

    def close(self) -> None:
        """Close the socket, waking any task still waiting on it first."""
        if self._sock.fileno() >= 0:
            trio.lowlevel.notify_closing(self._sock)
        self._sock.close()
