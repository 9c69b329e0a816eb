"""What one load process counts: operations and errors per role, torn reads.

A :class:`Tally` is cumulative; the load process sends :meth:`Tally.snapshot`
to the soak every few seconds, and the soak adds up the latest snapshot of
each process.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import attrs

MAX_MESSAGES = 20


@attrs.define
class Tally:
    """Counters of one load process."""

    ops: Counter[str] = attrs.field(factory=Counter)
    errors: Counter[str] = attrs.field(factory=Counter)
    violations: int = 0  # torn or aborted transaction reads
    atomic_checks: int = 0  # group reads checked whole
    hostile_lives: int = 0  # hostile connections opened and ended
    messages: list[str] = attrs.field(factory=list)

    def op(self, role: str) -> None:
        self.ops[role] += 1

    def error(self, role: str, message: str) -> None:
        """A well-behaved client got something it should not have."""
        self.errors[role] += 1
        self._keep(f"{role}: {message}")

    def violation(self, role: str, message: str) -> None:
        """A read saw part of a transaction, or an aborted one."""
        self.violations += 1
        self.error(role, message)

    def _keep(self, message: str) -> None:
        if len(self.messages) < MAX_MESSAGES:
            self.messages.append(f"{time.strftime('%H:%M:%S')} {message}")

    def snapshot(self) -> dict[str, Any]:
        return {
            "ops": dict(self.ops),
            "errors": dict(self.errors),
            "violations": self.violations,
            "atomic_checks": self.atomic_checks,
            "hostile_lives": self.hostile_lives,
            "messages": list(self.messages),
            "cpu_s": time.process_time(),
        }


def combine(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """The sum of several processes' snapshots (messages concatenated)."""
    ops: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    total: dict[str, Any] = {"violations": 0, "atomic_checks": 0, "hostile_lives": 0}
    messages: list[str] = []
    cpu = 0.0
    for snap in snapshots:
        ops.update(snap["ops"])
        errors.update(snap["errors"])
        for name in total:
            total[name] += snap[name]
        messages += snap["messages"]
        cpu += snap["cpu_s"]
    return {**total, "ops": dict(ops), "errors": dict(errors), "messages": messages, "cpu_s": cpu}
