"""Get lines of any length, answered as they stream in, from one snapshot.

memcached serves a ``get`` line of 10,000 keys (390 KB) as any other; Stig
refused lines over 256 KiB (``CLIENT_ERROR line too long``, connection
closed), so clients' large multi-gets failed.  A retrieval line longer than
the parser's window (64 KiB) is now parsed as it arrives: its keys are
answered in batches while the rest of the line is still coming, all from
one snapshot taken at its head, and the server never holds the line whole
(docs/pov.md, "Bounds").
"""

from __future__ import annotations

import random
import re

import pytest

from stig_testkit.waiting import wait_for_stats

#: 10,000 keys of 38 bytes: a 390 KB get line.
KEYS = [b"long-line-key:%024d" % i for i in range(10_000)]
PRESENT = KEYS[::2]


def _values(reply: bytes) -> dict[bytes, bytes]:
    """Every VALUE of a reply, by key (flags and cas skipped)."""
    found = {}
    for match in re.finditer(rb"VALUE (\S+) \d+ (\d+)(?: \d+)?\r\n", reply):
        start = match.end()
        found[match.group(1)] = reply[start : start + int(match.group(2))]
    return found


def _store(conn, keys: list[bytes], value_of) -> None:
    conn.send(
        b"".join(
            b"set %b 0 0 %d noreply\r\n%b\r\n" % (k, len(value_of(k)), value_of(k)) for k in keys
        )
    )
    assert conn.send_recv(b"mn\r\n", b"MN\r\n") == b"MN\r\n"


@pytest.mark.parametrize("command", [b"get", b"gets", b"gat 0", b"gats 0"])
def test_a_390_kb_line_of_10000_keys_half_present(stig_server, command):
    with stig_server.connect(timeout=30) as conn:
        _store(conn, PRESENT, lambda key: key[-5:])
        line = command + b" " + b" ".join(KEYS) + b"\r\n"
        assert len(line) > 390_000
        reply = conn.send_recv(line, b"END\r\n", timeout=30)
        assert _values(reply) == {key: key[-5:] for key in PRESENT}
        assert reply.count(b"VALUE ") == len(PRESENT)
        # The connection is in step: the next command is answered.
        assert conn.send_recv(b"get %b\r\n" % KEYS[0]) == b"VALUE %b 0 5\r\n%b\r\nEND\r\n" % (
            KEYS[0],
            KEYS[0][-5:],
        )
    stats = stig_server.stats()
    assert int(stats["get_hits"]) >= len(PRESENT)


def test_pymemcache_get_many_of_10000_keys(stig_server):
    client = stig_server.client(timeout=30)
    client.set_many({key.decode(): key[-5:] for key in PRESENT}, noreply=False)
    found = client.get_many([key.decode() for key in KEYS])
    assert found == {key.decode(): key[-5:] for key in PRESENT}


def test_a_long_line_in_small_pieces(stig_server):
    """The line arrives in pieces of 1 to 300 bytes (each sent on its own:
    TCP_NODELAY), cutting keys, spaces and the newline anywhere."""
    keys = KEYS
    line = b"gets " + b" ".join(keys) + b"\r\nget " + keys[0] + b"\r\n"
    rng = random.Random(23)
    with stig_server.connect(timeout=30) as conn:
        _store(conn, keys[::3], lambda key: b"v" + key[-4:])
        at = 0
        while at < len(line):
            step = rng.choice([1, 1, 2, 7, 300])
            conn.send(line[at : at + step])
            at += step
        reply = conn.recv_until(b"END\r\n", timeout=30)
        if reply.count(b"END\r\n") < 2:
            reply += conn.recv_until(b"END\r\n", timeout=30)
    first, second = reply.split(b"END\r\n")[:2]
    assert _values(first) == {key: b"v" + key[-4:] for key in keys[::3]}
    assert second == b"VALUE %b 0 5\r\nv%b\r\n" % (keys[0], keys[0][-4:])


def test_a_long_line_reads_one_snapshot_taken_at_its_head(stig_server):
    """The first half of the line is answered before its second half is sent;
    another connection then rewrites every key (acknowledged, and committed
    with mn): the whole line still reads the values of its head's moment."""
    line = b"get " + b" ".join(KEYS) + b"\r\n"
    half = len(line) // 2
    with stig_server.connect(timeout=30) as reader, stig_server.connect(timeout=30) as writer:
        _store(writer, KEYS, lambda key: b"old")
        reader.send(line[:half])
        begun = reader.recv_until(b"old\r\n", timeout=30)  # the read has begun
        assert begun.startswith(b"VALUE ")
        _store(writer, KEYS, lambda key: b"new")
        assert writer.send_recv(b"get %b\r\n" % KEYS[-1]).endswith(b"new\r\nEND\r\n")
        reader.send(line[half:])
        reply = begun + reader.recv_until(b"END\r\n", timeout=30)
        assert _values(reply) == dict.fromkeys(KEYS, b"old")
        assert reply.count(b"VALUE ") == len(KEYS)
        assert reader.send_recv(b"get %b\r\n" % KEYS[0]).endswith(b"new\r\nEND\r\n")


def test_a_long_line_sees_writes_acknowledged_before_it(stig_server):
    """Its keys are not known when its snapshot is taken: it waits for every
    write in flight, so a write acknowledged before the line began is seen."""
    keys = KEYS[:8000]  # 290 KB: over the old 256 KiB limit
    with stig_server.connect(timeout=30) as reader, stig_server.connect() as writer:
        for n in range(30):
            value = b"%d" % n
            reply = writer.send_recv(
                b"set %b 0 0 %d\r\n%b\r\n" % (keys[-1], len(value), value), b"\r\n"
            )
            assert reply == b"STORED\r\n"
            reply = reader.send_recv(b"get " + b" ".join(keys) + b"\r\n", b"END\r\n")
            assert _values(reply) == {keys[-1]: value}, n


def test_a_bad_key_in_the_middle_of_a_long_line(stig_server):
    """memcached drops the replies it holds and answers ``CLIENT_ERROR bad
    command line format``; Stig has sent the batches before the bad key
    already, so the reply ends with that error in place of ``END``, the rest of
    the line is skipped, and the connection goes on."""
    bad = b"k" * 251
    line = b"get " + b" ".join([*KEYS[:5000], bad, *KEYS[5000:]]) + b"\r\n"
    with stig_server.connect(timeout=30) as conn:
        _store(conn, PRESENT, lambda key: b"x")
        reply = conn.send_recv(line, b"CLIENT_ERROR bad command line format\r\n", timeout=30)
        assert b"END\r\n" not in reply
        # Every key before the bad one was answered (its batch's too).
        assert set(_values(reply)) == set(KEYS[:5000]) & set(PRESENT)
        assert (
            conn.send_recv(b"get %b\r\n" % PRESENT[0])
            == b"VALUE %b 0 1\r\nx\r\nEND\r\n" % PRESENT[0]
        )
        # A line short enough to be parsed whole: only the error, as memcached.
        short = b"get " + PRESENT[0] + b" " + bad + b"\r\n"
        assert conn.send_recv(short, b"\r\n") == b"CLIENT_ERROR bad command line format\r\n"
        # A control byte in a key is as bad, and a line of spaces only is ERROR.
        reply = conn.send_recv(b"get " + b" ".join(PRESENT[:5000]) + b" a\x01b\r\n", b"format\r\n")
        assert reply.endswith(b"CLIENT_ERROR bad command line format\r\n")
        assert conn.send_recv(b"get" + b" " * 100_000 + b"\r\n", b"\r\n") == b"ERROR\r\n"
        assert conn.send_recv(b"version\r\n", b"\r\n").startswith(b"VERSION ")


def test_other_lines_keep_their_limit(stig_server):
    with stig_server.connect() as conn:
        conn.send(b"delete " + b"k" * 5000 + b"\r\n")
        assert conn.recv_until(None) == b"CLIENT_ERROR line too long\r\n"


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_50_mb_get_line_is_never_held_whole(stig_factory):
    """50 MB of keys in one line, to a server with a small reply bound: its
    peak RSS grows by far less than the line (the parser holds one window of
    it, the reply one --max-reply-bytes).  Buffered whole, the line alone
    would be 50 MB, and its keys as a tuple of bytes ~130 MB."""
    server = stig_factory("--max-reply-bytes", "64k")
    with server.connect(timeout=60) as conn:
        _store(conn, [b"mem-%08d" % i for i in range(0, 1000, 7)], lambda key: key)
        assert conn.send_recv(b"get mem-00000000\r\n").startswith(b"VALUE")
        before = _peak_rss_kib(server.proc.pid)
        conn.send(b"get")
        sent = 0
        chunk = b"".join(b" mem-%08d" % i for i in range(100_000))  # 1.4 MB, ~143 hits
        chunks = 0
        while sent < 50_000_000:
            conn.send(chunk)
            sent += len(chunk)
            chunks += 1
        reply = conn.send_recv(b"\r\n", b"END\r\n", timeout=120)
        assert reply.count(b"VALUE ") == 143 * chunks
        growth_mib = (_peak_rss_kib(server.proc.pid) - before) / 1024
    assert growth_mib < 20, growth_mib
    wait_for_stats(server, lambda s: int(s["stig_held_snapshots"]) == 0)


def test_a_line_cut_off_by_a_disconnect_releases_its_snapshot(stig_server):
    conn = stig_server.connect()
    conn.send(b"get " + b" ".join(KEYS[:5000]))  # 195 KB, no newline: the line is open
    wait_for_stats(stig_server, lambda s: int(s["stig_held_snapshots"]) == 1)
    conn.close()
    wait_for_stats(stig_server, lambda s: int(s["stig_held_snapshots"]) == 0)
    assert stig_server.send_recv(b"get %b\r\n" % KEYS[0]) == b"END\r\n"
