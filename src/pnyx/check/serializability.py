"""Elle-style serializability checking of list-append and read-write-register transactions.

A transaction is an operation with ``f == "txn"`` whose value is a list of micro-operations
``[f, key, value]``: ``["append", k, v]`` / ``["r", k, [v1 v2 ...]]`` (list-append) or
``["w", k, v]`` / ``["r", k, v]`` (rw-register). From the values reads observe we infer
version orders, build the dependency graph (ww, wr, rw; optionally real-time and process
order), find its strongly connected components (Tarjan) and name the cycle in each:
G0 (ww only), G1c (ww+wr), G-single (exactly one rw), G2-item (several rw). Aborted reads
(G1a), intermediate reads (G1b) and inconsistent reads are found directly.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pnyx.check.graph import DepGraph, Edge
from pnyx.check.history import History, Operation

TxnKind = Literal["list-append", "rw-register"]
_DATA = ("ww", "wr", "rw")
_MAX_RW_TRIES = 256  # rw edges tried per component when looking for a G-single cycle


@dataclass
class Anomaly:
    """One anomaly: its class name, a text explanation and the cycle (if it is one)."""

    name: str
    explanation: str
    cycle: list[Edge] = field(default_factory=list)


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
    """Check transactions for serializability (strict serializability with ``realtime``).

    ``kind`` is guessed from the micro-operations when not given (``append`` present:
    list-append). ``process`` adds per-process order edges (strong session serializability).
    """
    started = time.monotonic()
    txns = [op for op in history]
    for op in txns:
        _validate(op)
    if kind is None:
        kind = _guess_kind(txns)
    graph = DepGraph()
    anomalies: list[Anomaly] = []
    if kind == "list-append":
        _ListAppend(txns, graph, anomalies).build()
    else:
        _RwRegister(txns, graph, anomalies).build()
    extra: list[str] = []
    if realtime:
        _realtime_edges(txns, graph)
        extra.append("realtime")
    if process:
        _process_edges(txns, graph)
        extra.append("process")
    names = {op.index: f"T{op.index} (p{op.process})" for op in txns}
    anomalies.extend(_cycles(graph, tuple(extra), names))
    verdict = ",".join(sorted({a.name for a in anomalies})) or "serializable"
    return SerializabilityResult(verdict, anomalies, time.monotonic() - started, len(txns),
                                 kind)


def _mops(op: Operation) -> tuple[tuple[Any, Any, Any], ...]:
    """The micro-operations: with read results for ``ok``, as invoked otherwise."""
    value = op.output if op.outcome == "ok" and op.output is not None else op.value
    return value or ()


def _guess_kind(txns: Sequence[Operation]) -> TxnKind:
    """list-append when anything is appended or any read returned a list."""
    for op in txns:
        for f, _, v in _mops(op):
            if f == "append" or (f == "r" and isinstance(v, tuple)):
                return "list-append"
    return "rw-register"


def _validate(op: Operation) -> None:
    if op.f != "txn":
        raise ValueError(f"operation {op.index} (process {op.process}) has f={op.f!r}; the "
                         "serializability checker reads only 'txn' operations")
    for mop in _mops(op):
        if not (isinstance(mop, tuple) and len(mop) == 3 and mop[0] in ("r", "w", "append")):
            raise ValueError(f"transaction {op.index} (process {op.process}) has micro-op "
                             f"{mop!r}; expected [f key value] with f one of r, w, append")


def _t(op: Operation) -> str:
    return f"T{op.index}"


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
        for f, k, v in _mops(op):
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


class _RwRegister:
    """Read-write registers (unique values per key): versions follow reads-then-writes."""

    def __init__(self, txns: list[Operation], graph: DepGraph, anomalies: list[Anomaly]):
        self.txns, self.graph, self.anomalies = txns, graph, anomalies
        self.writer: dict[tuple[Any, Any], Operation] = {}
        self.final: dict[tuple[int, Any], Any] = {}  # (txn, key) -> last value it wrote
        self.reads: list[tuple[Operation, Any, Any]] = []
        self.succ: dict[tuple[Any, Any], set[Any]] = {}  # (key, version) -> next versions

    def build(self) -> None:
        for op in self.txns:
            self._collect(op)
        for (k, v), nexts in self.succ.items():
            for nv in nexts:
                wa, wb = self.writer.get((k, v)), self.writer.get((k, nv))
                if wa is not None and wb is not None and "fail" not in (wa.outcome, wb.outcome):
                    self.graph.add(wa.index, wb.index, "ww",
                                   f"{_t(wb)} read key {k!r} = {v!r} (written by {_t(wa)}) "
                                   f"and then wrote {nv!r}")
        for op, k, v in self.reads:
            self._read_edges(op, k, v)

    def _collect(self, op: Operation) -> None:
        own: dict[Any, Any] = {}
        first_read: dict[Any, Any] = {}
        for f, k, v in _mops(op):
            if f == "w":
                self.writer[(k, v)] = op
                self.final[(op.index, k)] = v
                if k in first_read and k not in own:
                    self.succ.setdefault((k, first_read[k]), set()).add(v)
                own[k] = v
            elif f == "r" and op.outcome == "ok":
                if k in own:
                    if own[k] != v:
                        self.anomalies.append(Anomaly("internal", (
                            f"{_t(op)} wrote {own[k]!r} to key {k!r} but then read {v!r}")))
                    continue
                first_read.setdefault(k, v)
                self.reads.append((op, k, v))

    def _read_edges(self, op: Operation, k: Any, v: Any) -> None:
        if v is not None:
            w = self.writer.get((k, v))
            if w is None:
                self.anomalies.append(Anomaly("garbage-read", (
                    f"{_t(op)} read {v!r} from key {k!r}, which no transaction wrote")))
            elif w.outcome == "fail":
                self.anomalies.append(Anomaly("G1a", (
                    f"aborted read: {_t(op)} read key {k!r} = {v!r}, written by {_t(w)}, "
                    "which failed (aborted)")))
            elif w is not op:
                self.graph.add(w.index, op.index, "wr",
                               f"{_t(op)} read key {k!r} = {v!r}, written by {_t(w)}")
                if self.final[(w.index, k)] != v:
                    self.anomalies.append(Anomaly("G1b", (
                        f"intermediate read: {_t(op)} read key {k!r} = {v!r}, but {_t(w)} "
                        f"later overwrote it with {self.final[(w.index, k)]!r}")))
        for nv in self.succ.get((k, v), ()):
            w = self.writer.get((k, nv))
            if w is not None and w.outcome != "fail" and w is not op:
                self.graph.add(op.index, w.index, "rw",
                               f"{_t(op)} read key {k!r} = {v!r}, and {_t(w)} wrote the "
                               f"next version {nv!r}")


def _realtime_edges(txns: list[Operation], graph: DepGraph) -> None:
    """T1 -> T2 when T1 completed before T2 was invoked (a transitive reduction frontier)."""
    events: list[tuple[int, int, Operation]] = []
    for op in txns:
        if op.outcome == "fail":
            continue
        events.append((op.call, 1, op))
        if op.outcome == "ok" and op.ret is not None:
            events.append((op.ret, 0, op))
    events.sort(key=lambda e: (e[0], e[1]))
    frontier: list[Operation] = []
    for _, is_call, op in events:
        if is_call:
            for done in frontier:
                graph.add(done.index, op.index, "realtime",
                          f"{_t(done)} completed (at {done.ret}) before {_t(op)} began "
                          f"(at {op.call})")
        else:
            frontier = [d for d in frontier if not (d.ret is not None and d.ret < op.call)]
            frontier.append(op)


def _process_edges(txns: list[Operation], graph: DepGraph) -> None:
    """T1 -> T2 when both ran on one process and T1 completed ok before T2."""
    last: dict[int, Operation] = {}
    for op in sorted(txns, key=lambda o: o.call):
        prev = last.get(op.process)
        if prev is not None and prev.outcome == "ok" and op.outcome != "fail":
            graph.add(prev.index, op.index, "process",
                      f"{_t(prev)} then {_t(op)} on process {op.process}")
        last[op.process] = op


def _cycles(graph: DepGraph, extra: tuple[str, ...], names: dict[int, str]) -> list[Anomaly]:
    found: list[Anomaly] = []
    covered: set[int] = set()
    for comp in graph.sccs(_DATA):
        covered.update(comp)
        found.append(_classify(graph, comp, (), names))
    if extra:
        for comp in graph.sccs(_DATA + extra):
            if not covered.intersection(comp):
                found.append(_classify(graph, comp, extra, names))
    return found


def _classify(graph: DepGraph, comp: list[int], extra: tuple[str, ...],
              names: dict[int, str]) -> Anomaly:
    order = ("ww", *extra)
    cycle = graph.cycle_in(comp, order)
    name = "G0"
    if cycle is None:
        cycle, name = graph.cycle_in(comp, (*order, "wr")), "G1c"
    if cycle is None:
        cycle, name = _single_rw_cycle(graph, comp, (*order, "wr")), "G-single"
    if cycle is None:
        cycle, name = graph.cycle_in(comp, (*order, "wr", "rw")), "G2-item"
    assert cycle is not None, "a strongly connected component has a cycle"
    if extra:
        kinds = {e.kind for e in cycle}
        name += "-realtime" if "realtime" in kinds else "-process" if "process" in kinds else ""
    return Anomaly(name, _describe_cycle(cycle, names), cycle)


def _single_rw_cycle(graph: DepGraph, comp: list[int],
                     kinds: tuple[str, ...]) -> list[Edge] | None:
    members = set(comp)
    tries = 0
    for node in comp:
        for edge in graph.edges(node, ("rw",)):
            if edge.dst not in members:
                continue
            tries += 1
            back = graph.path(edge.dst, node, kinds, members)
            if back is not None:
                return [edge, *back]
            if tries >= _MAX_RW_TRIES:
                return None
    return None


def _describe_cycle(cycle: list[Edge], names: dict[int, str]) -> str:
    lines = [f"cycle of {len(cycle)} transactions:"]
    for edge in cycle:
        lines.append(f"  {names[edge.src]} -{edge.kind}-> {names[edge.dst]}: {edge.why}")
    return "\n".join(lines)
