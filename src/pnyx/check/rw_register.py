"""Read-write-register inference for the Elle-style checker (Elle's rw-register workload).

Transactions are ``["w", k, v]`` / ``["r", k, v]`` micro-ops with written values unique per
key; ``None`` is the initial state of every key. Only what is knowable is inferred:

- **wr**: a read of ``v`` depends on the one transaction that wrote ``v``;
- **version order** facts ``u < v`` for key ``k``: the initial ``None`` precedes every
  write; a transaction that read ``u`` and then wrote ``v`` (``v`` after ``u``: if not,
  that transaction and ``u``'s writer form a G1c cycle anyway); with ``order_kinds``, a
  value a transaction observed precedes what a later transaction of the same process
  (``process``) or a transaction begun after it completed (``realtime``) observed. Facts of
  the last kind hold only under that order (if one is false, a cycle through that order's
  edges exists anyway): they give only rw edges, tagged ``rw+process`` / ``rw+realtime``,
  and a cycle using one is named with that suffix (G-single-process, G2-item-process);
- **ww** ``writer(u) -> writer(v)`` and **rw** ``reader(u) -> writer(v)`` per fact. A fact
  need not be an *immediate* succession: the edge then stands for a path with the same
  number of rw edges, so every cycle found is a real one.

Found directly: G1a (read of a failed transaction's write), G1b (read of a value its writer
overwrote), ``internal`` (a read disagreeing with the transaction's own earlier read or
write of the key), ``garbage-read`` (a value nobody wrote), ``duplicate-writes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pnyx.check.graph import DepGraph
from pnyx.check.history import Operation
from pnyx.check.txn_common import Anomaly, mops, process_pairs, realtime_pairs, tname

_PAIRS = {"process": process_pairs, "realtime": realtime_pairs}
_WHY = {"process": "ran before it on process {p}", "realtime": "completed before it began"}


@dataclass
class _Txn:
    """What one transaction did per key: external reads, final writes, all writes."""

    op: Operation
    reads: dict[Any, Any] = field(default_factory=dict)  # first read, before any own write
    final: dict[Any, Any] = field(default_factory=dict)  # last value written
    writes: dict[Any, list[Any]] = field(default_factory=dict)

    def last_seen(self, k: Any) -> Any:
        """The value of ``k`` when this (ok) transaction ended."""
        return self.final[k] if k in self.final else self.reads[k]

    def first_seen(self, k: Any) -> tuple[bool, Any]:
        """``(known, value)``: the first value of ``k`` this transaction observed."""
        if self.op.outcome == "ok" and k in self.reads:
            return True, self.reads[k]
        return (True, self.final[k]) if k in self.final else (False, None)


@dataclass(frozen=True)
class _Fact:
    """``u < v`` in key ``k``'s version order; ``tag`` names the order it relies on."""

    tag: str  # "" (data only), "process" or "realtime"
    why: str


class RwRegister:
    """Adds the wr/ww/rw edges of a rw-register history to ``graph``; anomalies to a list."""

    def __init__(self, txns: list[Operation], graph: DepGraph, anomalies: list[Anomaly]):
        self.graph, self.anomalies = graph, anomalies
        self.txns = [_Txn(op) for op in txns]
        self.writer: dict[tuple[Any, Any], _Txn] = {}
        self.readers: dict[tuple[Any, Any], list[_Txn]] = {}
        self.facts: dict[Any, dict[Any, dict[Any, _Fact]]] = {}  # k -> u -> v -> fact

    def build(self, order_kinds: Iterable[str] = ()) -> None:
        """Infer everything; ``order_kinds`` (process, realtime) also order versions."""
        for txn in self.txns:
            self._collect(txn)
        for txn in self.txns:
            self._check_reads(txn)
        self._read_then_write_facts()
        for kind in order_kinds:
            self._order_facts(kind)
        self._fact_edges()
        self._initial_state_edges()

    # -- collecting ---------------------------------------------------------------------

    def _collect(self, txn: _Txn) -> None:
        op = txn.op
        seen: dict[Any, Any] = {}
        for f, k, v in mops(op):
            if f == "w":
                self._write(txn, k, v)
                seen[k] = v
            elif f == "r" and op.outcome == "ok":
                if k not in seen:
                    txn.reads[k] = seen[k] = v
                    self.readers.setdefault((k, v), []).append(txn)
                elif seen[k] != v:
                    own = k in txn.writes
                    self.anomalies.append(Anomaly("internal", (
                        f"{tname(op)} {'wrote' if own else 'read'} {seen[k]!r} "
                        f"{'to' if own else 'from'} key {k!r} but then read {v!r}")))

    def _write(self, txn: _Txn, k: Any, v: Any) -> None:
        other = self.writer.get((k, v))
        if other is not None and other is not txn:
            self.anomalies.append(Anomaly("duplicate-writes", (
                f"{tname(other.op)} and {tname(txn.op)} both write {v!r} to key {k!r}; "
                "rw-register needs unique values per key")))
        else:
            self.writer[(k, v)] = txn
        txn.final[k] = v
        txn.writes.setdefault(k, []).append(v)

    def _check_reads(self, txn: _Txn) -> None:
        for k, v in txn.reads.items():
            if v is None:
                continue
            w = self.writer.get((k, v))
            op = txn.op
            if w is None:
                self.anomalies.append(Anomaly("garbage-read", (
                    f"{tname(op)} read {v!r} from key {k!r}, which no transaction wrote")))
            elif w is txn:
                self.anomalies.append(Anomaly("internal", (
                    f"{tname(op)} read {v!r} from key {k!r} before writing it itself")))
            elif w.op.outcome == "fail":
                self.anomalies.append(Anomaly("G1a", (
                    f"aborted read: {tname(op)} read key {k!r} = {v!r}, written by "
                    f"{tname(w.op)}, which failed (aborted)")))
            else:
                self.graph.add(w.op.index, op.index, "wr",
                               f"{tname(op)} read key {k!r} = {v!r}, written by {tname(w.op)}")
                if w.final[k] != v:
                    self.anomalies.append(Anomaly("G1b", (
                        f"intermediate read: {tname(op)} read key {k!r} = {v!r}, but "
                        f"{tname(w.op)} wrote {w.writes[k]!r}: {v!r} was not its final "
                        "write")))

    # -- version order facts ------------------------------------------------------------

    def _is_version(self, k: Any, v: Any) -> bool:
        """The initial state, or a transaction's final write that did not certainly fail."""
        if v is None:
            return True
        w = self.writer.get((k, v))
        return w is not None and w.op.outcome != "fail" and w.final.get(k) == v

    def _add_fact(self, k: Any, u: Any, v: Any, fact: _Fact) -> None:
        if u is None or v is None or u == v:
            return  # the initial state precedes everything: see _initial_state_edges
        if not (self._is_version(k, u) and self._is_version(k, v)):
            return
        by_u = self.facts.setdefault(k, {})
        if fact.tag and u in by_u.get(v, {}):
            return  # contradicts an earlier fact: keep the first (data facts come first)
        known = by_u.setdefault(u, {})
        if v not in known or (known[v].tag and not fact.tag):
            known[v] = fact

    def _read_then_write_facts(self) -> None:
        for txn in self.txns:
            if txn.op.outcome != "ok":
                continue
            for k, u in txn.reads.items():
                if k in txn.final:
                    v = txn.final[k]
                    self._add_fact(k, u, v, _Fact("", f"{tname(txn.op)} read {u!r} and then "
                                                       f"wrote {v!r}"))

    def _order_facts(self, kind: str) -> None:
        """Per key: what T1 last saw precedes what T2 first saw when T1 is ordered before T2."""
        for k, touching in self._by_key().items():
            for t1, t2 in _PAIRS[kind](t.op for t in touching.values()):
                self._order_fact(k, kind, touching[t1.index], touching[t2.index])

    def _order_fact(self, k: Any, kind: str, t1: _Txn, t2: _Txn) -> None:
        known, c = t2.first_seen(k)
        if not known or t1.op.outcome != "ok":
            return
        a = t1.last_seen(k)
        why = _WHY[kind].format(p=t1.op.process)
        self._add_fact(k, a, c, _Fact(kind, (
            f"{tname(t1.op)} saw {a!r} and {why}; {tname(t2.op)} then saw {c!r}")))

    def _by_key(self) -> dict[Any, dict[int, _Txn]]:
        out: dict[Any, dict[int, _Txn]] = {}
        for txn in self.txns:
            if txn.op.outcome == "fail":
                continue
            for k in (*txn.reads, *txn.final):
                out.setdefault(k, {})[txn.op.index] = txn
        return out

    # -- edges --------------------------------------------------------------------------

    def _fact_edges(self) -> None:
        for k, by_u in self.facts.items():
            for u, by_v in by_u.items():
                wu = self.writer[(k, u)]
                for v, fact in by_v.items():
                    wv = self.writer[(k, v)]
                    suffix = f"+{fact.tag}" if fact.tag else ""
                    order = f"{u!r} precedes {v!r} in key {k!r} ({fact.why})"
                    if not fact.tag:  # an order-inferred ww edge could misname a cycle G0
                        self.graph.add(wu.op.index, wv.op.index, "ww",
                                       f"{tname(wu.op)} wrote {u!r}, {tname(wv.op)} wrote "
                                       f"{v!r}: " + order)
                    for r in self._live_readers(k, u):
                        self.graph.add(r.op.index, wv.op.index, "rw" + suffix,
                                       f"{tname(r.op)} read {u!r}, {tname(wv.op)} wrote "
                                       f"{v!r}: " + order)

    def _initial_state_edges(self) -> None:
        """A read of the initial ``None`` precedes every first write (roots of the facts)."""
        for k, roots in self._roots().items():
            for r in self._live_readers(k, None):
                for v in roots:
                    w = self.writer[(k, v)]
                    self.graph.add(r.op.index, w.op.index, "rw",
                                   f"{tname(r.op)} read key {k!r} = nil, the initial state, "
                                   f"and {tname(w.op)} wrote {v!r}: every write follows it")

    def _roots(self) -> dict[Any, list[Any]]:
        """Per key, the written versions no data-only fact puts after another version."""
        later = {(k, v) for k, by_u in self.facts.items() for by_v in by_u.values()
                 for v, fact in by_v.items() if not fact.tag}
        out: dict[Any, list[Any]] = {}
        for (k, v), w in self.writer.items():
            if (k, v) not in later and self._is_version(k, v) and w.final[k] == v:
                out.setdefault(k, []).append(v)
        return out

    def _live_readers(self, k: Any, u: Any) -> Iterator[_Txn]:
        yield from self.readers.get((k, u), ())
