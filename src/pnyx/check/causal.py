"""Causal consistency of a key-value (register) history: Bouajjani et al.'s bad patterns.

Following Bouajjani, Enea, Guerraoui and Hamza, "On verifying causal consistency" (POPL
2017): in a differentiated history (unique written values) the causal order is
``co = (so | rf)+`` and the model holds exactly when none of a few bad patterns occurs.
Checked here, for causal memory (CM, Ahamad et al.'s causal consistency):

- ``ThinAirRead``: a read of a value no write wrote (``AbortedRead``: only a failed one);
- ``CyclicCO``: ``co`` has a cycle (a read returns a value written causally after it);
- ``WriteCOInitRead``: a read of the initial value with a write of that key in its causal
  past;
- ``WriteCORead``: ``w(x,v) co w(x,v') co r(x,v)``, a read returning a value overwritten in
  its causal past (the causal stale read);
- ``WriteHBInitRead`` / ``CyclicHB``: per process p, ``hb_p`` is the least transitive
  relation containing ``co`` and ``w' -> w`` whenever ``w'`` (a write of x) is
  ``hb_p``-before a read of p that returned ``w``'s value: w' must come before w in p's
  view. A read of p of the initial value of x with a write of x ``hb_p``-before it, or a
  cycle in ``hb_p``, is a violation of CM (not of the weaker CC of the paper).

The first four are the paper's CC patterns. Cost: the ``co`` closure is one pass of bitset
unions (``O(n·W/64)`` words for n operations, W writes); ``hb_p`` is a fixpoint of such
passes per process (a few rounds in practice, bounded by ``max_rounds``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pnyx.check.consistency_report import ConsistencyResult, Violation, finish
from pnyx.check.graph import DepGraph
from pnyx.check.history import History, Operation
from pnyx.check.registers import INIT, NOWHERE, CausalOrder, RegisterHistory, bits, lowest_bit

__all__ = ["causal_violations", "check_causal"]

MAX_ROUNDS = 64  # hb_p fixpoint rounds per process before the verdict is unknown


def check_causal(history: History | Sequence[Operation], *, initial: Any = None,
                 max_rounds: int = MAX_ROUNDS) -> ConsistencyResult:
    """Check causal consistency (causal memory) of a register/KV history.

    Raises ``ValueError`` for operations other than reads and writes or a value written
    twice to one key.
    """
    started = time.monotonic()
    rh = RegisterHistory(history, initial)
    found, reason = causal_violations(rh, max_rounds=max_rounds)
    return finish("causal", found, time.monotonic() - started, len(rh.operations), reason)


def causal_violations(rh: RegisterHistory, *, max_rounds: int = MAX_ROUNDS,
                      ) -> tuple[list[Violation], str]:
    """The bad patterns found (CC ones first; CM ones only when there are none), and why
    the search stopped short (empty when it did not)."""
    found = list(rh.anomalies)
    co = rh.causal()
    if co.cycles:
        return found + [_cyclic_co(rh, co, comp) for comp in co.cycles], ""
    found.extend(_cc_patterns(rh, co))
    if found:
        return found, ""
    for process in sorted(rh.sessions):
        hb = _ProcessView(rh, co, process)
        done = hb.run(max_rounds)
        found.extend(hb.violations)
        if not done:
            return found, (f"the view of process {process} did not reach a fixpoint in "
                           f"{max_rounds} rounds")
    return found, ""


def _cyclic_co(rh: RegisterHistory, co: CausalOrder, comp: list[int]) -> Violation:
    graph = DepGraph()
    for a in comp:
        for b in co.succ[a]:
            graph.add(a, b, co.step_kind(a, b), "")
    cycle = graph.cycle_in(comp, ("so", "rf")) or []
    text = " ".join(f"{rh.describe(e.src)} -{e.kind}->" for e in cycle)
    if cycle:
        text += f" {rh.describe(cycle[0].src)}"
    return Violation("CyclicCO", f"causal order has a cycle: {text}",
                     [rh.op(e.src) for e in cycle])


def _cc_patterns(rh: RegisterHistory, co: CausalOrder) -> list[Violation]:
    found: list[Violation] = []
    for r in rh.reads:
        km = rh.key_mask.get(r.key, 0)
        if r.src == INIT:
            seen = co.past[r.node] & km
            if seen:
                w = rh.writes[lowest_bit(seen)]
                found.append(Violation("WriteCOInitRead", (
                    f"{rh.describe(r.node)} read the initial value of key {r.key!r}, but a "
                    f"write of it is in its causal past: {co.chain_text(w, r.node)}"),
                    co.chain_ops(w, r.node)))
            continue
        newer = co.past[r.node] & km & co.later[rh.accesses[r.src].wbit]
        if newer:
            w2 = rh.writes[lowest_bit(newer)]
            found.append(Violation("WriteCORead", (
                f"{rh.describe(r.node)} read {r.value!r}, overwritten in its causal past: "
                f"{co.chain_text(r.src, w2)}, and {co.chain_text(w2, r.node)}"),
                co.chain_ops(r.src, w2, r.node)))
    return found


class _ProcessView:
    """``hb_p`` for one process: ``co`` plus the write orders its reads force, to a fixpoint."""

    def __init__(self, rh: RegisterHistory, co: CausalOrder, process: int) -> None:
        self.rh, self.co, self.process = rh, co, process
        self.reads = [a for a in (rh.accesses[n] for n in rh.sessions[process])
                      if not a.is_write and a.src != NOWHERE]
        self.extra: dict[int, dict[int, int]] = {}  # write node -> earlier write -> read
        self.violations: list[Violation] = []

    def run(self, max_rounds: int) -> bool:
        """Compute ``hb_p``; record violations. False when ``max_rounds`` did not suffice."""
        for _ in range(max_rounds):
            past = self._closure()
            if past is None:
                self.violations.append(self._cyclic_hb())
                return True
            if not self._add_edges(past):
                self._init_reads(past)
                return True
        return False

    def _add_edges(self, past: list[int]) -> bool:
        added = False
        for r in self.reads:
            if r.src == INIT:
                continue
            wbit = self.rh.accesses[r.src].wbit
            new = past[r.node] & self.rh.key_mask[r.key] & ~(1 << wbit) & ~past[r.src]
            for b in bits(new):
                self.extra.setdefault(r.src, {})[self.rh.writes[b]] = r.node
                added = True
        return added

    def _closure(self) -> list[int] | None:
        """Per node, the writes ``hb_p``-before it; None when ``hb_p`` is cyclic."""
        co, acc = self.co, self.rh.accesses
        n = len(acc)
        indeg = [len(p) for p in co.pred]
        extra_succ: dict[int, list[int]] = {}
        for w, earlier in self.extra.items():
            indeg[w] += len(earlier)
            for w2 in earlier:
                extra_succ.setdefault(w2, []).append(w)
        ready = [i for i in range(n) if indeg[i] == 0]
        past = [0] * n
        done = 0
        while ready:
            node = ready.pop()
            done += 1
            mine = past[node] | (1 << acc[node].wbit if acc[node].wbit >= 0 else 0)
            for b in co.succ[node]:
                past[b] |= mine
                indeg[b] -= 1
                if indeg[b] == 0:
                    ready.append(b)
            for w in extra_succ.get(node, ()):
                    past[w] |= mine
                    indeg[w] -= 1
                    if indeg[w] == 0:
                        ready.append(w)
        return past if done == n else None

    def _init_reads(self, past: list[int]) -> None:
        for r in self.reads:
            seen = past[r.node] & self.rh.key_mask.get(r.key, 0)
            if r.src == INIT and seen:
                w = self.rh.writes[lowest_bit(seen)]
                self.violations.append(Violation("WriteHBInitRead", (
                    f"{self.rh.describe(r.node)} read the initial value of key {r.key!r}, "
                    f"but in process {self.process}'s view {self.rh.describe(w)} comes "
                    f"before it:\n  " + self._why(w, r.node)), [self.rh.op(w), r.op]))

    def _graph(self) -> DepGraph:
        graph = DepGraph()
        co, rh = self.co, self.rh
        for a in range(len(rh.accesses)):
            for b in co.succ[a]:
                graph.add(a, b, co.step_kind(a, b), "")
        for w, earlier in self.extra.items():
            for w2, r in earlier.items():
                graph.add(w2, w, "view", (
                    f"{rh.describe(w2)} is before {rh.describe(r)} in p{self.process}'s "
                    f"view, which read {rh.describe(w)}'s value"))
        return graph

    def _why(self, start: int, goal: int) -> str:
        graph = self._graph()
        edges = graph.path(start, goal, ("so", "rf", "view"), range(len(self.rh.accesses)))
        return self._edges_text(edges or [])

    def _edges_text(self, edges: list[Any]) -> str:
        lines = []
        for e in edges:
            lines.append(f"{self.rh.describe(e.src)} -{e.kind}-> {self.rh.describe(e.dst)}"
                         + (f" ({e.why})" if e.why else ""))
        return "\n  ".join(lines)

    def _cyclic_hb(self) -> Violation:
        graph = self._graph()
        kinds = ("so", "rf", "view")
        cycle: list[Any] = []
        for comp in graph.sccs(kinds):
            cycle = graph.cycle_in(comp, kinds) or []
            if cycle:
                break
        ops: list[Operation] = []
        for e in cycle:
            for node in (e.src, e.dst):
                if self.rh.op(node) not in ops:
                    ops.append(self.rh.op(node))
        return Violation("CyclicHB", (
            f"process {self.process} cannot order the writes it observed (a cycle in its "
            f"view):\n  " + self._edges_text(cycle)), ops)

