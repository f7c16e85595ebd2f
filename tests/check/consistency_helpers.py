"""Builders and brute-force oracles shared by the consistency checker tests."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import Any

import msgspec

from pnyx.check.history import History, Operation
from tests.check.helpers import hist

Event = tuple[Any, ...]


def w(p: int, k: str, v: Any) -> list[Event]:
    """A completed write of ``v`` to key ``k`` by process ``p``."""
    return [(p, "invoke", "write", v, k), (p, "ok", "write", v, k)]


def r(p: int, k: str, v: Any) -> list[Event]:
    """A completed read of key ``k`` by process ``p`` returning ``v``."""
    return [(p, "invoke", "read", None, k), (p, "ok", "read", v, k)]


def final(p: int, replica: str, k: str, v: Any) -> list[Event]:
    """A final read of key ``k`` at ``replica`` (by process ``p``) returning ``v``."""
    return [(p, "invoke", "final-read", replica, k), (p, "ok", "final-read", v, k)]


def seq(*ops: list[Event]) -> History:
    """A history of operations one after the other, in the order given."""
    return hist(*[e for op in ops for e in op])


def perturb_reads(history: History, seed: int, count: int = 1) -> History:
    """``count`` reads made to return another value of their key (or the initial one)."""
    rng = random.Random(seed)
    ops = list(history.operations)
    values: dict[Any, list[Any]] = {}
    for op in ops:
        if op.f == "write":
            values.setdefault(op.key, []).append(op.value)
    reads = [i for i, op in enumerate(ops) if op.f == "read"]
    for i in rng.sample(reads, min(count, len(reads))):
        choice = rng.choice([None, *values.get(ops[i].key, [])])
        ops[i] = msgspec.structs.replace(ops[i], output=choice)
    return History.from_events(History(ops).to_events())


def _sessions(ops: Sequence[Operation]) -> dict[int, list[Operation]]:
    out: dict[int, list[Operation]] = {}
    for op in sorted(ops, key=lambda o: o.call):
        out.setdefault(op.process, []).append(op)
    return out


def brute_sequential(ops: Sequence[Operation]) -> bool:
    """Is there an interleaving of the processes in which every read returns the latest
    write of its key (None initially)? Exhaustive search with a memo of failed states."""
    procs = list(_sessions([o for o in ops if o.outcome == "ok"]).values())
    dead: set[tuple[tuple[int, ...], tuple[tuple[Any, Any], ...]]] = set()

    def go(pos: tuple[int, ...], mem: dict[Any, Any]) -> bool:
        if all(p == len(s) for p, s in zip(pos, procs, strict=True)):
            return True
        state = (pos, tuple(sorted(mem.items())))
        if state in dead:
            return False
        for i, s in enumerate(procs):
            if pos[i] == len(s):
                continue
            op = s[pos[i]]
            nxt = (*pos[:i], pos[i] + 1, *pos[i + 1:])
            if op.f == "write" and go(nxt, {**mem, op.key: op.value}):
                return True
            if op.f == "read" and mem.get(op.key) == op.output and go(nxt, mem):
                return True
        dead.add(state)
        return False

    return go(tuple(0 for _ in procs), {})


def brute_causal_memory(ops: Sequence[Operation]) -> bool:
    """Causal memory (Ahamad et al.) by its definition: for each process p, some order of
    p's operations and the writes causally before them, extending causal order
    ``(so | rf)+``, in which every read of p returns the latest write (None initially)."""
    live = [o for o in ops if o.outcome == "ok"]
    writer = {(o.key, o.value): o.index for o in live if o.f == "write"}
    before: dict[int, set[int]] = {o.index: set() for o in live}
    for s in _sessions(live).values():
        for a, b in itertools.pairwise(s):
            before[b.index].add(a.index)
    for o in live:
        if o.f == "read" and o.output is not None:
            if (o.key, o.output) not in writer:
                return False
            before[o.index].add(writer[(o.key, o.output)])
    closed = _transitive(before)
    if any(i in closed[i] for i in closed):
        return False
    by_index = {o.index: o for o in live}
    for s in _sessions(live).values():
        mine = {o.index for o in s}
        scope = mine | {j for i in mine for j in closed[i] if by_index[j].f == "write"}
        if not _serializable_view(scope, closed, by_index):
            return False
    return True


def _transitive(before: dict[int, set[int]]) -> dict[int, set[int]]:
    closed = {i: set(b) for i, b in before.items()}
    changed = True
    while changed:
        changed = False
        for i in closed:
            extra = set().union(*(closed[j] for j in closed[i])) - closed[i]
            if extra:
                closed[i] |= extra
                changed = True
    return closed


def _serializable_view(scope: set[int], closed: dict[int, set[int]],
                       by_index: dict[int, Operation]) -> bool:
    dead: set[tuple[frozenset[int], tuple[tuple[Any, Any], ...]]] = set()

    def go(done: frozenset[int], mem: dict[Any, Any]) -> bool:
        if len(done) == len(scope):
            return True
        state = (done, tuple(sorted(mem.items())))
        if state in dead:
            return False
        for i in sorted(scope - done):
            if not (closed[i] & scope) <= done:
                continue
            op = by_index[i]
            if op.f == "write" and go(done | {i}, {**mem, op.key: op.value}):
                return True
            if op.f == "read" and mem.get(op.key) == op.output and go(done | {i}, mem):
                return True
        dead.add(state)
        return False

    return go(frozenset(), {})
