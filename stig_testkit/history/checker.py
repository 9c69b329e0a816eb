"""The checker: a list-append history in, a verdict out.  No sockets, no clock.

What it does, in order (docs/history.md says why):

1. **Data faults.** A read that holds an element twice (duplicate), an
   element nobody appended to that key (invented).
2. **Losses.** The last read of each key is its final list.  An element
   whose append was acknowledged before that read began and that is not in
   it is lost.  Part of a run lost while the rest stayed is always a
   violation (a run is atomic).  A whole run lost across a crash is allowed
   when ``allow_crash_loss`` (Stig's default mode), provided no other
   session had read it (a read of another session sees only committed,
   hence synced, data) and no transaction begun after its acknowledgement,
   in the same epoch, survived (runs are committed in the order they were
   handed over, so a crash keeps a prefix of them).  ``allow_read_loss``
   (an asynchronous failover) drops the first proviso: the reads of such a
   run saw a timeline the failover discarded and are set aside.  Otherwise a
   lost acknowledged write is a violation.  Elements lost in a crash are then
   removed from every read: they are gone, and the reads that saw them were
   their own session's.
3. **Version orders.** Each key's order is its final list (extended by any
   longer read it is a prefix of).  A read first drops its trailing
   elements of its own session (Stig's point of view: a session sees its
   own pending writes laid over the committed state), and what is left must
   be a prefix of the order; otherwise it is an inconsistent read.
4. **G1a, G1b.** A read that holds an element of a run that was discarded
   (aborted read), or that ends inside a run: the run appended to that key
   again after the read's last element (intermediate read).
5. **Graph and cycles.** ww (consecutive elements), wr (a read's last
   element), rw (the first element after what a read saw), and real-time
   edges; the cycles in it are G0 (ww only), G1c (ww+wr), G-single (exactly
   one rw), G2 (several rw) and, with real-time edges, their ``-realtime``
   forms.
6. **Levels.** Snapshot isolation forbids everything but G2 and the
   real-time cycles; serializability forbids G2 too; strict serializability
   forbids the real-time cycles as well.  Data faults and lost writes break
   all three.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable

import attrs

from stig_testkit.history.graph import (
    RT,
    RW,
    WR,
    WW,
    Cycle,
    Graph,
    count_labels,
    render,
    shown_label,
    unique_cycles,
)
from stig_testkit.history.model import History, Txn, short

G0, G1A, G1B, G1C, GSINGLE, G2 = "G0", "G1a", "G1b", "G1c", "G-single", "G2"
REALTIME = tuple(f"{name}-realtime" for name in (G0, G1C, GSINGLE, G2))
LOST = "lost-acknowledged-write"
CRASH_LOSS = "lost-in-crash"  # allowed when allow_crash_loss
READ_LOSS = "lost-after-read"  # allowed when allow_read_loss (asynchronous failover)
PARTIAL = "partial-run"
DUPLICATE = "duplicate-element"
INVENTED = "invented-element"
INCONSISTENT = "inconsistent-read"

DATA_FAULTS = (LOST, PARTIAL, DUPLICATE, INVENTED, INCONSISTENT)
SI_FORBIDS = (*DATA_FAULTS, G0, G1A, G1B, G1C, GSINGLE)
LEVELS = {
    "snapshot-isolation": SI_FORBIDS,
    "serializable": (*SI_FORBIDS, G2),
    "strict-serializable": (*SI_FORBIDS, G2, *REALTIME),
}
KIND_ORDER = (*DATA_FAULTS, G0, G1A, G1B, G1C, GSINGLE, G2, *REALTIME, CRASH_LOSS, READ_LOSS)


@attrs.frozen
class Finding:
    """One anomaly: what it is, the transactions that show it, the cycle if any."""

    kind: str
    text: str
    txns: tuple[int, ...]
    cycle: str = ""


@attrs.frozen
class Verdict:
    """What the checker concluded.

    ``counts`` are the violations by kind (a cycle kind counts the distinct
    cycles its bounded search found: at least that many); ``allowed`` the
    findings the mode permits (crash losses in Stig's default mode);
    ``examples`` up to a few smallest findings of each kind.
    """

    counts: dict[str, int]
    allowed: dict[str, int]
    examples: dict[str, list[Finding]]
    levels: dict[str, bool]
    stats: dict[str, float]
    txns: dict[int, Txn] = attrs.field(repr=False)
    #: Acknowledged runs lost (allowed or not), by the closer that acknowledged them.
    lost_by_closer: dict[str, int] = attrs.Factory(dict)

    @property
    def valid(self) -> bool:
        """No violation: every finding is allowed by the mode."""
        return not self.counts

    def render(self, examples: int = 1) -> str:
        """The verdict as text: numbers, levels, then a minimal example of each kind."""
        lines = ["history: " + ", ".join(f"{k}={_num(v)}" for k, v in self.stats.items())]
        lines.append(
            "levels: "
            + ", ".join(
                f"{name} {'holds' if ok else 'VIOLATED'}" for name, ok in self.levels.items()
            )
        )
        found = {**self.counts}
        lines.append(
            "violations: "
            + (", ".join(f"{k}={v}" for k, v in _ordered(found)) if found else "none")
        )
        if self.lost_by_closer:
            lines.append(
                "acknowledged runs lost, by closer: "
                + ", ".join(f"{k}={v}" for k, v in sorted(self.lost_by_closer.items()))
            )
        lines.append(
            "allowed: "
            + (", ".join(f"{k}={v}" for k, v in _ordered(self.allowed)) if self.allowed else "none")
        )
        for kind, _ in _ordered({**found, **self.allowed}):
            for finding in self.examples.get(kind, [])[:examples]:
                lines.append(f"--- {kind}: {finding.text}")
                if finding.cycle:
                    lines.append(f"    cycle: {finding.cycle}")
                for txn_id in finding.txns:
                    lines.append(self.txns[txn_id].describe())
        lines.append(f"VERDICT: {'valid' if self.valid else 'INVALID'}")
        return "\n".join(lines)


def _num(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _ordered(counts: dict[str, int]) -> list[tuple[str, int]]:
    rank = {kind: i for i, kind in enumerate(KIND_ORDER)}
    return sorted(counts.items(), key=lambda item: rank.get(item[0], len(rank)))


@attrs.define
class _Report:
    """Findings as they are made; at most ``keep`` examples per kind, smallest first."""

    keep: int
    counts: dict[str, int] = attrs.Factory(lambda: defaultdict(int))
    examples: dict[str, list[Finding]] = attrs.Factory(lambda: defaultdict(list))

    def add(self, finding: Finding, count: int = 1) -> None:
        self.counts[finding.kind] += count
        kept = self.examples[finding.kind]
        kept.append(finding)
        kept.sort(key=lambda f: (len(f.txns), f.txns))
        del kept[self.keep :]


@attrs.frozen
class Rules:
    """What the system under test promises beyond plain isolation.

    ``allow_crash_loss``: a crash may lose the last acknowledged runs, whole
    (Stig without --durable-acks).  ``pov``: a session reads its own pending
    writes from its point of view (Stig): a read whose list ends with its own
    session's elements shows the key as it was when the session appended
    (its POV), laid over an older base than the read's snapshot; those
    trailing elements are set aside, and the read gives a wr edge but no rw
    edge (what it did not see says nothing about its snapshot).
    ``allow_read_loss`` (with ``allow_crash_loss``): the lost runs may have
    been read by other sessions first (an asynchronous failover: the old
    primary served reads of groups its follower never got).  The loss must
    still be whole and a suffix of its epoch; the reads that saw it read a
    timeline the failover discarded, so they are set aside (no edges) and
    counted in ``reads_of_lost_runs``.
    """

    allow_crash_loss: bool = False
    pov: bool = False
    allow_read_loss: bool = False


STRICT = Rules()
STIG_DEFAULT = Rules(allow_crash_loss=True, pov=True)
STIG_DURABLE = Rules(allow_crash_loss=False, pov=True)
STIG_ASYNC_FAILOVER = Rules(allow_crash_loss=True, pov=True, allow_read_loss=True)


def check(
    history: History,
    rules: Rules = STRICT,
    keep_examples: int = 3,
    search_budget: int = 200,
) -> Verdict:
    """Check ``history`` under ``rules`` (see the module doc)."""
    return _Checker(history, rules, keep_examples, search_budget).run()


class _Checker:
    def __init__(self, history: History, rules: Rules, keep: int, search_budget: int) -> None:
        self.history = history
        self.allow_crash_loss = rules.allow_crash_loss
        self.pov = rules.pov
        self.allow_read_loss = rules.allow_crash_loss and rules.allow_read_loss
        self.budget = search_budget
        self.txns = {txn.id: txn for txn in history.txns}
        self.bad = _Report(keep)
        self.fine = _Report(keep)
        self.lost_by_closer: dict[str, int] = defaultdict(int)
        self.pov_reads: set[int] = set()  # indexes in self.reads
        self.readers_of_lost: set[int] = set()  # readers of a lost run's elements
        # element -> (writer id, key); (writer id, key) -> its elements in order
        self.writer: dict[int, tuple[int, str]] = {}
        self.appended: dict[tuple[int, str], list[int]] = defaultdict(list)
        for txn in history.txns:
            for append in txn.appends:
                self.writer[append.element] = (txn.id, append.key)
                self.appended[txn.id, append.key].append(append.element)
        # every read of an ok transaction: (reader id, key, elements)
        self.reads: list[tuple[int, str, tuple[int, ...]]] = [
            (txn.id, read.key, read.elements)
            for txn in history.txns
            if txn.status == "ok"
            for read in txn.reads
            if read.elements is not None
        ]
        self.stats: dict[str, float] = {
            "txns": len(history.txns),
            "ok": sum(t.status == "ok" for t in history.txns),
            "info": sum(t.status == "info" for t in history.txns),
            "aborted": sum(t.status == "fail" for t in history.txns),
            "runs": sum(t.kind == "run" for t in history.txns),
            "reads": sum(t.kind == "read" for t in history.txns),
            "appends": len(self.writer),
            "keys": len({key for _, key in self.appended} | {k for _, k, _ in self.reads}),
            "crashes": len(history.crashes),
        }

    def run(self) -> Verdict:
        self.data_faults()
        final = self.final_reads()
        gone = self.losses(final)
        self.set_aside_reads_of_lost_runs()
        orders = self.orders(final, gone)
        graph = self.edges(orders)
        self.realtime(graph)
        self.cycles(graph)
        counts = dict(self.bad.counts)
        levels = {
            name: not any(counts.get(kind) for kind in forbids) for name, forbids in LEVELS.items()
        }
        examples = {**self.fine.examples, **self.bad.examples}
        return Verdict(
            counts,
            dict(self.fine.counts),
            examples,
            levels,
            self.stats,
            self.txns,
            dict(self.lost_by_closer),
        )

    # -- 1. data faults ------------------------------------------------------

    def data_faults(self) -> None:
        clean = []
        for reader, key, elements in self.reads:
            if len(set(elements)) != len(elements):
                twice = sorted(e for e, n in Counter(elements).items() if n > 1)
                writers = tuple(sorted({self.writer[e][0] for e in twice if e in self.writer}))
                self.bad.add(
                    Finding(DUPLICATE, f"read of {key} holds {twice} twice", (reader, *writers))
                )
                elements = tuple(dict.fromkeys(elements))
            strangers = [e for e in elements if self.writer.get(e, (0, None))[1] != key]
            if strangers:
                self.bad.add(
                    Finding(
                        INVENTED,
                        f"read of {key} holds {strangers}, never appended to it",
                        (reader,),
                    )
                )
                elements = tuple(e for e in elements if e not in strangers)
            clean.append((reader, key, elements))
        self.reads = clean

    # -- 2. losses -----------------------------------------------------------

    def final_reads(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """Each key's last read (latest invoked): key -> (reader id, elements)."""
        final: dict[str, tuple[int, tuple[int, ...]]] = {}
        for reader, key, elements in self.reads:
            if key not in final or self.txns[final[key][0]].invoke < self.txns[reader].invoke:
                final[key] = (reader, elements)
        return final

    def losses(self, final: dict[str, tuple[int, tuple[int, ...]]]) -> set[int]:
        """Judge every write against the final reads; the elements gone in a crash."""
        final_sets = {key: set(elements) for key, (_, elements) in final.items()}
        gone: set[int] = set()
        lost_runs: list[tuple[Txn, list[int]]] = []
        survivors: dict[int, list[tuple[float, int]]] = defaultdict(list)
        for txn in self.history.txns:
            if txn.kind != "run" or txn.status == "fail" or not txn.appends:
                continue
            judged = [
                a
                for a in txn.appends
                if a.key in final
                and self.txns[final[a.key][0]].invoke > (txn.complete or txn.invoke)
            ]
            if len(judged) < len(txn.appends):
                continue  # some key not read after it: cannot judge
            missing = [a.element for a in judged if a.element not in final_sets[a.key]]
            across_crash = all(self.txns[final[a.key][0]].epoch > txn.epoch for a in txn.appends)
            if missing and across_crash:
                gone.update(missing)
            if missing and len(missing) < len(judged):
                self.bad.add(
                    Finding(
                        PARTIAL,
                        f"{len(missing)} of the {len(judged)} appends of a run are missing "
                        f"from the final reads: {missing}",
                        (txn.id, *sorted({final[a.key][0] for a in judged})),
                    )
                )
            elif missing and txn.status == "ok":
                if across_crash:
                    lost_runs.append((txn, missing))
                else:
                    self.lost_by_closer[txn.closer] += 1
                    self.bad.add(
                        Finding(
                            LOST,
                            f"acknowledged run lost without a crash: {missing}",
                            (txn.id, final[txn.appends[0].key][0]),
                        )
                    )
            if not missing:
                survivors[txn.epoch].append((txn.invoke, txn.id))
        for kept in survivors.values():
            kept.sort()
        self.judge_crash_losses(lost_runs, survivors)
        return gone

    def judge_crash_losses(
        self, lost_runs: list[tuple[Txn, list[int]]], survivors: dict[int, list[tuple[float, int]]]
    ) -> None:
        lost_elements = {e: txn for txn, missing in lost_runs for e in missing}
        seen_by: dict[int, int] = {}  # lost element -> a reader of another session
        for reader, _key, elements in self.reads:
            for element in elements:
                txn = lost_elements.get(element)
                if txn is not None and self.txns[reader].session != txn.session:
                    seen_by.setdefault(element, reader)
                    self.readers_of_lost.add(reader)
        window = 0.0
        for txn, missing in lost_runs:
            assert txn.complete is not None
            self.lost_by_closer[txn.closer] += 1
            witness = next((seen_by[e] for e in missing if e in seen_by), None)
            kept = survivors.get(txn.epoch, [])
            later = bisect.bisect_right(kept, (txn.complete, float("inf")))
            survivor = kept[later][1] if later < len(kept) else None
            closer = txn.closer
            if witness is not None and not self.allow_read_loss:
                self.bad.add(
                    Finding(
                        LOST,
                        f"run closed by {closer} lost in a crash after another session read it",
                        (txn.id, witness),
                    )
                )
            elif survivor is not None:
                self.bad.add(
                    Finding(
                        LOST,
                        f"run closed by {closer} lost in a crash, but a run begun after its "
                        "acknowledgement survived",
                        (txn.id, survivor),
                    )
                )
            elif witness is not None:
                self.fine.add(
                    Finding(
                        READ_LOSS,
                        f"run closed by {closer} lost whole in a failover after another "
                        "session read it",
                        (txn.id, witness),
                    )
                )
            elif self.allow_crash_loss:
                crash = self.history.crashes[txn.epoch]
                window = max(window, crash - txn.complete)
                self.fine.add(
                    Finding(
                        CRASH_LOSS,
                        f"run closed by {closer}, acknowledged "
                        f"{1000 * (crash - txn.complete):.1f} ms before the crash, lost whole",
                        (txn.id,),
                    )
                )
            else:
                self.bad.add(
                    Finding(LOST, f"acknowledged run closed by {closer} lost in a crash", (txn.id,))
                )
        if self.allow_crash_loss:
            self.stats["crash_loss_window_ms"] = round(1000 * window, 3)

    def set_aside_reads_of_lost_runs(self) -> None:
        """Under ``allow_read_loss``, drop every read of a transaction that saw
        a lost run: it read the discarded timeline, and what it saw or missed
        says nothing about the one that was kept."""
        if not self.allow_read_loss:
            return
        self.stats["reads_of_lost_runs"] = len(self.readers_of_lost)
        self.reads = [read for read in self.reads if read[0] not in self.readers_of_lost]

    # -- 3. version orders ---------------------------------------------------

    def orders(
        self, final: dict[str, tuple[int, tuple[int, ...]]], gone: set[int]
    ) -> dict[str, tuple[int, ...]]:
        """Each key's version order; reads stripped of what the crashes took.

        Which reads were answered from their session's POV is decided first,
        on the reads as they were: a POV read whose own elements a crash then
        took is still a POV read, not a snapshot.
        """
        self.pov_reads = {
            index
            for index, (reader, _key, elements) in enumerate(self.reads)
            if len(self.own_prefix(reader, elements)) < len(elements)
        }
        if gone:
            self.reads = [
                (reader, key, tuple(e for e in elements if e not in gone))
                for reader, key, elements in self.reads
            ]
        orders = {
            key: tuple(e for e in elements if e not in gone) for key, (_, elements) in final.items()
        }
        by_length = sorted(self.reads, key=lambda read: len(read[2]))
        for reader, key, elements in by_length:
            seen = self.own_prefix(reader, elements)
            order = orders[key]
            if len(seen) > len(order) and seen[: len(order)] == order:
                orders[key] = seen
        return orders

    def own_prefix(self, reader: int, elements: tuple[int, ...]) -> tuple[int, ...]:
        """``elements`` without its trailing elements of the reader's own session
        (all of it unless the rules say ``pov``)."""
        if not self.pov:
            return elements
        session = self.txns[reader].session
        end = len(elements)
        while end and self.txns[self.writer[elements[end - 1]][0]].session == session:
            end -= 1
        return elements[:end]

    # -- 4, 5. G1a, G1b and the graph -----------------------------------------

    def edges(self, orders: dict[str, tuple[int, ...]]) -> Graph:
        """ww, wr and rw edges between the transactions that happened (a run
        that was discarded is no node: reading it is G1a)."""
        graph = Graph()
        for txn in self.history.txns:
            if txn.status == "ok":
                graph.out.setdefault(txn.id, {})
        aborted = {t.id for t in self.history.txns if t.status == "fail"}

        def link(a: int, b: int, label: int) -> None:
            if a not in aborted and b not in aborted:
                graph.add(a, b, label)

        for order in orders.values():
            for before, after in itertools.pairwise(order):
                link(self.writer[before][0], self.writer[after][0], WW)
        for index, (reader, key, elements) in enumerate(self.reads):
            for element in elements:
                writer = self.writer[element][0]
                if writer in aborted:
                    self.bad.add(
                        Finding(
                            G1A,
                            f"read of {key} holds {element}, appended by a run that was discarded",
                            (writer, reader),
                        )
                    )
                    break
            seen = self.own_prefix(reader, elements)
            order = orders[key]
            if order[: len(seen)] != seen:
                self.bad.add(
                    Finding(
                        INCONSISTENT,
                        f"read of {key} is not a prefix of its version order "
                        f"{short(order)}: {short(seen)}",
                        (reader,),
                    )
                )
                continue
            if seen:
                writer = self.writer[seen[-1]][0]
                link(writer, reader, WR)
                mine = self.appended[writer, key]
                if writer != reader and seen[-1] != mine[-1]:
                    self.bad.add(
                        Finding(
                            G1B,
                            f"read of {key} ends at {seen[-1]}, inside a run that appended "
                            f"{mine} to it",
                            (writer, reader),
                        )
                    )
            if index in self.pov_reads:
                continue  # pov: the base of its own pending writes, not its snapshot
            # The next version by another writer (a run's appends to one key
            # are one version: reading part of it is G1b, not a cycle).
            position = len(seen)
            last_writer = self.writer[seen[-1]][0] if seen else None
            while position < len(order) and self.writer[order[position]][0] == last_writer:
                position += 1
            if position < len(order):
                link(reader, self.writer[order[position]][0], RW)
        return graph

    def realtime(self, graph: Graph) -> None:
        """Real-time edges, transitively reduced: from each txn on the frontier of
        completed ones (none completed after it) to every txn invoked later."""
        events: list[tuple[float, int, int]] = []
        for txn_id in graph.out:
            txn = self.txns[txn_id]
            events.append((txn.invoke, 0, txn_id))
            if txn.status == "ok" and txn.complete is not None:
                events.append((txn.complete, 1, txn_id))
        events.sort()
        frontier: set[int] = set()
        before: dict[int, tuple[int, ...]] = {}
        for _time, is_complete, txn_id in events:
            if is_complete:
                frontier.difference_update(before.pop(txn_id, ()))
                frontier.add(txn_id)
            else:
                before[txn_id] = tuple(frontier)
                for pred in frontier:
                    graph.add(pred, txn_id, RT)

    # -- 5. cycles -----------------------------------------------------------

    def cycles(self, graph: Graph) -> None:
        """Each kind searched in the components of the edges it may use, from
        the edges that must be in it (shown as that label: no weaker one)."""
        searches = (
            (G0, WW, WW, WW, 0),
            (G1C, WW | WR, WR, WW | WR, 0),
            (GSINGLE, WW | WR | RW, RW, WW | WR, 0),
            (G2, WW | WR | RW, RW, WW | WR | RW, RW),
            ("realtime", WW | WR | RW | RT, RT, WW | WR | RW | RT, 0),
        )
        for kind, mask, start, path_mask, need in searches:
            for component in graph.components(mask):
                pairs = [
                    (a, b)
                    for a, b, labels in graph.edges(start, component)
                    if shown_label(labels & mask) == start
                ]
                self.report_cycles(kind, graph, mask, component, pairs, path_mask, need)

    def report_cycles(
        self,
        kind: str,
        graph: Graph,
        component_mask: int,
        component: set[int],
        pairs: Iterable[tuple[int, int]],
        path_mask: int,
        need: int,
    ) -> None:
        """Up to ``search_budget`` searches: for each edge a->b, a shortest path b..a."""
        found: list[Cycle] = []
        for attempt, (a, b) in enumerate(pairs):
            if attempt >= self.budget:
                break
            path = graph.path(b, a, path_mask, component, need)
            path = None if path is None else [a, *path[:-1]]
            if path is None:
                continue
            found.append(graph.cycle(path, component_mask))
        for cycle in unique_cycles(found):
            name = kind if kind != "realtime" else self.realtime_kind(cycle)
            if name is None:
                continue
            if len({node for node, _ in cycle}) < len(cycle):
                continue  # the search passed a node twice: not a simple cycle
            counts = count_labels(cycle)
            if kind == GSINGLE and counts[RW] != 1:
                continue
            if kind == G2 and counts[RW] < 2:
                continue
            self.bad.add(
                Finding(
                    name,
                    f"cycle of {len(cycle)} transactions",
                    tuple(n for n, _ in cycle),
                    render(cycle),
                )
            )

    @staticmethod
    def realtime_kind(cycle: Cycle) -> str | None:
        counts = count_labels(cycle)
        if not counts[RT]:
            return None
        if counts[RW] >= 2:
            return f"{G2}-realtime"
        if counts[RW] == 1:
            return f"{GSINGLE}-realtime"
        return f"{G1C}-realtime" if counts[WR] else f"{G0}-realtime"
