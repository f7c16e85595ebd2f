"""Wing-Gong linearizability search with Lowe's memoisation, per partition, with a budget.

The search keeps ``ok`` operations in a time-ordered linked list of call/return entries
(Wing & Gong); a call entry before the first return entry may be linearized next. Visited
configurations ``(linearized set, state)`` are memoised (Lowe) with the linearized set as an
int bitset and states interned to ints. ``info`` operations have no return entry: they may be
linearized at any point after their invocation or never, and are tried only after the
``ok`` candidates. A configuration that has linearized a *superset* of optional ``info``
operations of an already visited one (same ``ok`` set, same state) is pruned: it can do
nothing the visited one could not.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from pnyx.check.history import History, Operation
from pnyx.check.models import Model

Verdict = Literal["linearizable", "not-linearizable", "unknown"]
_CHECK_EVERY_STEPS = 2048
_PARALLEL_MIN_OPS = 2000


@dataclass
class PartitionResult:
    """The verdict on one independent sub-history, with a counterexample when it fails.

    ``prefix`` is the longest linearization found (in linearization order) and
    ``prefix_states`` the described state after each of its operations; ``unplaced`` are the
    operations that had to take effect next but could not, in the state after ``prefix``.
    """

    key: Any
    verdict: Verdict
    operations: list[Operation]
    steps: int = 0
    prefix: list[Operation] = field(default_factory=list)
    prefix_states: list[str] = field(default_factory=list)
    unplaced: list[Operation] = field(default_factory=list)
    final_state: str = ""
    fail_time: int | None = None


@dataclass
class LinearizabilityResult:
    """The verdict on a whole history: ``linearizable``, ``not-linearizable`` or ``unknown``."""

    verdict: Verdict
    partitions: list[PartitionResult]
    elapsed_s: float
    model: str

    @property
    def ok(self) -> bool:
        """True when the history is linearizable."""
        return self.verdict == "linearizable"

    @property
    def steps(self) -> int:
        """Search steps over all partitions."""
        return sum(p.steps for p in self.partitions)

    @property
    def failures(self) -> list[PartitionResult]:
        """The partitions that are not linearizable."""
        return [p for p in self.partitions if p.verdict == "not-linearizable"]

    def explain(self) -> str:
        """A text counterexample (empty when linearizable)."""
        from pnyx.check.report import explain_text

        return explain_text(self)


def check_linearizable(
    history: History | Sequence[Operation],
    model: Model[Any],
    *,
    partition: bool = True,
    timeout_s: float | None = None,
    max_steps: int | None = None,
    workers: int = 1,
) -> LinearizabilityResult:
    """Check ``history`` against ``model``.

    ``partition`` splits the history with ``model.partition`` (P-compositionality) and checks
    the parts independently, in ``workers`` processes when there is enough work; without it,
    ``model.unpartitioned()`` checks everything at once. After ``timeout_s`` seconds or
    ``max_steps`` search steps per partition the verdict is ``unknown``, never a guess.
    """
    started = time.monotonic()
    ops = [op for op in history if op.outcome != "fail"]
    if partition:
        parts, part_model = model.partition(ops), model
    else:
        parts, part_model = [ops], model.unpartitioned()
    parts = [p for p in parts if p]
    deadline = None if timeout_s is None else started + timeout_s
    if workers > 1 and len(parts) > 1 and len(ops) >= _PARALLEL_MIN_OPS:
        results = _check_parallel(parts, part_model, deadline, max_steps, workers)
    else:
        results = [check_partition(p, part_model, deadline, max_steps) for p in parts]
    return LinearizabilityResult(_combine(results), results, time.monotonic() - started,
                                 model.name)


def _combine(results: Sequence[PartitionResult]) -> Verdict:
    verdicts = {r.verdict for r in results}
    if "not-linearizable" in verdicts:
        return "not-linearizable"
    return "unknown" if "unknown" in verdicts else "linearizable"


def _check_parallel(parts: list[list[Operation]], model: Model[Any], deadline: float | None,
                    max_steps: int | None, workers: int) -> list[PartitionResult]:
    order = sorted(range(len(parts)), key=lambda i: -len(parts[i]))
    out: list[PartitionResult | None] = [None] * len(parts)
    with ProcessPoolExecutor(max_workers=min(workers, len(parts))) as pool:
        futures = {i: pool.submit(check_partition, parts[i], model, deadline, max_steps)
                   for i in order}
        for i, fut in futures.items():
            out[i] = fut.result()
    return [r for r in out if r is not None]


def check_partition(ops: Sequence[Operation], model: Model[Any], deadline: float | None = None,
                    max_steps: int | None = None) -> PartitionResult:
    """Check one sub-history (no ``fail`` operations) against ``model`` without splitting."""
    keys = {op.key for op in ops}
    key = next(iter(keys)) if len(keys) == 1 else None
    search = _Search(list(ops), model)
    verdict = search.run(deadline, max_steps)
    result = PartitionResult(key, verdict, list(ops), search.steps)
    if verdict == "not-linearizable":
        search.fill_counterexample(result)
    return result


class _States:
    """Interns model states to small ints (by hash, or by ``model.equal`` if overridden)."""

    def __init__(self, model: Model[Any]) -> None:
        self.model = model
        self.by_value: dict[Any, int] = {}
        self.values: list[Any] = []
        self.custom_equal = type(model).equal is not Model.equal

    def intern(self, state: Any) -> int:
        if self.custom_equal:
            for sid, other in enumerate(self.values):
                if self.model.equal(other, state):
                    return sid
        else:
            known = self.by_value.get(state)
            if known is not None:
                return known
            self.by_value[state] = len(self.values)
        self.values.append(state)
        return len(self.values) - 1


class _Search:
    """One Wing-Gong/Lowe search over the ``ok`` and ``info`` operations of a partition."""

    def __init__(self, ops: list[Operation], model: Model[Any]) -> None:
        self.model = model
        self.oks = sorted((op for op in ops if op.outcome == "ok"), key=lambda o: o.call)
        self.infos = sorted((op for op in ops if op.outcome == "info"), key=lambda o: o.call)
        self.states = _States(model)
        self.init_sid = self.states.intern(model.init())
        self.steps = 0
        self.best: list[int] = []  # longest linearization: i (ok op) or ~j (info op)

    def _entries(self) -> tuple[list[int], list[int], list[int]]:
        """Linked list over entries 2i (call of ok op i) and 2i+1 (its return); head = 2n."""
        n = len(self.oks)
        events = []
        for i, op in enumerate(self.oks):
            assert op.ret is not None and op.ret > op.call, op
            events.append((op.call, 2 * i))
            events.append((op.ret, 2 * i + 1))
        events.sort()
        nxt, prv, when = [-1] * (2 * n + 1), [-1] * (2 * n + 1), [0] * (2 * n + 1)
        last = 2 * n
        for t, e in events:
            nxt[last], prv[e], when[e] = e, last, t
            last = e
        return nxt, prv, when

    def _step(self, op: Operation, sid: int) -> int:
        ok, new = self.model.step(self.states.values[sid], op)
        return self.states.intern(new) if ok else -1

    def run(self, deadline: float | None, max_steps: int | None) -> Verdict:
        """Depth-first search; returns the verdict and leaves ``best`` set."""
        limit = max_steps if max_steps is not None else -1
        if self.infos:
            return self._run_info(deadline, limit)
        return self._run_plain(deadline, limit)

    def _out_of_budget(self, deadline: float | None, limit: int, steps: int) -> bool:
        self.steps = steps
        return (deadline is not None and time.monotonic() > deadline) or 0 <= limit <= steps

    def _run_plain(self, deadline: float | None, limit: int) -> Verdict:
        """The search without ``info`` operations: memo is a set of bitsets per state.

        One long function on purpose: this is the hot loop, written for CPython speed.
        """
        oks = self.oks
        n = len(oks)
        nxt, prv, _ = self._entries()
        head = 2 * n
        trans: list[dict[int, int]] = [{} for _ in range(n)]
        step = self._step
        sid = self.init_sid
        lin = 0
        memo: list[set[int]] = [{0}]
        stack: list[tuple[int, int]] = []
        depth = best_len = 0
        remaining = n
        entry = nxt[head]
        steps = 0
        next_check = _CHECK_EVERY_STEPS
        while remaining:
            steps += 1
            if steps >= next_check:
                next_check += _CHECK_EVERY_STEPS
                if self._out_of_budget(deadline, limit, steps):
                    return "unknown"
            if not entry & 1:
                t = trans[entry >> 1]
                ns = t.get(sid)
                if ns is None:
                    ns = t[sid] = step(oks[entry >> 1], sid)
                    while len(memo) <= ns:
                        memo.append(set())
                if ns >= 0:
                    nl = lin | (1 << (entry >> 1))
                    seen = memo[ns]
                    if nl not in seen:
                        seen.add(nl)
                        stack.append((entry, sid))
                        depth += 1
                        if depth > best_len:
                            best_len = depth
                            self.best = [e >> 1 for e, _ in stack]
                        lin, sid = nl, ns
                        a, b = prv[entry], nxt[entry]
                        nxt[a] = b
                        if b >= 0:
                            prv[b] = a
                        entry += 1
                        a, b = prv[entry], nxt[entry]
                        nxt[a] = b
                        if b >= 0:
                            prv[b] = a
                        remaining -= 1
                        entry = nxt[head]
                        continue
                entry = nxt[entry]
                continue
            if not stack:
                self.steps = steps
                return "not-linearizable"
            entry, sid = stack.pop()
            depth -= 1
            lin &= ~(1 << (entry >> 1))
            r = entry + 1
            a, b = prv[r], nxt[r]
            nxt[a] = r
            if b >= 0:
                prv[b] = r
            a, b = prv[entry], nxt[entry]
            nxt[a] = entry
            if b >= 0:
                prv[b] = entry
            remaining += 1
            entry = nxt[entry]
        self.steps = steps
        return "linearizable"

    def _run_info(self, deadline: float | None, limit: int) -> Verdict:
        """The search with optional ``info`` operations (see the module docstring).

        The memo maps, per state, an ok-bitset to the info-bitsets visited with it; a new
        configuration is pruned when a visited one used a subset of its info operations.
        One long function on purpose: this is the hot loop, written for CPython speed.
        """
        oks, infos = self.oks, self.infos
        n, ni = len(oks), len(infos)
        nxt, prv, when = self._entries()
        head = 2 * n
        icall = [op.call for op in infos]
        trans: list[dict[int, int]] = [{} for _ in range(n)]
        itrans: list[dict[int, int]] = [{} for _ in range(ni)]
        step = self._step
        sid = self.init_sid
        lin = opt = 0  # bitsets of linearized ok ops / info ops
        memo: list[dict[int, list[int]]] = [{0: [0]}]
        stack: list[tuple[int, int, int]] = []  # (call entry or ~info, previous sid, resume)
        depth = best_len = 0
        remaining = n
        entry = nxt[head]
        j = -1  # position in the info scan, while entry is a return
        steps = 0
        next_check = _CHECK_EVERY_STEPS
        while remaining:
            steps += 1
            if steps >= next_check:
                next_check += _CHECK_EVERY_STEPS
                if self._out_of_budget(deadline, limit, steps):
                    return "unknown"
            if not entry & 1:  # a call entry: try ok op entry>>1 next
                t = trans[entry >> 1]
                ns = t.get(sid)
                if ns is None:
                    ns = t[sid] = step(oks[entry >> 1], sid)
                    while len(memo) <= ns:
                        memo.append({})
                if ns >= 0:
                    nl = lin | (1 << (entry >> 1))
                    by_lin = memo[ns]
                    seen = by_lin.get(nl)
                    if seen is None:
                        by_lin[nl] = [opt]
                    else:
                        for x in seen:
                            if not x & ~opt:
                                break
                        else:
                            seen.append(opt)
                            x = -1
                        if x >= 0:  # dominated by a visited configuration
                            entry = nxt[entry]
                            continue
                    stack.append((entry, sid, 0))
                    depth += 1
                    if depth > best_len:
                        best_len = depth
                        self.best = [e >> 1 if e >= 0 else e for e, _, _ in stack]
                    lin, sid = nl, ns
                    a, b = prv[entry], nxt[entry]
                    nxt[a] = b
                    if b >= 0:
                        prv[b] = a
                    entry += 1
                    a, b = prv[entry], nxt[entry]
                    nxt[a] = b
                    if b >= 0:
                        prv[b] = a
                    remaining -= 1
                    entry = nxt[head]
                    continue
                entry = nxt[entry]
                continue
            # a return entry: the ok candidates are exhausted; try optional info ops
            bound = when[entry]
            j += 1
            while j < ni and icall[j] < bound:
                if not (opt >> j) & 1:
                    t = itrans[j]
                    ns = t.get(sid)
                    if ns is None:
                        ns = t[sid] = step(infos[j], sid)
                        while len(memo) <= ns:
                            memo.append({})
                    if ns >= 0:
                        no = opt | (1 << j)
                        by_lin = memo[ns]
                        seen = by_lin.get(lin)
                        if seen is None:
                            by_lin[lin] = [no]
                            break
                        for x in seen:
                            if not x & ~no:
                                break
                        else:
                            seen.append(no)
                            break
                j += 1
            if j < ni and icall[j] < bound:  # info op j taken
                stack.append((~j, sid, entry))
                depth += 1
                if depth > best_len:
                    best_len = depth
                    self.best = [e >> 1 if e >= 0 else e for e, _, _ in stack]
                opt |= 1 << j
                sid = itrans[j][sid]
                entry = nxt[head]
                j = -1
                continue
            if not stack:
                self.steps = steps
                return "not-linearizable"
            e, sid, resume = stack.pop()
            depth -= 1
            if e < 0:  # undo an info op; resume the info scan after it
                j = ~e
                opt &= ~(1 << j)
                entry = resume
                continue
            lin &= ~(1 << (e >> 1))
            r = e + 1
            a, b = prv[r], nxt[r]
            nxt[a] = r
            if b >= 0:
                prv[b] = r
            a, b = prv[e], nxt[e]
            nxt[a] = e
            if b >= 0:
                prv[b] = e
            remaining += 1
            entry = nxt[e]
            j = -1
        self.steps = steps
        return "linearizable"

    def fill_counterexample(self, result: PartitionResult) -> None:
        """Replay the longest linearization; find the operations that could not come next."""
        model, sid = self.model, self.init_sid
        prefix: list[Operation] = []
        for k in self.best:
            op = self.oks[k] if k >= 0 else self.infos[~k]
            sid = self._step(op, sid)
            assert sid >= 0, "a recorded linearization must replay"
            prefix.append(op)
            result.prefix_states.append(model.describe_state(self.states.values[sid]))
        result.prefix = prefix
        result.final_state = model.describe_state(self.states.values[sid])
        done = {op.index for op in prefix}
        pending = [op for op in self.oks if op.index not in done]
        if not pending:
            return
        blocking = min(pending, key=lambda o: o.ret if o.ret is not None else 0)
        result.fail_time = blocking.ret
        bound = blocking.ret if blocking.ret is not None else 0
        candidates = [op for op in pending if op.call < bound]
        stuck = [op for op in candidates if self._step(op, sid) < 0]
        result.unplaced = [blocking] + [op for op in stuck if op is not blocking]
