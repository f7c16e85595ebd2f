"""Sequential consistency (Lamport 1979) of a register/KV history with unique writes.

Is there one total order of all operations that keeps each process's order and in which
every read returns the latest write of its key? Deciding it is NP-complete in general
(Gibbons and Korach 1997), and stays so when every read's writer is known (unique
values), for several keys. Unlike linearizability it is not compositional: every key may
be sequentially consistent alone while the whole history is not (two processes each
write one key and then read the other's initial value), so the keys cannot be split.

What keeps it tractable in practice here:

1. a necessary condition first: sequential consistency implies causal consistency, so
   the polynomial causal checker runs first and any causal bad pattern is the answer;
   then a sufficient one: a linearizable history (checked per key, bounded) is
   sequentially consistent;
2. a depth-first search over interleavings of the processes (state: the position in
   each process and the current writer of each key, memoised), where a read is taken as
   soon as its value is current (no other order needs trying: it changes nothing), a
   write of x is allowed only once every read of x's current value has been taken
   (values are unique, so an overwritten value never returns), and the writes invoked
   earliest are tried first;
3. the orders every witness must contain are saturated first (``_Forced``) and the search
   keeps to them; their topological order is often a witness already;
4. a bound (``max_states``, ``timeout_s``): past it the verdict is ``unknown``.

The search is exponential in the number of processes in the worst case (the state space
is at most the product of the process lengths times the writers). A failure is shrunk to
a 1-minimal sub-history (dropping reads, or writes with their readers, keeps any witness
order valid, so a sub-history that fails shows that the whole one does).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from pnyx.check.causal import causal_violations
from pnyx.check.consistency_report import ConsistencyResult, Violation, finish, op_text
from pnyx.check.history import History, Operation
from pnyx.check.registers import INIT, NOWHERE, READS, RegisterHistory, bits

__all__ = ["check_sequential"]

MAX_STATES = 2_000_000  # search configurations before the verdict is unknown
SHRINK_MAX_OPS = 200  # failures this small are shrunk to a minimal sub-history
_SHRINK_STATES = 20_000
_LIN_SHORTCUT_S = 10.0  # at most this long trying linearizability first


def check_sequential(history: History | Sequence[Operation], *, initial: Any = None,
                     max_states: int = MAX_STATES, timeout_s: float | None = None,
                     ) -> ConsistencyResult:
    """Check sequential consistency; ``unknown`` when the search bound is reached."""
    started = time.monotonic()
    ops = list(history)
    rh = RegisterHistory(ops, initial)
    found, reason = causal_violations(rh)
    if found:
        for v in found:
            v.explanation += "\n  (not causal, hence not sequentially consistent)"
        return finish("sequential", found, time.monotonic() - started, len(ops))
    if reason:
        return finish("sequential", [], time.monotonic() - started, len(ops), reason)
    deadline = None if timeout_s is None else started + timeout_s
    if _linearizable(rh.operations, initial, timeout_s):
        return finish("sequential", [], time.monotonic() - started, len(ops))
    forced = _Forced(rh)
    if forced.saturate() and forced.witness():
        return finish("sequential", [], time.monotonic() - started, len(ops))
    search = _Search(rh, max_states, deadline, forced.extra_pred)
    outcome = False if forced.cyclic else search.run()
    if outcome is None:
        return finish("sequential", [], time.monotonic() - started, len(ops), search.reason)
    if outcome:
        return finish("sequential", [], time.monotonic() - started, len(ops))
    return finish("sequential", [_counterexample(rh, ops, initial, search)],
                  time.monotonic() - started, len(ops))


def _linearizable(ops: list[Operation], initial: Any, timeout_s: float | None) -> bool:
    """Linearizable implies sequentially consistent, and linearizability splits by key:
    a quick, sound shortcut (bounded to a fraction of the budget)."""
    from pnyx.check.linearizability import check_linearizable
    from pnyx.check.models import RegisterModel

    as_reads = [msgspec.structs.replace(op, f="read") if op.f in READS else
                msgspec.structs.replace(op, f="write") for op in ops]
    budget_s = _LIN_SHORTCUT_S if timeout_s is None else min(_LIN_SHORTCUT_S, timeout_s / 4)
    result = check_linearizable(as_reads, RegisterModel(initial=initial), timeout_s=budget_s)
    return result.verdict == "linearizable"


class _Forced:
    """The orders every witness must contain, saturated (as in axiomatic memory models:
    a witness exists iff some write order per key makes ``so | rf | ww | rw`` acyclic).

    Starting from ``so | rf``, two rules add edges until nothing changes: a write w' of x
    before a read r of x that returned w's value is before w (else w' would overwrite it
    first); a read r that returned w's value is before every write of x after w (values
    are unique: once overwritten, w's value never returns). A read of the initial value
    comes before every write of its key. A cycle means no witness exists; otherwise a
    topological order (earliest invocation first) is tried as the witness.
    """

    def __init__(self, rh: RegisterHistory, max_rounds: int = 64) -> None:
        self.rh, self.max_rounds = rh, max_rounds
        co = rh.causal()
        self.succ = [list(s) for s in co.succ]
        self.npred = [len(p) for p in co.pred]
        self.extra_pred: dict[int, list[int]] = {}  # write node -> nodes forced before it
        self.cyclic = bool(co.cycles)
        self.past: list[int] = []

    def _add(self, a: int, b: int) -> None:
        self.succ[a].append(b)
        self.npred[b] += 1
        self.extra_pred.setdefault(b, []).append(a)

    def _order(self) -> list[int] | None:
        n = len(self.succ)
        indeg = list(self.npred)
        call = [a.op.call for a in self.rh.accesses]
        ready = [(call[i], i) for i in range(n) if indeg[i] == 0]
        heapq.heapify(ready)
        order: list[int] = []
        while ready:
            _, node = heapq.heappop(ready)
            order.append(node)
            for b in self.succ[node]:
                indeg[b] -= 1
                if indeg[b] == 0:
                    heapq.heappush(ready, (call[b], b))
        return order if len(order) == n else None

    def _closures(self, order: list[int]) -> tuple[list[int], list[int]]:
        acc = self.rh.accesses
        n = len(acc)
        bit = [1 << a.wbit if a.wbit >= 0 else 0 for a in acc]
        past, future = [0] * n, [0] * n
        for node in order:
            mine = past[node] | bit[node]
            for b in self.succ[node]:
                past[b] |= mine
        for node in reversed(order):
            f = 0
            for b in self.succ[node]:
                f |= future[b] | bit[b]
            future[node] = f
        return past, future

    def saturate(self) -> bool:
        """Add forced edges to a fixpoint; False if they form a cycle (or too many rounds)."""
        if self.cyclic:
            return False
        for _ in range(self.max_rounds):
            order = self._order()
            if order is None:
                self.cyclic = True
                return False
            past, future = self._closures(order)
            self.past = past
            if not self._round(past, future):
                return True
        return False

    def _round(self, past: list[int], future: list[int]) -> bool:
        rh = self.rh
        added = False
        for r in rh.reads:
            km = rh.key_mask.get(r.key, 0)
            if r.src == INIT:
                after = km & ~future[r.node]
            else:
                wbit = rh.accesses[r.src].wbit
                for b in bits(past[r.node] & km & ~(1 << wbit) & ~past[r.src]):
                    self._add(rh.writes[b], r.src)
                    added = True
                after = future[r.src] & km & ~future[r.node]
            for b in bits(after):
                w = rh.writes[b]
                if not past[w] & after:  # only the first ones: the rest follow them
                    self._add(r.node, w)
                    added = True
        return added

    def witness(self) -> bool:
        """Whether the topological order of the forced edges is itself a witness."""
        order = self._order()
        if order is None:
            return False
        cur: dict[Any, int] = {}
        for node in order:
            a = self.rh.accesses[node]
            if a.is_write:
                cur[a.key] = node
            elif a.src != NOWHERE and cur.get(a.key, INIT) != a.src:
                return False
        return True


class _Search:
    """Depth-first search for a sequential witness order; ``run`` gives True/False/None.

    One mutable configuration (positions, current writer per key, reads left per value)
    with an undo trail, so a step costs what it changes, not the history's size.
    """

    def __init__(self, rh: RegisterHistory, max_states: int, deadline: float | None,
                 extra_pred: dict[int, list[int]] | None = None) -> None:
        self.rh, self.max_states, self.deadline = rh, max_states, deadline
        self.extra_pred = extra_pred or {}
        self.procs = [[rh.accesses[n] for n in nodes if rh.accesses[n].src != NOWHERE]
                      for _, nodes in sorted(rh.sessions.items())]
        keys = sorted({a.key for a in rh.accesses}, key=repr)
        self.keys = {k: i for i, k in enumerate(keys)}
        self.where: dict[int, tuple[int, int]] = {}  # node -> (process slot, position)
        for i, proc in enumerate(self.procs):
            for j, a in enumerate(proc):
                self.where[a.node] = (i, j)
        self.left: dict[int, int] = {}  # writer node (init: -1 - key index) -> reads left
        for a in rh.reads:
            slot = self._slot(a)
            self.left[slot] = self.left.get(slot, 0) + 1
        self.pos = [0] * len(self.procs)
        self.cur = [-1 - i for i in range(len(keys))]
        self.trail: list[tuple[int, int, int]] = []  # (what, index, old value) to undo
        self.reason = ""
        self.best: tuple[int, list[int]] = (-1, [])  # most operations placed, positions

    def _slot(self, a: Any) -> int:
        return a.src if a.src != INIT else -1 - self.keys[a.key]

    def run(self) -> bool | None:
        total = sum(len(p) for p in self.procs)
        seen: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
        if self._reads() == total:
            return True
        frames: list[tuple[list[int], list[int]]] = [
            (self._moves(), [0, len(self.trail)])]
        steps = 0
        while frames:
            moves, state = frames[-1]
            self._undo(state[1])
            if state[0] >= len(moves):
                frames.pop()
                continue
            i = moves[state[0]]
            state[0] += 1
            self._write(i)
            if self._reads() == total:
                return True
            key = (tuple(self.pos), tuple(self.cur))
            if key in seen:
                continue
            seen.add(key)
            steps += 1
            if self._out_of_budget(steps):
                return None
            frames.append((self._moves(), [0, len(self.trail)]))
        return False

    def _set(self, what: int, index: int, value: int) -> None:
        arr = self.pos if what == 0 else self.cur
        self.trail.append((what, index, arr[index]))
        arr[index] = value

    def _undo(self, mark: int) -> None:
        while len(self.trail) > mark:
            what, index, old = self.trail.pop()
            if what == 2:
                self.left[index] = old
            else:
                (self.pos if what == 0 else self.cur)[index] = old

    def _write(self, i: int) -> None:
        w = self.procs[i][self.pos[i]]
        self._set(0, i, self.pos[i] + 1)
        self._set(1, self.keys[w.key], w.node)

    def _out_of_budget(self, steps: int) -> bool:
        if steps > self.max_states:
            self.reason = f"more than {self.max_states} search states"
            return True
        if self.deadline is not None and steps % 1024 == 0 and time.monotonic() > self.deadline:
            self.reason = f"time-out after {steps} search states"
            return True
        return False

    def _reads(self) -> int:
        """Take every read whose value is current; the number of operations placed."""
        pos, cur = self.pos, self.cur
        progress = True
        while progress:
            progress = False
            for i, proc in enumerate(self.procs):
                start = pos[i]
                p = start
                while p < len(proc):
                    a = proc[p]
                    slot = self._slot(a) if not a.is_write else 0
                    if a.is_write or cur[self.keys[a.key]] != slot:
                        break
                    self.trail.append((2, slot, self.left[slot]))
                    self.left[slot] -= 1
                    p += 1
                if p != start:
                    self._set(0, i, p)
                    progress = True
        placed = sum(pos)
        if placed > self.best[0]:
            self.best = (placed, list(pos))
        return placed

    def _moves(self) -> list[int]:
        """The processes whose next write may go now, earliest invoked first (real time
        is the likeliest order: a linearizable history is found without backtracking
        when few processes run concurrently)."""
        pos, cur = self.pos, self.cur
        moves: list[tuple[int, int]] = []
        for i, proc in enumerate(self.procs):
            if pos[i] >= len(proc) or not proc[pos[i]].is_write:
                continue
            w = proc[pos[i]]
            if self.left.get(cur[self.keys[w.key]], 0) == 0 and self._preds_done(w.node):
                moves.append((w.op.call, i))
        return [i for _, i in sorted(moves)]

    def _preds_done(self, node: int) -> bool:
        for p in self.extra_pred.get(node, ()):
            i, j = self.where.get(p, (-1, -1))
            if i >= 0 and self.pos[i] <= j:
                return False
        return True

    def stuck(self) -> list[Operation]:
        """The next operation of each process where the search got furthest."""
        _, pos = self.best
        if not pos:  # never searched: the forced orders were already cyclic
            return []
        return [proc[pos[i]].op for i, proc in enumerate(self.procs) if pos[i] < len(proc)]


def _counterexample(rh: RegisterHistory, ops: list[Operation], initial: Any,
                    search: _Search) -> Violation:
    placed, _ = search.best
    core = _shrink(ops, initial) if len(ops) <= SHRINK_MAX_OPS else None
    if core is not None:
        listing = "\n  ".join(op_text(op) for op in core)
        return Violation("not-sequential", (
            f"no total order keeps every process's order with legal reads; a minimal "
            f"failing sub-history ({len(core)} operations, each process in its order):"
            f"\n  {listing}"), core)
    stuck = search.stuck()
    if not stuck:
        return Violation("not-sequential", (
            "the orders every witness must contain (session order, reads-from, and the "
            "write orders they force) form a cycle"), [])
    listing = "\n  ".join(op_text(op) for op in stuck)
    return Violation("not-sequential", (
        f"no total order keeps every process's order with legal reads; the search placed "
        f"at most {placed} of {len(list(rh.accesses))} operations, then none of these could "
        f"come next:\n  {listing}"), stuck)


def _fails(ops: list[Operation], initial: Any) -> bool:
    rh = RegisterHistory(ops, initial)
    found, reason = causal_violations(rh)
    if found:
        return True
    if reason:
        return False
    return _Search(rh, _SHRINK_STATES, None).run() is False


def _shrink(ops: list[Operation], initial: Any) -> list[Operation] | None:
    """Drop reads, or writes with their readers, while the rest still fails (1-minimal)."""
    kept = [op for op in ops if op.outcome != "fail"]
    if not _fails(kept, initial):
        return None
    changed = True
    while changed:
        changed = False
        for op in list(kept):
            if op not in kept:
                continue
            drop = {op.index}
            if op.f in ("write", "put"):
                drop |= {r.index for r in kept if r.f not in ("write", "put")
                         and r.key == op.key and r.output == op.value}
            rest = [o for o in kept if o.index not in drop]
            if rest and _fails(rest, initial):
                kept, changed = rest, True
    return kept
