"""The watchdog that ends the snapshots of reads whose client does not read.

A read that holds an LMDB snapshot while its reply streams (a multi-key get,
a run of quiet gets or of ``mg``, a key listing) pins every page that commits
free after it began, and a client that asks for big values and reads none of
them keeps it so for as long as it likes: under writes the data file grew by
hundreds of MiB and never shrank (docs/soak.md, finding 5).  Every quarter of
``--max-read-stall-ms`` this task ends each held snapshot whose connection's
send has made no progress for that long (:meth:`HeldReads.end_stalled`); the
read ends its reply with ``SERVER_ERROR read interrupted: the reply was not
read for N s; read again`` (what was sent came from the one snapshot), which
the client sees if it ever reads.  Its connection still waits for the client
to take the replies already made (``--max-reply-bytes`` bounds them).
"""

from __future__ import annotations

import trio

from stig.engine.engine import Engine

#: Looks per ``--max-read-stall-ms``: a snapshot is ended at most a quarter late.
LOOKS = 4


async def watch(engine: Engine) -> None:
    """End stalled reads' snapshots until cancelled."""
    seconds = engine.settings.max_read_stall_ms / 1000.0
    held = engine.store.long_reads
    while True:
        await trio.sleep(seconds / LOOKS)
        if len(held):
            held.end_stalled(trio.current_time(), seconds)
