"""Every reply is bounded: runs of reads stream from one snapshot (docs/pov.md, "Bounds").

Against a real server (subprocess).  A client that asks for a 1 MB value
500 times over and never reads grows the server's peak RSS by less than
:data:`GROWTH_BOUND_MIB` — whether it asks with a run of meta ``mg`` (loud or
quiet), a binary GetK or GetKQ run, ``gat``/``gats`` of many keys or a
multi-get while ``stats detail on`` (each built whole before: ~1.4 GiB).
A long binary GetKQ run costs no memory of its own: each is read as it arrives.

Streaming must keep what the whole reply promised: the replies in request
order, and one snapshot per run — a run written by another connection and
committed while a streamed reply is stalled on a client that does not read
is not half-visible in it — for as long as the read is younger than
``--max-snapshot-age-ms``; past it, the read goes on from a new snapshot,
and each part is consistent.
"""

from __future__ import annotations

import re
import socket
import struct
import threading

import pytest

from stig_protocol.binary import Opcode, decode_response, encode_request
from stig_testkit import flood, single_process
from stig_testkit.process import CODE_ROOT

#: --max-reply-bytes (1 MiB) of replies waiting, one item being written
#: (1 MB, and its copies while it is formatted), socket buffers, allocator
#: slack.  Measured 3.7–5.3 MiB; every one of these was ~1,430 MiB before.
GROWTH_BOUND_MIB = 64


def _binary(opcode: int, key: bytes = b"", opaque: int = 0) -> bytes:
    return encode_request(opcode, key, opaque=opaque)


BIG_RUNS = {
    "mg": b"mg big v\r\n" * 500,
    "mg quiet, then mn": b"mg big v q\r\n" * 500 + b"mn\r\n",
    "binary GetKQ, then No-op": b"".join(_binary(Opcode.GetKQ, b"big", i) for i in range(500))
    + _binary(Opcode.Noop),
    "binary GetK": b"".join(_binary(Opcode.GetK, b"big", i) for i in range(500)),
    "gats": b"gats 0" + b" big" * 500 + b"\r\n",
    "gat": b"gat 0" + b" big" * 500 + b"\r\n",
    "get while stats detail on": b"stats detail on\r\nget" + b" big" * 500 + b"\r\n",
}


@pytest.mark.parametrize("request_bytes", BIG_RUNS.values(), ids=list(BIG_RUNS))
def test_a_run_of_500_big_reads_that_is_never_read_is_bounded(request_bytes: bytes) -> None:
    result = flood.big_reply(CODE_ROOT, request_bytes)
    assert result["peak_growth_mib"] < GROWTH_BOUND_MIB, result


def test_a_pending_getkq_run_costs_at_most_the_reply_bound() -> None:
    """200,000 GetKQ of a 1-byte key (5 MB of input, all silent misses) before
    the No-op: each is read as it arrives, from the run's one snapshot, never
    buffered (44 MiB when the run was buffered whole)."""
    result = flood.pending_getq(CODE_ROOT, 200_000)
    assert result["peak_growth_mib"] < 16, result


# -- order and one snapshot, while the reply streams ------------------------------

KEYS = [b"k%03d" % i for i in range(300)]
SIZE = 50_000  # 15 MB in all: more than loopback socket buffers hold (~4 MB)
OLD, NEW = b"A" * SIZE, b"B" * SIZE
#: What the runs ask for: every key, and after every tenth one a missing key
#: (a quiet miss says nothing; a loud mg miss is EN).
ASKED = [key for i, k in enumerate(KEYS) for key in ((k, b"x%03d" % i) if i % 10 == 9 else (k,))]
MISSES = len(ASKED) - len(KEYS)


def _text_pairs(reply: bytes) -> list[tuple[bytes, bytes]]:
    pairs = []
    for match in re.finditer(rb"VALUE (\S+) \d+ (\d+)(?: \d+)?\r\n", reply):
        start = match.end()
        pairs.append((match.group(1), reply[start : start + int(match.group(2))]))
    return pairs


def _meta_pairs(reply: bytes) -> list[tuple[bytes, bytes]]:
    pairs = []
    for match in re.finditer(rb"VA (\d+) k(\S+)\r\n", reply):
        start = match.end()
        pairs.append((match.group(2), reply[start : start + int(match.group(1))]))
    return pairs


def _binary_pairs(reply: bytes) -> list[tuple[bytes, bytes]]:
    pairs, offset = [], 0
    while True:
        decoded = decode_response(reply, offset)
        if decoded is None:
            return pairs
        response, offset = decoded
        if response.opcode == Opcode.GetKQ:
            pairs.append((response.key, response.value))


RUNS = {
    "mg": (b"".join(b"mg %b v k\r\n" % k for k in ASKED) + b"mn\r\n", b"MN\r\n", _meta_pairs),
    "mg quiet": (
        b"".join(b"mg %b v k q\r\n" % k for k in ASKED) + b"mn\r\n",
        b"MN\r\n",
        _meta_pairs,
    ),
    "binary GetKQ": (
        b"".join(_binary(Opcode.GetKQ, k, i) for i, k in enumerate(ASKED))
        + _binary(Opcode.Noop, opaque=0xABCD),
        struct.pack(">I", 0xABCD) + bytes(8),
        _binary_pairs,
    ),
    "gats": (b"gats 0 " + b" ".join(ASKED) + b"\r\n", b"END\r\n", _text_pairs),
    "get": (b"get " + b" ".join(ASKED) + b"\r\n", b"END\r\n", _text_pairs),
}


def _stalled_run(stig_factory, name: str, age_ms: str) -> tuple[list[tuple[bytes, bytes]], int]:
    """Run ``name`` on a reader that stalls mid-reply while another connection
    rewrites every key in one committed run; then read it all.  Returns its
    (key, value) hits and the server's ``stig_snapshot_renewals``."""
    request, terminator, pairs_of = RUNS[name]
    # 300 pending GetKQ cost ~68 KB: under the bound, so the run is not split.
    server = stig_factory("--max-reply-bytes", "256k", "--max-snapshot-age-ms", age_ms)
    with server.connect() as writer:
        for key in KEYS:
            writer.send(b"set %b 0 0 %d noreply\r\n%b\r\n" % (key, SIZE, OLD))
        assert writer.send_recv(b"mn\r\n", b"MN\r\n") == b"MN\r\n"

        # A reader that asks for 15 MB of replies and does not read them yet:
        # the server sends until the socket is full and stalls mid-run.
        reader = socket.socket()
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        reader.connect((server.host, server.port))
        reader.sendall(request)
        before = int(server.stats()["bytes_written"])
        stalled_at = flood.wait_until_sending_stops(server)
        assert stalled_at - before < len(KEYS) * SIZE // 2, "the reply was not stalled mid-run"

        # Meanwhile another connection rewrites every key in one run, committed.
        for key in KEYS:
            writer.send(b"set %b 0 0 %d noreply\r\n%b\r\n" % (key, SIZE, NEW))
        assert writer.send_recv(b"mn\r\n", b"MN\r\n") == b"MN\r\n"
        assert writer.send_recv(b"get k299\r\n").endswith(NEW + b"\r\nEND\r\n")

    reply = b""
    reader.settimeout(60)
    while not reply.endswith(terminator):
        chunk = reader.recv(1 << 20)
        assert chunk, reply[-200:]
        reply += chunk
    reader.close()
    pairs = pairs_of(reply)
    assert [key for key, _ in pairs] == KEYS  # every hit, in request order
    if name == "mg":
        assert reply.count(b"\r\nEN k") == MISSES  # loud misses answered (EN kx009 …)
    elif name == "binary GetKQ":
        assert len(_binary_answers(reply)) == len(KEYS) + 1  # quiet misses: silent
    else:
        assert b"\r\nEN" not in reply.replace(b"\r\nEND\r\n", b"")  # quiet: silent
    return pairs, int(server.stats()["stig_snapshot_renewals"])


@pytest.mark.parametrize("name", list(RUNS))
def test_a_streamed_run_keeps_its_order_and_one_snapshot(stig_factory, name: str) -> None:
    # The stall (over a second) stays under --max-snapshot-age-ms: one snapshot,
    # taken before the rewrite: none of it is visible.
    pairs, renewals = _stalled_run(stig_factory, name, "600000")
    assert [value == OLD for _, value in pairs] == [True] * len(KEYS)
    assert renewals == 0


@pytest.mark.parametrize("name", list(RUNS))
def test_a_run_held_past_its_age_bound_goes_on_from_a_new_snapshot(stig_factory, name) -> None:
    # The stall passes --max-snapshot-age-ms: the snapshot is released, and the
    # read goes on from a new one at its next key.  Each part is consistent:
    # the keys read before hold none of the rewrite, those after all of it.
    pairs, renewals = _stalled_run(stig_factory, name, "100")
    values = [value for _, value in pairs]
    old = values.count(OLD)
    assert 0 < old < len(KEYS) and values == [OLD] * old + [NEW] * (len(KEYS) - old)
    assert renewals >= 1


def test_a_getkq_run_received_with_its_end_is_one_snapshot_under_any_age_bound(stig_factory):
    """A GetKQ run whose No-op arrives with it is read without awaiting
    anything, so ``--max-snapshot-age-ms`` never splits it (docs/pov.md, rule
    3) — not even at 1 ms, while another connection commits a and b together
    as fast as it can.  The run is long (500 silent misses between a and b:
    past the connection loop's 128-command yield) and its reply tiny (never
    sent at the reply bound).  The loop once yielded or braked inside it: 48
    renewals in 30 runs, some seeing a and b from different commits; under
    load a brake of over a second split the history test's GetKQ reads."""
    server = stig_factory("--max-snapshot-age-ms", "1")
    writer = server.connect(timeout=60)
    set_both = b"set a 0 0 %d noreply\r\n%b\r\nset b 0 0 %d noreply\r\n%b\r\nmn\r\n"
    assert writer.send_recv(set_both % (1, b"0", 1, b"0"), b"MN\r\n") == b"MN\r\n"
    stop = threading.Event()
    errors: list[BaseException] = []

    def rewrite() -> None:
        count = 0
        try:
            while not stop.is_set():
                count += 1
                value = b"%d" % count
                request = set_both % (len(value), value, len(value), value)
                assert writer.send_recv(request, b"MN\r\n", 60) == b"MN\r\n"
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    run = (
        _binary(Opcode.GetKQ, b"a", 1)
        + b"".join(_binary(Opcode.GetKQ, b"miss%d" % i, 2) for i in range(500))
        + _binary(Opcode.GetKQ, b"b", 3)
        + _binary(Opcode.Noop, opaque=4)
    )
    assert len(run) < 16384  # one send, one receive: the run arrives with its end
    thread = threading.Thread(target=rewrite, daemon=True)
    thread.start()
    seen = []
    try:
        with socket.create_connection((server.host, server.port), timeout=60) as reader:
            for _ in range(30):
                reader.sendall(run)
                reply = b""
                while not reply.endswith(struct.pack(">I", 4) + bytes(8)):
                    chunk = reader.recv(65536)
                    assert chunk, reply
                    reply += chunk
                seen.append(dict(_binary_pairs(reply)))
    finally:
        stop.set()
        thread.join(60)
        writer.close()
    assert not errors, errors
    assert [pair[b"a"] == pair[b"b"] for pair in seen] == [True] * len(seen), seen
    assert server.stats()["stig_snapshot_renewals"] == "0"


# -- the map grows under a streamed run ----------------------------------------------

INTERRUPTED = b"read interrupted: the database map grew; read again"


def _meta_answers(reply: bytes) -> list[bytes]:
    """Per mg of the run, in order: its key (a hit) or b"ERROR" (the read was
    interrupted), then b"MN"."""
    answers, offset = [], 0
    while offset < len(reply):
        end = reply.index(b"\r\n", offset)
        line = reply[offset:end]
        offset = end + 2
        if line.startswith(b"VA "):
            size, key = line.split()[1:3]
            offset += int(size) + 2
            answers.append(key[1:])
        elif line == b"SERVER_ERROR " + INTERRUPTED:
            answers.append(b"ERROR")
        else:
            answers.append(line)
    return answers


def _binary_answers(reply: bytes) -> list[tuple[int, int, bytes]]:
    """Each response's opaque, status and key (value for an error)."""
    answers, offset = [], 0
    while True:
        decoded = decode_response(reply, offset)
        if decoded is None:
            assert offset == len(reply)
            return answers
        response, offset = decoded
        answers.append((response.opaque, response.status, response.key or response.value))


@pytest.mark.parametrize("protocol", ["meta", "binary"])
@pytest.mark.single_process(single_process.MAP_GROWS_IN_WRITER)
def test_a_streamed_run_ends_cleanly_when_the_map_grows_under_it(stig_factory, protocol):
    """Growing the LMDB map ends the snapshot a streamed run holds: every
    command of the run is still answered once, in order — from the snapshot,
    or with the "read interrupted" error — and the server goes on."""
    # 300 pending GetKQ cost ~68 KB: under the bound, so the run is not split.
    server = stig_factory("--map-size", "4m", "--max-reply-bytes", "128k")
    size, count = 100_000, 100
    value = b"m" * size
    with server.connect(timeout=60) as conn:
        for i in range(count):
            conn.send(b"set k%03d 0 0 %d noreply\r\n%b\r\n" % (i, size, value))
        assert conn.send_recv(b"mn\r\n", b"MN\r\n") == b"MN\r\n"
    keys = [b"k%03d" % i for i in range(count)] * 3
    if protocol == "meta":
        request = b"".join(b"mg %b v k\r\n" % key for key in keys) + b"mn\r\n"
        terminator = b"MN\r\n"
    else:
        request = b"".join(_binary(Opcode.GetKQ, key, i) for i, key in enumerate(keys))
        request += _binary(Opcode.Noop, opaque=0xABCD)
        terminator = struct.pack(">I", 0xABCD) + bytes(8)
    start_map = int(server.stats()["limit_maxbytes"])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((server.host, server.port))
    sock.settimeout(60)
    try:
        sock.sendall(request)
        reply = sock.recv(65536)
        assert reply  # the run has begun
        with server.connect(timeout=120) as writer:
            start = 0
            while int(server.stats()["limit_maxbytes"]) <= start_map:
                writer.send(
                    b"".join(
                        b"set big%d 0 0 %d noreply\r\n%b\r\n" % (i, size, value)
                        for i in range(start, start + 20)
                    )
                )
                assert writer.send_recv(b"mn\r\n", b"MN\r\n") == b"MN\r\n"
                start += 20
        while not reply.endswith(terminator):
            chunk = sock.recv(1 << 20)
            assert chunk, reply[-200:]
            reply += chunk
    finally:
        sock.close()
    if protocol == "meta":
        answers = _meta_answers(reply)
        assert answers[-1] == b"MN"
        answered = answers.index(b"ERROR")
        assert 0 < answered < len(keys)
        assert answers[:answered] == keys[:answered]
        assert answers[answered:-1] == [b"ERROR"] * (len(keys) - answered)
    else:
        answers = _binary_answers(reply)
        assert answers[-1] == (0xABCD, 0, b"")
        statuses = [status for _, status, _ in answers[:-1]]
        answered = statuses.index(0x84)  # EINTERNAL
        assert 0 < answered < len(keys)
        assert [opaque for opaque, _, _ in answers[:-1]] == list(range(len(keys)))
        assert [key for _, _, key in answers[:answered]] == keys[:answered]
        assert answers[answered:-1] == [(i, 0x84, INTERRUPTED) for i in range(answered, len(keys))]
    assert server.send_recv(b"get k007\r\n") == b"VALUE k007 0 %d\r\n%b\r\nEND\r\n" % (size, value)
