"""Elle-style serializability checking of list-append and read-write-register transactions.

A transaction is an operation with ``f == "txn"`` whose value is a list of micro-operations
``[f, key, value]``: ``["append", k, v]`` / ``["r", k, [v1 v2 ...]]`` (list-append) or
``["w", k, v]`` / ``["r", k, v]`` (rw-register, inferred in ``pnyx.check.rw_register``).
From the values reads observe we infer version orders, build the dependency graph (ww, wr,
rw; optionally real-time and process order), find its strongly connected components
(Tarjan) and name the cycle in each: G0 (ww only), G1c (ww+wr), G-single (exactly one rw),
G2-item (several rw), suffixed ``-realtime`` / ``-process`` when the cycle needs those
orders (as Elle names them). Aborted reads (G1a), intermediate reads (G1b) and
inconsistent reads are found directly.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pnyx.check.graph import DepGraph, Edge
from pnyx.check.history import History, Operation
from pnyx.check.rw_register import RwRegister
from pnyx.check.txn_common import Anomaly, mops, process_pairs, realtime_pairs
from pnyx.check.txn_common import tname as _t

__all__ = ["Anomaly", "SerializabilityResult", "TxnKind", "build_graph", "check_serializable",
           "describe_cycle", "rw_cycle", "txn_names"]

TxnKind = Literal["list-append", "rw-register"]
_MAX_RW_TRIES = 256  # rw edges tried per component when looking for a cycle through one


@dataclass
class SerializabilityResult:
    """``verdict`` is ``serializable`` or the comma-joined names of the anomalies found."""

    verdict: str
    anomalies: list[Anomaly]
    elapsed_s: float
    transactions: int
    kind: str

    @property
    def ok(self) -> bool:
        """True when no anomaly was found."""
        return not self.anomalies

    @property
    def anomaly_names(self) -> list[str]:
        """The distinct anomaly classes, sorted."""
        return sorted({a.name for a in self.anomalies})

    def explain(self) -> str:
        """All anomalies with their explanations (empty when serializable)."""
        return "\n".join(f"{a.name}: {a.explanation}" for a in self.anomalies)


def check_serializable(
    history: History | Sequence[Operation],
    *,
    kind: TxnKind | None = None,
    realtime: bool = False,
    process: bool = False,
) -> SerializabilityResult:
    """Check transactions for serializability (Elle-style dependency graph).

    ``kind`` is guessed from the micro-operations when not given (``append`` present:
    list-append). ``realtime`` adds real-time order (strict serializability); ``process``
    orders each process's transactions (strong session serializability). Anomalies whose
    cycle needs those orders are named with a ``-realtime`` / ``-process`` suffix (Elle's
    ``G-single-process`` etc.); the others hold for plain serializability.
    """
    started = time.monotonic()
    txns = [op for op in history]
    graph, anomalies, kind, extra = build_graph(txns, kind=kind, realtime=realtime,
                                                process=process)
    names = txn_names(txns)
    anomalies.extend(_cycles(graph, extra, names))
    verdict = ",".join(sorted({a.name for a in anomalies})) or "serializable"
    return SerializabilityResult(verdict, anomalies, time.monotonic() - started, len(txns),
                                 kind)


def build_graph(txns: Sequence[Operation], *, kind: TxnKind | None = None,
                realtime: bool = False, process: bool = False,
                ) -> tuple[DepGraph, list[Anomaly], TxnKind, tuple[str, ...]]:
    """The dependency graph of transactions (ww/wr/rw, plus the optional order edges), the
    anomalies found directly (G1a, G1b, internal, ...), the workload kind and the order
    edge kinds added. Shared by the serializability and snapshot-isolation checkers."""
    for op in txns:
        _validate(op)
    if kind is None:
        kind = _guess_kind(txns)
    extra = tuple(k for k, on in (("realtime", realtime), ("process", process)) if on)
    graph = DepGraph()
    anomalies: list[Anomaly] = []
    if kind == "list-append":
        _ListAppend(list(txns), graph, anomalies).build()
    else:
        RwRegister(list(txns), graph, anomalies).build(order_kinds=extra)
    for order in extra:
        _order_edges(list(txns), graph, order)
    return graph, anomalies, kind, extra


def txn_names(txns: Sequence[Operation]) -> dict[int, str]:
    """``T<index> (p<process>)`` per transaction: how cycles are printed."""
    return {op.index: f"T{op.index} (p{op.process})" for op in txns}


def describe_cycle(cycle: list[Edge], names: dict[int, str]) -> str:
    """A cycle, edge by edge, with each edge's reason."""
    return _describe_cycle(cycle, names)


def _guess_kind(txns: Sequence[Operation]) -> TxnKind:
    """list-append when anything is appended or any read returned a list."""
    for op in txns:
        for f, _, v in mops(op):
            if f == "append" or (f == "r" and isinstance(v, tuple)):
                return "list-append"
    return "rw-register"


def _validate(op: Operation) -> None:
    if op.f != "txn":
        raise ValueError(f"operation {op.index} (process {op.process}) has f={op.f!r}; the "
                         "serializability checker reads only 'txn' operations")
    for mop in mops(op):
        if not (isinstance(mop, tuple) and len(mop) == 3 and mop[0] in ("r", "w", "append")):
            raise ValueError(f"transaction {op.index} (process {op.process}) has micro-op "
                             f"{mop!r}; expected [f key value] with f one of r, w, append")


class _ListAppend:
    """Infers version orders from list-append reads and adds ww/wr/rw edges."""

    def __init__(self, txns: list[Operation], graph: DepGraph, anomalies: list[Anomaly]):
        self.txns, self.graph, self.anomalies = txns, graph, anomalies
        self.writer: dict[tuple[Any, Any], Operation] = {}
        self.appends: dict[tuple[int, Any], list[Any]] = {}  # (txn, key) -> values in order
        self.reads: list[tuple[Operation, Any, tuple[Any, ...]]] = []  # external reads
        self.observed: dict[Any, list[tuple[Operation, tuple[Any, ...]]]] = {}

    def build(self) -> None:
        for op in self.txns:
            self._collect(op)
        order = self._version_orders()
        self._edges(order)

    def _collect(self, op: Operation) -> None:
        own: dict[Any, list[Any]] = {}
        for f, k, v in mops(op):
            if f == "append":
                if (k, v) in self.writer and self.writer[(k, v)] is not op:
                    self.anomalies.append(Anomaly("duplicate-appends", (
                        f"{_t(self.writer[(k, v)])} and {_t(op)} both append {v!r} to key "
                        f"{k!r}; list-append needs unique values per key")))
                self.writer[(k, v)] = op
                self.appends.setdefault((op.index, k), []).append(v)
                own.setdefault(k, []).append(v)
            elif f == "r" and op.outcome == "ok":
                self._read(op, k, tuple(v or ()), own.get(k, []))

    def _read(self, op: Operation, k: Any, seen: tuple[Any, ...], mine: list[Any]) -> None:
        self.observed.setdefault(k, []).append((op, seen))
        if mine and seen[len(seen) - len(mine):] != tuple(mine):
            self.anomalies.append(Anomaly("internal", (
                f"{_t(op)} appended {mine!r} to key {k!r} but then read {list(seen)!r}")))
            return
        self.reads.append((op, k, seen[: len(seen) - len(mine)]))

    def _version_orders(self) -> dict[Any, tuple[Any, ...]]:
        order: dict[Any, tuple[Any, ...]] = {}
        for k, obs in self.observed.items():
            top_op, longest = max(obs, key=lambda o: len(o[1]))
            for op, seen in obs:
                if longest[: len(seen)] != seen:
                    self.anomalies.append(Anomaly("incompatible-order", (
                        f"key {k!r}: {_t(op)} read {list(seen)!r} but {_t(top_op)} read "
                        f"{list(longest)!r}; one must be a prefix of the other")))
            if len(set(longest)) != len(longest):
                self.anomalies.append(Anomaly("duplicate-elements", (
                    f"{_t(top_op)} read key {k!r} = {list(longest)!r}, "
                    "which holds a value twice")))
            order[k] = longest
        return order

    def _edges(self, order: dict[Any, tuple[Any, ...]]) -> None:
        graph = self.graph
        for k, versions in order.items():
            for a, b in itertools.pairwise(versions):
                wa, wb = self.writer.get((k, a)), self.writer.get((k, b))
                if wa is not None and wb is not None and "fail" not in (wa.outcome, wb.outcome):
                    graph.add(wa.index, wb.index, "ww",
                              f"{_t(wa)} appended {a!r} to key {k!r}, then {_t(wb)} "
                              f"appended {b!r} right after it")
        for op, k, seen in self.reads:
            self._read_edges(op, k, seen, order[k])

    def _read_edges(self, op: Operation, k: Any, seen: tuple[Any, ...],
                    versions: tuple[Any, ...]) -> None:
        for v in seen:
            w = self.writer.get((k, v))
            if w is None:
                self.anomalies.append(Anomaly("garbage-read", (
                    f"{_t(op)} read {v!r} in key {k!r}, which no transaction appended")))
            elif w.outcome == "fail":
                self.anomalies.append(Anomaly("G1a", (
                    f"aborted read: {_t(op)} read key {k!r} = {list(seen)!r}, including "
                    f"{v!r} appended by {_t(w)}, which failed (aborted)")))
        if seen:
            last = seen[-1]
            w = self.writer.get((k, last))
            if w is not None and w.outcome != "fail" and w is not op:
                self.graph.add(w.index, op.index, "wr",
                               f"{_t(op)} read key {k!r} ending in {last!r}, "
                               f"appended by {_t(w)}")
                mine = self.appends[(w.index, k)]
                if mine[-1] != last:
                    self.anomalies.append(Anomaly("G1b", (
                        f"intermediate read: {_t(op)} read key {k!r} = {list(seen)!r}, "
                        f"but {_t(w)} appended {mine!r}: {last!r} was not its final "
                        "append")))
        if versions[: len(seen)] == seen and len(versions) > len(seen):
            nxt = versions[len(seen)]
            w = self.writer.get((k, nxt))
            intermediate = bool(seen) and self.writer.get((k, seen[-1])) is w  # G1b, above
            if w is not None and w.outcome != "fail" and not intermediate:
                self.graph.add(op.index, w.index, "rw",
                               f"{_t(op)} read key {k!r} = {list(seen)!r}, and {_t(w)} "
                               f"appended the next value {nxt!r}")


def _order_edges(txns: list[Operation], graph: DepGraph, kind: str) -> None:
    """Add ``process`` or ``realtime`` order edges between transactions."""
    pairs = process_pairs(txns) if kind == "process" else realtime_pairs(txns)
    for t1, t2 in pairs:
        why = (f"{_t(t1)} then {_t(t2)} on process {t2.process}" if kind == "process" else
               f"{_t(t1)} completed (at {t1.ret}) before {_t(t2)} began (at {t2.call})")
        graph.add(t1.index, t2.index, kind, why)


def _cycles(graph: DepGraph, extra: tuple[str, ...], names: dict[int, str]) -> list[Anomaly]:
    """Name one cycle per strongly connected component, most certain evidence first.

    Three passes, each skipping components met before: data edges only (plain names),
    then with the ``extra`` order edges (``-process``/``-realtime``), then also with the
    rw-register rw edges whose version order was inferred from those orders
    (``rw+process``): such a cycle has at least one of them, hence at least one rw edge.
    """
    found: list[Anomaly] = []
    covered: set[int] = set()
    passes = [((), False)] + ([(extra, False), (extra, True)] if extra else [])
    for orders, inferred in passes:
        comps = graph.sccs(_kinds(orders, inferred))
        for comp in comps:
            if not covered.intersection(comp):
                found.append(_classify(graph, comp, orders, inferred, names))
        for comp in comps:
            covered.update(comp)
    return found


def _kinds(orders: tuple[str, ...], inferred: bool) -> tuple[str, ...]:
    return ("ww", "wr", *_rw_family(orders, inferred), *orders)


def _rw_family(orders: tuple[str, ...], inferred: bool) -> tuple[str, ...]:
    """rw edges, plus those whose version order came from an order (``rw+process``)."""
    return ("rw", *(f"rw+{x}" for x in orders)) if inferred else ("rw",)


def _classify(graph: DepGraph, comp: list[int], orders: tuple[str, ...], inferred: bool,
              names: dict[int, str]) -> Anomaly:
    g0 = ("ww", *orders)
    g1 = (*g0, "wr")
    rw = _rw_family(orders, inferred)
    cycle, name = graph.cycle_in(comp, g0), "G0"
    if cycle is None:
        cycle, name = graph.cycle_in(comp, g1), "G1c"
    if cycle is None:
        cycle, name = _single_rw_cycle(graph, comp, rw, g1), "G-single"
    if cycle is None:
        cycle, name = graph.cycle_in(comp, (*g1, *rw)), "G2-item"
    assert cycle is not None, "a strongly connected component has a cycle"
    text = _describe_cycle(cycle, names)
    if inferred:
        text += ("\n  (rw+process/rw+realtime edges order versions by that order; had "
                 "those versions been ordered otherwise, another cycle through the order's "
                 "own edges would exist instead)")
    return Anomaly(name + _suffix(cycle, orders), text, cycle)


def _suffix(cycle: list[Edge], extra: tuple[str, ...]) -> str:
    """``-realtime`` / ``-process`` when the cycle relies on that order (Elle's naming)."""
    used = {kind.rpartition("+")[2] for kind in (e.kind for e in cycle)}
    for order in ("realtime", "process"):
        if order in extra and order in used:
            return f"-{order}"
    return ""


def _single_rw_cycle(graph: DepGraph, comp: list[int], rw: tuple[str, ...],
                     kinds: tuple[str, ...]) -> list[Edge] | None:
    """A cycle of one rw edge and a path back without rw edges (bounded search)."""
    return rw_cycle(graph, comp, rw,
                    lambda start, goal, members: graph.path(start, goal, kinds, members))


BackPath = Callable[[int, int, set[int]], list[Edge] | None]
"""Finds a path from the first node to the second within the members, or None."""


def rw_cycle(graph: DepGraph, comp: list[int], rw: tuple[str, ...],
             back: BackPath) -> list[Edge] | None:
    """A cycle in the component ``comp``: an rw edge ``a -> b`` closed by ``back(b, a,
    members)``; gives up after ``_MAX_RW_TRIES`` rw edges without one."""
    members = set(comp)
    tries = 0
    for node in comp:
        for edge in graph.edges(node, rw):
            if edge.dst not in members:
                continue
            tries += 1
            path = back(edge.dst, node, members)
            if path is not None:
                return [edge, *path]
            if tries >= _MAX_RW_TRIES:
                return None
    return None


def _describe_cycle(cycle: list[Edge], names: dict[int, str]) -> str:
    lines = [f"cycle of {len(cycle)} transactions:"]
    for edge in cycle:
        lines.append(f"  {names[edge.src]} -{edge.kind}-> {names[edge.dst]}: {edge.why}")
    return "\n".join(lines)
