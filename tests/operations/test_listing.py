"""Key listing over the protocol: lru_crawler metadump, stats items, stats cachedump.

Formats are compared with a real memcached 1.6 started by the test; the
listing is checked against exactly the stored keys (also after deletes and
with libmemcached's ``memcdump``), is one snapshot even while others write,
and ends cleanly when the LMDB map grows under it.
"""

from __future__ import annotations

import base64
import re
import shutil
import socket
import struct
import subprocess

import pytest
from support.memcached_ref import exchange, memcached

from stig_protocol.binary import Opcode

# Keys whose url-encoding shows memcached's rules: unreserved kept, the rest %XX.
KEYS = [b"a", b"b:c", b"pct%20", b"t~i-l_d.e", b"UPPER9"]
SETUP = b"".join(b"set %b 5 0 3\r\nabc\r\n" % k for k in KEYS) + b"ms /w== 1 b\r\nz\r\n"


def _load(port: int) -> None:
    exchange(port, SETUP + b"mn\r\n", b"MN\r\n")


def _stat_names(reply: bytes) -> list[bytes]:
    """The counter names of a ``stats …`` reply, in order."""
    return [line.split(b" ")[1] for line in reply.split(b"\r\n") if line.startswith(b"STAT")]


def _normalized_metadump(reply: bytes) -> list[bytes]:
    """Lines sorted (memcached lists in LRU order, Stig in key order), with the
    fields that differ by history (la, size, cas) blanked."""
    assert reply.endswith(b"END\r\n")
    body = reply[: -len(b"END\r\n")]
    assert body.endswith(b"\n") and b"\r" not in body  # bare \n per line, as memcached
    lines = body.split(b"\n")[:-1]
    return sorted(re.sub(rb"la=\d+|size=\d+|cas=\d+", b"_", line) for line in lines)


def test_replies_match_memcached(stig_server):
    """Byte for byte the same, except la/size values and the line order."""
    stig_port = stig_server.port
    with memcached() as mc_port:
        # Nothing stored yet: both answer a bare END.
        for command in (
            b"lru_crawler metadump all\r\n",
            b"stats items\r\n",
            b"stats cachedump 1 0\r\n",
        ):
            assert exchange(stig_port, command, b"END\r\n") == exchange(
                mc_port, command, b"END\r\n"
            )
        exchange(mc_port, b"set a 5 0 3\r\nabc\r\n", b"STORED\r\n")
        exchange(stig_port, b"set a 5 0 3\r\nabc\r\n", b"STORED\r\n")
        stig_server.settle()
        one_item = b"stats cachedump 1 0\r\n"
        expected = b"ITEM a [3 b; 0 s]\r\nEND\r\n"
        assert exchange(stig_port, one_item, b"END\r\n") == expected
        # memcached lists only its HOT LRU, which its maintainer thread empties
        # at a moment of its own choosing: a bare END from it is that race.
        assert exchange(mc_port, one_item, b"END\r\n") in (expected, b"END\r\n")
        exchange(mc_port, b"flush_all\r\n", b"OK\r\n")
        exchange(stig_port, b"flush_all\r\n", b"OK\r\n")
        _load(mc_port)
        _load(stig_port)
        stig_server.settle()
        for command in (
            b"lru_crawler metadump all\r\n",
            b"lru_crawler metadump hash\r\n",
            b"lru_crawler metadump 1\r\n",
            b"lru_crawler metadump 1,2\r\n",
        ):
            ours = exchange(stig_port, command, b"END\r\n")
            theirs = exchange(mc_port, command, b"END\r\n")
            assert _normalized_metadump(ours) == _normalized_metadump(theirs), command
        assert b"key=%FF " in ours and b"key=pct%2520 " in ours and b"key=t~i-l_d.e " in ours
        # stats items: the same counters in the same order, the same item count.
        ours = exchange(stig_port, b"stats items\r\n", b"END\r\n")
        theirs = exchange(mc_port, b"stats items\r\n", b"END\r\n")
        assert _stat_names(ours) == _stat_names(theirs)
        assert b"STAT items:1:number 6\r\n" in ours and b"STAT items:1:number 6\r\n" in theirs
        # Errors and empty classes, exactly.
        for command, until in [
            (b"lru_crawler metadump\r\n", b"\r\n"),
            (b"lru_crawler metadump all extra\r\n", b"\r\n"),
            (b"lru_crawler metadump 0\r\n", b"\r\n"),
            (b"lru_crawler metadump 64\r\n", b"\r\n"),
            (b"lru_crawler metadump foo\r\n", b"\r\n"),
            (b"lru_crawler metadump 1,x\r\n", b"\r\n"),
            (b"lru_crawler metadump 2\r\n", b"\r\n"),
            (b"lru_crawler metadump 63\r\n", b"\r\n"),
            (b"lru_crawler\r\n", b"\r\n"),
            (b"stats cachedump\r\n", b"\r\n"),
            (b"stats cachedump 1\r\n", b"\r\n"),
            (b"stats cachedump x 0\r\n", b"\r\n"),
            (b"stats cachedump 1 x\r\n", b"\r\n"),
            (b"stats cachedump -1 0\r\n", b"\r\n"),
            (b"stats cachedump 0 0\r\n", b"\r\n"),
            (b"stats cachedump 2 0\r\n", b"\r\n"),
            (b"stats cachedump 63 0\r\n", b"\r\n"),
            (b"stats cachedump 64 0\r\n", b"\r\n"),
            (b"stats cachedump 199 0\r\n", b"\r\n"),
        ]:
            assert exchange(stig_port, command, until) == exchange(mc_port, command, until), command


def _metadump_keys(port: int) -> set[bytes]:
    from stig_protocol.listing import url_decode

    reply = exchange(port, b"lru_crawler metadump all\r\n", b"END\r\n", timeout=60)
    lines = reply[: -len(b"END\r\n")].split(b"\n")[:-1]
    return {url_decode(line.split(b" ")[0][len(b"key=") :]) for line in lines}


@pytest.mark.skipif(shutil.which("memcdump") is None, reason="libmemcached-tools not installed")
def test_memcdump_and_metadump_list_exactly_the_stored_keys(stig_server):
    client = stig_server.client()
    keys = {f"key:{i}".encode() for i in range(300)}
    client.set_many({k: b"v" for k in keys}, noreply=False)
    deleted = {f"key:{i}".encode() for i in range(0, 300, 3)}
    for key in deleted:
        assert client.delete(key, noreply=False)
    stig_server.settle()
    expected = keys - deleted
    dumped = subprocess.run(
        ["memcdump", f"--servers={stig_server.host}:{stig_server.port}"],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout.split(b"\n")
    assert {k for k in dumped if k} == expected
    assert len([k for k in dumped if k]) == len(expected)  # none twice
    assert _metadump_keys(stig_server.port) == expected
    # cachedump honours its limit.
    reply = exchange(stig_server.port, b"stats cachedump 1 7\r\n", b"END\r\n")
    assert reply.count(b"ITEM ") == 7


def _write_keys(port: int, keys: list[bytes]) -> None:
    body = b"".join(b"ms %b 1 b q\r\nv\r\n" % base64.b64encode(k) for k in keys)
    exchange(port, body + b"mn\r\n", b"MN\r\n", timeout=120)


def _delete_keys(port: int, keys: list[bytes]) -> None:
    body = b"".join(b"md %b b q\r\n" % base64.b64encode(k) for k in keys)
    exchange(port, body + b"mn\r\n", b"MN\r\n", timeout=120)


def _slow_reader(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # keep the server from running ahead
    sock.settimeout(60)
    sock.connect(("127.0.0.1", port))
    return sock


def _read_rest(sock: socket.socket, buf: bytes) -> bytes:
    while not buf.endswith(b"\r\n") or not (
        buf.endswith(b"END\r\n") or b"SERVER_ERROR" in buf[-200:]
    ):
        chunk = sock.recv(1 << 20)
        assert chunk, f"closed; got {buf[-200:]!r}"
        buf += chunk
    return buf


def test_listing_is_one_snapshot_streamed_while_others_write(stig_server):
    """A listing of ~12 MB: after its first bytes arrive, every key is deleted
    and others written by another connection (and committed); the rest of
    the listing still shows exactly the keys of the moment it started."""
    port = stig_server.port
    keys = [b"%06d" % i + b"k" * 234 for i in range(40_000)]  # 240-byte keys
    _write_keys(port, keys)
    stig_server.settle(60)
    sock = _slow_reader(port)
    try:
        sock.sendall(b"lru_crawler metadump all\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"key=000000")
        _delete_keys(port, keys)
        _write_keys(port, [b"new-%d" % i for i in range(1000)])
        stig_server.settle(60)
        assert exchange(port, b"mg 000000" + b"k" * 234 + b" v\r\n", b"\r\n") == b"EN\r\n"
        reply = _read_rest(sock, first)
    finally:
        sock.close()
    assert reply.endswith(b"\nEND\r\n")
    listed = [line.split(b" ")[0][len(b"key=") :] for line in reply[:-5].split(b"\n")[:-1]]
    assert listed == keys
    assert _metadump_keys(port) == {b"new-%d" % i for i in range(1000)}


def test_listing_ends_cleanly_when_the_map_grows_under_it(stig_factory):
    """Growing the LMDB map remaps it: an open listing cursor would dangle, so
    the listing ends with SERVER_ERROR instead, and the server goes on."""
    server = stig_factory("--map-size", "4m")
    port = server.port
    keys = [b"%06d" % i + b"g" * 200 for i in range(30_000)]  # a listing of ~8 MB
    _write_keys(port, keys)
    server.settle(60)
    start_map = int(server.stats()["limit_maxbytes"])
    sock = _slow_reader(port)
    try:
        sock.sendall(b"lru_crawler metadump all\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"key=")
        # Enough new data to need a bigger map.
        for start in range(0, start_map // 100_000 + 1, 20):
            exchange(
                port,
                b"".join(
                    b"ms big%d 100000 q\r\n%b\r\n" % (i, b"x" * 100_000)
                    for i in range(start, start + 20)
                )
                + b"mn\r\n",
                b"MN\r\n",
                timeout=120,
            )
        assert int(server.stats()["limit_maxbytes"]) > start_map
        reply = _read_rest(sock, first)
    finally:
        sock.close()
    assert reply.endswith(
        b"SERVER_ERROR listing interrupted: the database map grew; list again\r\n"
    )
    big = len(range(0, start_map // 100_000 + 1, 20)) * 20
    assert len(_metadump_keys(port)) == len(keys) + big  # listed again: whole


def test_failures_of_a_quiet_run_come_before_the_listing(stig_server):
    """A listing closes the session's quiet run; a refused quiet add of that run
    is answered before the listing, as before any other reply."""
    port = stig_server.port
    keys = [b"%04d" % i + b"p" * 100 for i in range(3000)]  # a listing of several chunks
    _write_keys(port, keys)
    stig_server.settle()
    reply = exchange(
        port, b"ms %b 1 ME q\r\ny\r\nlru_crawler metadump all\r\n" % keys[0], b"END\r\n"
    )
    assert reply.startswith(b"NS\r\nkey=0000p") and reply.count(b"key=") == len(keys)
    assert reply.count(b"NS\r\n") == 1


def test_listing_holds_every_acknowledged_write(stig_server):
    """A key whose ``STORED`` another connection already holds is listed, even
    while its commit is still in flight (before, the listing's snapshot was
    taken without waiting: the key was missing, as for a stale read; a
    migration copying the listed keys lost it).  Other connections keep
    writing so that commits are often in flight."""
    writer = stig_server.connect()
    lister = stig_server.connect()
    busy = stig_server.connect()
    noise = b"".join(b"set noise%d 0 0 100 noreply\r\n%b\r\n" % (n, b"z" * 100) for n in range(50))
    for n in range(100):
        busy.send(noise + b"mn\r\n")
        assert writer.send_recv(b"set listed%d 0 0 1\r\nx\r\n" % n, b"\r\n") == b"STORED\r\n"
        assert b"ITEM listed%d [1 b; " % n in lister.send_recv(b"stats cachedump 1 0\r\n")
        assert b"key=listed%d " % n in lister.send_recv(b"lru_crawler metadump all\r\n")
        busy.recv_until(b"MN\r\n")


@pytest.mark.parametrize(
    "listing", [b"stats cachedump 1 0\r\n", b"lru_crawler metadump all\r\n", b"stats items\r\n"]
)
@pytest.mark.parametrize(
    "write", [b"set own 0 0 1\r\nx\r\n", b"set own 0 0 1 noreply\r\nx\r\n", b"ms own 1 q\r\nx\r\n"]
)
def test_listing_holds_the_sessions_own_writes(stig_server, write, listing):
    """docs/pov.md (Key listings): the session's own writes are in its listing,
    "its open run is closed by the command and committed first".  Found by the
    handler_text fuzz target (docs/fuzzing.md): pipelined behind the write, the
    listing's snapshot was taken before that write's commit (only other
    sessions' writes were waited for, and ``stats items`` waited for none), so
    the key was missing when fed whole and listed when fed byte by byte."""
    reply = exchange(stig_server.port, write + listing, b"END\r\n")
    assert b"ITEM own [1 b;" in reply or b"key=own " in reply or b"items:1:number 1\r\n" in reply


def test_binary_stat_items_holds_the_sessions_own_writes(stig_server):
    """The same rule for the binary Stat ``items`` (a key listing too)."""
    conn = stig_server.connect_binary()
    conn.request(Opcode.SetQ, b"own", b"x", struct.pack(">II", 0, 0))
    conn.request(Opcode.Stat, b"items")
    stats = {}
    while (response := conn.response()).key:
        stats[response.key] = response.value
    assert stats[b"items:1:number"] == b"1"


# Keys only the binary protocol and base64 meta keys can hold.
UNSAFE_KEYS = [b"a b", b"line\r\nbreak", b"nul\x00", b"\x00first", b"tab\tkey", b"del\x7f"]


@pytest.mark.skipif(shutil.which("memcdump") is None, reason="libmemcached-tools not installed")
def test_cachedump_leaves_out_keys_a_line_cannot_carry(stig_server):
    """docs/pov.md (Key listings): stats cachedump lists the keys a text line
    can carry, raw as memcached does, and leaves out (and counts) the others,
    so that memcdump lists every other key exactly; metadump lists them all."""
    safe = [b"plain", b"caf\xc3\xa9", b"x:1", b"~"]
    exchange(
        stig_server.port,
        b"".join(b"ms %b 2 b\r\nvv\r\n" % base64.b64encode(k) for k in safe + UNSAFE_KEYS)
        + b"mn\r\n",
        b"MN\r\n",
    )
    stig_server.settle()
    reply = exchange(stig_server.port, b"stats cachedump 1 0\r\n", b"END\r\n")
    assert reply == b"".join(b"ITEM %b [2 b; 0 s]\r\n" % k for k in sorted(safe)) + b"END\r\n"
    # The limit counts listed keys only (unsafe keys sort between them).
    limited = exchange(stig_server.port, b"stats cachedump 1 2\r\n", b"END\r\n")
    assert limited == b"".join(b"ITEM %b [2 b; 0 s]\r\n" % k for k in sorted(safe)[:2]) + b"END\r\n"
    dumped = subprocess.run(
        ["memcdump", f"--servers={stig_server.host}:{stig_server.port}"],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout.split(b"\n")
    # libmemcached itself cuts a key at its first non-ASCII byte (against
    # memcached 1.6.18 too: caf\xc3\xa9 comes out as caf).
    ascii_prefixes = [re.match(rb"[\x21-\x7e]*", k).group() for k in safe]
    assert sorted(k for k in dumped if k) == sorted(ascii_prefixes)
    assert _metadump_keys(stig_server.port) == set(safe + UNSAFE_KEYS)
    skipped = int(stig_server.stats()["stig_cachedump_skipped_keys"])
    # Two whole cachedumps (ours and memcdump's) and the limited one, which
    # stops at b"plain" after five of them.
    assert skipped == 2 * len(UNSAFE_KEYS) + 5
