"""Whatever reply closes a run acknowledges it: every connection sees the run
once that reply has arrived, and so does the writer's own connection.

docs/pov.md ("Which replies acknowledge what"): the durable side is in
tests/durability/test_closing_replies.py; here, in the default mode and
under ``--durable-acks``, the visibility side — another connection's read
right after the closing reply sees the whole run — and the writer's own
key listings (``lru_crawler metadump``, ``stats cachedump``), which read
the committed state: before, a listing that closed a run was read before
that run's commit about half the time and left the writer's own writes out.
"""

from __future__ import annotations

import pytest

from stig_testkit.closing_replies import (
    BINARY_CLOSERS,
    META_CLOSERS,
    RUNS,
    TEXT_CLOSERS,
    keys,
    read_binary_reply,
    value,
)

MODES = {"pov-acks": (), "durable-acks": ("--durable-acks",)}


@pytest.fixture(params=list(MODES), ids=list(MODES))
def server(request, stig_factory):
    return stig_factory(*MODES[request.param], "--batch-idle-ms", "60000")


def _unseen(reader, prefix: str) -> list[str]:
    """The run's writes another connection does not see (one multi-get)."""
    reply = reader.send_recv(b"get %s\r\n" % " ".join(keys(prefix)).encode())
    return [
        key
        for i, key in enumerate(keys(prefix))
        if b"VALUE %s 0 %d\r\n%s\r\n" % (key.encode(), len(value(prefix, i)), value(prefix, i))
        not in reply
    ]


def test_every_closing_reply_makes_its_run_visible_to_other_connections(server):
    writer, reader = server.connect(), server.connect()
    unseen = {}
    cases = [("text", c) for c in TEXT_CLOSERS] + [("meta", c) for c in META_CLOSERS]
    for round_ in range(5):
        for index, (run, closer) in enumerate(cases):
            prefix = f"{run}{round_}.{index}"
            reply = writer.send_recv(RUNS[run](prefix) + closer.request, closer.until)
            assert reply.endswith(closer.until)
            if missing := _unseen(reader, prefix):
                unseen[f"{run} run, {closer.name}"] = len(missing)
    binary = server.connect_binary()
    for round_ in range(5):
        for index, closer in enumerate(BINARY_CLOSERS):
            prefix = f"binary{round_}.{index}"
            binary.send(RUNS["binary"](prefix) + closer.request())
            read_binary_reply(binary, closer)
            if missing := _unseen(reader, prefix):
                unseen[f"binary run, {closer.name}"] = len(missing)
    assert not unseen, f"runs not seen whole after their closing reply: {unseen}"


@pytest.mark.parametrize(
    "listing",
    [b"lru_crawler metadump all\r\n", b"stats cachedump 1 0\r\n"],
    ids=["metadump", "cachedump"],
)
def test_a_listing_that_closes_a_run_lists_that_run(server, listing):
    """The listing closes the writer's run and then lists the committed state:
    the run must be in it (its own writes, acknowledged by this very reply)."""
    conn = server.connect()
    missing = []
    for round_ in range(30):
        prefix = f"own{round_}"
        reply = conn.send_recv(RUNS["text"](prefix) + listing)
        missing += [key for key in keys(prefix) if key.encode() + b" " not in reply]
    assert not missing, f"{len(missing)} of the writer's own writes missing from its listings"
