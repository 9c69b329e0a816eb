"""The read of a retrieval line too long to parse whole: answered as it streams in.

A ``get``/``gets``/``gat``/``gats`` line of any length (10,000 keys is 400 KB)
arrives as events (:mod:`stig_protocol.text_stream`): its head, batches of keys,
its end.  :class:`StreamedGet` answers each batch as it comes, while the rest
of the line is still arriving, so the server holds one window of the line
and ``--max-reply-bytes`` of replies, never the line or its reply whole.

The whole line is still one read of one snapshot (docs/pov.md, rule 3): the
snapshot is taken at the head and held until the end.  Its keys are not
known then, so it first waits for every write in flight — whatever key it
writes, it may have been acknowledged to some client before this line began
(docs/pov.md, "Other sessions") — and, for ``gets``/``gats``, promotes this
session's pending writes (every cas returned is a committed one).
"""

from __future__ import annotations

import lmdb

from stig.core.command_core import Core
from stig.core.read_view import ReadView
from stig.core.replies import Replies
from stig.engine.errors import CommitFailed
from stig_protocol import text_replies as R
from stig_protocol.commands import RetrieveEnd, RetrieveKeys, RetrieveStart


class StreamedGet:
    """One streamed retrieval line of a text connection at a time."""

    def __init__(self, core: Core, replies: Replies, ttl_refusal: bytes) -> None:
        self.core = core
        self.replies = replies  # sent as they grow (Replies.drain)
        self.out = replies.out
        self._ttl_refusal = ttl_refusal
        self._head: RetrieveStart | None = None  # the line being answered
        self._snapshot: ReadView | None = None
        #: What ends the reply instead of END, once known (the read stopped:
        #: the rest of the line's keys are not read).
        self._ended: bytes | None = None

    async def start(self, head: RetrieveStart) -> None:
        """Take the line's snapshot (its run closed and its waits done by the caller's core)."""
        self.close()
        self._head = head
        self._ended = None
        core = self.core
        if head.touch and core.ttl_refused(head.exptime):
            self._ended = self._ttl_refusal  # the keys are read past, unanswered
            return
        try:
            self._snapshot = await core.snapshot(None, head.with_cas)
        except CommitFailed as exc:
            self._ended = R.server_error(str(exc))

    async def keys(self, batch: RetrieveKeys) -> None:
        """Answer the next keys from the snapshot, sending as the reply grows."""
        head, snapshot = self._head, self._snapshot
        if head is None or snapshot is None or self._ended is not None:
            return  # a line refused or stopped: its keys are skipped
        try:
            if head.touch or self.core.prefixes.enabled:
                await self._each(head, snapshot, batch.keys)
            else:
                await self._render(head, snapshot, batch.keys)
        except lmdb.Error:  # ended under us: the map grew, or the client did not read
            self._stop(R.server_error(snapshot.interruption))
        except CommitFailed as exc:  # the drain found this session's writes lost
            self._stop(R.server_error(str(exc)))

    def end(self, end: RetrieveEnd) -> None:
        """The line's newline: END, or what ends its reply instead."""
        if self._head is None:
            return
        if self._ended is not None:
            self.out += self._ended
        elif end.error is not None:
            self.out += end.error.text_reply()
        else:
            self.out += R.END
        self.close()
        self._head = None

    def close(self) -> None:
        """Release the snapshot (the line ended, or its connection did)."""
        snapshot = self._snapshot
        if snapshot is not None:
            self._snapshot = None
            snapshot.close()

    def _stop(self, ending: bytes) -> None:
        """The read stopped: ``ending`` closes the reply now, the rest is skipped."""
        self.out += ending
        self._ended = b""
        self.close()

    async def _render(
        self, head: RetrieveStart, snapshot: ReadView, keys: tuple[bytes, ...]
    ) -> None:
        out, core = self.out, self.core
        limit, drain = self.replies.limit, self.replies.drain
        line = R.VALUE_LINE_CAS if head.with_cas else R.VALUE_LINE
        position = 0
        while position < len(keys):
            if len(out) >= limit:
                await drain()
            read, hits = snapshot.render(keys, position, line, head.with_cas, out, limit)
            core.count_gets(read - position, hits)
            position = read

    async def _each(self, head: RetrieveStart, snapshot: ReadView, keys: tuple[bytes, ...]) -> None:
        """Key by key: ``gat``/``gats`` touch (and may expire) each item, and
        ``stats detail on`` counts each key."""
        out, core = self.out, self.core
        limit, drain = self.replies.limit, self.replies.drain
        touch, cas = head.touch, head.with_cas
        for key in keys:
            if len(out) >= limit:
                await drain()
            item = snapshot.item(key)
            found = item is not None
            core.count_read(key, found, touch=touch)
            if item is not None:
                out += R.value(key, item.flags, item.value, item.cas if cas else None)
                del item
            if touch:
                core.touched(key, found, head.exptime, snapshot)
