"""Crashes and restarts of a real server process.

* ``--durable-acks``: every acknowledged write survives SIGKILL;
* noreply runs are transactions: after SIGKILL each is wholly there or wholly gone;
* SIGTERM is a clean shutdown (exit 0) that loses nothing, not even an open
  run left at a command boundary.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from stig_testkit.waiting import wait_for, wait_for_stats, wait_until_read

RUN_LENGTH = 50


def _set_loud(conn, key: str, value: bytes) -> None:
    """A replying set, acknowledged."""
    request = b"set %b 0 0 %d\r\n%b\r\n" % (key.encode(), len(value), value)
    assert conn.send_recv(request, b"\r\n") == b"STORED\r\n"


def _fetch_all(server, keys: list[str], chunk: int = 200) -> dict[str, bytes]:
    client = server.client()
    found: dict[str, bytes] = {}
    for start in range(0, len(keys), chunk):
        found.update(client.get_many(keys[start : start + chunk]))
    return found


def test_acknowledged_writes_survive_sigkill_with_durable_acks(stig_factory):
    server = stig_factory("--durable-acks")
    acked: dict[str, dict[str, bytes]] = {}
    # The write each writer had sent but not seen answered when the server
    # died: it may or may not have been committed.
    in_flight: dict[int, dict[str, bytes]] = {}
    killed = threading.Event()  # the writers run until the server dies
    enough = threading.Event()  # every writer has had 50 writes acknowledged
    counts = [0] * 4

    def write(writer: int) -> None:
        mine = acked[writer] = {}
        unsure = in_flight[writer] = {}
        conn = server.connect()
        rng = random.Random(writer)
        n = 0
        try:
            while True:
                n += 1
                if rng.random() < 0.3:
                    # A noreply run closed by a replying write: all acknowledged by its reply.
                    run = {f"w{writer}-{n}-{i}": b"%d-%d-%d" % (writer, n, i) for i in range(5)}
                    batch = b"".join(
                        b"set %b 0 0 %d noreply\r\n%b\r\n" % (k.encode(), len(v), v)
                        for k, v in run.items()
                    )
                    close_key = f"w{writer}-{n}-close"
                    batch += b"set %b 0 0 1\r\nc\r\n" % close_key.encode()
                    unsure.update(run)
                    unsure[close_key] = b"c"
                    assert conn.send_recv(batch, b"\r\n") == b"STORED\r\n"
                else:
                    key, value = f"w{writer}-{n}", b"value-%d-%d" % (writer, n)
                    unsure[key] = value
                    _set_loud(conn, key, value)
                mine.update(unsure)
                unsure.clear()
                counts[writer] += 1
                if min(counts) >= 50:
                    enough.set()
                # Overwrites of acknowledged keys must survive too.
                if mine and rng.random() < 0.2:
                    key = rng.choice(list(mine))
                    value = b"over-%d" % n
                    unsure[key] = value
                    _set_loud(conn, key, value)
                    mine.update(unsure)
                    unsure.clear()
        except (ConnectionError, OSError, TimeoutError):
            if not killed.is_set():
                raise  # only the kill may end a writer

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(write, i) for i in range(4)]
        # Kill mid-stream once every writer has something acknowledged to lose
        # (a fixed sleep acknowledged nothing on a loaded machine).
        assert enough.wait(60), f"writers stalled: {counts} acknowledged"
        killed.set()
        server.kill()  # mid-stream: writers are between send and reply
        for future in futures:
            future.result()

    expected = {k: v for mine in acked.values() for k, v in mine.items()}
    assert len(expected) > 50, "too few writes were acknowledged to prove anything"
    server.start()
    found = _fetch_all(server, list(expected))
    missing = sorted(set(expected) - set(found))
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    maybe = {k: v for unsure in in_flight.values() for k, v in unsure.items()}
    wrong = {k: (found[k], v) for k, v in expected.items() if found[k] not in (v, maybe.get(k))}
    assert not wrong, f"acknowledged values not kept: {list(wrong.items())[:5]}"


def test_noreply_runs_are_all_or_nothing_after_sigkill(stig_factory):
    """Runs of 50 noreply sets from several connections; SIGKILL mid-stream."""
    server = stig_factory("--batch-idle-ms", "200")
    writers = 4
    sent_runs: dict[int, list[str]] = {w: [] for w in range(writers)}
    killed = threading.Event()  # the writers run until the server dies

    def write(writer: int) -> None:
        conn = server.connect()
        rng = random.Random(writer)
        run = 0
        try:
            while True:
                run += 1
                run_id = f"r{writer}-{run}"
                batch = b"".join(
                    b"set %b-%d 0 0 %d noreply\r\n%b:%d\r\n"
                    % (run_id.encode(), i, len(run_id) + 1 + len(str(i)), run_id.encode(), i)
                    for i in range(RUN_LENGTH)
                )
                ending = rng.random()
                if ending < 0.4:
                    batch += b"version\r\n"  # closed by a replying command
                elif ending < 0.6:
                    batch += b"set %b-close 0 0 1\r\nc\r\n" % run_id.encode()  # part of the run
                sent_runs[writer].append(run_id)
                # Each run goes out in pieces cut anywhere, with pauses far
                # shorter than --batch-idle-ms: the server receives runs
                # split across bursts, as a real stream often is.
                cuts = sorted(rng.sample(range(1, len(batch)), 2))
                for start, end in itertools.pairwise([0, *cuts, len(batch)]):
                    conn.send(batch[start:end])
                    time.sleep(0.002)
                if ending < 0.6:
                    conn.recv_until(b"\r\n")
                else:
                    time.sleep(0.001)  # left open: a later run or the idle timer closes it
        except (ConnectionError, OSError, TimeoutError):
            if not killed.is_set():
                raise

    with ThreadPoolExecutor(writers) as pool:
        futures = [pool.submit(write, i) for i in range(writers)]
        # Kill only once some runs are committed (visible to another connection).
        probe = server.client()
        # Each writer's 6th run closed and committed: earlier runs are whole,
        # later ones are in every state when the kill comes.
        marks = [f"r{w}-6-{RUN_LENGTH - 1}" for w in range(writers)]
        wait_for(
            lambda: len(probe.get_many(marks)),
            lambda found: found >= writers,
            what="every writer's 6th run committed",
        )
        killed.set()
        server.kill()
        for future in futures:
            future.result()

    server.start()
    present = complete = 0
    partial = {}
    all_runs = [run_id for runs in sent_runs.values() for run_id in runs]
    for start in range(0, len(all_runs), 20):
        chunk = all_runs[start : start + 20]
        keys = [f"{run_id}-{i}" for run_id in chunk for i in range(RUN_LENGTH)]
        found = _fetch_all(server, keys)
        for run_id in chunk:
            members = [f"{run_id}-{i}" for i in range(RUN_LENGTH)]
            count = sum(key in found for key in members)
            if count:
                present += 1
                assert all(
                    found[k] == b"%s:%d" % (run_id.encode(), i)
                    for i, k in enumerate(members)
                    if k in found
                )
            if count == RUN_LENGTH:
                complete += 1
            elif count:
                partial[run_id] = count
    assert not partial, f"runs partially present after the crash: {partial}"
    assert present >= writers, "too few runs survived to prove anything"
    # The crash really happened mid-stream: some runs that were sent are gone.
    assert complete < len(all_runs)


def test_data_survives_a_clean_restart(stig_factory):
    server = stig_factory()
    client = server.client()
    items = {f"clean-{i}": b"v%d" % i * (i % 7 + 1) for i in range(300)}
    client.set_many(items)
    client.set("counter", b"10")
    client.incr("counter", 5)
    client.set("gone", b"x")
    client.delete("gone")
    client.append("clean-0", b"+tail")
    _, token = client.gets("clean-1")
    assert client.cas("clean-1", b"swapped", token) is True
    assert server.terminate() == 0
    server.start()
    client = server.client()
    items["clean-0"] += b"+tail"
    items["clean-1"] = b"swapped"
    assert _fetch_all(server, list(items)) == items
    assert client.get("counter") == b"15"
    assert client.get("gone") is None
    # The cas counter went on from where it was: uniques are not reused.
    _, new_token = client.gets("clean-1")
    client.set("clean-1", b"again")
    _, newer_token = client.gets("clean-1")
    assert int(newer_token) > int(new_token) >= int(token)
    assert server.stats()["curr_items"] == str(len(items) + 1)


def test_sigterm_commits_an_open_run_left_at_a_command_boundary(stig_factory):
    # A short grace: the torn command below is never finished, so the
    # shutdown ends when the grace does (and discards it).
    server = stig_factory("--batch-idle-ms", "60000", "--shutdown-grace-ms", "200")
    keys = [f"open-{i}" for i in range(40)]
    conn = server.connect()
    conn.send(b"".join(b"set %b 0 0 2 noreply\r\nok\r\n" % k.encode() for k in keys))
    # The server has read them all (the 60 s idle timer is far away) ...
    wait_until_read(server, len(keys))
    # ... yet no other connection sees them: the run is open.
    assert server.client().get_many(keys) == {}
    torn = server.connect()
    read_before = int(server.stats()["bytes_read"])
    torn_bytes = b"set torn 0 0 10 noreply\r\nabc"  # a command cut in the middle
    torn.send(torn_bytes)
    # Until the server has read it (the stats request adds its own bytes too).
    wait_for_stats(
        server,
        lambda s: int(s["bytes_read"]) >= read_before + len(torn_bytes),
        what="the server reading the torn command",
    )
    assert server.terminate() == 0
    server.start()
    found = server.client().get_many([*keys, "torn"])
    assert found == {k: b"ok" for k in keys}


def test_sigterm_with_idle_connections_exits_cleanly_and_keeps_acked_writes(stig_factory):
    server = stig_factory()
    idle = [server.connect() for _ in range(5)]
    conn = idle[0]
    assert conn.send_recv(b"set k 0 0 1\r\nv\r\n", b"\r\n") == b"STORED\r\n"
    assert server.terminate() == 0
    assert all(c.is_closed_by_peer(2.0) for c in idle)
    server.start()
    assert server.client().get("k") == b"v"


def test_sigterm_right_after_the_ready_line_is_a_clean_shutdown(tmp_path):
    """Signal handlers are installed before the server says it listens: a
    supervisor that stops it at once gets exit 0, not death by SIGTERM (-15).
    Before, 28 of 30 such stops died by the signal."""
    import signal
    import subprocess
    import sys

    from stig_testkit.process import CODE_ROOT as REPO

    for attempt in range(10):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stig",
                "serve",
                "--port",
                "0",
                "--data-dir",
                str(tmp_path / str(attempt)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"stig listening on ")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, f"attempt {attempt}: exit {proc.returncode}"
