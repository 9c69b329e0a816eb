"""The ``stats`` and ``stats settings`` listings, shared by every protocol."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterable

from stig.core.replication_stats import replication_settings, replication_stats
from stig.engine.engine import PROTOCOL_VERSION, Engine
from stig.engine.prefix_stats import DELIMITER, MAX_PREFIX_BYTES, MAX_PREFIXES
from stig.engine.refusal import PROBE_BYTES, PROBE_SECONDS
from stig.engine.shared_stats import Figures, names
from stig.engine.stats import CommandStats, PromoterStats


def _sources(engine: Engine) -> tuple[CommandStats, PromoterStats, dict[str, int]]:
    """The counters ``stats`` shows: this process's, or with ``--workers N``
    every worker's combined (stig/engine/shared_stats.py says how)."""
    region = engine.region
    if region is None:
        figures = Figures()
        figures.publish(engine.promoter, engine.store)
        listed = {name: getattr(figures, name) for name in names(Figures)}
        listed["commit_lag_ms"] = int(engine.promoter.lag() * 1000)
        return engine.stats, engine.promoter_stats, listed
    region.mine.figures.publish(engine.promoter, engine.store)
    totals = region.totals()
    return totals.command, totals.promoter, totals.figures


def general_stats(engine: Engine) -> list[tuple[str, object]]:
    """memcached's general counters that mean something for Stig, then Stig's own.

    With ``--workers N`` the counters are every worker's (summed, or the
    largest for maxima); ``pid``, ``uptime``, ``rusage_*``,
    ``stig_worker_id`` and the refusal's cause and last error are the
    answering worker's own; the replication lines are the same on every
    worker (stig/core/replication_stats.py), but for the read hold's
    (``replication_keys_held``, ``replication_read_*``: the answering
    worker's)."""
    now = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stats, promoter, figures = _sources(engine)
    # From LMDB, not from what a worker last heard of the writer: a worker
    # that has not committed since it started, or a follower's (whose stream
    # worker 0 hands to the writer), knows nothing newer than its start.
    store = engine.store.gauges()
    budget = engine.budget.figures()
    commits = promoter.commits
    pairs: list[tuple[str, object]] = [
        ("pid", os.getpid()),
        ("uptime", int(now - engine.started)),
        ("time", int(now)),
        ("version", PROTOCOL_VERSION),
        ("pointer_size", 64),
        ("rusage_user", f"{usage.ru_utime:.6f}"),
        ("rusage_system", f"{usage.ru_stime:.6f}"),
        ("max_connections", engine.settings.max_connections),
        ("curr_connections", stats.curr_connections),
        ("total_connections", stats.total_connections),
        ("rejected_connections", stats.rejected_connections),
    ]
    if engine.tls is not None:
        pairs += [
            ("ssl_handshake_errors", stats.ssl_handshake_errors),
            ("time_since_server_cert_refresh", engine.tls.seconds_since_reload),
        ]
    pairs += [
        (name, getattr(stats, name))
        for name in (
            "cmd_get",
            "cmd_set",
            "cmd_flush",
            "cmd_touch",
            "get_hits",
            "get_misses",
            "delete_misses",
            "delete_hits",
            "incr_misses",
            "incr_hits",
            "decr_misses",
            "decr_hits",
            "cas_misses",
            "cas_hits",
            "cas_badval",
            "touch_hits",
            "touch_misses",
            "bytes_read",
            "bytes_written",
        )
        if hasattr(stats, name)
    ]
    pairs += [
        ("get_expired", 0),
        ("get_flushed", 0),
        ("evictions", 0),
        ("expired_unfetched", 0),
        ("curr_items", store.items),
        ("total_items", store.last_cas),
        ("bytes", store.total_bytes),
        ("limit_maxbytes", engine.store.map_size),
        ("stig_disk_bytes", engine.store.disk_bytes()),
        ("stig_commits", commits),
        ("stig_promotions", promoter.promotions),
        ("stig_group_commit_avg", f"{promoter.promotions / commits:.2f}" if commits else "0"),
        ("stig_group_commit_max", promoter.max_group),
        (
            "stig_commit_latency_avg_us",
            int(promoter.commit_seconds_total / commits * 1e6) if commits else 0,
        ),
        ("stig_commit_latency_max_us", int(promoter.commit_seconds_max * 1e6)),
        ("stig_failed_commits", promoter.failed_commits),
        ("stig_pending_promotion_bytes", promoter.pending_bytes),
        ("stig_uncommitted_bytes", budget.used),
        ("stig_uncommitted_bytes_peak", budget.peak),
        ("stig_uncommitted_bytes_limit", budget.limit),
        ("stig_open_run_bytes", budget.open),
        # Open runs past the budget: connections waiting for room, and how often.
        ("stig_open_run_waiting", budget.waiting),
        ("stig_open_run_waits", budget.room_waits),
        # ... the longest wait, and the runs refused for waiting past --max-run-wait-ms.
        ("stig_open_run_wait_max_ms", int(budget.wait_max * 1000)),
        ("stig_open_run_wait_refusals", budget.wait_refusals),
        ("stig_commit_lag_ms", figures["commit_lag_ms"]),
        ("stig_commit_lag_max_ms", int(promoter.lag_seconds_max * 1000)),
        ("stig_max_commit_lag_ms", engine.settings.max_commit_lag_ms),
        ("stig_paused_connections", promoter.paused_connections),
        ("stig_pauses", promoter.pauses),
        ("stig_gil_loans", promoter.gil_loans),
        ("stig_durable_acks", int(engine.settings.durable_acks)),
        # Acknowledged writes visible everywhere (stig/engine/visibility.py):
        # LMDB snapshots held across awaits (streamed replies, listings), of
        # stig_max_readers reader slots.
        ("stig_held_snapshots", figures["held_snapshots"]),
        # ... and those ended because their client read none of the reply for
        # --max-read-stall-ms (stig/storage/held.py).
        ("stig_stalled_reads", figures["stalled_reads"]),
        # ... and the reads that went on from a new snapshot, theirs released
        # at --max-snapshot-age-ms (stig/storage/held.py).
        ("stig_snapshot_renewals", figures["snapshot_renewals"]),
        ("stig_max_snapshot_age_ms", engine.settings.max_snapshot_age_ms),
        ("stig_keys_in_flight", figures["keys_in_flight"]),
        ("stig_read_waits", figures["read_waits"]),
        ("stig_cachedump_skipped_keys", stats.cachedump_skipped_keys),
        # stats detail (stig/engine/prefix_stats.py, one table for every
        # worker): the prefixes counted and their bytes (bounded by
        # stig_detail_max_prefixes and stig_detail_max_prefix_bytes), and the
        # keys not counted because their prefix did not fit.
        *zip(
            ("stig_detail_prefixes", "stig_detail_prefix_bytes", "stig_detail_uncounted"),
            engine.prefixes.figures(),
            strict=True,
        ),
        # Replies waiting for their commits (stig/core/reply_gate.py): now, on
        # all connections; the most one connection held (--max-reply-bytes).
        ("stig_held_replies", stats.held_replies),
        ("stig_held_replies_max", stats.held_replies_max),
        # The writer process (--workers, docs/workers.md): 0 without one.
        ("stig_workers", engine.settings.workers),
        ("stig_worker_id", engine.worker_id),
        ("stig_writer_pid", 0 if engine.writer is None else engine.writer.pid),
        ("stig_writer_restarts", 0 if engine.writer is None else engine.writer.restarts),
        # Workers killed because they held every other worker's commits
        # (stig/engine/hung_workers.py).
        ("stig_workers_killed_hung", engine.replicas.workers_killed_hung),
    ]
    # Writes refused while the disk cannot take commits (stig/engine/refusal.py).
    # With workers the state is the server's (stig/engine/shared_refusal.py):
    # this worker's, once it took in the writer's news, is every worker's.
    refusal = engine.promoter.refusal
    refusal.sync()
    cause = refusal.cause
    pairs += [
        ("stig_writes_refused", int(refusal.refusing)),
        ("stig_writes_refused_cause", "none" if cause is None else cause.value),
        ("stig_writes_refused_seconds", int(time.monotonic() - refusal.since) if cause else 0),
        ("stig_write_refusals", figures["write_refusals"]),
        ("stig_writes_refused_episodes", figures["refused_episodes"]),
        ("stig_space_probes", figures["space_probes"]),
        ("stig_last_commit_error_kind", refusal.last_kind),
        # The words of LMDB (or of the map's growth), one token: spaces as "_".
        ("stig_last_commit_error", refusal.last_error.replace(" ", "_") or "none"),
    ]
    pairs += replication_stats(engine)
    return pairs


def _path(path: object | None) -> object:
    """memcached writes an unset path as NULL."""
    return "NULL" if path is None else path


def _yes(flag: object) -> str:
    return "yes" if flag else "no"


def settings_stats(engine: Engine) -> Iterable[tuple[str, object]]:
    """``stats settings``: every knob, memcached's names where they exist.

    memcached's fields that mean something for Stig come first, with its
    spelling of values (``yes``/``no``, ``NULL``, an octal ``umask``); the
    ones about slabs, LRUs, threads and extstore are left out: Stig has none.
    """
    settings = engine.settings
    limits = settings.limits
    tls = settings.tls_enabled
    return [
        ("maxbytes", settings.map_size),
        ("maxconns", settings.max_connections),
        ("tcpport", 0 if settings.unix_socket is not None else settings.port),
        ("udpport", 0),
        ("inter", "NULL" if settings.unix_socket is not None else settings.listen),
        ("verbosity", 0),
        ("evictions", "off"),
        ("domain_socket", _path(settings.unix_socket)),
        ("umask", f"{settings.unix_mask:o}"),
        ("shutdown_command", "no"),
        ("num_threads", 1),
        ("stat_key_prefix", DELIMITER.decode()),
        ("detail_enabled", _yes(engine.prefixes.enabled)),
        ("cas_enabled", "yes"),
        ("tcp_backlog", 1024),
        ("binding_protocol", "auto-negotiate"),
        ("auth_enabled_sasl", _yes(settings.auth_file)),
        ("auth_enabled_ascii", _yes(settings.auth_file)),
        ("item_size_max", limits.max_item_size),
        ("maxconns_fast", "yes"),
        ("flush_enabled", _yes(not settings.disable_flush_all)),
        ("idle_timeout", settings.idle_timeout),
        ("ssl_enabled", _yes(tls)),
        ("ssl_chain_cert", "(null)" if settings.tls_cert is None else settings.tls_cert),
        ("ssl_key", "(null)" if settings.tls_key is None else settings.tls_key),
        ("ssl_verify_mode", 2 if settings.tls_verify_clients else 0),
        ("ssl_keyformat", 1),  # PEM
        ("ssl_ciphers", "NULL"),
        ("ssl_ca_cert", _path(settings.tls_ca)),
        ("ssl_min_version", "tlsv1.2"),
        ("interface", settings.listen),
        ("key_max_length", limits.max_key_length),
        ("line_max_length", limits.max_line_length),
        ("stig_get_line_window", limits.get_window),
        ("stig_data_dir", settings.data_dir),
        ("stig_durable_acks", _yes(settings.durable_acks)),
        ("stig_ttl_policy", settings.ttl_policy.value),
        ("stig_batch_idle_ms", settings.batch_idle_ms),
        ("stig_shutdown_grace_ms", settings.shutdown_grace_ms),
        ("stig_max_pending_bytes", settings.max_pending_bytes),
        ("stig_max_run_wait_ms", settings.max_run_wait_ms),
        ("stig_max_commit_lag_ms", settings.max_commit_lag_ms),
        ("stig_max_reply_bytes", settings.max_reply_bytes),
        ("stig_max_read_stall_ms", settings.max_read_stall_ms),
        ("stig_max_snapshot_age_ms", settings.max_snapshot_age_ms),
        ("stig_max_readers", engine.store.max_readers),
        ("stig_initial_map_size", settings.map_size),
        ("stig_auth", _yes(settings.auth_file)),
        (
            "stig_tls_port",
            settings.tls_port
            if tls and settings.tls_port is not None
            else (settings.port if tls else 0),
        ),
        ("stig_detail_max_prefixes", MAX_PREFIXES),
        ("stig_detail_max_prefix_bytes", MAX_PREFIX_BYTES),
        ("stig_space_probe_bytes", PROBE_BYTES),
        ("stig_space_probe_interval_ms", int(PROBE_SECONDS * 1000)),
        *replication_settings(engine),
    ]
