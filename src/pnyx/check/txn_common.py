"""Shared pieces of the Elle-style transaction checkers: anomalies, micro-ops, session orders.

``process_pairs`` and ``realtime_pairs`` give the orders the checker may add as graph edges
(``process``: strong session serializability; ``realtime``: strict serializability). The
rw-register inference also uses them, per key, to order versions when those flags are on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pnyx.check.graph import Edge
from pnyx.check.history import Operation

Mop = tuple[Any, Any, Any]


@dataclass
class Anomaly:
    """One anomaly: its class name, a text explanation and the cycle (if it is one)."""

    name: str
    explanation: str
    cycle: list[Edge] = field(default_factory=list)


def mops(op: Operation) -> tuple[Mop, ...]:
    """The micro-operations: with read results for ``ok``, as invoked otherwise."""
    value = op.output if op.outcome == "ok" and op.output is not None else op.value
    return tuple(value or ())


def tname(op: Operation) -> str:
    """``T<index>``: how reports name a transaction."""
    return f"T{op.index}"


def process_pairs(txns: Iterable[Operation]) -> Iterator[tuple[Operation, Operation]]:
    """``(T1, T2)``: T2 ran on T1's process after T1 completed ``ok`` (nearest such T1).

    Failed transactions are skipped; an ``info`` transaction may take effect any time after
    its invocation, so it is ordered after its predecessor but never before a successor.
    """
    last_ok: dict[int, Operation] = {}
    for op in sorted(txns, key=lambda o: o.call):
        if op.outcome == "fail":
            continue
        prev = last_ok.get(op.process)
        if prev is not None:
            yield prev, op
        if op.outcome == "ok":
            last_ok[op.process] = op


def realtime_pairs(txns: Iterable[Operation]) -> Iterator[tuple[Operation, Operation]]:
    """``(T1, T2)``: T1 completed ``ok`` before T2 was invoked (a transitive reduction).

    A completed transaction leaves the frontier once another one invoked after its end has
    completed: the order it gives is then implied by a path through that one.
    """
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
                yield done, op
        else:
            frontier = [d for d in frontier if not (d.ret is not None and d.ret < op.call)]
            frontier.append(op)
