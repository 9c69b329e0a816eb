"""Pipelined writes that answer after their commit share one group commit.

Writes whose reply must wait for their commit — binary loud writes (they
carry the committed cas), text ``add``/``replace``/``cas``, meta writes that
are conditional or return a cas — used to be committed one by one when a
client pipelined them: 1,000 binary Sets sent in one write raised
``stig_commits`` by 1,000 and took ~700 ms (memcached: 3 ms).  Now every
such write of a burst joins the same group commit and their replies go out
together once it is committed, in order, each with its own verdict and cas
(docs/pov.md, "Writes that answer after their commit").

Each test sends ``BURST`` writes in one send (raw bytes, or pymemcache's own
pipelining of the commands of one call), checks every reply, and asserts
that ``stig_commits`` grew by at most ``MAX_COMMITS`` — a few group commits,
never one per write.  (pylibmc's ``set_multi``/``add_multi`` wait for each
reply before sending the next write, and python-binary-memcached's multi
writes are quiet runs, one commit already: neither pipelines such writes.)
Speed is measured in scripts/bench.py, never here.
"""

from __future__ import annotations

import struct

import pytest

from stig_protocol.binary import Opcode, Status, encode_request

BURST = 1000
#: Group commits a burst may take: the commands of one burst are handed to
#: the promoter every few hundred commands, and replies waiting behind a
#: commit are bounded by --max-reply-bytes, so a burst takes a few.
MAX_COMMITS = 10
SET_EXTRAS = struct.pack(">II", 0, 0)
VALUE = b"v" * 16
MODES = {"pov-acks": (), "durable-acks": ("--durable-acks",)}


@pytest.fixture(params=list(MODES), ids=list(MODES))
def server(request, stig_factory):
    return stig_factory(*MODES[request.param])


def _commits(server) -> int:
    return int(server.stats()["stig_commits"])


def _counted(server, burst):
    """Run ``burst()``; its result and how many group commits it took."""
    before = _commits(server)
    result = burst()
    return result, _commits(server) - before


# -- binary ------------------------------------------------------------------------


def _binary_burst(server, requests: list[bytes]):
    """Send ``requests`` in one write; their responses (one each), in order."""
    conn = server.connect_binary(timeout=30.0)
    conn.send(b"".join(requests))
    return [conn.response(timeout=30.0) for _ in requests]


def _binary_preload(server, items: dict[bytes, bytes]) -> dict[bytes, int]:
    """Store ``items`` (SetQ run + No-op: one commit); their committed cas."""
    conn = server.connect_binary(timeout=30.0)
    conn.send(
        b"".join(encode_request(Opcode.SetQ, k, v, SET_EXTRAS) for k, v in items.items())
        + encode_request(Opcode.Noop, opaque=7)
    )
    assert conn.response().opaque == 7
    conn.send(b"".join(encode_request(Opcode.GetK, k) for k in items))
    return {r.key: r.cas for r in (conn.response() for _ in items)}


def _binary_get(server, keys: list[bytes]) -> dict[bytes, tuple[bytes, int]]:
    conn = server.connect_binary(timeout=30.0)
    conn.send(b"".join(encode_request(Opcode.GetK, k) for k in keys))
    found = {}
    for _ in keys:
        response = conn.response()
        if response.status == Status.NO_ERROR:
            found[response.key] = (response.value, response.cas)
    return found


def test_binary_sets_of_one_burst_share_a_commit_each_with_its_own_cas(server):
    keys = [b"bs%d" % i for i in range(BURST)]
    requests = [
        encode_request(Opcode.Set, k, VALUE + b"%d" % i, SET_EXTRAS, opaque=i)
        for i, k in enumerate(keys)
    ]
    responses, commits = _counted(server, lambda: _binary_burst(server, requests))
    assert [(r.opaque, r.status) for r in responses] == [(i, 0) for i in range(BURST)]
    cas = [r.cas for r in responses]
    assert 0 not in cas and len(set(cas)) == BURST
    assert commits <= MAX_COMMITS, f"{commits} group commits for {BURST} pipelined Sets"
    # Each reply's cas is the one its item was committed with.
    stored = _binary_get(server, keys)
    assert stored == {k: (VALUE + b"%d" % i, cas[i]) for i, k in enumerate(keys)}


def test_binary_adds_and_replaces_of_one_burst_get_each_its_verdict(server):
    present = {b"ar%d" % i: b"old" for i in range(0, BURST, 2)}
    _binary_preload(server, present)
    requests = []
    for i in range(BURST):
        key = b"ar%d" % i
        opcode = Opcode.Add if i % 4 < 2 else Opcode.Replace
        requests.append(encode_request(opcode, key, b"new%d" % i, SET_EXTRAS, opaque=i))
    responses, commits = _counted(server, lambda: _binary_burst(server, requests))
    expected = []
    for i in range(BURST):
        exists = i % 2 == 0
        if i % 4 < 2:  # Add
            expected.append(Status.KEY_EEXISTS if exists else Status.NO_ERROR)
        else:  # Replace
            expected.append(Status.NO_ERROR if exists else Status.KEY_ENOENT)
    assert [r.status for r in responses] == expected
    assert commits <= MAX_COMMITS, f"{commits} group commits for {BURST} pipelined Add/Replace"
    stored = _binary_get(server, [b"ar%d" % i for i in range(BURST)])
    for i, response in enumerate(responses):
        key = b"ar%d" % i
        if response.status == Status.NO_ERROR:
            assert stored[key] == (b"new%d" % i, response.cas)


def test_binary_appends_prepends_and_counters_of_one_burst_share_a_commit(server):
    count = BURST // 4
    _binary_preload(server, {b"cat%d" % i: b"mid" for i in range(count)})
    _binary_preload(server, {b"ctr%d" % i: b"100" for i in range(count)})
    requests = []
    for i in range(count):
        requests.append(encode_request(Opcode.Append, b"cat%d" % i, b">", opaque=4 * i))
        requests.append(encode_request(Opcode.Prepend, b"cat%d" % i, b"<", opaque=4 * i + 1))
        incr = struct.pack(">QQI", 5, 0, 0xFFFFFFFF)
        decr = struct.pack(">QQI", 2, 0, 0xFFFFFFFF)
        requests.append(encode_request(Opcode.Increment, b"ctr%d" % i, b"", incr, opaque=4 * i + 2))
        requests.append(encode_request(Opcode.Decrement, b"ctr%d" % i, b"", decr, opaque=4 * i + 3))
    requests.append(encode_request(Opcode.Append, b"absent", b">", opaque=99999))
    responses, commits = _counted(server, lambda: _binary_burst(server, requests))
    assert all(r.status == 0 for r in responses[:-1]), [r for r in responses if r.status][:3]
    assert responses[-1].status == Status.NOT_STORED
    counters = [struct.unpack(">Q", r.value)[0] for r in responses[:-1] if r.opcode in (5, 6)]
    assert counters == [105, 103] * count
    assert commits <= MAX_COMMITS, f"{commits} group commits for {len(requests)} writes"
    stored = _binary_get(server, [b"cat%d" % i for i in range(count)])
    for i in range(count):
        value, cas = stored[b"cat%d" % i]
        assert value == b"<mid>" and cas == responses[4 * i + 1].cas


def test_binary_cas_writes_and_deletes_of_one_burst_get_each_its_verdict(server):
    cas = _binary_preload(server, {b"cw%d" % i: b"old" for i in range(BURST)})
    requests = []
    for i in range(BURST):
        key = b"cw%d" % i
        right = cas[key] if i % 3 else cas[key] + 1_000_000  # every third is stale
        if i % 2:
            requests.append(
                encode_request(Opcode.Set, key, b"new", SET_EXTRAS, cas=right, opaque=i)
            )
        else:
            requests.append(encode_request(Opcode.Delete, key, cas=right, opaque=i))
    responses, commits = _counted(server, lambda: _binary_burst(server, requests))
    assert [r.status for r in responses] == [
        Status.NO_ERROR if i % 3 else Status.KEY_EEXISTS for i in range(BURST)
    ]
    assert commits <= MAX_COMMITS, f"{commits} group commits for {BURST} CAS writes"
    stored = _binary_get(server, [b"cw%d" % i for i in range(BURST)])
    for i in range(BURST):
        key = b"cw%d" % i
        if i % 3 == 0:
            assert stored[key] == (b"old", cas[key])
        elif i % 2:
            assert stored[key] == (b"new", responses[i].cas)
        else:
            assert key not in stored


def test_binary_reads_in_a_burst_see_the_writes_before_them(server):
    """A Get behind a Set of its key in the same burst reads the committed
    write (with its cas); an Add behind it sees the key present."""
    requests = []
    for i in range(200):
        key = b"rw%d" % i
        requests.append(encode_request(Opcode.Set, key, b"a%d" % i, SET_EXTRAS, opaque=3 * i))
        requests.append(encode_request(Opcode.GetK, key, opaque=3 * i + 1))
        requests.append(encode_request(Opcode.Add, key, b"b", SET_EXTRAS, opaque=3 * i + 2))
    responses = _binary_burst(server, requests)
    for i in range(200):
        stored, read, added = responses[3 * i : 3 * i + 3]
        assert stored.status == 0 and (read.value, read.cas) == (b"a%d" % i, stored.cas)
        assert added.status == Status.KEY_EEXISTS


# -- text ------------------------------------------------------------------------


def _text_burst(server, request: bytes, replies: int) -> list[bytes]:
    conn = server.connect(timeout=30.0)
    conn.send(request)
    data = b""
    while data.count(b"\r\n") < replies:
        data += conn.recv_until(b"\r\n", timeout=30.0)
    return data.split(b"\r\n")[:-1]


def test_text_adds_replaces_and_cas_of_one_burst_share_a_commit(server):
    client = server.client()
    client.set_many({f"t{i}": b"old" for i in range(0, BURST, 2)})
    tokens = {f"t{i}": client.gets(f"t{i}")[1] for i in range(0, BURST, 2)}
    lines, expected = [], []
    for i in range(BURST):
        key = b"t%d" % i
        exists = i % 2 == 0
        kind = i % 3
        if kind == 0:
            lines.append(b"add %s 0 0 3\r\nnew\r\n" % key)
            expected.append(b"NOT_STORED" if exists else b"STORED")
        elif kind == 1:
            lines.append(b"replace %s 0 0 3\r\nnew\r\n" % key)
            expected.append(b"STORED" if exists else b"NOT_STORED")
        else:
            token = tokens.get(key.decode(), b"1")
            lines.append(b"cas %s 0 0 3 %s\r\nnew\r\n" % (key, token))
            expected.append(b"STORED" if exists else b"NOT_FOUND")
    replies, commits = _counted(server, lambda: _text_burst(server, b"".join(lines), BURST))
    assert replies == expected
    assert commits <= MAX_COMMITS, f"{commits} group commits for {BURST} add/replace/cas"
    stored = client.get_many([f"t{i}" for i in range(BURST)])
    for i, reply in enumerate(replies):
        assert stored.get(f"t{i}") == (b"new" if reply == b"STORED" else stored.get(f"t{i}"))


def test_two_concurrent_bursts_of_adds_store_each_key_once(stig_factory):
    """add stays a lock when pipelined: two connections each send the same
    1,000 adds in one burst; of the two adds of every key exactly one is STORED."""
    server = stig_factory()
    request = b"".join(b"add lock%d 0 0 1\r\nx\r\n" % i for i in range(BURST))
    first, second = server.connect(timeout=30.0), server.connect(timeout=30.0)
    first.send(request)
    second.send(request)
    replies = []
    for conn in (first, second):
        data = b""
        while data.count(b"\r\n") < BURST:
            data += conn.recv_until(b"\r\n", timeout=30.0)
        replies.append(data.split(b"\r\n")[:-1])
    for i, pair in enumerate(zip(*replies, strict=True)):
        assert sorted(pair) == [b"NOT_STORED", b"STORED"], (i, pair)


def test_pymemcache_pipelined_adds_share_a_commit(server):
    """pymemcache pipelines the commands of one call (``set_many``; ``add`` of
    many keys goes through the same ``_store_cmd``)."""
    client = server.client()
    items = {f"pa{i}": b"%d" % i for i in range(BURST)}
    result, commits = _counted(server, lambda: client._store_cmd(b"add", items, 0, False))
    assert result == dict.fromkeys(items, True)
    assert commits <= MAX_COMMITS, f"{commits} group commits for pymemcache's {BURST} adds"
    assert client.get_many(list(items)) == items


# -- meta ------------------------------------------------------------------------


def test_meta_writes_that_wait_for_their_commit_share_one(server):
    client = server.client()
    client.set_many({f"m{i}": b"old" for i in range(BURST)})
    cas = {f"m{i}": int(client.gets(f"m{i}")[1]) for i in range(BURST)}
    lines = []
    for i in range(BURST):
        key = b"m%d" % i
        kind = i % 6
        if kind == 0:
            lines.append(b"ms %s 3 c\r\nnew\r\n" % key)  # returns its cas
        elif kind == 1:
            lines.append(b"ms new%s 3 ME c\r\nnew\r\n" % key)  # add mode
        elif kind == 2:
            lines.append(b"ms %s 3 C%d c\r\nnew\r\n" % (key, cas[key.decode()]))  # cas
        elif kind == 3:
            lines.append(b"md %s C%d\r\n" % (key, cas[key.decode()] + 7))  # stale cas
        elif kind == 4:
            lines.append(b"ma new%s N0 J10 c v\r\n" % key)  # creates, returns cas
        else:
            lines.append(b"ms %s 3 MR C%d\r\nnew\r\n" % (key, cas[key.decode()]))  # replace+cas
    count = BURST + sum(i % 6 == 4 for i in range(BURST))  # VA has a data line
    replies, commits = _counted(server, lambda: _text_burst(server, b"".join(lines), count))
    assert commits <= MAX_COMMITS, f"{commits} group commits for {BURST} meta writes"
    position = 0
    seen_cas = set()
    for i in range(BURST):
        kind = i % 6
        reply = replies[position]
        position += 1
        if kind == 3:
            assert reply == b"EX", (i, reply)
            continue
        if kind == 4:
            assert reply.startswith(b"VA 2 c"), (i, reply)
            assert replies[position] == b"10"
            position += 1
        elif kind == 5:
            assert reply == b"HD", (i, reply)
            continue
        else:
            assert reply.startswith(b"HD c"), (i, reply)
        token = int(reply.split(b" c")[1])
        assert token and token not in seen_cas
        seen_cas.add(token)
    assert position == len(replies)


# -- bounds --------------------------------------------------------------------------

#: What a held reply is counted at (stig/core/reply_gate.py's HELD_COST).
HELD_COST = 384


def test_replies_held_behind_commits_count_against_max_reply_bytes(stig_factory):
    """With --max-reply-bytes 16k a connection holds at most 16k/HELD_COST
    replies behind their commits before it sends (which commits them): a
    burst of 3,000 Sets is answered in parts, every reply right."""
    limit = 16 * 1024
    server = stig_factory("--max-reply-bytes", "16k")
    requests = [
        encode_request(Opcode.Set, b"rb%d" % i, VALUE, SET_EXTRAS, opaque=i) for i in range(3000)
    ]
    responses = _binary_burst(server, requests)
    assert [(r.opaque, r.status) for r in responses] == [(i, 0) for i in range(3000)]
    stats = server.stats()
    assert 0 < int(stats["stig_held_replies_max"]) <= limit // HELD_COST + 1, stats
    assert stats["stig_held_replies"] == "0"
