"""Several Stig nodes behind the memcached world's sharding: twemproxy and pymemcache.

docs/scaling.md promises that these work unchanged, that every key lives on
exactly one node, and that a node restarting loses nothing (and, configured
as the doc says, moves no key to another node).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from opstools import run_stig
from support.memcached_ref import exchange, free_port, wait_port

from stig_protocol.listing import url_decode
from stig_testkit.waiting import wait_for


def _keys_on(port: int) -> set[bytes]:
    reply = exchange(port, b"lru_crawler metadump all\r\n", b"END\r\n", timeout=60)
    return {url_decode(line.split(b" ")[0][4:]) for line in reply[:-5].split(b"\n")[:-1]}


@pytest.fixture
def twemproxy(stig_factory, tmp_path):
    """nutcracker, with a generated config, in front of two Stig servers."""
    if shutil.which("nutcracker") is None:
        pytest.skip("nutcracker (twemproxy) not installed")
    nodes = [stig_factory(), stig_factory()]
    port, stats_port = free_port(), free_port()
    config = tmp_path / "nutcracker.yml"
    config.write_text(
        "stig:\n"
        f"  listen: 127.0.0.1:{port}\n"
        "  hash: fnv1a_64\n"
        "  distribution: ketama\n"
        "  timeout: 5000\n"
        "  redis: false\n"
        "  auto_eject_hosts: false\n"
        "  servers:\n"
        + "".join(f"    - 127.0.0.1:{n.port}:1 stig{i}\n" for i, n in enumerate(nodes))
    )
    proxy = subprocess.Popen(
        [
            "nutcracker",
            "-c",
            str(config),
            "-s",
            str(stats_port),
            "-a",
            "127.0.0.1",
            "-o",
            str(tmp_path / "nutcracker.log"),
        ],
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield port, nodes
    finally:
        proxy.kill()
        proxy.wait(10)


def test_twemproxy_in_front_of_two_stig_nodes(twemproxy):
    from pymemcache.client.base import Client

    port, nodes = twemproxy
    client = Client(("127.0.0.1", port), connect_timeout=5, timeout=10, default_noreply=False)
    keys = [f"user:{i}" for i in range(400)]
    for key in keys:
        assert client.set(key, key.upper(), flags=7)
    got = client.get_many(keys)  # one multi-get, split by the proxy
    assert got == {k: k.upper().encode() for k in keys}
    value, cas = client.gets("user:1")
    assert value == b"USER:1"
    assert client.cas("user:1", b"changed", cas) is True
    assert client.cas("user:1", b"again", cas) is False  # the cas moved on
    assert client.get("user:1") == b"changed"
    assert client.set("hits", b"0")
    for _ in range(10):
        client.incr("hits", 1)
    assert client.get("hits") == b"10"
    for node in nodes:
        node.settle()
    on_nodes = [_keys_on(node.port) for node in nodes]
    everything = {k.encode() for k in keys} | {b"hits"}
    assert on_nodes[0] | on_nodes[1] == everything
    assert not on_nodes[0] & on_nodes[1]  # every key on exactly one node
    assert all(len(keys_here) > 50 for keys_here in on_nodes)  # both nodes used


def test_hash_client_over_three_nodes_one_restarting(stig_factory):
    """pymemcache's HashClient, configured as docs/scaling.md says: while a node
    is down its keys fail loudly (none silently missing, none moved to another
    node); after it restarts every key is back where it was."""
    from pymemcache.client.hash import HashClient
    from pymemcache.exceptions import MemcacheError

    nodes = [stig_factory("--port", str(free_port())) for _ in range(3)]
    client = HashClient(
        [("127.0.0.1", n.port) for n in nodes],
        connect_timeout=2,
        timeout=5,
        default_noreply=False,
        retry_attempts=10**9,
        retry_timeout=0,
        dead_timeout=3600,
        ignore_exc=False,
    )
    keys = [f"k{i}" for i in range(300)]
    for key in keys:
        assert client.set(key, f"v-{key}")
    for node in nodes:
        node.settle()
    placement = [_keys_on(n.port) for n in nodes]
    assert set().union(*placement) == {k.encode() for k in keys}
    assert sum(len(p) for p in placement) == len(keys)

    down = nodes[1]
    down.terminate()
    for key in keys:
        if key.encode() in placement[1]:
            with pytest.raises((MemcacheError, OSError)):
                client.get(key)
            with pytest.raises((MemcacheError, OSError)):
                client.set(key, b"written while down")
        else:
            assert client.get(key) == f"v-{key}".encode()
    down.start()  # same port (fixed), same data directory

    def first_key() -> bytes | None:
        try:
            return client.get(keys[0])
        except (MemcacheError, OSError):
            return None  # not listening again yet

    wait_for(first_key, lambda value: value is not None, 30, "the restarted node serving")
    assert client.get(keys[0]) == b"v-k0"
    assert client.get_many(keys) == {k: f"v-{k}".encode() for k in keys}
    for node in nodes:
        node.settle()
    assert [_keys_on(n.port) for n in nodes] == placement  # nothing moved


def _move_keys(*args: str) -> str:
    """``stig move-keys ARGS``; its standard output."""
    return run_stig("move-keys", *args, "--quiet").stdout.decode()


class _Writer:
    """Sets and deletes through a HashClient, recording the last word on each key."""

    def __init__(self, client, keys: list[str]) -> None:
        import random
        import threading

        self.client, self.keys = client, keys
        self.model: dict[str, bytes | None] = {}
        self.rng = random.Random(11)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.ops = 0
        self.error: BaseException | None = None

    def step(self) -> None:
        key = self.rng.choice(self.keys)
        if self.rng.random() < 0.3:
            self.client.delete(key)
            self.model[key] = None
        else:
            value = b"w%d" % self.ops
            assert self.client.set(key, value)
            self.model[key] = value
        self.ops += 1

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.step()
        except BaseException as exc:
            self.error = exc


def test_adding_a_node_keeps_every_write_and_delete_made_during_the_move(stig_factory, tmp_path):
    """docs/scaling.md (Adding a node): copy while writers run, pause them for
    finish, switch to the new ring: every key reads exactly as the last write
    or delete left it — a delete made during the copy is not undone — and,
    after cleanup, every key is on exactly one node."""
    from pymemcache.client.hash import HashClient

    def ring(nodes):
        return HashClient([("127.0.0.1", n.port) for n in nodes], default_noreply=False, timeout=10)

    old = [stig_factory(), stig_factory()]
    new = stig_factory()
    names = [f"127.0.0.1:{n.port}" for n in (*old, new)]
    keys = [f"user:{i}" for i in range(600)]
    writer = _Writer(ring(old), keys)
    for key in keys:
        assert writer.client.set(key, b"v0-" + key.encode())
        writer.model[key] = b"v0-" + key.encode()
    # Step 1 while the writer runs (sets and deletes, some of keys already
    # copied); then more writes and deletes of moved keys after the copy,
    # deterministic ones, made once the writer stopped so that the model is
    # exact (a write between copy and finish is what finish must catch).
    writer.thread.start()
    state = str(tmp_path / "move.state")
    args = ["--old", ",".join(names[:2]), "--new", names[2]]
    before = writer.ops
    assert "copied" in _move_keys("copy", *args, "--state", state)
    assert writer.ops > before  # the writer ran during the copy
    writer.stop.set()
    writer.thread.join(30)
    assert writer.error is None, writer.error
    mover = ring(old)
    placed = ring([*old, new])
    moved = [k for k in keys if placed._get_client(k).server[1] == new.port]
    assert len(moved) > 100
    for key in moved[:40]:
        mover.delete(key)
        writer.model[key] = None
    for key in moved[40:60]:
        assert mover.set(key, b"changed during the move")
        writer.model[key] = b"changed during the move"
    # Step 2: the writers are stopped.
    finished = _move_keys("finish", *args, "--state", state)
    assert "deleted" in finished
    # Step 3: the clients use the new ring.
    assert placed.get_many(keys) == {k: v for k, v in writer.model.items() if v is not None}
    _move_keys("cleanup", *args)
    for node in (*old, new):
        node.settle()
    on_nodes = [_keys_on(n.port) for n in (*old, new)]
    present = {k.encode() for k, v in writer.model.items() if v is not None}
    assert set().union(*on_nodes) == present
    assert sum(len(keys_here) for keys_here in on_nodes) == len(present)  # one node each
    assert on_nodes[2] == {k.encode() for k in moved} & present


def test_moving_large_values_keeps_each_transaction_within_the_new_nodes_budget(
    stig_factory, tmp_path
):
    """move-keys sends each copy transaction within what the new node
    accepts (its --max-pending-bytes): a batch of big values used to go as
    one run, which the node refused by closing the connection, so the move
    of a ring holding big values could not be done at all."""
    from pymemcache.client.hash import HashClient

    old = [stig_factory(), stig_factory()]
    new = stig_factory("--max-pending-bytes", "256k")
    names = [f"127.0.0.1:{n.port}" for n in (*old, new)]
    client = HashClient([("127.0.0.1", n.port) for n in old], default_noreply=False)
    values = {f"big:{i}": b"%03d" % i * 20_000 for i in range(40)}  # 60 kB each
    for key, value in values.items():
        assert client.set(key, value)
    args = ["--old", ",".join(names[:2]), "--new", names[2]]
    state = str(tmp_path / "move.state")
    loud = run_stig("move-keys", "copy", *args, "--state", state)
    assert b"copy: " in loud.stderr and b"keys/s" in loud.stderr  # the progress line
    _move_keys("finish", *args, "--state", state)
    placed = HashClient([("127.0.0.1", n.port) for n in (*old, new)], default_noreply=False)
    moved = [k for k in values if placed._get_client(k).server[1] == new.port]
    assert len(moved) * 60_000 > 256 << 10  # more than one transaction's worth
    assert placed.get_many(list(values)) == values


def test_a_finish_run_again_deletes_keys_already_gone_without_error(stig_factory, tmp_path):
    """A key deleted by someone else between move-keys' listing and its delete
    (cleanup while a straggler still uses the old ring; a finish run again
    after one that failed half-way) answers NF: nothing to do, not a
    refusal that stops the move.  Here finish runs again from the state file
    it started from, as after a finish that died before saving: its deletes
    on the new node find the keys gone."""
    from pymemcache.client.hash import HashClient

    old = [stig_factory(), stig_factory()]
    new = stig_factory()
    names = [f"127.0.0.1:{n.port}" for n in (*old, new)]
    client = HashClient([("127.0.0.1", n.port) for n in old], default_noreply=False)
    keys = [f"k:{i}" for i in range(60)]
    for key in keys:
        assert client.set(key, b"v")
    args = ["--old", ",".join(names[:2]), "--new", names[2]]
    state = tmp_path / "move.state"
    _move_keys("copy", *args, "--state", str(state))
    placed = HashClient([("127.0.0.1", n.port) for n in (*old, new)], default_noreply=False)
    moved = [k for k in keys if placed._get_client(k).server[1] == new.port]
    assert len(moved) > 5
    for key in moved[:5]:
        assert client.delete(key)
    copied = state.read_bytes()
    assert "5 deleted" in _move_keys("finish", *args, "--state", str(state))
    state.write_bytes(copied)
    assert "5 deleted" in _move_keys("finish", *args, "--state", str(state))
    new.settle()
    assert _keys_on(new.port) == {k.encode() for k in moved[5:]}


def test_a_second_copy_does_not_bring_back_a_key_deleted_since_the_first(stig_factory, tmp_path):
    """move-keys copy run again (after one that failed, or to start over)
    writes a fresh state file; a key the first run copied and the application
    deleted since was in neither, so finish never deleted it from the new node
    and it came back after the switch. Copy now leaves the new node holding
    exactly what it copied."""
    from pymemcache.client.hash import HashClient

    old = [stig_factory(), stig_factory()]
    new = stig_factory()
    names = [f"127.0.0.1:{n.port}" for n in (*old, new)]
    client = HashClient([("127.0.0.1", n.port) for n in old], default_noreply=False)
    keys = [f"k:{i}" for i in range(60)]
    for key in keys:
        assert client.set(key, b"v")
    args = ["--old", ",".join(names[:2]), "--new", names[2]]
    state = str(tmp_path / "move.state")
    _move_keys("copy", *args, "--state", state)
    placed = HashClient([("127.0.0.1", n.port) for n in (*old, new)], default_noreply=False)
    moved = [k for k in keys if placed._get_client(k).server[1] == new.port]
    assert len(moved) > 5
    for key in moved[:5]:
        assert client.delete(key)
    _move_keys("copy", *args, "--state", state)
    _move_keys("finish", *args, "--state", state)
    assert placed.get_many(keys) == {k: b"v" for k in keys if k not in moved[:5]}


def test_moving_keys_of_clients_with_a_key_prefix(stig_factory, tmp_path):
    """A HashClient with key_prefix stores prefix + key but places a key by the
    key alone; move-keys hashed the stored key, so it moved the wrong keys
    and, after the switch, keys read as missing. --key-prefix names it."""
    from pymemcache.client.hash import HashClient

    old = [stig_factory(), stig_factory()]
    new = stig_factory()
    names = [f"127.0.0.1:{n.port}" for n in (*old, new)]

    def ring(nodes):
        return HashClient(
            [("127.0.0.1", n.port) for n in nodes], default_noreply=False, key_prefix=b"app:"
        )

    keys = [f"k:{i}" for i in range(60)]
    client = ring(old)
    for key in keys:
        assert client.set(key, b"v-" + key.encode())
    args = ["--old", ",".join(names[:2]), "--new", names[2], "--key-prefix", "app:"]
    state = str(tmp_path / "move.state")
    _move_keys("copy", *args, "--state", state)
    _move_keys("finish", *args, "--state", state)
    assert ring([*old, new]).get_many(keys) == {k: b"v-" + k.encode() for k in keys}
