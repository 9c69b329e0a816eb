"""One whole history run: keys created, workers started, crashes at even
intervals, workers stopped, every key read once more, the history checked."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from stig_testkit.history.checker import (
    STIG_ASYNC_FAILOVER,
    STIG_DEFAULT,
    STIG_DURABLE,
    STRICT,
    Verdict,
    check,
)
from stig_testkit.history.model import History
from stig_testkit.history.workload import ALL_CLOSERS, Driver, KeyPool, Server

#: The rules of each system as the checker knows them (docs/pov.md): in
#: Stig's default mode a crash may lose the last acknowledged runs, whole;
#: never under --durable-acks; memcached has no points of view (and is never
#: crashed: it keeps nothing); an asynchronous failover may lose runs other
#: sessions read on the old primary (docs/replication.md).
MODES = {
    "default": STIG_DEFAULT,
    "durable": STIG_DURABLE,
    "memcached": STRICT,
    "async-failover": STIG_ASYNC_FAILOVER,
}


@attrs.frozen
class Outcome:
    history: History
    verdict: Verdict
    unexpected_breaks: int


def run_history(
    server: Server,
    mode: str,
    txns: int,
    crashes: int = 0,
    seed: int = 1,
    workers: int = 8,
    closers: frozenset[str] = ALL_CLOSERS,
    kill: Callable[[], None] | None = None,
    log: Callable[[str], None] = lambda _: None,
    active_keys: int = 5,
    per_key: int = 60,
) -> Outcome:
    """Run ``txns`` transactions against the started ``server`` with ``crashes``
    kills (``kill`` replaces SIGKILL, e.g. with a power cut); the verdict."""
    keys = KeyPool(f"h{seed}-", txns * 2 // per_key + 2 * active_keys, active_keys, per_key)
    driver = Driver(server, seed, workers=workers, closers=closers, keys=keys)
    driver.create_keys()
    driver.start()
    try:
        for crash in range(crashes):
            driver.run_until(txns * (crash + 1) // (crashes + 1))
            driver.crash(kill)
            log(f"crash {crash + 1}/{crashes} at {len(driver.history)} transactions")
        driver.run_until(txns)
    finally:
        driver.stop()
    driver.final_read()
    history = History(tuple(driver.history.txns), tuple(driver.history.crashes))
    verdict = check(history, MODES[mode])
    verdict.stats["unexpected_breaks"] = driver.unexpected_breaks
    return Outcome(history, verdict, driver.unexpected_breaks)
