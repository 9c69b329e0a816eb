"""Points of view with several connections: what each client sees, and when.

A connection's writes are answered from its own point of view and become
visible to others once committed; a run of noreply writes commits as one
transaction when a replying command closes it (or the client pauses for
``--batch-idle-ms``, or leaves at a command boundary); a multi-key ``get``
reads one snapshot; every increment counts; of concurrent ``add``s exactly
one wins.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

from stig_testkit.waiting import wait_for, wait_until_read

T = TypeVar("T")


def run_threads(count: int, target: Callable[[int], T]) -> list[T]:
    """Run ``target(i)`` on ``count`` threads at once; re-raise the first failure."""
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(target, range(count)))


def noreply_sets(items: dict[str, bytes]) -> bytes:
    return b"".join(
        b"set %b 0 0 %d noreply\r\n%b\r\n" % (k.encode(), len(v), v) for k, v in items.items()
    )


# -- one connection sees its own writes --------------------------------------------


def test_read_your_writes_before_the_commit(stig_factory):
    server = stig_factory("--batch-idle-ms", "2000")
    writer, other = server.connect(), server.connect()
    writer.send(b"set ryw 0 0 5 noreply\r\nfirst\r\n")
    wait_until_read(server, 1)
    # The run is still open (2 s of batching): only the writer sees it.
    assert other.send_recv(b"get ryw\r\n") == b"END\r\n"
    assert writer.send_recv(b"get ryw\r\n") == b"VALUE ryw 0 5\r\nfirst\r\nEND\r\n"
    writer.send(b"set ryw 0 0 6 noreply\r\nsecond\r\nappend ryw 0 0 1 noreply\r\n!\r\n")
    writer.send(b"incr nope 1 noreply\r\ndelete nope noreply\r\n")
    assert writer.send_recv(b"get ryw nope\r\n") == b"VALUE ryw 0 7\r\nsecond!\r\nEND\r\n"
    # The get closed the run: it commits, and then everyone sees the last write.
    wait_for(
        lambda: other.send_recv(b"get ryw\r\n"),
        lambda reply: reply == b"VALUE ryw 0 7\r\nsecond!\r\nEND\r\n",
    )


def test_read_your_own_deletes_and_increments(stig_factory):
    server = stig_factory("--batch-idle-ms", "2000")
    setup = server.client()
    setup.set_many({"d": b"x", "n": b"41"})
    server.settle()
    conn = server.connect()
    conn.send(b"delete d noreply\r\nincr n 1 noreply\r\n")
    assert conn.send_recv(b"get d n\r\n") == b"VALUE n 0 2\r\n42\r\nEND\r\n"
    assert conn.send_recv(b"incr n 8\r\n", b"\r\n") == b"50\r\n"
    assert conn.send_recv(b"delete d\r\n", b"\r\n") == b"NOT_FOUND\r\n"


# -- noreply runs are transactions ------------------------------------------------------


def test_noreply_run_is_invisible_until_closed_then_fully_visible(stig_factory):
    server = stig_factory("--batch-idle-ms", "2000")
    keys = [f"run-{i}" for i in range(20)]
    writer = server.connect()
    reader = server.client()
    writer.send(noreply_sets({k: b"v-" + k.encode() for k in keys[:10]}))
    wait_until_read(server, 10)
    writer.send(noreply_sets({k: b"v-" + k.encode() for k in keys[10:]}))
    wait_until_read(server, 20)  # the whole run is in the writer's POV now
    # Well within the 2 s of batching, other connections see none of the run
    # (looked at repeatedly: the pause paces a check that nothing happens).
    deadline = time.monotonic() + 0.4
    while time.monotonic() < deadline:
        assert reader.get_many(keys) == {}
        time.sleep(0.02)
    # The closing command: a write that wants a reply ends the run.
    assert writer.send_recv(b"set closer 0 0 1\r\nc\r\n", b"\r\n") == b"STORED\r\n"

    def snapshot() -> dict:
        seen = reader.get_many([*keys, "closer"])
        # All or nothing, whenever the reader looks.
        assert len(seen) in (0, len(keys) + 1), sorted(seen)
        return seen

    seen = wait_for(snapshot, lambda seen: len(seen) == len(keys) + 1)
    assert seen == {**{k: b"v-" + k.encode() for k in keys}, "closer": b"c"}


@pytest.mark.parametrize(
    "closing", [b"get x\r\n", b"version\r\n", b"delete x\r\n", b"incr x 1\r\n"]
)
def test_any_replying_command_closes_the_run(stig_factory, closing):
    server = stig_factory("--batch-idle-ms", "5000")
    writer = server.connect()
    reader = server.client()
    keys = [f"k{i}" for i in range(5)]
    writer.send(noreply_sets({k: b"1" for k in keys}))
    writer.send(closing)
    writer.recv_until(b"\r\n")  # whatever the answer, the run is now closed
    started = time.monotonic()
    wait_for(lambda: reader.get_many(keys), lambda seen: len(seen) == len(keys), timeout=2.0)
    assert time.monotonic() - started < 2.0  # not the 5 s idle timer


def test_open_run_commits_after_the_idle_pause(stig_factory):
    server = stig_factory("--batch-idle-ms", "150")
    writer = server.connect()
    reader = server.client()
    keys = [f"idle-{i}" for i in range(30)]
    writer.send(noreply_sets({k: b"x" for k in keys}))
    sent = time.monotonic()

    def snapshot() -> dict:
        seen = reader.get_many(keys)
        assert len(seen) in (0, len(keys))
        return seen

    wait_for(snapshot, lambda seen: len(seen) == len(keys), timeout=3.0)
    assert time.monotonic() - sent >= 0.1  # not before the pause


def test_open_run_commits_when_the_client_leaves_at_a_command_boundary(stig_factory):
    server = stig_factory("--batch-idle-ms", "10000")
    keys = [f"leave-{i}" for i in range(25)]
    writer = server.connect()
    writer.send(noreply_sets({k: b"x" for k in keys}))
    wait_until_read(server, len(keys))
    writer.close()
    reader = server.client()
    wait_for(lambda: reader.get_many(keys), lambda seen: len(seen) == len(keys), timeout=3.0)


def test_a_torn_command_at_disconnect_is_not_stored(stig_factory):
    server = stig_factory("--batch-idle-ms", "10000")
    keys = [f"torn-{i}" for i in range(10)]
    writer = server.connect()
    payload = noreply_sets({k: b"x" for k in keys}) + b"set torn-last 0 0 10 noreply\r\nabc"
    writer.send(payload)
    # Wait until the server has read all of it (stats' own requests count too),
    # then drop the connection mid-command and wait until the server saw that.
    wait_for(server.stats, lambda s: int(s["bytes_read"]) >= len(payload), timeout=10.0)
    writer.close()
    wait_for(server.stats, lambda s: s["curr_connections"] == "1", timeout=10.0)
    marker = server.client()
    marker.set("marker", b"1")
    server.settle()
    # docs/pov.md: a run ended by a connection dropped mid-command is discarded whole.
    assert marker.get_many([*keys, "torn-last"]) == {}


def test_concurrent_noreply_runs_are_atomic(stig_server):
    """Several writers rewrite one group of keys in runs; readers never see a mix."""
    keys = [f"g{i}" for i in range(8)]
    rounds = 150
    stop = threading.Event()

    def write(writer_id: int) -> None:
        conn = stig_server.connect()
        for n in range(rounds):
            value = b"%d-%d" % (writer_id, n)
            batch = noreply_sets({k: value for k in keys[:-1]})
            batch += b"set %b 0 0 %d\r\n%b\r\n" % (keys[-1].encode(), len(value), value)
            assert conn.send_recv(batch, b"\r\n") == b"STORED\r\n"

    def read(_: int) -> int:
        client = stig_server.client()
        full = 0
        while not stop.is_set():
            seen = client.get_many(keys)
            assert len(seen) in (0, len(keys)), seen
            assert len(set(seen.values())) <= 1, f"a torn multi-get: {seen}"
            full += bool(seen)
        return full

    with ThreadPoolExecutor(6) as pool:
        readers = [pool.submit(read, i) for i in range(3)]
        writers = [pool.submit(write, i) for i in range(3)]
        for future in writers:
            future.result()
        stop.set()
        assert sum(future.result() for future in readers) > 0


def test_multi_get_reads_one_snapshot_while_a_writer_moves_on(stig_server):
    keys = ["ma", "mb", "mc", "md"]
    stop = threading.Event()
    versions = 300

    def write() -> None:
        conn = stig_server.connect()
        for version in range(1, versions + 1):
            value = b"%d" % version
            batch = noreply_sets({k: value for k in keys[:-1]})
            batch += b"set md 0 0 %d\r\n%b\r\n" % (len(value), value)
            assert conn.send_recv(batch, b"\r\n") == b"STORED\r\n"

    def read() -> list[int]:
        client = stig_server.client()
        seen_versions = []
        while not stop.is_set():
            seen = client.get_many(keys)
            if seen:
                values = set(seen.values())
                assert len(seen) == 4 and len(values) == 1, f"inconsistent multi-get: {seen}"
                seen_versions.append(int(values.pop()))
        return seen_versions

    with ThreadPoolExecutor(3) as pool:
        readers = [pool.submit(read) for _ in range(2)]
        writer = pool.submit(write)
        writer.result()
        stop.set()
        for future in readers:
            seen_versions = future.result()
            assert seen_versions, "the reader never saw the keys"
            # One connection never goes back in time.
            assert seen_versions == sorted(seen_versions)
    stig_server.settle()
    assert stig_server.client().get_many(keys) == {k: b"%d" % versions for k in keys}


# -- every increment counts, exactly one add wins --------------------------------------


def test_every_increment_counts(stig_server):
    setup = stig_server.client()
    setup.set("counter", b"0")
    stig_server.settle()
    threads, per_thread = 8, 200

    def bump(_: int) -> list[int]:
        client = stig_server.client()
        return [client.incr("counter", 1) for _ in range(per_thread)]

    results = run_threads(threads, bump)
    total = threads * per_thread
    for answers in results:
        # Every answer is a possible value, growing within one connection.
        assert all(1 <= value <= total for value in answers)
        assert answers == sorted(answers) and len(set(answers)) == per_thread
    stig_server.settle()
    assert setup.get("counter") == b"%d" % total


def test_every_noreply_increment_and_decrement_counts(stig_server):
    setup = stig_server.client()
    setup.set("nr-counter", b"1000000")
    stig_server.settle()

    def bump(index: int) -> None:
        conn = stig_server.connect()
        command = (
            b"incr nr-counter 3 noreply\r\n" if index % 2 else b"decr nr-counter 1 noreply\r\n"
        )
        for _ in range(10):
            conn.send(command * 30)
        assert conn.send_recv(b"version\r\n", b"\r\n").startswith(b"VERSION")

    run_threads(6, bump)
    stig_server.settle()
    assert setup.get("nr-counter") == b"%d" % (1000000 + 3 * 300 * 3 - 300 * 3)


def test_of_concurrent_adds_exactly_one_is_stored(stig_server):
    keys = [f"add-{i}" for i in range(60)]
    threads = 6
    barrier = threading.Barrier(threads)

    def add_all(index: int) -> dict[str, bool]:
        client = stig_server.client()
        order = keys[:]
        random.Random(index).shuffle(order)
        barrier.wait()
        return {k: client.add(k, b"from-%d" % index) for k in order}

    results = run_threads(threads, add_all)
    stig_server.settle()
    final = stig_server.client().get_many(keys)
    for key in keys:
        winners = [i for i, result in enumerate(results) if result[key]]
        assert len(winners) == 1, f"{key}: STORED for {winners}"
        assert final[key] == b"from-%d" % winners[0]


def test_concurrent_cas_loops_lose_no_update(stig_server):
    setup = stig_server.client()
    setup.set("cas-counter", b"0")
    stig_server.settle()
    threads, successes_each = 4, 25

    def loop(_: int) -> int:
        client = stig_server.client()
        done = attempts = 0
        while done < successes_each:
            attempts += 1
            value, token = client.gets("cas-counter")
            if client.cas("cas-counter", b"%d" % (int(value) + 1), token):
                done += 1
        return attempts

    attempts = run_threads(threads, loop)
    assert setup.get("cas-counter") == b"%d" % (threads * successes_each)
    stats = stig_server.stats()
    assert int(stats["cas_hits"]) == threads * successes_each
    assert int(stats["cas_badval"]) == sum(attempts) - threads * successes_each


# -- cas uniques --------------------------------------------------------------------------


def test_gets_returns_committed_cas_values(stig_factory):
    server = stig_factory("--batch-idle-ms", "2000")
    writer = server.connect()
    writer.send(b"set g 0 0 2 noreply\r\nv1\r\n")
    # gets on the writer waits for the pending write's commit: a real unique.
    head = writer.send_recv(b"gets g\r\n").split(b"\r\n")[0]
    assert head.startswith(b"VALUE g 0 2 ")
    unique = int(head.split()[4])
    assert unique > 0
    # Everyone else sees the same unique right away (it is committed)...
    other = server.client()
    assert other.gets("g") == (b"v1", b"%d" % unique)
    # ...and it works for cas from any connection.
    assert other.cas("g", b"v2", b"%d" % unique) is True
    assert writer.send_recv(b"cas g 0 0 2 %d\r\nv3\r\n" % unique, b"\r\n") == b"EXISTS\r\n"
    value, new_unique = other.gets("g")
    assert value == b"v2" and int(new_unique) > unique


def test_cas_after_a_pending_write_of_the_same_connection(stig_factory):
    server = stig_factory("--batch-idle-ms", "2000")
    conn = server.connect()
    conn.send(b"set c 0 0 1\r\na\r\n")
    assert conn.recv_until(b"\r\n") == b"STORED\r\n"
    unique = int(conn.send_recv(b"gets c\r\n").split(b"\r\n")[0].split()[4])
    conn.send(b"append c 0 0 1 noreply\r\nb\r\n")
    # The append changed the item: the old unique no longer matches.
    assert conn.send_recv(b"cas c 0 0 1 %d\r\nz\r\n" % unique, b"\r\n") == b"EXISTS\r\n"
    assert conn.send_recv(b"get c\r\n") == b"VALUE c 0 2\r\nab\r\nEND\r\n"


# -- durable acks -------------------------------------------------------------------------


def test_durable_acks_make_acknowledged_writes_visible_to_all(stig_factory):
    server = stig_factory("--durable-acks", "--batch-idle-ms", "5000")
    assert server.stats("settings")["stig_durable_acks"] == "yes"
    writer = server.connect()
    reader = server.client()
    for i in range(30):
        assert writer.send_recv(b"set d%d 0 0 1\r\nx\r\n" % i, b"\r\n") == b"STORED\r\n"
        # Acknowledged means committed: no waiting needed on another connection.
        assert reader.get(f"d{i}") == b"x"
    writer.send(noreply_sets({f"run{i}": b"y" for i in range(10)}))
    assert writer.send_recv(b"incr nope 1\r\n", b"\r\n") == b"NOT_FOUND\r\n"
    assert reader.get_many([f"run{i}" for i in range(10)]) == {f"run{i}": b"y" for i in range(10)}
    assert server.stats()["stig_durable_acks"] == "1"


# -- a run too large to hold --------------------------------------------------------------


def test_a_run_larger_than_max_pending_bytes_is_refused_whole(stig_factory):
    server = stig_factory("--max-pending-bytes", "64k", "--batch-idle-ms", "2000")
    value = b"x" * 10_000
    conn = server.connect()
    conn.send(noreply_sets({f"huge-{i}": value for i in range(10)}))
    assert conn.recv_until(None) == (
        b"SERVER_ERROR transaction larger than --max-pending-bytes; discarded\r\n"
    )
    client = server.client()
    server.settle()
    assert client.get_many([f"huge-{i}" for i in range(10)]) == {}
    # Writes that each get a reply are separate transactions: no limit on their total.
    other = server.connect()
    batch = b"".join(b"set ok-%d 0 0 %d\r\n%b\r\n" % (i, len(value), value) for i in range(20))
    assert other.send_recv(batch, b"STORED\r\n" * 20) == b"STORED\r\n" * 20
    server.settle()
    assert len(client.get_many([f"ok-{i}" for i in range(20)])) == 20


def test_mn_is_a_durability_barrier_for_classic_noreply_runs(stig_factory):
    """A classic noreply run closed by ``mn``: MN means all of it is on disk."""
    server = stig_factory("--batch-idle-ms", "60000")
    with server.connect() as conn:
        conn.send(b"set a 0 0 1 noreply\r\n1\r\nset n 0 0 2 noreply\r\n10\r\nincr n 5 noreply\r\n")
        # Everything received up to MN is MN: the noreply writes said nothing.
        assert conn.send_recv(b"mn\r\n", b"MN\r\n") == b"MN\r\n"
        server.kill()  # right after MN: nothing may be lost
    server.start()
    assert server.send_recv(b"get a n\r\n") == b"VALUE a 0 1\r\n1\r\nVALUE n 0 2\r\n15\r\nEND\r\n"
