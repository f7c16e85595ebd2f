"""Shrinking: reduce a failing fault schedule to a minimal one that still fails.

Greedy reduction to a fixpoint, each candidate checked by a full re-run: fewer nodes,
fewer clients, whole fault kinds removed, single fault events removed, a shorter fault
phase.  A candidate is kept when it still violates the same property.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from pnyx.sim.runner import SimConfig, SimResult, run_sim
from pnyx.sim.schedule import FaultEvent, Schedule
from pnyx.sim.spec import ProtocolDef

MIN_FAULT_MS = 100
"""Shortest fault phase the shrinker tries."""


@dataclass(frozen=True)
class ShrinkOutcome:
    """The minimal failing schedule found, its run, and how much work it took."""

    schedule: Schedule
    result: SimResult
    runs: int
    steps: int


def shrink(
    spec: ProtocolDef,
    config: SimConfig,
    failing: SimResult,
    *,
    max_runs: int = 300,
    on_step: Callable[[Schedule, int], None] | None = None,
) -> ShrinkOutcome:
    """Shrink ``failing`` (a result of ``config``) to a minimal schedule that still fails."""
    assert failing.violation is not None, "only a failing run can be shrunk"
    prop = failing.violation.prop
    best, best_result = failing.schedule, failing
    runs = steps = 0
    improved = True
    while improved and runs < max_runs:
        improved = False
        for candidate in _candidates(best):
            if runs >= max_runs:
                break
            runs += 1
            result = run_sim(
                spec, replace(config, schedule=candidate, trace=False, hash_trace=False)
            )
            if result.violation is not None and result.violation.prop == prop:
                best, best_result = candidate, result
                steps += 1
                improved = True
                if on_step is not None:
                    on_step(best, runs)
                break
    # A kind listed but never exercised (e.g. ``torn`` with no crash left) changes nothing.
    best = replace(best, faults=best.kinds_used())
    return ShrinkOutcome(best, best_result, runs, steps)


def _candidates(s: Schedule) -> Iterator[Schedule]:
    """Smaller schedules, the most aggressive first."""
    for nodes in range(1, s.nodes):
        yield _with_nodes(s, nodes)
    for clients in range(1, s.clients):
        yield replace(s, clients=clients)
    for kind in sorted(s.kinds_used()):
        yield _without_kind(s, kind)
    for index in range(len(s.events)):
        yield s.without_event(index)
    if s.fault_ms // 2 >= MIN_FAULT_MS:
        yield _shorter(s, s.fault_ms // 2)


def _with_nodes(s: Schedule, nodes: int) -> Schedule:
    events: list[FaultEvent] = []
    for e in s.events:
        if e.target == "leader":
            events.append(replace(e, node=min(e.node, nodes)))
        elif e.kind == "partition":
            links = tuple((a, b) for a, b in e.links if a <= nodes and b <= nodes)
            if links:
                events.append(replace(e, links=links))
        elif e.node <= nodes:
            events.append(e)
    return replace(s, nodes=nodes, drift=s.drift[:nodes], events=tuple(events))


def _without_kind(s: Schedule, kind: str) -> Schedule:
    net = s.network
    faults = s.faults - {kind}
    if kind == "drop":
        return replace(s, faults=faults, network=replace(net, drop_p=0.0))
    if kind == "duplicate":
        return replace(s, faults=faults, network=replace(net, duplicate_p=0.0))
    if kind == "delay":
        return replace(s, faults=faults, network=replace(net, delay_p=0.0, delay_max_us=0))
    if kind == "reorder":
        return replace(s, faults=faults, network=replace(net, reorder=False))
    if kind == "skew":
        return replace(s, faults=faults, drift=())
    if kind == "torn":
        return replace(s, faults=faults)
    events = tuple(e for e in s.events if e.kind != kind)
    if kind == "crash":
        faults = faults - {"torn"}
    return replace(s, faults=faults, events=events)


def _shorter(s: Schedule, fault_ms: int) -> Schedule:
    limit_us = fault_ms * 1000
    events = tuple(
        replace(e, end_us=min(e.end_us, limit_us)) for e in s.events if e.start_us < limit_us
    )
    return replace(s, fault_ms=fault_ms, events=events)
