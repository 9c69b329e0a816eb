"""A connection that ends leaves nothing behind for the cycle collector.

The server runs with rare full collections (``gc.freeze`` and
``gc.set_threshold(50_000, 20, 100)`` in stig/tools/cli.py, for speed), so
anything a closed connection leaves in a reference cycle — its Connection,
Session, handler, core, reply buffers and the operations (with their values)
of its last runs — stays in memory until a full collection, which under
steady load is hours away. The 30-minute soak (docs/soak.md) saw anonymous
RSS climb ~0.7 MiB/s with 1,000 connections and ~39,000 hostile ones opened
and closed: this test is that finding, made exact.

The cycles were the handlers' dispatch tables (bound methods of their own
handler), the gate's ``settle`` (the core's bound method; the core holds the
gate), ``session.on_failure`` (the connection's ``_wake``), the session's
budget account (``Charges.owner`` is the session) and a finished promotion's
``on_done`` (the session's bound method; the session keeps its last
promotion). The streams below pass through each of them: writes answered
from the POV, replies held behind their commits (``add``, a binary Set), quiet
runs, a quiet failure owed in its turn behind a quiet cas's verdict
(``Core.quiet_reply``), reads.
"""

from __future__ import annotations

import gc
from collections import Counter
from pathlib import Path

import pytest
import trio

from stig.engine.engine import PROTOCOL_VERSION, Engine
from stig.engine.settings import Settings
from stig.server.connection import Connection
from stig_protocol.binary_codes import Opcode
from stig_protocol.binary_writer import encode_request
from stig_testkit.fuzz.harness import MemoryTransport

#: flags and exptime of a binary Set.
SET_EXTRAS = bytes(8)
#: A loud Set (its reply held behind its commit), a SetQ, a Get, a SetQ whose
#: cas fails at its commit and a DeleteQ of a missing key owed in its turn
#: behind it, a Version, a No-op.
BINARY = b"".join(
    [
        encode_request(Opcode.Set, b"a", b"1", SET_EXTRAS),
        encode_request(Opcode.SetQ, b"b", b"2", SET_EXTRAS),
        encode_request(Opcode.Get, b"a"),
        encode_request(Opcode.SetQ, b"a", b"3", SET_EXTRAS, cas=999_999),
        encode_request(Opcode.DeleteQ, b"missing"),
        encode_request(Opcode.Version),
        encode_request(Opcode.Noop),
    ]
)

STREAMS = {
    "text": b"set a 0 0 1\r\n1\r\nget a\r\nset b 0 0 1 noreply\r\n2\r\n"
    b"add c 0 0 1\r\n3\r\nversion\r\n",
    "meta": b"ms a 1\r\n1\r\nmg a v\r\nms b 1 q\r\n2\r\nms a 1 C999999 q\r\n3\r\n"
    b"md missing q\r\nmn\r\n",
    "binary": BINARY,
}
#: The last reply of each stream: the connection served all of it.
LAST_REPLY = {
    "text": b"VERSION %b\r\n" % PROTOCOL_VERSION.encode(),
    # The quiet cas that failed is owed its verdict, the quiet md's NF its turn.
    "meta": b"EX\r\nNF\r\nMN\r\n",
    "binary": bytes([0x81, Opcode.Noop]) + bytes(22),
}


async def _garbage_after_connections(
    tmp_path: Path, stream: bytes, last_reply: bytes
) -> Counter[str]:
    engine = Engine(Settings(data_dir=tmp_path))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run_promoter)
            gc.collect()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                for _ in range(3):
                    client = MemoryTransport([stream])
                    await Connection(engine, client).serve()
                    assert client.sent.endswith(last_reply), bytes(client.sent)
                    del client
                await engine.promoter.close()
                gc.garbage.clear()
                gc.collect()
                found = Counter(type(obj).__qualname__ for obj in gc.garbage)
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
            nursery.cancel_scope.cancel()
    finally:
        await engine.close()
    return found


@pytest.mark.parametrize("protocol", list(STREAMS))
async def test_a_closed_connection_leaves_no_cycles(tmp_path: Path, protocol: str) -> None:
    found = await _garbage_after_connections(tmp_path, STREAMS[protocol], LAST_REPLY[protocol])
    assert not found, found.most_common(10)
