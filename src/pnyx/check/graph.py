"""A labelled dependency graph: Tarjan SCCs and short cycles, for the Elle-style checker."""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass

_CYCLE_STARTS = 8  # nodes of a component tried as a cycle start: bounds the BFS work


@dataclass(frozen=True)
class Edge:
    """``src -kind-> dst`` with a one-line reason (``kind``: ww, wr, rw, realtime, process)."""

    src: int
    dst: int
    kind: str
    why: str


class DepGraph:
    """Nodes are transaction indices; at most one edge per (src, dst, kind)."""

    def __init__(self) -> None:
        self.out: dict[int, dict[int, dict[str, Edge]]] = {}

    def add(self, src: int, dst: int, kind: str, why: str) -> None:
        """Add an edge (self-loops are ignored: a transaction does not depend on itself)."""
        if src == dst:
            return
        kinds = self.out.setdefault(src, {}).setdefault(dst, {})
        kinds.setdefault(kind, Edge(src, dst, kind, why))
        self.out.setdefault(dst, {})

    def edges(self, src: int, kinds: Collection[str]) -> Iterable[Edge]:
        """Edges out of ``src`` whose kind is in ``kinds`` (one per destination)."""
        for by_kind in self.out.get(src, {}).values():
            for kind in kinds:
                edge = by_kind.get(kind)
                if edge is not None:
                    yield edge
                    break

    def sccs(self, kinds: Collection[str], nodes: Collection[int] | None = None,
             ) -> list[list[int]]:
        """Strongly connected components with more than one node (Tarjan, iterative)."""
        members = set(self.out) if nodes is None else set(nodes)
        index: dict[int, int] = {}
        low: dict[int, int] = {}
        on_stack: set[int] = set()
        stack: list[int] = []
        found: list[list[int]] = []
        counter = 0
        for root in sorted(members):
            if root in index:
                continue
            work: list[tuple[int, list[int]]] = []
            index[root] = low[root] = counter
            counter += 1
            stack.append(root)
            on_stack.add(root)
            work.append((root, self._succ(root, kinds, members)))
            while work:
                node, succ = work[-1]
                if succ:
                    nxt = succ.pop()
                    if nxt not in index:
                        index[nxt] = low[nxt] = counter
                        counter += 1
                        stack.append(nxt)
                        on_stack.add(nxt)
                        work.append((nxt, self._succ(nxt, kinds, members)))
                    elif nxt in on_stack:
                        low[node] = min(low[node], index[nxt])
                    continue
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        comp.append(member)
                        if member == node:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
        return found

    def _succ(self, node: int, kinds: Collection[str], members: set[int]) -> list[int]:
        return [e.dst for e in self.edges(node, kinds) if e.dst in members]

    def path(self, start: int, goal: int, kinds: Collection[str],
             within: Collection[int]) -> list[Edge] | None:
        """A shortest path of edges from ``start`` to ``goal`` (BFS), or None."""
        allowed = set(within)
        came: dict[int, Edge | None] = {start: None}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            if node == goal:
                out: list[Edge] = []
                step = came[node]
                while step is not None:
                    out.append(step)
                    step = came[step.src]
                return out[::-1]
            for edge in self.edges(node, kinds):
                if edge.dst in allowed and edge.dst not in came:
                    came[edge.dst] = edge
                    queue.append(edge.dst)
        return None

    def cycle_in(self, comp: Collection[int], kinds: Collection[str]) -> list[Edge] | None:
        """A short cycle inside ``comp`` using only ``kinds`` edges, or None."""
        for sub in self.sccs(kinds, comp):
            best: list[Edge] | None = None
            for node in sub[:_CYCLE_STARTS]:
                for edge in self.edges(node, kinds):
                    if edge.dst in sub:
                        back = self.path(edge.dst, node, kinds, sub)
                        if back is not None and (best is None or len(back) + 1 < len(best)):
                            best = [edge, *back]
                if best is not None and len(best) <= 2:
                    return best
            if best is not None:
                return best
        return None
