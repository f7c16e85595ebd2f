"""Convergence (the safety half of strong eventual consistency, Shapiro et al. 2011).

After quiescence (no write in flight, partitions healed, replication finished) every
replica holds the same state. Input: final reads tagged with the replica, operations
``f = "final-read"`` whose invocation ``value`` names the replica (``None``: the process
is the replica) and whose ``ok`` value is what it holds for ``key`` — or, with no key, the
replica's whole state as a map (absent keys then hold the initial value). Other
operations are ignored. ``check_convergence_states`` takes the states directly.

A violation names the key and two replicas that disagree, with the reads showing it.
Cost: linear in the number of final reads.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from pnyx.check.consistency_report import ConsistencyResult, Violation, finish, op_text
from pnyx.check.history import History, Operation

__all__ = ["FINAL_READ", "check_convergence", "check_convergence_states"]

FINAL_READ = "final-read"


def check_convergence(history: History | Sequence[Operation], *,
                      initial: Any = None) -> ConsistencyResult:
    """Check that the replicas' final reads agree, key by key.

    Raises ``ValueError`` when the history has no ``ok`` final read, or a whole-state read
    whose value is not a map.
    """
    started = time.monotonic()
    ops = list(history)
    finals = [op for op in ops if op.f == FINAL_READ and op.outcome == "ok"]
    if not finals:
        raise ValueError("convergence needs final reads: operations f='final-read' with "
                         "the replica as invocation value, taken after quiescence; found none")
    seen: dict[Any, dict[Any, tuple[Any, Operation]]] = {}  # key -> replica -> value, op
    whole: list[tuple[Any, Operation]] = []
    for op in finals:
        replica = op.process if op.value is None else op.value
        if op.key is None:
            whole.append((replica, op))
            for k, v in _as_items(op):
                seen.setdefault(k, {})[replica] = (v, op)
        else:
            seen.setdefault(op.key, {})[replica] = (op.output, op)
    for by_replica in seen.values():
        for replica, op in whole:
            by_replica.setdefault(replica, (initial, op))
    found = [v for k in sorted(seen, key=repr) if (v := _divergent(k, seen[k])) is not None]
    return finish("convergent", found, time.monotonic() - started, len(ops))


def check_convergence_states(states: Mapping[Any, Mapping[Any, Any]], *,
                             initial: Any = None) -> ConsistencyResult:
    """Check final replica states given directly: ``{replica: {key: value}}``."""
    started = time.monotonic()
    keys = sorted({k for state in states.values() for k in state}, key=repr)
    found: list[Violation] = []
    for k in keys:
        values = {r: state.get(k, initial) for r, state in states.items()}
        groups = _groups(values)
        if len(groups) > 1:
            (r1, v1), (r2, v2) = groups[0], groups[1]
            found.append(Violation("divergent", (
                f"key {k!r}: replica {r1!r} holds {v1!r} but replica {r2!r} holds {v2!r}"
                f" ({len(groups)} distinct values over {len(values)} replicas)")))
    return finish("convergent", found, time.monotonic() - started, len(states))


def _as_items(op: Operation) -> list[tuple[Any, Any]]:
    state = op.output
    if isinstance(state, dict):
        return list(state.items())
    if isinstance(state, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in state):
        return list(state)  # a map, as History freezes it: sorted (key, value) pairs
    raise ValueError(f"{op_text(op)}: a final read without a key must return the whole "
                     f"state as a map; got {state!r}")


def _groups(values: Mapping[Any, Any]) -> list[tuple[Any, Any]]:
    """One (replica, value) per distinct value, replicas in sorted order."""
    out: list[tuple[Any, Any]] = []
    for replica in sorted(values, key=repr):
        v = values[replica]
        if all(v != seen for _, seen in out):
            out.append((replica, v))
    return out


def _divergent(key: Any, by_replica: dict[Any, tuple[Any, Operation]]) -> Violation | None:
    groups = _groups({r: v for r, (v, _) in by_replica.items()})
    if len(groups) < 2:
        return None
    (r1, v1), (r2, v2) = groups[0], groups[1]
    op1, op2 = by_replica[r1][1], by_replica[r2][1]
    return Violation("divergent", (
        f"key {key!r}: replica {r1!r} holds {v1!r} ({op_text(op1)}) but replica {r2!r} "
        f"holds {v2!r} ({op_text(op2)}); {len(groups)} distinct values over "
        f"{len(by_replica)} replicas"), [op1, op2])
