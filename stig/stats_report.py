"""The ``stats`` and ``stats settings`` listings, shared by every protocol."""

from __future__ import annotations

import os
import resource
import time
from typing import Iterable

from stig.engine import PROTOCOL_VERSION, Engine
from stig.settings import Settings


def general_stats(engine: Engine) -> list[tuple[str, object]]:
    """memcached's general counters that mean something for Stig, then Stig's own."""
    now = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stats = engine.stats
    promoter = engine.promoter_stats
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
    pairs += [
        (name, getattr(stats, name))
        for name in (
            "cmd_get", "cmd_set", "cmd_flush", "cmd_touch",
            "get_hits", "get_misses",
            "delete_misses", "delete_hits",
            "incr_misses", "incr_hits", "decr_misses", "decr_hits",
            "cas_misses", "cas_hits", "cas_badval",
            "touch_hits", "touch_misses",
            "bytes_read", "bytes_written",
        )
        if hasattr(stats, name)
    ]
    pairs += [
        ("get_expired", 0),
        ("get_flushed", 0),
        ("evictions", 0),
        ("expired_unfetched", 0),
        ("curr_items", engine.store.item_count()),
        ("total_items", engine.store.last_cas),
        ("bytes", engine.store.total_bytes),
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
        ("stig_uncommitted_bytes", engine.budget.used),
        ("stig_uncommitted_bytes_peak", engine.budget.peak),
        ("stig_uncommitted_bytes_limit", engine.budget.limit),
        ("stig_commit_lag_ms", int(engine.promoter.lag() * 1000)),
        ("stig_commit_lag_max_ms", int(promoter.lag_seconds_max * 1000)),
        ("stig_max_commit_lag_ms", engine.settings.max_commit_lag_ms),
        ("stig_paused_connections", promoter.paused_connections),
        ("stig_pauses", promoter.pauses),
        ("stig_durable_acks", int(engine.settings.durable_acks)),
    ]
    return pairs


def settings_stats(settings: Settings) -> Iterable[tuple[str, object]]:
    """``stats settings``: every knob, memcached's names where they exist."""
    limits = settings.limits
    return [
        ("interface", settings.listen),
        ("tcpport", settings.port),
        ("maxconns", settings.max_connections),
        ("item_size_max", limits.max_item_size),
        ("key_max_length", limits.max_key_length),
        ("line_max_length", limits.max_line_length),
        ("get_line_max_length", limits.max_get_line_length),
        ("idle_timeout", settings.idle_timeout),
        ("flush_enabled", "no" if settings.disable_flush_all else "yes"),
        ("evictions", "off"),
        ("stig_data_dir", settings.data_dir),
        ("stig_durable_acks", "yes" if settings.durable_acks else "no"),
        ("stig_ttl_policy", settings.ttl_policy.value),
        ("stig_batch_idle_ms", settings.batch_idle_ms),
        ("stig_max_pending_bytes", settings.max_pending_bytes),
        ("stig_max_commit_lag_ms", settings.max_commit_lag_ms),
        ("stig_max_reply_bytes", settings.max_reply_bytes),
        ("stig_initial_map_size", settings.map_size),
        ("stig_auth", "yes" if settings.auth_file else "no"),
    ]
