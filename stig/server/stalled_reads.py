"""The watchdog of held snapshots: it ends those of reads whose client does
not read, and renews those held too long.

A read that holds an LMDB snapshot while its reply streams (a multi-key get,
a run of quiet gets or of ``mg``, a key listing) pins every page that commits
free after it began.

* A client that asks for big values and reads none of them keeps it so for
  as long as it likes: under writes the data file grew by hundreds of MiB
  and never shrank (docs/soak.md, finding 5).  Each held snapshot whose
  connection's send has made no progress for ``--max-read-stall-ms`` is
  ended (:meth:`HeldReads.end_stalled`); the read ends its reply with
  ``SERVER_ERROR read interrupted: the reply was not read for N s; read
  again`` (what was sent came from the one snapshot), which the client sees
  if it ever reads.  Its connection still waits for the client to take the
  replies already made (``--max-reply-bytes`` bounds them).
* A client that keeps a quiet get run or a get line going, reading every
  reply, escapes that bound: it grew the file to 256 MB in 8 s beside one
  writer (the hostile review).  Each renewable snapshot held longer than
  ``--max-snapshot-age-ms`` is released (:meth:`HeldReads.release_old`):
  the read goes on from a new snapshot at its next key.

It looks every quarter of the smaller bound, so each is kept at most a
quarter late.
"""

from __future__ import annotations

import trio

from stig.engine.engine import Engine

#: Looks per bound: a snapshot is ended or released at most a quarter late.
LOOKS = 4


async def watch(engine: Engine) -> None:
    """End stalled reads' snapshots, and release old ones, until cancelled."""
    settings = engine.settings
    stall = settings.max_read_stall_ms / 1000.0
    age = settings.max_snapshot_age_ms / 1000.0
    held = engine.store.long_reads
    while True:
        await trio.sleep(min(stall, age) / LOOKS)
        if len(held):
            held.end_stalled(trio.current_time(), stall)
            held.release_old(age)
