"""Add a node to a ring of Stig nodes without losing the writes or deletes made
during the move (docs/scaling.md#adding-a-node).

Three steps, each a command::

    # 1. while the application writes: copy the keys that move to the new node
    python3 scripts/move_keys.py copy    --old A:11211,B:11211 --new C:11211 --state move.state
    # 2. stop the writers; then catch up on what changed during step 1
    python3 scripts/move_keys.py finish  --old A:11211,B:11211 --new C:11211 --state move.state
    # 3. switch the clients to A,B,C, start the writers; then, at leisure
    python3 scripts/move_keys.py cleanup --old A:11211,B:11211 --new C:11211

``copy`` lists every old node (``lru_crawler metadump all``: key and cas),
keeps the keys the new ring places on the new node, reads them (``mg``) and
writes them to the new node in transactions (quiet ``ms`` runs closed by
``mn``), and records each copied key with the cas it had on its old node.

``finish`` lists the old nodes again and compares: a recorded key no longer
there was **deleted** during step 1, and is deleted on the new node; a key
whose cas changed (or that is new) was **written**, and is copied again.
Every write changes a key's cas, so nothing is missed — provided no writer
runs meanwhile, which is why step 2 is the one short pause: it moves only
what changed, plus one listing of each old node.  It can be run again.

``cleanup`` deletes the moved keys from the old nodes.  Do it: the copies
there are unreachable while the ring has the new node, but would come back,
stale, if it were ever removed.

The ring is pymemcache's ``HashClient`` (rendezvous hashing over
``"host:port"`` names, keys passed as ``str``): :func:`placement` is the one
function to change for another ring (libmemcached ketama, twemproxy).
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from pymemcache.client.rendezvous import RendezvousHash

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stig.tools import dumpfmt
from stig.tools.envtools import ToolError
from stig.tools.transfer import ITEM_OVERHEAD, TextConn, batch_budget, listed, parse_address

BATCH = 500


def placement(nodes: list[str], prefix: bytes = b""):  # -> Callable[[bytes], str]
    """Which node of ``nodes`` a key belongs to, as the clients compute it.

    A ``HashClient(key_prefix=...)`` stores ``prefix + key`` but places the
    key by ``key`` alone: ``prefix`` is taken off before hashing.
    """
    ring = RendezvousHash(nodes)

    def node_of(key: bytes) -> str:
        if prefix and key.startswith(prefix):
            key = key[len(prefix) :]
        return ring.get_node(key.decode("utf-8", "surrogateescape"))

    return node_of


#: The clients' key_prefix (``--key-prefix``), set by :func:`main`.
KEY_PREFIX = b""


def moving(old: str, nodes: list[str], new: str) -> Iterator[tuple[bytes, int]]:
    """(key, cas) of every key on ``old`` that the ring ``nodes`` places on ``new``."""
    node_of = placement(nodes, KEY_PREFIX)
    conn = TextConn(parse_address(old))
    try:
        for key, cas in listed(conn):
            if node_of(key) == new:
                yield key, cas
    finally:
        conn.close()


def _fetch(conn: TextConn, keys: list[bytes]) -> Iterator[tuple[bytes, bytes, int, int]]:
    """(key, value, flags, cas) of each key still there, by pipelined ``mg``."""
    conn.send(b"".join(b"mg %b%b f c v\r\n" % dumpfmt.key_token(k) for k in keys))
    for key in keys:
        line = conn.line()
        if line == b"EN\r\n":
            continue
        tokens = line.split()
        if tokens[0] != b"VA":
            raise ToolError(f"mg of key {key!r} answered {line.strip()!r}")
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


def _copy(source: TextConn, target: TextConn, keys: list[bytes]) -> dict[bytes, int]:
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
        if group:
            _transaction(target, group)
    return copied


def _delete(target: TextConn, keys: list[bytes]) -> None:
    """Delete ``keys`` from ``target``; one already gone (``NF``) is no error."""
    for start in range(0, len(keys), BATCH):
        _transaction(
            target,
            [b"md %b%b q\r\n" % dumpfmt.key_token(k) for k in keys[start : start + BATCH]],
            nf_ok=True,
        )


def _save(path: Path, state: dict[tuple[str, bytes], int]) -> None:
    lines = [f"{n} {base64.b64encode(k).decode()} {c}\n" for (n, k), c in state.items()]
    partial = path.with_suffix(".partial")
    partial.write_text("".join(lines))
    partial.replace(path)


def _load(path: Path) -> dict[tuple[str, bytes], int]:
    state = {}
    for line in path.read_text().splitlines():
        node, key, cas = line.split()
        state[(node, base64.b64decode(key))] = int(cas)
    return state


def copy(old: list[str], new: str, state_path: Path) -> None:
    nodes = [*old, new]
    state: dict[tuple[str, bytes], int] = {}
    target = TextConn(parse_address(new))
    for node in old:
        source = TextConn(parse_address(node))
        keys = [key for key, _ in moving(node, nodes, new)]
        for key, cas in _copy(source, target, keys).items():
            state[(node, key)] = cas
        source.close()
    # The new node holds what this run copied, nothing else: a key an earlier
    # run copied and the application deleted since is in neither listing nor
    # state, so finish would never delete it and it would come back.
    copied = {key for _, key in state}
    stale = [key for key, _ in listed(target) if key not in copied]
    _delete(target, stale)
    target.close()
    _save(state_path, state)
    print(f"copied {len(state):,} keys to {new}; now stop the writers and run 'finish'")


def finish(old: list[str], new: str, state_path: Path) -> None:
    nodes = [*old, new]
    state = _load(state_path)
    target = TextConn(parse_address(new))
    written = deleted = 0
    for node in old:
        now = dict(moving(node, nodes, new))
        before = {key: cas for (n, key), cas in state.items() if n == node}
        gone = [key for key in before if key not in now]
        _delete(target, gone)
        for key in gone:
            del state[(node, key)]
        changed = [key for key, cas in now.items() if before.get(key) != cas]
        source = TextConn(parse_address(node))
        for key, cas in _copy(source, target, changed).items():
            state[(node, key)] = cas
        source.close()
        written += len(changed)
        deleted += len(gone)
    target.close()
    _save(state_path, state)
    print(
        f"caught up: {written:,} keys written and {deleted:,} deleted during the copy; "
        f"{len(state):,} keys on {new}. Switch the clients to {','.join(nodes)} now."
    )


def cleanup(old: list[str], new: str) -> None:
    nodes = [*old, new]
    removed = 0
    for node in old:
        keys = [key for key, _ in moving(node, nodes, new)]
        conn = TextConn(parse_address(node))
        _delete(conn, keys)
        conn.close()
        removed += len(keys)
    print(f"deleted {removed:,} moved keys from the old nodes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=["copy", "finish", "cleanup"])
    parser.add_argument("--old", required=True, help="the ring's nodes now: HOST:PORT,...")
    parser.add_argument("--new", required=True, help="the node being added: HOST:PORT")
    parser.add_argument("--state", type=Path, help="where copy records what it copied")
    parser.add_argument(
        "--key-prefix",
        default="",
        help="the clients' HashClient key_prefix (stored keys start with it; the ring hashes "
        "the key without it)",
    )
    args = parser.parse_args(argv)
    global KEY_PREFIX
    KEY_PREFIX = args.key_prefix.encode("utf-8", "surrogateescape")
    old = args.old.split(",")
    if args.step != "cleanup" and args.state is None:
        parser.error(f"{args.step} needs --state")
    try:
        if args.step == "copy":
            copy(old, args.new, args.state)
        elif args.step == "finish":
            finish(old, args.new, args.state)
        else:
            cleanup(old, args.new)
    except (ToolError, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
