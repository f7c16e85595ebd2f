"""Snapshot isolation of list-append / rw-register transaction histories (Elle-style).

The dependency graph is the serializability checker's (``build_graph``: ww, wr, rw edges
from the inferred version orders; optional real-time / process edges). Snapshot isolation
(Berenson et al. 1995; Adya 1999) forbids G0, G1 (a, b, c), lost update (P4) and G-SI;
without start and commit timestamps, G-SI is checked as Cerone and Gotsman (2016)
characterise SI on the dependency graph: **every cycle must contain two adjacent rw
(anti-dependency) edges**. So the violations are:

- the directly observed G1a, G1b, ``internal``, ``garbage-read``, duplicates;
- ``G0`` / ``G1c``: a cycle without rw edges;
- ``G-single``: a cycle with exactly one rw edge (Adya's G-SIb, "missed effects");
- ``G-nonadjacent``: a cycle with several rw edges, no two of them consecutive;
- ``lost-update``: two committed transactions read the same version of a key and both
  wrote it (each would have to see the other's write: first-committer-wins forbids it).

A cycle whose rw edges are adjacent is allowed and reported as such: ``write-skew`` (two
transactions, each read what the other wrote) or ``G2-item`` — serializability forbids
them, SI does not. For rw-register an inferred rw edge may stand for a path ``rw ww...``:
a cycle found non-adjacent is a real violation, but one that looks adjacent might not be
(a violation can be missed, never invented). Cost: linear graph building, Tarjan SCCs,
and per component a bounded search (``serializability.rw_cycle``: at most 256 rw edges,
one BFS each).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from pnyx.check.consistency_report import ConsistencyResult, Violation, finish
from pnyx.check.graph import DepGraph, Edge
from pnyx.check.history import History, Operation
from pnyx.check.serializability import (
    TxnKind,
    build_graph,
    describe_cycle,
    rw_cycle,
    txn_names,
)
from pnyx.check.txn_common import mops, tname

__all__ = ["check_snapshot_isolation"]


def check_snapshot_isolation(history: History | Sequence[Operation], *,
                             kind: TxnKind | None = None, realtime: bool = False,
                             process: bool = False) -> ConsistencyResult:
    """Check snapshot isolation; ``realtime`` / ``process`` add those orders (strong /
    strong-session SI), naming cycles that need them with a ``-realtime`` / ``-process``
    suffix."""
    started = time.monotonic()
    txns = list(history)
    graph, anomalies, kind, extra = build_graph(txns, kind=kind, realtime=realtime,
                                                process=process)
    by_index = {op.index: op for op in txns}
    found = [Violation(a.name, a.explanation,
                       [by_index[i] for i in _cycle_nodes(a.cycle)]) for a in anomalies]
    lost = _lost_updates(txns)
    found.extend(lost)
    lost_sets = [frozenset(op.index for op in v.operations) for v in lost]
    allowed: list[Violation] = []
    names = txn_names(txns)
    rw = ("rw", *(f"rw+{x}" for x in extra))
    plain = ("ww", "wr", *extra)
    for comp in graph.sccs((*plain, *rw)):
        v = _violation(graph, comp, plain, rw, extra, names, by_index)
        if v is not None:
            found.append(v)
        elif not any(s <= set(comp) for s in lost_sets):
            allowed.append(_allowed(graph, comp, (*plain, *rw), names, by_index))
    return finish("snapshot-isolation", found, time.monotonic() - started, len(txns),
                  allowed=allowed)


def _cycle_nodes(cycle: list[Edge]) -> list[int]:
    return [e.src for e in cycle]


def _violation(graph: DepGraph, comp: list[int], plain: tuple[str, ...], rw: tuple[str, ...],
               extra: tuple[str, ...], names: dict[int, str],
               by_index: dict[int, Operation]) -> Violation | None:
    cycle = graph.cycle_in(comp, plain)
    if cycle is not None:
        name = "G1c" if any(e.kind == "wr" for e in cycle) else "G0"
    else:
        cycle = _nonadjacent_cycle(graph, comp, rw, plain)
        if cycle is None:
            return None
        name = "G-single" if sum(e.kind in rw for e in cycle) == 1 else "G-nonadjacent"
    used = {e.kind.rpartition("+")[2] for e in cycle}
    suffix = next((f"-{o}" for o in ("realtime", "process") if o in extra and o in used), "")
    return Violation(name + suffix, describe_cycle(cycle, names),
                     [by_index[i] for i in _cycle_nodes(cycle)])


def _allowed(graph: DepGraph, comp: list[int], kinds: tuple[str, ...], names: dict[int, str],
             by_index: dict[int, Operation]) -> Violation:
    cycle = graph.cycle_in(comp, kinds) or []
    skew = len(cycle) == 2 and all(e.kind.startswith("rw") for e in cycle)
    text = describe_cycle(cycle, names) + (
        "\n  (every cycle here has two adjacent rw edges: allowed by snapshot isolation, "
        "not serializable)")
    return Violation("write-skew" if skew else "G2-item", text,
                     [by_index[i] for i in _cycle_nodes(cycle)])


def _nonadjacent_cycle(graph: DepGraph, comp: list[int], rw: tuple[str, ...],
                       plain: tuple[str, ...]) -> list[Edge] | None:
    """A cycle with at least one rw edge and no two rw edges in a row (cyclically)."""
    return rw_cycle(graph, comp, rw, lambda start, goal, members: _path_no_adjacent_rw(
        graph, start, goal, rw, plain, members))


def _path_no_adjacent_rw(graph: DepGraph, start: int, goal: int, rw: tuple[str, ...],
                         plain: tuple[str, ...], members: set[int]) -> list[Edge] | None:
    """BFS over (node, arrived by rw): starts after an rw edge, ends with a plain edge."""
    came: dict[tuple[int, bool], tuple[tuple[int, bool], Edge] | None] = {(start, True): None}
    queue = deque([(start, True)])
    while queue:
        state = queue.popleft()
        node, after_rw = state
        if node == goal and not after_rw:
            out: list[Edge] = []
            step = came[state]
            while step is not None:
                prev, edge = step
                out.append(edge)
                step = came[prev]
            return out[::-1]
        kinds = plain if after_rw else (*plain, *rw)
        for by_kind in graph.out.get(node, {}).values():
            for kind in kinds:
                hop = by_kind.get(kind)
                if hop is None or hop.dst not in members:
                    continue
                nxt = (hop.dst, kind in rw)
                if nxt not in came:
                    came[nxt] = (state, hop)
                    queue.append(nxt)
    return None


def _lost_updates(txns: Sequence[Operation]) -> list[Violation]:
    """P4: committed transactions that read the same version of a key and then wrote it."""
    readers: dict[tuple[Any, Any], list[Operation]] = {}
    for op in txns:
        if op.outcome != "ok":
            continue
        first_read: dict[Any, Any] = {}
        written: set[Any] = set()
        for f, k, v in mops(op):
            if f == "r":
                if k not in first_read and k not in written:
                    first_read[k] = v
                continue
            if k in first_read and k not in written:
                readers.setdefault((k, first_read[k]), []).append(op)
            written.add(k)
    found = []
    for (k, version), ops in readers.items():
        if len(ops) > 1:
            a, b = ops[0], ops[1]
            shown = list(version) if isinstance(version, tuple) else version
            found.append(Violation("lost-update", (
                f"{tname(a)} (p{a.process}) and {tname(b)} (p{b.process}) both read key "
                f"{k!r} = {shown!r} and then wrote it; both committed, so one overwrote "
                f"the other's update without seeing it"
                + (f" ({len(ops)} transactions in all)" if len(ops) > 2 else "")), [a, b]))
    return found
