"""What the protocol layer says when input is bad.

Like h11's ``error_status_hint``, every error carries the hint of what to
answer, so the I/O layer turns it into a reply without parsing strings.
"""

from __future__ import annotations

import enum

import attrs


class ErrorKind(enum.Enum):
    """The three memcached text-protocol error families."""

    ERROR = "ERROR"  #: unknown command
    CLIENT_ERROR = "CLIENT_ERROR"  #: the client sent something malformed
    SERVER_ERROR = "SERVER_ERROR"  #: the server cannot do what was asked


@attrs.frozen
class InvalidCommand:
    """An event: one command was bad, answer ``kind message`` and go on.

    ``close`` says the stream cannot be resynchronised and the connection
    must be closed after the reply is sent.  ``discard_key`` is set on a
    write refused as too large whose key memcached then deletes (``set``,
    ``ms``), so that the old value does not outlive it; it is no part of
    the reply, nor of equality.
    """

    kind: ErrorKind
    message: str = ""
    close: bool = False
    discard_key: bytes | None = attrs.field(default=None, eq=False)  #: not part of the reply

    def text_reply(self) -> bytes:
        if self.message:
            return f"{self.kind.value} {self.message}\r\n".encode()
        return f"{self.kind.value}\r\n".encode()


class ProtocolError(Exception):
    """The byte stream is broken beyond repair; the connection must close.

    ``hint`` is the reply to send (if any) before closing.
    """

    def __init__(self, hint: InvalidCommand | None, message: str = "") -> None:
        super().__init__(message or (hint.message if hint else "protocol error"))
        self.hint = hint
