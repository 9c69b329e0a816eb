"""The dependency graph of a history and the search for its cycles.

Nodes are transaction ids; an edge ``a -> b`` carries a bit set of labels:

* ``WW`` — b appended the element right after a's in some key's list;
* ``WR`` — b read a list whose last element a appended;
* ``RW`` — a read a list that b's element was the next to extend (a
  anti-depends on b: a did not see b);
* ``RT`` — a completed before b was invoked (real time).

Cycles are searched only inside the strongly connected components of the
subgraph of the labels allowed, and each search is a breadth-first search,
so every example is a shortest cycle of its kind through the edge it starts
from.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator

WW, WR, RW, RT = 1, 2, 4, 8
LABEL_NAMES = {WW: "ww", WR: "wr", RW: "rw", RT: "rt"}
#: Which label an edge with several is shown as: the weakest claim first,
#: so that a cycle is classified by the fewest anti-dependencies it needs.
PREFERENCE = (WW, WR, RT, RW)

Cycle = tuple[tuple[int, int], ...]  # ((node, label of the edge leaving it), ...)


class Graph:
    """Labelled edges between transaction ids."""

    def __init__(self) -> None:
        self.out: dict[int, dict[int, int]] = {}

    def add(self, a: int, b: int, label: int) -> None:
        if a == b:
            return
        targets = self.out.setdefault(a, {})
        targets[b] = targets.get(b, 0) | label
        self.out.setdefault(b, {})

    def edges(self, mask: int, nodes: set[int] | None = None) -> Iterator[tuple[int, int, int]]:
        """Every edge with a label in ``mask`` (inside ``nodes`` if given), all its labels."""
        for a, targets in self.out.items():
            if nodes is not None and a not in nodes:
                continue
            for b, labels in targets.items():
                if labels & mask and (nodes is None or b in nodes):
                    yield a, b, labels

    def components(self, mask: int) -> list[set[int]]:
        """Strongly connected components of more than one node (Tarjan, iterative)."""
        index: dict[int, int] = {}
        low: dict[int, int] = {}
        on_stack: set[int] = set()
        stack: list[int] = []
        found: list[set[int]] = []
        counter = 0
        for root in self.out:
            if root in index:
                continue
            work: list[tuple[int, Iterator[int]]] = [(root, self._succ(root, mask))]
            index[root] = low[root] = counter
            counter += 1
            stack.append(root)
            on_stack.add(root)
            while work:
                node, successors = work[-1]
                advanced = False
                for succ in successors:
                    if succ not in index:
                        index[succ] = low[succ] = counter
                        counter += 1
                        stack.append(succ)
                        on_stack.add(succ)
                        work.append((succ, self._succ(succ, mask)))
                        advanced = True
                        break
                    if succ in on_stack:
                        low[node] = min(low[node], index[succ])
                if advanced:
                    continue
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: set[int] = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(component)
        return found

    def _succ(self, node: int, mask: int) -> Iterator[int]:
        return (b for b, labels in self.out[node].items() if labels & mask)

    def path(
        self, start: int, goal: int, mask: int, nodes: set[int], need: int = 0
    ) -> list[int] | None:
        """A shortest path start..goal over ``mask`` edges inside ``nodes``.

        With ``need``, the path must use at least one edge shown as that
        label (see :func:`shown_label`): a G2 cycle needs a second ``RW``.
        """
        start_state = (start, not need)
        parents: dict[tuple[int, bool], tuple[int, bool] | None] = {start_state: None}
        queue = deque([start_state])
        while queue:
            state = queue.popleft()
            node, satisfied = state
            if node == goal and satisfied:
                chain: list[int] = []
                at: tuple[int, bool] | None = state
                while at is not None:
                    chain.append(at[0])
                    at = parents[at]
                return chain[::-1]
            for succ, labels in self.out[node].items():
                labels &= mask
                if not labels or succ not in nodes:
                    continue
                uses = satisfied or shown_label(labels) == need
                nxt = (succ, uses)
                if nxt not in parents:
                    parents[nxt] = state
                    queue.append(nxt)
        return None

    def cycle(self, nodes_in_order: list[int], mask: int) -> Cycle:
        """The cycle through ``nodes_in_order`` (closing back to the first), labelled."""
        ring = [*nodes_in_order, nodes_in_order[0]]
        return tuple((a, shown_label(self.out[a][b] & mask)) for a, b in itertools.pairwise(ring))


def shown_label(labels: int) -> int:
    for label in PREFERENCE:
        if labels & label:
            return label
    raise ValueError(f"no label in {labels}")


def count_labels(cycle: Cycle) -> dict[int, int]:
    counts = {WW: 0, WR: 0, RW: 0, RT: 0}
    for _node, label in cycle:
        counts[label] += 1
    return counts


def render(cycle: Cycle) -> str:
    """``T1 -ww-> T2 -rw-> T1``."""
    parts = [f"T{node} -{LABEL_NAMES[label]}->" for node, label in cycle]
    return " ".join(parts) + f" T{cycle[0][0]}"


def unique_cycles(cycles: Iterable[Cycle]) -> list[Cycle]:
    seen: set[frozenset[int]] = set()
    kept = []
    for cycle in cycles:
        members = frozenset(node for node, _ in cycle)
        if members not in seen:
            seen.add(members)
            kept.append(cycle)
    return kept
