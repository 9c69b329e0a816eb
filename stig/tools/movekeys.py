"""``stig move-keys``: add a node to a ring of Stig nodes without losing the
writes or deletes made during the move (docs/scaling.md, "Adding a node").

Three steps, each a command:

* :func:`copy` — while the application writes: list every old node
  (``lru_crawler metadump all``: key and cas), keep the keys the new ring
  places on the new node, read them (``mg``) and write them to the new node
  in transactions (quiet ``ms`` runs closed by ``mn``), and record each
  copied key with the cas it had on its old node.  The new node is then
  left holding exactly what this run copied (anything else, such as a key an
  earlier run copied and the application deleted since, is deleted).
* :func:`finish` — with the writers stopped: list the old nodes again; a
  recorded key no longer there was **deleted** during the copy and is
  deleted on the new node; a key whose cas changed (or that is new) was
  **written**, and is copied again.  Every write changes a key's cas, so
  nothing is missed.  It can be run again.
* :func:`cleanup` — once the clients use the new ring: delete the moved keys
  from the old nodes (unreachable there, but they would come back, stale,
  if the new node were ever removed).

The ring is :class:`stig.tools.ring.Ring` (pymemcache's ``HashClient``).
All blocking I/O: these run in the command line, never in the server.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from pathlib import Path

import attrs

from stig.tools import dumpfmt
from stig.tools.envtools import ToolError
from stig.tools.progress import Progress
from stig.tools.ring import Ring
from stig.tools.transfer import ITEM_OVERHEAD, TextConn, batch_budget, listed, parse_address

#: Keys per pipelined ``mg`` read, and per delete transaction.
BATCH = 500

#: What copy records and finish updates: (old node, key) -> the cas it was copied at.
State = dict[tuple[str, bytes], int]


@attrs.define
class MoveReport:
    """What one step did."""

    written: int = 0  # keys written to the new node
    deleted: int = 0  # keys deleted: on the new node (copy, finish) or the old ones (cleanup)
    moved: int = 0  # keys recorded as moved to the new node (copy, finish)


@attrs.frozen
class Move:
    """The ring before (``old``) and after (``old`` + ``new``) the move."""

    old: tuple[str, ...]
    new: str
    key_prefix: bytes = b""

    @property
    def ring(self) -> Ring:
        return Ring((*self.old, self.new), self.key_prefix)

    def moving(self, node: str) -> Iterator[tuple[bytes, int]]:
        """(key, cas) of every key on the old ``node`` that the new ring places on the new node."""
        node_of = self.ring.node_of
        conn = _connect(node)
        try:
            for key, cas in listed(conn):
                if node_of(key) == self.new:
                    yield key, cas
        finally:
            conn.close()


def _connect(node: str) -> TextConn:
    return TextConn(parse_address(node))


def _fetch(conn: TextConn, keys: list[bytes]) -> Iterator[tuple[bytes, bytes, int, int]]:
    """(key, value, flags, cas) of each key still there, by pipelined ``mg``."""
    conn.send(b"".join(b"mg %b%b f c v\r\n" % dumpfmt.key_token(k) for k in keys))
    for key in keys:
        line = conn.line()
        if line == b"EN\r\n":
            continue
        tokens = line.split()
        if tokens[0] != b"VA":
            raise ToolError(f"mg of key {key[:60]!r} answered {line.strip()[:80]!r}")
        fields = {t[:1]: int(t[1:]) for t in tokens[2:]}
        value = conn.exactly(int(tokens[1]) + 2)[:-2]
        yield key, value, fields[b"f"], fields[b"c"]


def _transaction(conn: TextConn, commands: Iterable[bytes], nf_ok: bool = False) -> None:
    """Send quiet commands closed by ``mn``; any reply before ``MN`` is an error
    (but ``NF``, a delete's "already gone", when ``nf_ok``)."""
    conn.send(b"".join(commands) + dumpfmt.BARRIER)
    errors = []
    while (line := conn.line()) != b"MN\r\n":
        if not (nf_ok and line == b"NF\r\n"):
            errors.append(line.strip())
    if errors:
        raise ToolError(f"the server refused: {errors[:5]!r}")


def _copy(
    source: TextConn, target: TextConn, keys: list[bytes], progress: Progress
) -> dict[bytes, int]:
    """Copy ``keys`` (those still there) from ``source`` to ``target``; their cas on source.

    Each transaction stays within what ``target`` accepts (a quarter of its
    ``--max-pending-bytes``, as ``stig load`` sends): one too large is
    refused and the connection closed.  An item larger than that goes alone.
    """
    copied = {}
    budget = batch_budget(target)
    for start in range(0, len(keys), BATCH):
        group: list[bytes] = []
        cost = 0
        for key, value, flags, cas in _fetch(source, keys[start : start + BATCH]):
            item_cost = len(key) + len(value) + ITEM_OVERHEAD
            if group and cost + item_cost > budget:
                _transaction(target, group)
                group, cost = [], 0
            group.append(dumpfmt.encode_item(key, value, flags))
            cost += item_cost
            copied[key] = cas
            progress.add(1, len(value))
        if group:
            _transaction(target, group)
    return copied


def delete_keys(target: TextConn, keys: list[bytes], progress: Progress | None = None) -> None:
    """Delete ``keys`` from ``target``; one already gone (``NF``) is no error:
    someone deleted it between the listing and now, or a step runs again."""
    for start in range(0, len(keys), BATCH):
        group = keys[start : start + BATCH]
        _transaction(target, [b"md %b%b q\r\n" % dumpfmt.key_token(k) for k in group], nf_ok=True)
        if progress is not None:
            progress.add(len(group), 0)


def save_state(path: Path, state: State) -> None:
    """One line per key: ``node base64(key) cas``; replaced whole, never half-written."""
    lines = [f"{n} {base64.b64encode(k).decode()} {c}\n" for (n, k), c in state.items()]
    partial = path.with_suffix(".partial")
    partial.write_text("".join(lines))
    partial.replace(path)


def load_state(path: Path) -> State:
    state = {}
    try:
        text = path.read_text()
    except OSError as exc:
        raise ToolError(f"cannot read the state file (run 'copy' first?): {exc}") from None
    for number, line in enumerate(text.splitlines(), 1):
        try:
            node, key, cas = line.split()
            state[(node, base64.b64decode(key, validate=True))] = int(cas)
        except ValueError:
            raise ToolError(f"{path}:{number}: not a move-keys state line: {line[:80]!r}") from None
    return state


def copy(move: Move, state_path: Path, quiet: bool = False) -> MoveReport:
    """Step 1: copy the moving keys to the new node and record them in ``state_path``."""
    report = MoveReport()
    state: State = {}
    progress = Progress("copy", quiet=quiet)
    target = _connect(move.new)
    try:
        for node in move.old:
            keys = [key for key, _ in move.moving(node)]
            source = _connect(node)
            try:
                for key, cas in _copy(source, target, keys, progress).items():
                    state[(node, key)] = cas
            finally:
                source.close()
        # The new node holds what this run copied, nothing else: a key an earlier
        # run copied and the application deleted since is in neither listing nor
        # state, so finish would never delete it and it would come back.
        copied = {key for _, key in state}
        stale = [key for key, _ in listed(target) if key not in copied]
        delete_keys(target, stale)
    finally:
        target.close()
    save_state(state_path, state)
    progress.done()
    report.written = report.moved = len(state)
    report.deleted = len(stale)
    return report


def finish(move: Move, state_path: Path, quiet: bool = False) -> MoveReport:
    """Step 2, writers stopped: catch up on the writes and deletes made during step 1."""
    report = MoveReport()
    state = load_state(state_path)
    progress = Progress("finish", quiet=quiet)
    target = _connect(move.new)
    try:
        for node in move.old:
            now = dict(move.moving(node))
            before = {key: cas for (n, key), cas in state.items() if n == node}
            gone = [key for key in before if key not in now]
            delete_keys(target, gone, progress)
            for key in gone:
                del state[(node, key)]
            changed = [key for key, cas in now.items() if before.get(key) != cas]
            source = _connect(node)
            try:
                for key, cas in _copy(source, target, changed, progress).items():
                    state[(node, key)] = cas
            finally:
                source.close()
            report.written += len(changed)
            report.deleted += len(gone)
    finally:
        target.close()
    save_state(state_path, state)
    progress.done()
    report.moved = len(state)
    return report


def cleanup(move: Move, quiet: bool = False) -> MoveReport:
    """Step 4, clients on the new ring: delete the moved keys from the old nodes."""
    report = MoveReport()
    progress = Progress("cleanup", quiet=quiet)
    for node in move.old:
        keys = [key for key, _ in move.moving(node)]
        conn = _connect(node)
        try:
            delete_keys(conn, keys, progress)
        finally:
            conn.close()
        report.deleted += len(keys)
    progress.done()
    return report
