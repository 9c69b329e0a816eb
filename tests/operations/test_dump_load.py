"""stig dump / stig load: round trips, migration from memcached, live snapshots."""

from __future__ import annotations

import base64
import io
import os
import random
import socket
import subprocess
import sys
import threading

from opstools import run_stig
from support.memcached_ref import exchange, memcached

from stig.tools import dumpfmt
from stig_testkit.process import CODE_ROOT as REPO

#: Keys in the CI round trip.  The issue's target is 100k: on the shared
#: 2-core test machine that run takes ~75 s (load ~37 s, dump ~35 s), so
#: scripts/dump_load_roundtrip.py does it (and measures rates); CI uses 20k.
ROUND_TRIP_KEYS = int(os.environ.get("STIG_ROUND_TRIP_KEYS", "20000"))


def _items(count: int, seed: int = 7) -> dict[bytes, tuple[bytes, int]]:
    rng = random.Random(seed)
    items = {}
    while len(items) < count:
        key = rng.randbytes(rng.randint(1, 40)) + len(items).to_bytes(4, "big")  # any bytes
        items[key] = (rng.randbytes(rng.randint(0, 300)), rng.getrandbits(32))
    return items


def _parse(data: bytes) -> dict[bytes, tuple[bytes, int]]:
    return {i.key: (i.value, i.flags) for i in dumpfmt.read(io.BytesIO(data)) if i is not None}


def test_round_trip_with_binary_keys_values_and_flags(stig_factory, tmp_path):
    items = _items(ROUND_TRIP_KEYS)
    source = tmp_path / "in.dump"
    source.write_bytes(
        b"".join(dumpfmt.encode_item(k, v, f) for k, (v, f) in items.items()) + b"mn\r\n"
    )
    first = stig_factory()
    loaded = run_stig("load", "--server", f"127.0.0.1:{first.port}", str(source))
    assert f"loaded {len(items):,} of {len(items):,} items".encode() in loaded.stderr
    over_protocol = run_stig("dump", "--server", f"127.0.0.1:{first.port}", "--quiet").stdout
    assert _parse(over_protocol) == items
    from_dir = run_stig("dump", "--data-dir", str(first.data_dir), "--quiet").stdout
    assert from_dir == over_protocol  # both in key order, same batches
    # Into a second server from stdin, and out again: the same bytes.
    second = stig_factory()
    run_stig("load", "--server", f"127.0.0.1:{second.port}", "-", "--quiet", input=from_dir)
    assert run_stig("dump", "--data-dir", str(second.data_dir), "--quiet").stdout == from_dir
    # A value and its flags seen by an ordinary client.
    key, (value, flags) = next((k, v) for k, v in items.items() if len(v[0]) > 0)
    reply = exchange(second.port, b"mg %b b v f\r\n" % base64.b64encode(key), value + b"\r\n")
    assert reply == b"VA %d f%d\r\n%b\r\n" % (len(value), flags, value)


def test_dump_format_is_meta_commands_with_barriers(stig_server):
    client = stig_server.client()
    client.set("a", b"xy", flags=5, noreply=False)
    client.set("b c".replace(" ", "_"), b"", flags=0, noreply=False)
    out = run_stig(
        "dump", "--data-dir", str(stig_server.data_dir), "--batch", "1", "--quiet"
    ).stdout
    assert out == (b"ms a 2 F5 q\r\nxy\r\nmn\r\nms b_c 0 F0 q\r\n\r\nmn\r\n")
    # base64 (b) only for a key a plain token cannot carry
    stig_server.client().delete("a", noreply=False)
    exchange(stig_server.port, b"ms YSBi 1 b F7\r\nz\r\n", b"HD\r\n")  # "a b"
    stig_server.settle()
    out = run_stig("dump", "--data-dir", str(stig_server.data_dir), "--quiet").stdout
    assert out == b"ms YSBi 1 b F7 q\r\nz\r\nms b_c 0 F0 q\r\n\r\nmn\r\n"


def test_a_dump_replays_into_memcached_wherever_memcached_can_take_the_key(stig_server, tmp_path):
    """docs/operations.md (Dump format): keys are plain unless they need base64,
    so memcached 1.6 takes every key but those needing base64 of 187 bytes
    or more (memcached limits the base64 token to 250 bytes); those are named
    as refused.  And dump --server reads memcached's 250-byte plain keys."""
    binary = bytes(range(256))  # controls, space, DEL, high bytes
    items = {
        b"p" * 250: (b"longest plain", 1),
        b"caf\xc3\xa9:\xff": (b"high bytes are plain", 2),
        binary[:186]: (b"base64 of 248 bytes", 3),
        binary[:187]: (b"base64 of 252 bytes", 4),
        (binary * 2)[:250]: (b"base64 of 336 bytes", 5),
        b"s": (b"", 0),
    }
    exchange(
        stig_server.port,
        b"".join(
            b"ms %b %d b F%d q\r\n%b\r\n" % (base64.b64encode(k), len(v), f, v)
            for k, (v, f) in items.items()
        )
        + b"mn\r\n",
        b"MN\r\n",
    )
    stig_server.settle()
    dump = tmp_path / "stig.dump"
    run_stig("dump", "--data-dir", str(stig_server.data_dir), "-o", str(dump), "--quiet")
    too_long = {binary[:187], (binary * 2)[:250]}
    with memcached() as port:
        proc = run_stig("load", "--server", f"127.0.0.1:{port}", str(dump), check=False)
        assert proc.returncode == 1, proc.stderr
        refused = {line for line in proc.stderr.splitlines() if line.startswith(b"refused: ")}
        assert refused == {
            b"refused: key %b: CLIENT_ERROR bad command line format / ERROR" % repr(k).encode()
            for k in too_long
        }
        back = run_stig("dump", "--server", f"127.0.0.1:{port}", "--quiet").stdout
    assert _parse(back) == {k: v for k, v in items.items() if k not in too_long}


def test_migration_from_a_real_memcached(stig_server):
    items = {
        b"plain": (b"hello", 3),
        b"with:colon": (b"v" * 5000, 2**32 - 1),
        b"empty": (b"", 0),
        b"\xffbin\x00key": (b"\x00\r\n\xff", 42),
    }
    items.update({b"bulk-%d" % i: (b"%d" % i, i) for i in range(2000)})
    with memcached() as port:
        setup = b"".join(
            b"ms %b %d b F%d q\r\n%b\r\n" % (base64.b64encode(k), len(v), f, v)
            for k, (v, f) in items.items()
        )
        exchange(port, setup + b"mn\r\n", b"MN\r\n")
        dump = subprocess.Popen(
            [sys.executable, "-m", "stig", "dump", "--server", f"127.0.0.1:{port}", "--quiet"],
            cwd=REPO,
            stdout=subprocess.PIPE,
        )
        load = subprocess.run(
            [
                sys.executable,
                "-m",
                "stig",
                "load",
                "--server",
                f"127.0.0.1:{stig_server.port}",
                "--quiet",
            ],
            cwd=REPO,
            stdin=dump.stdout,
            capture_output=True,
            timeout=300,
        )
        dump.stdout.close()
        assert dump.wait(300) == 0
    assert load.returncode == 0, load.stderr
    copied = _parse(run_stig("dump", "--data-dir", str(stig_server.data_dir), "--quiet").stdout)
    assert copied == items
    assert stig_server.client().get(b"with:colon") == b"v" * 5000


class RunWriter(threading.Thread):
    """Quiet runs, numbered n = 0, 1, …: each writes ``a:<name>`` = n, three keys
    ``r:<name>:<n>:<j>``, and ``z:<name>`` = n, as one transaction.  ``a:`` and
    ``z:`` are at the two ends of the key space, so a dump read in key order
    from more than one snapshot sees them disagree."""

    def __init__(self, port: int, name: bytes) -> None:
        super().__init__(daemon=True)
        self.port, self.name_ = port, name
        self.stop = threading.Event()
        self.runs = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
                while not self.stop.is_set():
                    n = self.runs
                    keys = [b"a:%b" % self.name_] + [
                        b"r:%b:%d:%d" % (self.name_, n, j) for j in range(3)
                    ]
                    keys.append(b"z:%b" % self.name_)
                    sock.sendall(
                        b"".join(b"ms %b 8 q\r\n%08d\r\n" % (k, n) for k in keys) + b"mn\r\n"
                    )
                    reply = b""
                    while not reply.endswith(b"\r\n"):
                        reply += sock.recv(100)
                    assert reply == b"MN\r\n", reply
                    self.runs += 1
        except BaseException as exc:
            self.error = exc


def test_dump_of_a_live_server_under_load_is_one_snapshot(stig_server):
    """While writers commit runs, ``stig dump --data-dir`` (key order, 20k keys
    between the ends) sees, per writer, ``a:`` = ``z:`` = the last run, runs
    0..k exactly, each whole."""
    client = stig_server.client()
    for start in range(0, 20_000, 2000):  # between a: and z:, so the dump takes a while
        client.set_many(
            {f"pad-{i:06d}": b"p" * 500 for i in range(start, start + 2000)}, noreply=False
        )
    writers = [RunWriter(stig_server.port, b"w%d" % i) for i in range(3)]
    for writer in writers:
        writer.start()
    while any(w.runs < 10 for w in writers):
        assert not any(w.error for w in writers)
    before = [w.runs for w in writers]
    dumps = [
        run_stig("dump", "--data-dir", str(stig_server.data_dir), "--quiet").stdout
        for _ in range(2)
    ]
    for writer in writers:
        writer.stop.set()
        writer.join(30)
        assert writer.error is None, writer.error
    assert any(w.runs > b for w, b in zip(writers, before, strict=True))  # writes went on meanwhile
    for dump in dumps:
        items = _parse(dump)
        for writer, done_before in zip(writers, before, strict=True):
            first = int(items[b"a:" + writer.name_][0])
            last = int(items[b"z:" + writer.name_][0])
            assert first == last, "the two ends of the key space are from different moments"
            runs: dict[int, int] = {}
            for key in items:
                if key.startswith(b"r:" + writer.name_ + b":"):
                    n = int(key.split(b":")[2])
                    runs[n] = runs.get(n, 0) + 1
            assert set(runs.values()) == {3}, "a run is torn in the dump"
            assert sorted(runs) == list(range(first + 1)), "not every run up to the last one"
            assert first + 1 >= done_before


def test_load_names_refused_keys_and_exits_non_zero(stig_server, tmp_path):
    dump = tmp_path / "d"
    dump.write_bytes(
        dumpfmt.encode_item(b"ok-1", b"x", 1)
        + dumpfmt.encode_item(b"huge", b"x" * 2_000_000, 0)
        + dumpfmt.encode_item(b"ok-2", b"y", 2)
        + b"mn\r\n"
    )
    proc = run_stig("load", "--server", f"127.0.0.1:{stig_server.port}", str(dump), check=False)
    assert proc.returncode == 1
    assert b"refused: key b'huge': SERVER_ERROR object too large for cache" in proc.stderr
    assert b"1 item(s) refused" in proc.stderr
    client = stig_server.client()
    assert client.get("ok-1") == b"x" and client.get("ok-2") == b"y" and client.get("huge") is None


def test_load_refuses_a_stream_that_is_not_a_dump(stig_server):
    proc = run_stig(
        "load",
        "--server",
        f"127.0.0.1:{stig_server.port}",
        input=b"set a 0 0 1\r\nx\r\n",
        check=False,
    )
    assert (
        proc.returncode == 1
        and b"bad dump" in proc.stderr
        and b"expected 'ms' or 'mn'" in proc.stderr
    )
    proc = run_stig(
        "load",
        "--server",
        f"127.0.0.1:{stig_server.port}",
        input=b"ms YQ== 5 b q\r\nab",
        check=False,
    )
    assert proc.returncode == 1 and b"cut short" in proc.stderr


def test_dump_wants_exactly_one_source(stig_server):
    for args in ((), ("--data-dir", "x", "--server", "h:1")):
        proc = run_stig("dump", *args, check=False)
        assert proc.returncode == 2 and b"exactly one of" in proc.stderr


def test_load_names_a_refused_key_while_later_transactions_are_in_flight(stig_server, tmp_path):
    """The refused item is in the first of several transactions, all sent before
    its replies are read: the later ones' replies must not be taken for the
    loud re-send's (load once hung 60 s and died with a traceback)."""
    dump = tmp_path / "d"
    parts = [
        dumpfmt.encode_item(b"huge", b"x" * 2_000_000, 0),
        dumpfmt.encode_item(b"first", b"1", 0),
    ]
    parts += [dumpfmt.encode_item(b"later-%d" % i, b"%d" % i, i) for i in range(12)]
    dump.write_bytes(b"".join(parts) + b"mn\r\n")
    proc = run_stig(
        "load", "--batch", "2", "--server", f"127.0.0.1:{stig_server.port}", str(dump), check=False
    )
    assert proc.returncode == 1, proc.stderr
    assert b"refused: key b'huge': SERVER_ERROR object too large for cache" in proc.stderr
    assert b"1 item(s) refused" in proc.stderr and b"Traceback" not in proc.stderr
    client = stig_server.client()
    assert client.get("first") == b"1"
    assert client.get_many([f"later-{i}" for i in range(12)]) == {
        f"later-{i}": b"%d" % i for i in range(12)
    }


def test_load_keeps_each_transaction_within_the_servers_write_budget(stig_factory, tmp_path):
    """1000 items per transaction of 1 MB values would be a 1 GB transaction,
    which Stig refuses (it drops the connection): load cuts transactions by
    bytes too, under the server's --max-pending-bytes."""
    server = stig_factory("--max-pending-bytes", "4m")
    dump = tmp_path / "d"
    dump.write_bytes(
        b"".join(
            dumpfmt.encode_item(b"big-%d" % i, bytes([65 + i]) * 1_000_000, i) for i in range(10)
        )
        + b"mn\r\n"
    )
    run_stig("load", "-q", "--server", f"127.0.0.1:{server.port}", str(dump))
    client = server.client()
    for i in range(10):
        assert client.get(f"big-{i}") == bytes([65 + i]) * 1_000_000


def test_load_refuses_an_absurd_value_length_without_allocating_it(stig_server, tmp_path):
    dump = tmp_path / "d"
    dump.write_bytes(b"ms YQ== 1000000000000 b q\r\nab")
    proc = run_stig("load", "--server", f"127.0.0.1:{stig_server.port}", str(dump), check=False)
    assert proc.returncode == 1 and b"bad dump" in proc.stderr and b"Traceback" not in proc.stderr
