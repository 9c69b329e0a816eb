"""The replication stream's framing, sans-IO: frames to bytes and back.

After the follower's ``stig_replicate <after_seq> <epoch>`` line the
primary answers one line — ``REPLICATING <epoch> <seq>``, ``DIVERGED <seq>
<epoch>`` (then closes: the follower must discard its groups after
``seq``) or an error line (``SERVER_ERROR …``, ``CLIENT_ERROR …``) — then
sends only frames: a kind
byte, a u32 payload length, the payload.

* ``G`` a committed group: its sequence number (u64), then its log entry
  as stored (stig/storage/replog.py);
* ``S`` a snapshot begins: the sequence number it was taken at (u64), the
  epoch (u32), the cas counter (u64), then the epoch history: (epoch u32,
  its first sequence number u64) for each epoch after the first;
* ``R`` snapshot records: (key length u16, record length u32, key,
  record) repeated, a record as stig/storage/records.py lays it out;
* ``E`` the snapshot ends (no payload): groups after its sequence number follow;
* ``H`` a heartbeat while idle: the primary's sequence number (u64);
* ``X`` the primary gives up on this follower: the payload says why.

The follower answers each group (or snapshot) it applied and synced with a
line ``ACK <seq>``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

FRAME = struct.Struct(">cI")
SEQ = struct.Struct(">Q")
SNAPSHOT = struct.Struct(">QIQ")
RECORD = struct.Struct(">HI")
GROUP = b"G"
SNAPSHOT_BEGIN = b"S"
RECORDS = b"R"
SNAPSHOT_END = b"E"
HEARTBEAT = b"H"
GIVE_UP = b"X"
#: The largest payload a follower accepts (a group is at most
#: ``--max-pending-bytes`` of writes; a snapshot chunk far less).
MAX_PAYLOAD = 1 << 31


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return FRAME.pack(kind, len(payload)) + payload


def group(seq: int, entry: bytes) -> bytes:
    return FRAME.pack(GROUP, SEQ.size + len(entry)) + SEQ.pack(seq) + entry


def records(pairs: list[tuple[bytes, bytes]]) -> bytes:
    pieces: list[bytes] = []
    for key, record in pairs:
        pieces += (RECORD.pack(len(key), len(record)), key, record)
    return frame(RECORDS, b"".join(pieces))


def split_records(payload: bytes) -> Iterator[tuple[bytes, bytes]]:
    offset = 0
    size = len(payload)
    while offset < size:
        key_len, rec_len = RECORD.unpack_from(payload, offset)
        offset += RECORD.size
        key = payload[offset : offset + key_len]
        record = payload[offset + key_len : offset + key_len + rec_len]
        offset += key_len + rec_len
        if offset > size:
            raise ValueError("a torn snapshot record")
        yield key, record


class FrameReader:
    """Bytes in, frames out: :meth:`feed`, then :meth:`next` until None."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next(self) -> tuple[bytes, bytes] | None:
        """The next whole frame (kind, payload), or None until more bytes come."""
        buffer = self._buffer
        if len(buffer) < FRAME.size:
            return None
        kind, length = FRAME.unpack_from(buffer)
        if length > MAX_PAYLOAD:
            raise ValueError(f"a replication frame of {length} bytes")
        end = FRAME.size + length
        if len(buffer) < end:
            return None
        payload = bytes(buffer[FRAME.size : end])
        del buffer[:end]
        return kind, payload

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def line(self) -> bytes | None:
        """The first line (the primary's answer), without its CRLF; None until whole."""
        buffer = self._buffer
        end = buffer.find(b"\r\n")
        if end < 0:
            return None
        line = bytes(buffer[:end])
        del buffer[: end + 2]
        return line
