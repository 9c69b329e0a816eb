"""Counters behind ``stats``: plain attributes bumped on the hot path."""

from __future__ import annotations

import attrs


@attrs.define
class PromoterStats:
    """What the group commit does: how often, how big, how slow."""

    commits: int = 0
    promotions: int = 0
    max_group: int = 0
    commit_seconds_total: float = 0.0
    commit_seconds_max: float = 0.0
    failed_commits: int = 0  #: runs that failed to commit
    pending_bytes: int = 0
    lag_seconds_max: float = 0.0  #: the oldest promotion's wait, at its commit
    paused_connections: int = 0  #: connections waiting for budget or lag now
    pauses: int = 0  #: times a connection stopped reading for budget or lag
    gil_loans: int = 0  #: times a connection lent the commit thread the GIL

    def record_commit(self, group_size: int, seconds: float) -> None:
        self.commits += 1
        self.promotions += group_size
        self.max_group = max(self.max_group, group_size)
        self.commit_seconds_total += seconds
        self.commit_seconds_max = max(self.commit_seconds_max, seconds)

    def reset(self) -> None:
        pending, paused = self.pending_bytes, self.paused_connections
        self.__init__()  # type: ignore[misc]
        self.pending_bytes, self.paused_connections = pending, paused


@attrs.define
class CommandStats:
    """memcached's general counters that mean something for Stig."""

    curr_connections: int = 0
    total_connections: int = 0
    rejected_connections: int = 0
    cmd_get: int = 0
    cmd_set: int = 0
    cmd_touch: int = 0
    cmd_flush: int = 0
    get_hits: int = 0
    get_misses: int = 0
    touch_hits: int = 0
    touch_misses: int = 0
    delete_hits: int = 0
    delete_misses: int = 0
    incr_hits: int = 0
    incr_misses: int = 0
    decr_hits: int = 0
    decr_misses: int = 0
    cas_hits: int = 0
    cas_misses: int = 0
    cas_badval: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    cachedump_skipped_keys: int = 0  #: keys ``stats cachedump`` left out (not line-safe)
    #: Replies held behind their commits now, on all connections
    #: (stig/core/reply_gate.py), and the most one connection held at once.
    held_replies: int = 0
    held_replies_max: int = 0
    #: TLS clients that failed the handshake (stig/server/tls.py); not reset
    #: by ``stats reset`` (it never was).
    ssl_handshake_errors: int = 0

    def reset(self) -> None:
        kept = self.curr_connections, self.held_replies, self.ssl_handshake_errors
        self.__init__()  # type: ignore[misc]
        self.curr_connections, self.held_replies, self.ssl_handshake_errors = kept
