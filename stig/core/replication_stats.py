"""The replication lines of ``stats`` and ``stats settings`` (docs/replication.md).

Both sides show their role, epoch and sequence numbers, the lag in groups,
bytes and milliseconds, and the connected followers; a primary its log and
what its followers acknowledged, a follower its link to the primary.
"""

from __future__ import annotations

from stig.engine.engine import Engine
from stig.storage.replog import now_ms


def replication_stats(engine: Engine) -> list[tuple[str, object]]:
    """With ``--workers N`` every worker answers the same lines: the numbers
    of the last commit (read from LMDB: the writer process commits) and
    every worker's followers (stig/engine/shared_replicas.py)."""
    store = engine.store
    state = store.refresh_log_state() if engine.writer is not None else store.log_state
    hub = engine.replicas
    acked = hub.acked_seqs()
    # With workers the writer process decides, and each commit stores it.
    log_on = state.logging if engine.writer is not None else store.log_enabled
    follower = engine.follower
    if follower is not None and follower.mirror is None and engine.shared_follower is not None:
        # Another worker holds the stream (--workers N): its progress.
        follower.load(engine.shared_follower)
    pairs: list[tuple[str, object]] = [
        ("replication_role", "primary" if follower is None else "replica"),
        ("replication_epoch", state.epoch),
        ("connected_replicas", len(acked)),
        # 1 once a follower connected (or this server is one): commits write the log.
        ("replication_log_on", int(log_on)),
        ("replication_log_bytes", state.log_bytes),
        ("replication_log_groups", max(state.log_groups, 0)),
        ("replication_log_first_seq", state.log_first),
        # A later epoch this server was told of: > replication_epoch, it is
        # fenced (refuses writes and followers as a primary).
        ("replication_fenced_epoch", store.fence_state.epoch),
        ("replication_fenced", int(store.fenced)),
    ]
    # Former primaries not yet told of this server's promotion (stig_fence
    # is retried until each hears it: stig/replication/fencer.py).
    due = sorted(store.fences_due().items())
    pairs.append(("replication_fences_due", len(due)))
    for index, (address, epoch) in enumerate(due):
        pairs += [
            (f"replication_fence_due_{index}", address),
            (f"replication_fence_due_{index}_epoch", epoch),
        ]
    if follower is None:
        # The slowest connected follower: what it has applied, how far behind.
        applied = min(acked, default=state.seq)
        lag_bytes, first_ms = store.log_after(applied)
        pairs += [
            ("replication_seq", state.seq),
            ("replication_applied_seq", applied),
            ("replication_lag_groups", state.seq - applied),
            ("replication_lag_bytes", lag_bytes),
            ("replication_lag_ms", 0 if first_ms is None else max(now_ms() - first_ms, 0)),
            ("replication_snapshots_sent", hub.snapshots_sent),
            ("replication_ack_timeouts", hub.ack_timeouts),
        ]
        hold = engine.promoter.hold  # --min-replica-acks: reads held back
        pairs += [
            ("replication_keys_held", 0 if hold is None else hold.keys_held),
            ("replication_read_waits", 0 if hold is None else hold.waits),
            ("replication_read_timeouts", 0 if hold is None else hold.timeouts),
            ("replication_hold_collapses", 0 if hold is None else hold.collapses),
        ]
        for index, seq in enumerate(acked):
            pairs.append((f"replica_{index}_acked_seq", seq))
        return pairs
    applied = follower.applied_seq
    behind = max(follower.primary_seq - applied, 0)
    lag_ms = (
        max(now_ms() - follower.applied_time_ms, 0) if behind and follower.applied_time_ms else 0
    )
    return [
        *pairs,
        ("replication_primary", follower.primary),
        ("replication_connected", int(follower.connected)),
        ("replication_seq", max(follower.primary_seq, applied)),
        ("replication_applied_seq", applied),
        ("replication_lag_groups", behind),
        ("replication_lag_bytes", follower.pending_bytes),
        ("replication_lag_ms", lag_ms),
        ("replication_connects", follower.connects),
        ("replication_snapshots_loaded", follower.snapshots),
        ("replication_groups_applied", follower.groups_applied),
        ("replication_groups_discarded", follower.groups_discarded),
        ("replication_groups_saved", follower.groups_saved),
        ("replication_last_error", follower.last_error.replace(" ", "_") or "none"),
    ]


def replication_settings(engine: Engine) -> list[tuple[str, object]]:
    settings = engine.settings
    return [
        ("stig_replication_log_bytes", settings.replication_log_bytes),
        ("stig_replication_log_seconds", settings.replication_log_seconds),
        ("stig_replica_of", settings.replica_of or "none"),
        ("stig_min_replica_acks", settings.min_replica_acks),
        ("stig_replica_ack_timeout_ms", settings.replica_ack_timeout_ms),
    ]
