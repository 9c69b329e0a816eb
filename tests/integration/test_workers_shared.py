"""What every worker of ``stig serve --workers 2`` shares (docs/workers.md,
"The shared region"): the ``stats`` counters, summed whichever worker
answers, ``stats detail`` (one switch, one dump, one bound), the write
budget (``--max-pending-bytes``) and its turns, and ``--max-connections``.
Each test pins connections to chosen workers by their ``stig_worker_id``
stat."""

from __future__ import annotations

import pytest

from stig_testkit.waiting import wait_for, wait_for_stats
from stig_testkit.workers import on_worker, stats_of

WORKERS = ("--workers", "2")
VALUE = b"w" * 100_000


def test_stats_on_either_worker_count_what_both_did(stig_factory):
    """A set answered on worker 0 and gets answered on worker 1 are in the
    counters of a ``stats`` on either worker, at once (no wait: a counter is
    bumped in shared memory before its reply leaves); so are the store's
    figures (once committed) and both connections."""
    server = stig_factory(*WORKERS)
    zero, one = on_worker(server, 0), on_worker(server, 1)
    before = stats_of(one)
    for j in range(5):
        assert zero.send_recv(b"set s%d 0 0 3\r\nabc\r\n" % j, b"\r\n") == b"STORED\r\n"
    for _ in range(3):
        assert one.send_recv(b"get s0 nope\r\n") == b"VALUE s0 0 3\r\nabc\r\nEND\r\n"
    for conn in (zero, one):
        after = stats_of(conn)
        assert int(after["cmd_set"]) - int(before["cmd_set"]) == 5
        assert int(after["cmd_get"]) - int(before["cmd_get"]) == 6
        assert int(after["get_hits"]) - int(before["get_hits"]) == 3
        assert int(after["get_misses"]) - int(before["get_misses"]) == 3
        assert int(after["curr_connections"]) >= 2
    # The store's figures: the same on both once the sets are committed
    # (each worker hears them from the writer with its own commits).
    wait_for(
        lambda: (stats_of(zero, b"items"), stats_of(one, b"items"), stats_of(one)),
        lambda got: got[0] == got[1] and got[2]["total_items"] == stats_of(zero)["total_items"],
        what="the store's figures alike on both workers",
    )


def test_stats_reset_on_one_worker_resets_both(stig_factory):
    server = stig_factory(*WORKERS)
    zero, one = on_worker(server, 0), on_worker(server, 1)
    assert zero.send_recv(b"set r 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
    assert one.send_recv(b"stats reset\r\n", b"\r\n") == b"RESET\r\n"
    assert stats_of(zero)["cmd_set"] == "0"


def _noreply_sets(prefix: bytes, count: int, value: bytes = VALUE) -> bytes:
    return b"".join(
        b"set %b%d 0 0 %d noreply\r\n%b\r\n" % (prefix, j, len(value), value) for j in range(count)
    )


def test_one_write_budget_and_its_turns_span_both_workers(stig_factory):
    """An open run of 600 kB on worker 0 and one of 500 kB on worker 1 pass
    a 1 MiB budget together (each alone would not): worker 1's run holds,
    and a run growing on worker 0 waits for room until the holder's run
    ends, then goes on (docs/pov.md, "The barrier": open runs take turns)."""
    server = stig_factory(*WORKERS, "--max-pending-bytes", "1m", "--batch-idle-ms", "60000")
    opener = on_worker(server, 0, timeout=60)
    holder = on_worker(server, 1, timeout=60)
    waiter = on_worker(server, 0, timeout=60)

    def open_bytes(at_least: int):
        return lambda s: int(s["stig_open_run_bytes"]) >= at_least

    opener.send(_noreply_sets(b"o", 6))
    # (A stats on one of these connections would close its run: a fresh
    # connection asks, on whichever worker it lands.)
    wait_for_stats(server, open_bytes(600_000), what="the opener's run")
    holder.send(_noreply_sets(b"h", 5))
    wait_for_stats(server, open_bytes((1 << 20) + 1), what="the holder past the budget")
    waiter.send(_noreply_sets(b"w", 3, b"y"))
    wait_for_stats(
        server,
        lambda s: s["stig_open_run_waiting"] == "1",
        what="the waiter on the other worker than the holder waiting",
    )
    assert holder.send_recv(b"mn\r\n", b"MN\r\n") == b"MN\r\n"
    assert waiter.send_recv(b"mn\r\n", b"MN\r\n", timeout=30) == b"MN\r\n"
    assert opener.send_recv(b"mn\r\n", b"MN\r\n", timeout=30) == b"MN\r\n"
    got = holder.send_recv(b"get o5 h4 w2\r\n")
    assert got.count(b"VALUE ") == 3


def test_max_connections_bounds_both_workers_together(stig_factory):
    """``--max-connections 2`` admits two connections in all, not two per worker."""
    server = stig_factory(*WORKERS, "--max-connections", "2")
    first, second = server.connect(), server.connect()
    for conn in (first, second):  # both are being served
        assert conn.send_recv(b"version\r\n", b"\r\n").startswith(b"VERSION ")
    for _ in range(4):  # whichever worker each lands on
        assert server.connect().recv_until(None) == b"ERROR Too many open connections\r\n"


def test_stats_detail_is_one_switch_and_one_dump_for_both_workers(stig_factory):
    """``stats detail on`` asked on worker 0 counts on worker 1 too, and a dump
    on either worker lists both workers' prefixes with their counts summed
    (memcached's format, doc/protocol.txt "stats detail"); ``off`` and
    ``stats reset`` asked on one worker reach the other."""
    server = stig_factory(*WORKERS)
    zero, one = on_worker(server, 0), on_worker(server, 1)
    assert zero.send_recv(b"stats detail on\r\n", b"\r\n") == b"OK\r\n"
    assert stats_of(one, b"settings")["detail_enabled"] == "yes"
    assert zero.send_recv(b"set a:1 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
    assert one.send_recv(b"set b:1 0 0 2\r\nyy\r\n", b"\r\n") == b"STORED\r\n"
    assert one.send_recv(b"get a:1 a:2\r\n") == b"VALUE a:1 0 1\r\nx\r\nEND\r\n"
    assert one.send_recv(b"delete a:3\r\n", b"\r\n") == b"NOT_FOUND\r\n"
    assert zero.send_recv(b"get b:1\r\n") == b"VALUE b:1 0 2\r\nyy\r\nEND\r\n"
    dump = b"PREFIX a get 2 hit 1 set 1 del 1\r\nPREFIX b get 1 hit 1 set 1 del 0\r\nEND\r\n"
    for conn in (zero, one):
        assert conn.send_recv(b"stats detail dump\r\n") == dump
        stats = stats_of(conn)
        assert (stats["stig_detail_prefixes"], stats["stig_detail_prefix_bytes"]) == ("2", "2")
    assert one.send_recv(b"stats detail off\r\n", b"\r\n") == b"OK\r\n"
    assert stats_of(zero, b"settings")["detail_enabled"] == "no"
    zero.send_recv(b"get a:1 c:1\r\n")  # not counted
    assert zero.send_recv(b"stats detail dump\r\n") == dump
    assert one.send_recv(b"stats reset\r\n", b"\r\n") == b"RESET\r\n"
    for conn in (zero, one):
        assert conn.send_recv(b"stats detail dump\r\n") == b"END\r\n"
        assert stats_of(conn)["stig_detail_prefixes"] == "0"


def _count_gets(conn, keys: list[bytes]) -> None:
    """``get`` every key, a few keys a line (each line under 2048 bytes)."""
    lines, line = [], b"get"
    for key in keys:
        if len(line) + len(key) > 2000:
            lines.append(line + b"\r\n")
            line = b"get"
        line += b" " + key
    conn.send(b"".join(lines) + line + b"\r\n")
    assert set(conn.barrier().split(b"\r\n")) == {b"END", b""}  # all misses


@pytest.mark.parametrize("workers", ["0", "2"])
def test_stats_detail_bound_is_the_servers(stig_factory, workers):
    """The bound of ``stats detail`` (docs/workers.md): 65536 prefixes and
    1 MiB of them for the whole server, the same on one process and on two
    workers, whichever worker saw each prefix first; keys of a prefix past
    the bound are not counted and are shown in ``stig_detail_uncounted``."""
    server = stig_factory("--workers", workers)
    conns = [on_worker(server, worker) for worker in range(max(int(workers), 1))]
    settings = stats_of(conns[0], b"settings")
    max_prefixes = int(settings["stig_detail_max_prefixes"])
    max_bytes = int(settings["stig_detail_max_prefix_bytes"])
    assert (max_prefixes, max_bytes) == (65536, 1 << 20)
    assert conns[0].send_recv(b"stats detail on\r\n", b"\r\n") == b"OK\r\n"
    # The number: short prefixes, half of them seen first by each worker.
    keys = [b"%x:k" % j for j in range(max_prefixes + 3)]
    for at, conn in enumerate(conns):
        _count_gets(conn, keys[at :: len(conns)])
    _count_gets(conns[-1], [b"0:k", b"zz:k"])  # a known prefix counts; a new one does not
    for conn in conns:
        stats = stats_of(conn)
        assert int(stats["stig_detail_prefixes"]) == max_prefixes
        assert int(stats["stig_detail_uncounted"]) == 4
    dump = conns[0].send_recv(b"stats detail dump\r\n")
    assert dump.count(b"\r\nPREFIX ") + 1 == max_prefixes
    assert b"PREFIX 0 get 2 hit 0 set 0 del 0\r\n" in dump
    assert b"PREFIX zz " not in dump
    # The bytes: 248-byte prefixes (the longest a 250-byte key has), then one
    # short enough for the room left.
    assert conns[0].send_recv(b"stats reset\r\n", b"\r\n") == b"RESET\r\n"
    fitting = max_bytes // 248
    keys = [b"%0248d:k" % j for j in range(fitting + 1)]
    for at, conn in enumerate(conns):
        _count_gets(conn, keys[at :: len(conns)])
    room = max_bytes - fitting * 248
    _count_gets(conns[0], [b"r" * room + b":k", b"s:k"])
    for conn in conns:
        stats = stats_of(conn)
        assert int(stats["stig_detail_prefixes"]) == fitting + 1
        assert int(stats["stig_detail_prefix_bytes"]) == max_bytes
        assert int(stats["stig_detail_uncounted"]) == 2


GAUGES = ("curr_items", "total_items", "bytes")


def _gauges(conn) -> tuple[dict[str, str], dict[str, str]]:
    """The store's gauges in ``stats`` and ``stats items`` on this connection."""
    general, items = stats_of(conn), stats_of(conn, b"items")
    return {name: general[name] for name in GAUGES}, {
        name: value for name, value in items.items() if name.endswith((":number", ":bytes"))
    }


def test_store_gauges_are_the_committed_ones_on_every_worker(stig_factory):
    """``curr_items``, ``total_items`` and ``bytes`` (and ``stats items``) on
    every worker are the store's as committed: on a follower with workers,
    whose stream worker 0 hands to the writer (worker 1 commits nothing: it
    showed ``bytes 0`` until worker 0 answered a ``stats``, issue 20's flaky
    put-run test), and on a primary restarted, on the worker that has not
    committed since.  Worker 1 is asked first, and the catch-up is awaited
    on it: a ``stats`` on worker 0 would have copied its figures in."""
    primary = stig_factory(*WORKERS, "--replication-open")
    follower = stig_factory(*WORKERS, "--replica-of", f"{primary.host}:{primary.port}")
    one = on_worker(follower, 1)
    writes = primary.connect()
    for j in range(7):
        value = b"v" * (j + 1)
        assert (
            writes.send_recv(b"set g%d 0 0 %d\r\n%b\r\n" % (j, j + 1, value), b"\r\n")
            == b"STORED\r\n"
        )
    primary.settle()
    target = int(primary.stats()["replication_seq"])
    wait_for(
        lambda: stats_of(one),
        lambda got: int(got["replication_applied_seq"]) >= target,
        what=f"the follower applying group {target}",
    )
    wanted = _gauges(primary.connect())
    assert wanted[0] == {"curr_items": "7", "total_items": "7", "bytes": "28"}
    assert _gauges(one) == wanted, "follower worker 1"
    assert _gauges(on_worker(follower, 0)) == wanted, "follower worker 0"
    writes.close()
    primary.restart()
    one = on_worker(primary, 1)
    zero = on_worker(primary, 0)
    assert zero.send_recv(b"set g9 0 0 2\r\nvv\r\n", b"\r\n") == b"STORED\r\n"
    primary.settle()
    wanted = _gauges(zero)
    assert wanted[0] == {"curr_items": "8", "total_items": "8", "bytes": "30"}
    assert _gauges(one) == wanted, "restarted primary, worker 1"
