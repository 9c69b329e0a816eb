"""Acknowledged writes are visible to every connection (docs/pov.md, "Other sessions").

An application reads through a pool of connections: the connection that
reads a key is rarely the one that wrote it.  Once a client holds the reply
to a write (``STORED``, ``HD``, a binary Set response) — or the reply of any
later command on that connection, which closes the write's run — every read
that starts afterwards, on any connection, sees that write or a later one.

Every test writes on one connection and reads on another, ``ROUNDS`` times,
with real clients (pymemcache's ``PooledClient`` and ``HashClient``, pylibmc
in text and binary mode through its ``ClientPool``, meta-memcache) and raw
sockets, against a server with POV acks and one with ``--durable-acks``.
Nothing sleeps: the write's reply is the only synchronisation.  Before this
rule was enforced, the POV-ack server answered stale data on every round.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from pathlib import Path

import pytest

from stig_protocol.binary import Opcode, Status
from stig_testkit.waiting import wait_for_stats

ROUNDS = 1000
KEYS = 7  # rounds cycle over a few keys, so a key is rewritten while its last write is in flight
TIMEOUT = 10.0
MODES = {"pov-acks": (), "durable-acks": ("--durable-acks",)}


SHM = Path("/dev/shm")


@pytest.fixture
def data_dir(tmp_path):
    """On tmpfs when there is one: this is about visibility, not the disk, and
    1,000 rounds of a read waiting for an fsync would take a minute per test
    on a busy machine.  (A commit is still a real LMDB commit on another
    thread; the window a stale read could slip through stays open.)"""
    if not SHM.is_dir() or not os.access(SHM, os.W_OK):
        yield tmp_path / "data"
        return
    path = Path(tempfile.mkdtemp(prefix="stig-visibility-", dir=SHM))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=list(MODES), ids=list(MODES))
def server(request, stig_factory, data_dir):
    return stig_factory(*MODES[request.param], data_dir=data_dir)


def _key(n: int) -> str:
    return f"vis{n % KEYS}"


def _stale(rounds: list[tuple[str, object, object]]) -> list[tuple[str, object, object]]:
    return [r for r in rounds if r[1] != r[2]]


# -- pymemcache (text protocol, STORED) ------------------------------------------


def test_pymemcache_pooled_client(server):
    from pymemcache.client.base import PooledClient

    pool = PooledClient(
        (server.host, server.port),
        max_pool_size=4,
        default_noreply=False,
        connect_timeout=TIMEOUT,
        timeout=TIMEOUT,
    )
    server._clients.append(pool)
    seen = []
    # Two connections checked out of the pool at once: the writer and the reader.
    with pool.client_pool.get_and_release() as writer, pool.client_pool.get_and_release() as reader:
        assert writer is not reader
        for n in range(ROUNDS):
            value = b"v%d" % n
            assert writer.set(_key(n), value, noreply=False) is True  # STORED
            got = reader.gets(_key(n))[0] if n % 10 == 0 else reader.get(_key(n))
            seen.append((_key(n), value, got))
    assert _stale(seen) == []


def test_pymemcache_hash_clients(server):
    """Two HashClients with pooling, as two web worker processes would hold them."""
    from pymemcache.client.hash import HashClient

    def make():
        client = HashClient(
            [(server.host, server.port)],
            use_pooling=True,
            default_noreply=False,
            connect_timeout=TIMEOUT,
            timeout=TIMEOUT,
        )
        server._clients.append(client)
        return client

    writer, reader = make(), make()
    seen = []
    for n in range(ROUNDS):
        value = b"h%d" % n
        assert writer.set(_key(n), value) is True
        seen.append((_key(n), value, reader.get(_key(n))))
    assert _stale(seen) == []
    # A multi-key write, then a multi-key read on the other client: every key new.
    for n in range(50):
        values = {f"m{i}": b"%d-%d" % (n, i) for i in range(20)}
        assert writer.set_many(values) == []
        assert reader.get_many(list(values)) == values


def test_pymemcache_cas_values_are_the_committed_ones(server):
    """``gets`` on another connection returns the acknowledged write's committed cas."""
    a, b = server.client(), server.client()
    for n in range(200):
        assert a.set("c", b"%d" % n) is True
        value, cas = b.gets("c")
        assert value == b"%d" % n
        assert b.cas("c", b"by-b-%d" % n, cas) is True  # that cas is the item's current one
        assert a.get("c") == b"by-b-%d" % n


# -- pylibmc (libmemcached): text and binary -------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_pylibmc_pool(server, binary):
    pylibmc = pytest.importorskip("pylibmc")
    master = pylibmc.Client([f"{server.host}:{server.port}"], binary=binary)
    server._clients.append(master)
    pool = pylibmc.ClientPool(master, 2)
    seen = []
    with pool.reserve() as writer, pool.reserve() as reader:
        assert writer is not reader
        for n in range(ROUNDS):
            value = b"p%d" % n
            assert writer.set(_key(n), value) is True
            seen.append((_key(n), value, reader.get(_key(n))))
        for n in range(50):
            values = {f"m{i}": b"%d-%d" % (n, i) for i in range(20)}
            assert writer.set_multi(values) == []
            assert reader.get_multi(list(values)) == values
    assert _stale(seen) == []


# -- meta-memcache (meta protocol, HD) ---------------------------------------------


def test_meta_memcache_clients(server):
    pytest.importorskip("meta_memcache")
    from meta_memcache import CacheClient, Key, ServerAddress, connection_pool_factory_builder

    def make():
        return CacheClient.cache_client_from_servers(
            servers=[ServerAddress(host=server.host, port=server.port)],
            connection_pool_factory_fn=connection_pool_factory_builder(
                connection_timeout=TIMEOUT, recv_timeout=TIMEOUT
            ),
        )

    writer, reader = make(), make()
    seen = []
    for n in range(ROUNDS):
        value = f"meta{n}"
        assert writer.set(Key(_key(n)), value, ttl=0) is True  # ms ... -> HD
        seen.append((_key(n), value, reader.get(Key(_key(n)))))
    assert _stale(seen) == []


# -- raw sockets: the exact replies, pipelining, runs ----------------------------


def test_text_pipelined_sets_then_multi_get_elsewhere(server):
    """The issue's case: 20 pipelined sets, their 20 STOREDs, a multi-get elsewhere."""
    a, b = server.connect(), server.connect()
    keys = [b"p%d" % i for i in range(20)]
    for n in range(200):
        a.send(b"".join(b"set %b 0 0 %d\r\n%b\r\n" % (k, len(b"%d" % n), b"%d" % n) for k in keys))
        assert a.recv_until(b"STORED\r\n" * 20) == b"STORED\r\n" * 20
        reply = b.send_recv(b"get " + b" ".join(keys) + b"\r\n")
        expected = b"".join(b"VALUE %b 0 %d\r\n%d\r\n" % (k, len(b"%d" % n), n) for k in keys)
        assert reply == expected + b"END\r\n", n


def test_text_pipelined_gets_behind_another_get(server):
    """The reader pipelines gets: each one, not just the first, waits for a write
    in flight to its key (the fast path reads gets ahead in one snapshot)."""
    a, b = server.connect(), server.connect()
    assert b.send_recv(b"set unrelated 0 0 1\r\nu\r\n", b"\r\n") == b"STORED\r\n"
    for n in range(300):
        value = b"%d" % n
        assert (
            a.send_recv(b"set g 0 0 %d\r\n%b\r\n" % (len(value), value), b"\r\n") == b"STORED\r\n"
        )
        b.send(b"get unrelated\r\nget g\r\ngets g\r\n")
        reply = b""
        while reply.count(b"END\r\n") < 3:
            reply += b.recv_until(b"END\r\n")
        assert reply.startswith(
            b"VALUE unrelated 0 1\r\nu\r\nEND\r\nVALUE g 0 %d\r\n%b\r\nEND\r\n"
            % (len(value), value)
        ), (n, reply)
        assert reply.split(b"\r\n")[6].startswith(b"VALUE g 0 %d " % len(value)), (n, reply)


def test_meta_hd_then_mg_elsewhere(server):
    a, b = server.connect(), server.connect()
    for n in range(ROUNDS):
        value = b"%d" % n
        assert (
            a.send_recv(b"ms mk%d %d\r\n%b\r\n" % (n % KEYS, len(value), value), b"\r\n")
            == b"HD\r\n"
        )
        got = b.send_recv(b"mg mk%d v c\r\n" % (n % KEYS), b"\r\n")
        if got.startswith(b"VA") and got.count(b"\r\n") < 2:
            got += b.recv_until(b"\r\n")  # the value line came in a later segment
        assert got.startswith(b"VA %d " % len(value)) and got.endswith(b"\r\n%b\r\n" % value), (
            n,
            got,
        )


def test_binary_set_reply_then_get_elsewhere(server):
    a, b = server.connect_binary(), server.connect_binary()
    extras = struct.pack(">II", 0, 0)
    for n in range(ROUNDS):
        key, value = b"bk%d" % (n % KEYS), b"%d" % n
        assert a.call(Opcode.Set, key, value, extras).status == Status.NO_ERROR
        rsp = b.call(Opcode.Get, key)
        assert rsp.status == Status.NO_ERROR and rsp.value == value, n


def test_binary_quiet_run_closed_by_noop_then_get_elsewhere(server):
    a, b = server.connect_binary(), server.connect_binary()
    extras = struct.pack(">II", 0, 0)
    for n in range(100):
        for i in range(10):
            a.request(Opcode.SetQ, b"q%d" % i, b"%d" % n, extras)
        assert a.call(Opcode.Noop).status == Status.NO_ERROR
        for i in range(10):
            b.request(Opcode.GetKQ, b"q%d" % i)
        b.request(Opcode.Noop)
        values = [b.response() for _ in range(11)]
        assert [r.value for r in values[:10]] == [b"%d" % n] * 10


def test_noreply_run_is_acknowledged_by_the_next_reply(server):
    """noreply writes are acknowledged by the reply of the next command on their
    connection (it closes their run): from then on every connection sees them."""
    a, b = server.connect(), server.connect()
    for n in range(300):
        value = b"%d" % n
        a.send(
            b"set nr1 0 0 %d noreply\r\n%b\r\nset nr2 0 0 %d noreply\r\n%b\r\n"
            % (len(value), value, len(value), value)
        )
        assert a.send_recv(b"version\r\n", b"\r\n").startswith(b"VERSION ")
        assert b.send_recv(b"get nr1 nr2\r\n") == (
            b"VALUE nr1 0 %d\r\n%b\r\nVALUE nr2 0 %d\r\n%b\r\nEND\r\n"
            % (len(value), value, len(value), value)
        ), n


def test_read_modify_writes_see_acknowledged_writes(server):
    """incr, append and delete on another connection act on the acknowledged value."""
    a, b = server.connect(), server.connect()
    for n in range(200):
        assert a.send_recv(b"set n 0 0 2\r\n10\r\n", b"\r\n") == b"STORED\r\n"
        assert b.send_recv(b"incr n %d\r\n" % n, b"\r\n") == b"%d\r\n" % (10 + n)
        assert a.send_recv(b"set s 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
        assert b.send_recv(b"append s 0 0 1\r\ny\r\n", b"\r\n") == b"STORED\r\n"
        assert a.send_recv(b"get s\r\n") == b"VALUE s 0 2\r\nxy\r\nEND\r\n"
        assert a.send_recv(b"delete s\r\n", b"\r\n") == b"DELETED\r\n"
        assert b.send_recv(b"delete s\r\n", b"\r\n") == b"NOT_FOUND\r\n"


def test_flush_all_noreply_acknowledged_by_a_later_reply(server):
    a, b = server.connect(), server.connect()
    for n in range(100):
        assert a.send_recv(b"set f 0 0 1\r\n1\r\n", b"\r\n") == b"STORED\r\n"
        assert b.send_recv(b"get f\r\n") == b"VALUE f 0 1\r\n1\r\nEND\r\n"
        a.send(b"flush_all noreply\r\n")
        assert a.send_recv(b"get other\r\n") == b"END\r\n"  # closes the run holding the flush
        assert b.send_recv(b"get f\r\n") == b"END\r\n", n


def test_open_run_stays_invisible_and_a_closed_run_becomes_visible_whole(stig_factory, data_dir):
    """A noreply run is an open transaction: nobody else sees any of it until it
    closes; then a read elsewhere sees all of it.  (--batch-idle-ms keeps the run
    open for the whole test: no timer closes it behind the test's back.)"""
    server = stig_factory("--batch-idle-ms", "600000", data_dir=data_dir)
    a, b = server.connect(), server.connect()
    assert a.send_recv(b"set r1 0 0 3\r\nold\r\nset r2 0 0 3\r\nold\r\n", b"STORED\r\nSTORED\r\n")
    for n in range(50):
        value = b"n%02d" % n
        a.send(b"set r1 0 0 3 noreply\r\n%b\r\nset r2 0 0 3 noreply\r\n%b\r\n" % (value, value))
        # Still open: b sees neither (it never waits for an open run).
        before = b"old" if n == 0 else b"n%02d" % (n - 1)
        assert b.send_recv(b"get r1 r2\r\n") == (
            b"VALUE r1 0 3\r\n%b\r\nVALUE r2 0 3\r\n%b\r\nEND\r\n" % (before, before)
        ), n
        assert a.send_recv(b"mn\r\n", b"MN\r\n") == b"MN\r\n"  # closes the run
        assert b.send_recv(b"get r1 r2\r\n") == (
            b"VALUE r1 0 3\r\n%b\r\nVALUE r2 0 3\r\n%b\r\nEND\r\n" % (value, value)
        ), n


def test_stats_show_reads_that_waited(server):
    a, b = server.connect(), server.connect()
    for n in range(50):
        assert a.send_recv(b"set w 0 0 1\r\n%d\r\n" % (n % 10), b"\r\n") == b"STORED\r\n"
        assert b.send_recv(b"get w\r\n") == b"VALUE w 0 1\r\n%d\r\nEND\r\n" % (n % 10)
    server.settle()
    stats = server.stats()
    assert int(stats["stig_read_waits"]) >= 0
    assert stats["stig_keys_in_flight"] == "0"  # every promotion released its keys


def _limit_file_size() -> None:
    import resource

    # A full disk, as tests/durability/test_disk.py makes one.  Above the
    # shared region's memfd with --workers N (1.5 MiB + 2 MiB per worker for
    # stats detail's table), which the limit counts too: under 3 MiB a
    # server with two workers failed to start (EFBIG).
    limit = 12 << 20
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_reader_waiting_for_a_commit_that_fails_goes_on(stig_factory):
    """The write a reader waits for is lost (full disk): the read answers the
    state without it, the writer's connection is told and closed."""
    server = stig_factory()
    server.preexec_fn = _limit_file_size
    server.restart()
    big = b"v" * 100_000
    a, b = server.connect(), server.connect()
    lost = None
    for index in range(300):  # ~30 MB against a 12 MiB file limit
        reply = a.send_recv(b"set f%d 0 0 %d\r\n%b\r\n" % (index, len(big), big), b"\r\n")
        if reply.startswith(b"STORED\r\n") and reply != b"STORED\r\n":
            # Its own commit failed before its STORED was read: the loss is
            # told right behind it, in the same packet; the read goes on without it.
            assert b.send_recv(b"get f%d\r\n" % index, b"END\r\n", timeout=30) == b"END\r\n"
            lost, index, reply = index, index + 1, reply[len(b"STORED\r\n") :]
        if reply != b"STORED\r\n":
            # The loss of an earlier acknowledged write, reported on its connection.
            assert reply.startswith(b"SERVER_ERROR ") and b"lost" in reply, reply
            assert a.is_closed_by_peer()
            break
        got = b.send_recv(b"get f%d\r\n" % index, b"END\r\n", timeout=30)
        if got == b"END\r\n":  # its commit failed: the read went on without it
            lost = index
            continue
        assert got == b"VALUE f%d 0 %d\r\n%b\r\nEND\r\n" % (index, len(big), big), index
    else:
        raise AssertionError("the file limit never refused a commit")
    assert lost is not None and lost == index - 1
    assert int(server.stats()["stig_failed_commits"]) >= 1
    # Nothing stays in flight for ever: the closed writer's last run (handed
    # over before its loss was noticed) finishes, failed or not, and leaves.
    wait_for_stats(server, lambda s: s["stig_keys_in_flight"] == "0", what="no key left in flight")


# -- replies sent in the middle of a burst -----------------------------------------


def _write_then_big_gets(server, big_gets: int = 40):
    """A connection sends ``set k new`` and, in the same burst, enough big gets
    that the server sends its replies in parts (``--max-reply-bytes``) — the
    ``STORED`` leaves with the first part — and then stops reading, so the
    rest of the burst cannot be sent.  Returns that connection, once it holds
    the ``STORED``."""
    server.send_recv(
        b"set big 0 0 1000000\r\n" + b"x" * 1_000_000 + b"\r\nset k 0 0 3\r\nold\r\n",
        until=b"STORED\r\nSTORED\r\n",
    )
    server.settle()  # nothing in flight: the gets below take the fast path
    writer = server.connect()
    writer.send(b"set k 0 0 3\r\nnew\r\n" + b"get big\r\n" * big_gets)
    assert writer.recv_exact(len(b"STORED\r\n")) == b"STORED\r\n"
    return writer


def test_a_write_acknowledged_mid_burst_is_visible(server):
    """The ``STORED`` of a write left with the first part of a burst's replies:
    another connection must see the write, although the rest of the burst is
    still being answered (before, its run was handed over only at the end of
    the burst — never, while the writer did not read — and every other
    connection read the old value)."""
    writer = _write_then_big_gets(server)
    assert server.send_recv(b"get k\r\n") == b"VALUE k 0 3\r\nnew\r\nEND\r\n"
    writer.close()


def test_durable_ack_sent_mid_burst_survives_a_crash(stig_factory, data_dir):
    """``--durable-acks``: a ``STORED`` that left mid-burst is on disk (before,
    it left before the commit, and SIGKILL lost the write)."""
    server = stig_factory("--durable-acks", data_dir=data_dir)
    _write_then_big_gets(server)
    server.restart("--durable-acks", kill=True)
    assert server.send_recv(b"get k\r\n") == b"VALUE k 0 3\r\nnew\r\nEND\r\n"
