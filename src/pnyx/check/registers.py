"""Register histories with unique written values: sessions, reads-from and causal order.

The input of the sequential, causal and session checkers. Operations are reads
(``read``/``get``/``final-read``) and writes (``write``/``put``) of a ``key`` (``None``: one
register). Every value written to a key is unique (a *differentiated* history, as
Bouajjani et al. require), so each read names the one write it read from (``src``), or
the initial state. ``ok`` operations count; a ``fail`` write did not happen (a read of its
value is an ``AbortedRead``); an ``info`` write happened only if someone read it (a write
nobody read can be dropped without making any of these models harder to satisfy);
``info`` reads tell nothing. A session is a process: its operations in invocation order.

Causal order ``co = (so | rf)+``: session order plus reads-from, transitively. It is kept
as bitsets over the writes (``past[node]``: writes strictly before; ``later[w]``: writes
strictly after), computed in one pass over a topological order (or over the condensation
when ``co`` has cycles, which the causal checker reports as ``CyclicCO``).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pnyx.check.consistency_report import Violation, op_text
from pnyx.check.graph import DepGraph
from pnyx.check.history import History, Operation

READS = frozenset(("read", "get", "final-read"))
WRITES = frozenset(("write", "put"))
INIT = -1  # ``src`` of a read of the initial state
NOWHERE = -2  # ``src`` of a read of a value nobody (or only a failed write) wrote


@dataclass(frozen=True)
class Access:
    """One read or write taken into account; ``node`` is its index in ``accesses``."""

    node: int
    op: Operation
    is_write: bool
    key: Any
    value: Any
    session: int
    wbit: int  # the write's bit in the write bitsets (-1 for reads)
    src: int  # a read's writer node, INIT or NOWHERE (-1 for writes)


def _bits(mask: int) -> Iterator[int]:
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def lowest_bit(mask: int) -> int:
    """The index of the lowest set bit of a non-zero mask."""
    if mask <= 0:
        raise ValueError(f"no bit set in {mask}")
    return (mask & -mask).bit_length() - 1


class RegisterHistory:
    """The accesses of a differentiated register history, by session, with reads-from.

    Raises ``ValueError`` (with the offending operations) for operations other than
    reads and writes, and for a value written twice to a key.
    """

    def __init__(self, history: History | Sequence[Operation], initial: Any = None) -> None:
        self.operations = list(history)
        self.initial = initial
        self.anomalies: list[Violation] = []  # ThinAirRead, AbortedRead
        self.accesses: list[Access] = []
        self.writes: list[int] = []  # wbit -> node
        self.sessions: dict[int, list[int]] = {}  # process -> nodes in session order
        self.key_mask: dict[Any, int] = {}  # key -> bitset of its writes
        self._build()
        self._co: CausalOrder | None = None

    # -- building -------------------------------------------------------------------------

    def _build(self) -> None:
        writer: dict[tuple[Any, Any], Operation] = {}
        self.operations = [op for op in self.operations
                           if not (op.f == "final-read" and op.key is None)]  # whole states
        for op in self.operations:
            self._validate(op, writer)
        read_values = {(op.key, op.output) for op in self.operations
                       if op.f in READS and op.outcome == "ok"}
        node_of: dict[int, int] = {}
        pending: list[tuple[Operation, Any]] = []
        for op in sorted(self.operations, key=lambda o: o.call):
            if op.f in WRITES and self._counts(op, read_values):
                node_of[op.index] = self._add(op, True, op.value, -1)
            elif op.f in READS and op.outcome == "ok":
                pending.append((op, len(self.accesses)))
                self._add(op, False, op.output, INIT)
        for op, node in pending:
            self._resolve(op, node, writer, node_of)

    def _validate(self, op: Operation, writer: dict[tuple[Any, Any], Operation]) -> None:
        if op.f not in READS and op.f not in WRITES:
            raise ValueError(f"operation {op.index} (process {op.process}) has f={op.f!r}; "
                             "this checker reads only read/get and write/put operations")
        if op.f in WRITES and op.outcome != "fail":
            if op.value is None or op.value == self.initial:
                raise ValueError(f"operation {op.index} writes {op.value!r} to key "
                                 f"{op.key!r}, the initial value: reads of it would be "
                                 "ambiguous")
            other = writer.get((op.key, op.value))
            if other is not None and other.outcome != "fail":
                raise ValueError(f"operations {other.index} and {op.index} both write "
                                 f"{op.value!r} to key {op.key!r}; these checkers need "
                                 "unique written values per key")
            writer[(op.key, op.value)] = op
        elif op.f in WRITES:
            writer.setdefault((op.key, op.value), op)

    @staticmethod
    def _counts(op: Operation, read_values: set[tuple[Any, Any]]) -> bool:
        if op.outcome == "ok":
            return True
        return op.outcome == "info" and (op.key, op.value) in read_values

    def _add(self, op: Operation, is_write: bool, value: Any, src: int) -> int:
        node = len(self.accesses)
        wbit = len(self.writes) if is_write else -1
        if is_write:
            self.writes.append(node)
            self.key_mask[op.key] = self.key_mask.get(op.key, 0) | (1 << wbit)
        self.accesses.append(Access(node, op, is_write, op.key, value, op.process, wbit, src))
        self.sessions.setdefault(op.process, []).append(node)
        return node

    def _resolve(self, op: Operation, node: int, writer: dict[tuple[Any, Any], Operation],
                 node_of: dict[int, int]) -> None:
        value = op.output
        w = writer.get((op.key, value))
        a = self.accesses[node]
        if w is None or w.outcome == "fail":
            self.accesses[node] = Access(a.node, a.op, False, a.key, a.value, a.session, -1,
                                         INIT if w is None and value in (None, self.initial)
                                         else NOWHERE)
        if w is None:
            if value is not None and value != self.initial:
                self.anomalies.append(Violation("ThinAirRead", (
                    f"{op_text(op)} read {value!r}, which no operation wrote to key "
                    f"{op.key!r}"), [op]))
            return
        if w.outcome == "fail":
            self.anomalies.append(Violation("AbortedRead", (
                f"{op_text(op)} read {value!r}, written by the failed {op_text(w)}"), [op, w]))
            return
        self.accesses[node] = Access(a.node, a.op, False, a.key, a.value, a.session, -1,
                                     node_of[w.index])

    # -- queries --------------------------------------------------------------------------

    @property
    def reads(self) -> Iterator[Access]:
        """Every read of a write or of the initial state, in node order."""
        return (a for a in self.accesses if not a.is_write and a.src != NOWHERE)

    def causal(self) -> CausalOrder:
        """The causal order (computed once)."""
        if self._co is None:
            self._co = CausalOrder(self)
        return self._co

    def describe(self, node: int) -> str:
        """Report text for an access."""
        return op_text(self.accesses[node].op)

    def op(self, node: int) -> Operation:
        """The operation of an access."""
        return self.accesses[node].op


class CausalOrder:
    """``co = (so | rf)+`` as bitsets over writes, plus short paths for explanations."""

    def __init__(self, rh: RegisterHistory) -> None:
        self.rh = rh
        n = len(rh.accesses)
        self.succ: list[list[int]] = [[] for _ in range(n)]
        self.pred: list[list[int]] = [[] for _ in range(n)]
        for nodes in rh.sessions.values():
            for a, b in itertools.pairwise(nodes):
                self._edge(a, b)
        for acc in rh.accesses:
            if not acc.is_write and acc.src >= 0:
                self._edge(acc.src, acc.node)
        self.cycles: list[list[int]] = []  # components of co with more than one node
        self.past, self.later = self._closure()

    def _edge(self, a: int, b: int) -> None:
        self.succ[a].append(b)
        self.pred[b].append(a)

    def _closure(self) -> tuple[list[int], list[int]]:
        order, comp = self._condensed_order()
        rh = self.rh
        n = len(rh.accesses)
        own = [0] * n  # per component representative: bits of its member writes
        for node, c in enumerate(comp):
            wbit = rh.accesses[node].wbit
            if wbit >= 0:
                own[c] |= 1 << wbit
        cpast = _reach(order, comp, own, self.pred)
        cfuture = _reach(order[::-1], comp, own, self.succ)
        past = [0] * n
        later = [0] * len(rh.writes)
        for node, c in enumerate(comp):
            a = rh.accesses[node]
            mine = own[c] & ~(1 << a.wbit) if a.wbit >= 0 else own[c]
            past[node] = cpast[c] | mine
            if a.wbit >= 0:
                later[a.wbit] = cfuture[c] | mine
        return past, later

    def _condensed_order(self) -> tuple[list[tuple[int, list[int]]], list[int]]:
        """Components in topological order (``(representative, members)``), and per node
        its representative. Kahn's algorithm; the leftover nodes lie on or after cycles."""
        n = len(self.succ)
        comp = list(range(n))
        if not self._acyclic_order(comp):
            graph = DepGraph()
            for a in range(n):
                for b in self.succ[a]:
                    graph.add(a, b, "co", "")
            self.cycles = graph.sccs(("co",))
            for members in self.cycles:
                for m in members:
                    comp[m] = members[0]
        groups: dict[int, list[int]] = {}
        for node, c in enumerate(comp):
            groups.setdefault(c, []).append(node)
        indeg = {c: 0 for c in groups}
        for a in range(n):
            for b in self.succ[a]:
                if comp[a] != comp[b]:
                    indeg[comp[b]] += 1
        ready = deque(sorted(c for c, d in indeg.items() if d == 0))
        order: list[tuple[int, list[int]]] = []
        while ready:
            c = ready.popleft()
            order.append((c, groups[c]))
            for m in groups[c]:
                for b in self.succ[m]:
                    if comp[b] != c:
                        indeg[comp[b]] -= 1
                        if indeg[comp[b]] == 0:
                            ready.append(comp[b])
        return order, comp

    def _acyclic_order(self, comp: list[int]) -> bool:
        n = len(self.succ)
        indeg = [len(p) for p in self.pred]
        ready = [i for i in range(n) if indeg[i] == 0]
        seen = 0
        while ready:
            node = ready.pop()
            seen += 1
            for b in self.succ[node]:
                indeg[b] -= 1
                if indeg[b] == 0:
                    ready.append(b)
        return seen == n

    # -- queries --------------------------------------------------------------------------

    def before(self, w1: int, w2: int) -> bool:
        """Write node ``w1`` is strictly causally before write node ``w2``."""
        b1 = self.rh.accesses[w1].wbit
        b2 = self.rh.accesses[w2].wbit
        return bool(self.past[w2] >> b1 & 1) and not self.past[w1] >> b2 & 1

    def path(self, start: int, goal: int) -> list[int]:
        """A shortest chain of ``so``/``rf`` steps from ``start`` to ``goal`` (nodes)."""
        came: dict[int, int] = {start: start}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            if node == goal and (node != start or len(came) > 1):
                break
            for nxt in self.succ[node]:
                if nxt not in came:
                    came[nxt] = node
                    queue.append(nxt)
        if goal not in came:
            return []
        out = [goal]
        while out[-1] != start:
            out.append(came[out[-1]])
        return out[::-1]

    def step_kind(self, a: int, b: int) -> str:
        """``so`` when ``a`` and ``b`` are consecutive in one session, else ``rf``."""
        acc = self.rh.accesses
        return "so" if acc[a].session == acc[b].session else "rf"

    def chain_text(self, start: int, goal: int) -> str:
        """``#1 p0 write 1 -so-> #2 ...``: why ``start`` is causally before ``goal``."""
        nodes = self.path(start, goal)
        if not nodes:
            return f"{self.rh.describe(start)} ... {self.rh.describe(goal)}"
        parts = [self.rh.describe(nodes[0])]
        for a, b in itertools.pairwise(nodes):
            parts.append(f"-{self.step_kind(a, b)}-> {self.rh.describe(b)}")
        return " ".join(parts)

    def chain_ops(self, *nodes: int) -> list[Operation]:
        """The operations on the chains through ``nodes`` (in that order), without repeats."""
        out: list[int] = [nodes[0]]
        for a, b in itertools.pairwise(nodes):
            for n in self.path(a, b)[1:] or [b]:
                if n not in out:
                    out.append(n)
        return [self.rh.op(n) for n in out]


def bits(mask: int) -> Iterator[int]:
    """The set bits of ``mask``, lowest first."""
    return _bits(mask)


def _reach(order: list[tuple[int, list[int]]], comp: list[int], own: list[int],
           edges: list[list[int]]) -> list[int]:
    """Per component representative, visited in ``order``: the write bits of every other
    component reached through ``edges`` (its own writes included), transitively — the
    strict causal past when ``edges`` is ``pred`` in topological order, the strict future
    when it is ``succ`` in reverse order."""
    out = [0] * len(own)
    for c, members in order:
        acc = 0
        for m in members:
            for e in edges[m]:
                ec = comp[e]
                if ec != c:
                    acc |= out[ec] | own[ec]
        out[c] = acc
    return out
