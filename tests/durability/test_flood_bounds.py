"""Memory and commit lag have bounds you can state: floods and hostile clients
against a real server (subprocess), measured with the functions of
stig_testkit.flood (scripts/flood.py prints these numbers for docs/performance.md).

The bounds asserted (docs/pov.md, "Bounds"):

* a client that asks for 300 × 1 MB and reads nothing grows the server's
  RSS by less than 48 MiB (--max-reply-bytes 1 MiB of replies waiting, the
  item, socket buffers; main grew by ~570 MiB);
* 1,000 idle connections and 20 such clients grow it by less than 256 MiB,
  and a normal client is served meanwhile;
* eight connections flooding noreply runs: the commit lag never exceeds
  1 s (--max-commit-lag-ms 100 plus the group commits in flight on a busy
  2-core box; main was ~1.5 s behind after 4 s and growing), and after a
  SIGKILL under that flood the oldest lost acknowledged write is younger
  than that bound too;
* an ``add … noreply`` flood (one run that never closes) stays within the
  write budget: the run is refused with "transaction larger than";
* one ``get`` of a 1 MB value 1,000 times over (4 KB of request) that the
  client never reads grows the peak RSS by less than 150 MiB (the reply is
  sent as it is read; main peaked ~1.9 GiB above its base).
"""

from __future__ import annotations

from stig_testkit import flood
from stig_testkit.process import CODE_ROOT

LAG_BOUND_MS = 1000


def test_a_client_that_never_reads_300_big_replies_is_bounded():
    result = flood.unread(CODE_ROOT, clients=1, gets=300)
    assert result["growth_mib"] < 48, result


def test_idle_and_unreading_clients_do_not_grow_memory_or_block_others():
    result = flood.unread(CODE_ROOT, clients=20, gets=300, idle=1000)
    assert result["growth_mib"] < 256, result
    # (the normal client's 100 set+get round trips succeeded inside unread())


def test_noreply_flood_keeps_commit_lag_bounded():
    result = flood.flood(CODE_ROOT, conns=8, seconds=4.0)
    assert result["alive"] and not result["errors"], result
    assert 0 < result["lag_max_at_commit_ms"] < LAG_BOUND_MS, result
    assert result["lag_sampled_max_ms"] < LAG_BOUND_MS, result


def test_sigkill_under_a_noreply_flood_loses_only_recent_acknowledged_writes():
    result = flood.flood(CODE_ROOT, conns=8, seconds=4.0, kill=True)
    assert result["loss_window_ms"] < LAG_BOUND_MS, result


def test_add_noreply_flood_is_bounded_by_the_write_budget():
    budget = 8 << 20
    result = flood.flood(
        CODE_ROOT, conns=1, seconds=4.0, command="add", extra=("--max-pending-bytes", "8m")
    )
    assert result["alive"], result
    # The write that crosses the budget is counted before the run is refused:
    # at most one item (1 MiB) past it.
    assert result["uncommitted_peak"] <= budget + (1 << 20) + 4096, result
    assert result["errors"] == [
        "b'SERVER_ERROR transaction larger than --max-pending-bytes; discarded'"
    ], result


def test_a_multi_get_of_one_big_value_1000_times_is_bounded():
    """4 KB of request asking for 1 GB of reply: the reply is sent as it is
    read from one snapshot, never built whole (main peaked near 3 GB)."""
    result = flood.big_reply(CODE_ROOT, b"get" + b" big" * 1000 + b"\r\n")
    assert result["peak_growth_mib"] < 150, result
