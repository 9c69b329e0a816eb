"""The history: what clients sent, what came back, and when.

A transaction is one atomic unit as the server promises it: a *run* of
appends (noreply/quiet appends closed by some command, a loud append as its
last member included) or a *read* of several keys from one snapshot (text
multi-get, a run of meta ``mg`` + ``mn``, binary GetKQ run + No-op, GetK).
A run closed by a read is two transactions (the run, then the read) that
complete at the same reply: Stig reads the snapshot first and commits the
run after, so the read is not part of the run.

Every appended element is a unique integer, so a read of a key (its list)
names every write it saw, in order.  Times are ``time.monotonic()``.
"""

from __future__ import annotations

import json
from typing import Literal

import attrs

#: ``ok``: the client holds the reply that acknowledges it; ``info``: the
#: outcome is unknown (the server died, or nothing acknowledges it: ``quit``,
#: a clean disconnect); ``fail``: it did not happen (a disconnect in the
#: middle of a command discards its run).
Status = Literal["ok", "info", "fail"]
Kind = Literal["run", "read"]


@attrs.frozen
class Append:
    """Append the unique ``element`` to the list held by ``key``."""

    key: str
    element: int


@attrs.frozen
class Read:
    """The list a read found at ``key`` (``None`` while unknown)."""

    key: str
    elements: tuple[int, ...] | None


@attrs.frozen
class Txn:
    """One transaction: a run of appends or a multi-key read.

    ``session`` names the connection (unique over the whole history);
    ``closer`` says how a run ended or how a read was sent, e.g.
    ``text:version``, ``meta:mg``, ``binary:noop``, ``text:abort``;
    ``epoch`` counts the server restarts before it (a crash ends an epoch);
    ``wire`` is the exchange, trimmed, for the examples a verdict shows.
    """

    id: int
    session: int
    protocol: str
    kind: Kind
    closer: str
    status: Status
    invoke: float
    complete: float | None
    epoch: int
    appends: tuple[Append, ...] = ()
    reads: tuple[Read, ...] = ()
    wire: tuple[tuple[str, bytes], ...] = ()

    def describe(self, limit: int = 400) -> str:
        """One paragraph for a report: what it did, what came back, the wire."""
        head = (
            f"T{self.id} [{self.status}] session {self.session} {self.kind} "
            f"closed by {self.closer}, epoch {self.epoch}, "
            f"t={self.invoke:.6f}..{'?' if self.complete is None else f'{self.complete:.6f}'}"
        )
        lines = [head]
        for append in self.appends:
            lines.append(f"    append {append.key} {append.element}")
        for read in self.reads:
            shown = "?" if read.elements is None else short(read.elements)
            lines.append(f"    read {read.key} -> {shown}")
        for direction, data in self.wire:
            if self.protocol == "binary":
                data = binary_frames(data)
            text = data[:limit].decode("latin-1")
            more = f" …(+{len(data) - limit} bytes)" if len(data) > limit else ""
            lines.append(f"    {direction} {text!r}{more}")
        return "\n".join(lines)


#: Names of the binary opcodes the workload uses, for the examples.
OPCODES = {
    0x07: "Quit",
    0x0A: "No-op",
    0x0B: "Version",
    0x0C: "GetK",
    0x0D: "GetKQ",
    0x0E: "Append",
    0x17: "QuitQ",
    0x19: "AppendQ",
}


def binary_frames(data: bytes) -> bytes:
    """Binary requests or responses as one readable line each:
    ``AppendQ h1-3 '17 '`` (a response adds its status)."""
    out = []
    at = 0
    while at + 24 <= len(data):
        magic, opcode = data[at], data[at + 1]
        key_length = int.from_bytes(data[at + 2 : at + 4], "big")
        extras = data[at + 4]
        status = int.from_bytes(data[at + 6 : at + 8], "big")
        body = int.from_bytes(data[at + 8 : at + 12], "big")
        payload = data[at + 24 : at + 24 + body]
        key = payload[extras : extras + key_length].decode("latin-1")
        value = payload[extras + key_length :]
        name = OPCODES.get(opcode, f"op{opcode:#x}")
        cut = "" if len(payload) == body else " (cut short)"
        shown = " ".join(
            part for part in (name, key, repr(value.decode("latin-1")) if value else "") if part
        )
        if magic == 0x81:
            shown += f" status={status:#x}"
        out.append(shown + cut)
        at += 24 + body
    if at < len(data):
        out.append(f"+{len(data) - at} bytes of a header cut short")
    return "; ".join(out).encode("latin-1")


def short(elements: tuple[int, ...], keep: int = 6) -> str:
    if len(elements) <= 2 * keep:
        return "[" + " ".join(map(str, elements)) + "]"
    head = " ".join(map(str, elements[:keep]))
    tail = " ".join(map(str, elements[-keep:]))
    return f"[{head} …{len(elements) - 2 * keep} more… {tail}]"


@attrs.frozen
class History:
    """Every transaction, and the instants the server was killed.

    ``crashes[i]`` is when epoch ``i`` ended (SIGKILL or power cut); the last
    epoch has no crash.  The workload ends with a read of every key after
    the last restart, so each key's full list is in the history.
    """

    txns: tuple[Txn, ...]
    crashes: tuple[float, ...] = ()


def dump(history: History) -> str:
    """The history as JSON lines (a header with the crashes, then one line per
    transaction), to keep a run for a second look: :func:`load` reads it."""
    lines = [json.dumps({"crashes": list(history.crashes)})]
    for txn in history.txns:
        record = attrs.asdict(txn, recurse=False)
        record["appends"] = [[a.key, a.element] for a in txn.appends]
        record["reads"] = [[r.key, r.elements] for r in txn.reads]
        record["wire"] = [[d, data.decode("latin-1")] for d, data in txn.wire]
        lines.append(json.dumps(record))
    return "\n".join(lines) + "\n"


def load(text: str) -> History:
    lines = text.splitlines()
    crashes = tuple(json.loads(lines[0])["crashes"])
    txns = []
    for line in lines[1:]:
        record = json.loads(line)
        record["appends"] = tuple(Append(k, e) for k, e in record["appends"])
        record["reads"] = tuple(
            Read(k, None if e is None else tuple(e)) for k, e in record["reads"]
        )
        record["wire"] = tuple((d, data.encode("latin-1")) for d, data in record["wire"])
        txns.append(Txn(**record))
    return History(tuple(txns), crashes)
