"""Which consistency models each replication scheme gives, measured in the simulator.

For each scheme and configuration (:data:`SCHEMES`: primary-backup, chain, CRAQ, Dynamo
with R+W>N and R+W<=N, sloppy quorums and read repair on or off) a seed is run three
times:

1. **with faults** (the scheme's usual ``--faults``): the client history is checked
   against every model of :data:`MODELS` (linearizability with
   :func:`pnyx.check.linearizability.check_linearizable`, the others with
   :func:`pnyx.check.consistency.check_consistency`; convergence on the replicas' states
   after the heal phase, read from the simulation as ``final-read`` operations), and the
   spec's own monitor verdict (lost writes, liveness, ...) is kept;
2. **without faults**: read and write latency in ticks (the PACELC "else latency");
3. **under one partition** that cuts a minority of nodes, with half of the clients on each
   side, for most of the fault phase: the share of operations invoked during the cut that
   succeed before it heals, per side (availability: the CAP trade-off).

:func:`run_matrix` runs seeds (optionally in worker processes), :class:`Matrix` aggregates
them: for each scheme and model, on how many seeds it held, was violated (with the first
violating seed) or could not be decided (``unknown``, never counted as held).
:func:`render_table` and :func:`render_tradeoffs` write Markdown, :func:`write_doc` puts
them between marker comments of docs/CONSISTENCY.md, :func:`plot` draws PNGs.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import signal
import statistics
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pnyx.catalog import get_protocol
from pnyx.core import CLIENT_ID_BASE, Apply, HistoryEvent, Node, Restore
from pnyx.sim.runner import SimConfig, SimResult, Simulation
from pnyx.sim.schedule import FaultEvent, Schedule, parse_faults, split
from pnyx.sim.spec import Monitor, ProtocolDef, Violation, World

MODELS: tuple[str, ...] = (
    "linearizable",
    "sequential",
    "causal",
    "read-your-writes",
    "monotonic-reads",
    "monotonic-writes",
    "writes-follow-reads",
    "convergent",
)
"""The models every history is checked against, strongest first."""

CHECK_TIMEOUT_S = 20.0
"""Budget of one checker on one history; past it the verdict is ``unknown``."""
FINAL_READ_PROCESS = 1_000_000_000
"""Process ids of the final reads: this plus the replica's id."""
PARTITION_START_US = 500_000
"""When the availability partition starts (after a warm-up); it lasts to the fault
phase's end."""
AVAILABILITY_CLIENTS = 4
"""Clients of the availability runs: the first half on the majority side."""
MIN_PLOTTED_TICKS = 0.01
"""Floor of a plotted latency (log scale)."""
CONVERGE_WAIT_US = 3_000_000
"""After the spec's own liveness is reached in the heal phase, how long (virtual) the run
goes on while the replicas still differ, before the final reads are taken anyway."""
NOT_CONVERGED = "replicas not converged: "
SESSION_STRIDE = 1_000_000
"""Later sessions of a process (after an ``info`` operation): ``process + stride * n``."""

HELD, VIOLATED, UNKNOWN = "held", "violated", "unknown"

StateReader = Callable[[World, Any], dict[int, dict[str, Any]]]
"""Reads every live replica's state, ``{replica: {key: value}}``, from a simulation."""


@dataclass(frozen=True)
class Scheme:
    """One row of the table: a simulator spec, its faults and its KV's initial value."""

    key: str
    label: str
    spec: str
    faults: str
    initial: Any
    minority: tuple[int, ...]
    """Nodes on the minority side of the availability partition."""
    kind: str
    """``chain``, ``primary-backup`` or ``dynamo``: how final replica states are read."""
    note: str = ""


SCHEMES: tuple[Scheme, ...] = (
    Scheme("primary-backup", "primary-backup", "primary-backup-register", "all", "", (4,),
           "primary-backup", "node 1 is the view manager; the replicas read at the end are "
           "the view's primary and backup that installed the view (when the primary of a "
           "view not yet acknowledged crashed, the service stops by design and that primary "
           "holds nothing); with no live manager the verdict is unknown"),
    Scheme("chain", "chain", "chain-register", "all,slow", "", (3,), "chain",
           "node 4 is the configuration master; it is never crashed, paused or cut off on "
           "purpose (it stands in for a fault-tolerant configuration service)"),
    Scheme("craq", "CRAQ", "craq-register", "all,slow", "", (3,), "chain",
           "as chain; reads at any replica"),
    Scheme("craq-broken", "CRAQ serving dirty versions (control)", "craq-register-broken",
           "all,slow", "", (3,), "chain", "deliberately broken: must fail linearizable"),
    Scheme("dynamo", "Dynamo N=3 R=2 W=2 (R+W>N)", "dynamo", "all", None, (4, 5), "dynamo"),
    Scheme("dynamo-r1w3", "Dynamo N=3 R=1 W=3 (R+W>N)", "dynamo-r1w3", "all", None, (4, 5),
           "dynamo"),
    Scheme("dynamo-weak", "Dynamo N=3 R=1 W=1 (R+W<=N)", "dynamo-weak", "all", None, (4, 5),
           "dynamo"),
    Scheme("dynamo-weak-norepair", "Dynamo R=1 W=1, no read repair", "dynamo-weak-norepair",
           "all", None, (4, 5), "dynamo"),
    Scheme("dynamo-sloppy", "Dynamo R=2 W=2, sloppy quorum", "dynamo-sloppy", "all", None,
           (4, 5), "dynamo"),
    Scheme("dynamo-sloppy-norepair", "Dynamo R=2 W=2, sloppy quorum, no read repair",
           "dynamo-sloppy-norepair", "all", None, (4, 5), "dynamo"),
    Scheme("dynamo-norepair-noae", "Dynamo R=2 W=2, no read repair, no anti-entropy",
           "dynamo-norepair-noae", "all", None, (4, 5), "dynamo",
           "replicas that miss a write are never repaired: the monitor reports liveness"),
)
"""Every row of the table, in order."""


def scheme(key: str) -> Scheme:
    """The scheme named ``key``; ValueError naming the valid ones otherwise."""
    for item in SCHEMES:
        if item.key == key:
            return item
    raise ValueError(f"unknown scheme {key!r}; valid: {', '.join(s.key for s in SCHEMES)}")


# -- one seed --------------------------------------------------------------------------------


@dataclass
class SeedOutcome:
    """What one seed of one scheme showed (small and picklable)."""

    scheme: str
    seed: int
    monitor: str
    """``held``, ``unknown`` or the violated property's name."""
    verdicts: dict[str, str]
    """model -> ``held`` / ``violated`` / ``unknown``."""
    details: dict[str, str] = field(default_factory=dict)
    """model -> the first lines of the counterexample (or why it is unknown)."""
    latency_ticks: dict[str, list[float]] = field(default_factory=dict)
    """``get``/``put`` (no faults) and ``get-faults``/``put-faults`` -> ok latencies."""
    availability: dict[str, tuple[int, int]] = field(default_factory=dict)
    """``majority``/``minority`` -> (ops that succeeded during the cut, ops invoked)."""
    operations: int = 0


def run_seed(key: str, seed: int, models: Sequence[str] = MODELS, *,
             faults: str | None = None, tradeoffs: bool = True) -> SeedOutcome:
    """Run ``seed`` of scheme ``key`` with faults (the scheme's, or ``faults``) and check
    its history against ``models``; with ``tradeoffs`` also run it without faults
    (latency) and under the availability partition."""
    item = scheme(key)
    spec = get_protocol(item.spec)
    waiting = quiescent(spec, item)
    sim = Simulation(waiting, SimConfig(seed=seed, faults=parse_faults(faults or item.faults)))
    result = sim.run()
    outcome = SeedOutcome(key, seed, _monitor_verdict(result), {})
    outcome.operations = sum(1 for e in result.history if e.type == "invoke")
    finals = final_reads(item, sim, result.history)
    history = split_sessions(result.history)
    for model in models:
        verdict, detail = check_model(history, finals, model, item.initial)
        outcome.verdicts[model] = verdict
        if detail:
            outcome.details[model] = detail
    if not tradeoffs:
        return outcome
    tick_ns = sim.config.tick_us * 1000
    get_ticks, put_ticks = latencies(result.history, tick_ns)
    outcome.latency_ticks["get-faults"], outcome.latency_ticks["put-faults"] = (
        get_ticks, put_ticks)
    calm = Simulation(spec, SimConfig(seed=seed))
    outcome.latency_ticks["get"], outcome.latency_ticks["put"] = latencies(
        calm.run().history, tick_ns)
    outcome.availability = availability(item, seed)
    return outcome


def _monitor_verdict(result: SimResult) -> str:
    violation = result.violation
    if violation is not None and NOT_CONVERGED in violation.detail:
        return UNKNOWN  # the spec's own liveness held, its end checks did not run
    if violation is not None:
        return violation.prop
    return UNKNOWN if result.unknown else HELD


def check_model(history: list[HistoryEvent], finals: list[HistoryEvent], model: str,
                initial: Any) -> tuple[str, str]:
    """(``held``/``violated``/``unknown``, counterexample or reason) for one model."""
    from pnyx.check.consistency import check_consistency
    from pnyx.check.history import History

    if model == "linearizable":
        from pnyx.check.linearizability import check_linearizable
        from pnyx.check.models import KVModel

        lin = check_linearizable(History.from_events(history), KVModel(initial),
                                 timeout_s=CHECK_TIMEOUT_S)
        if lin.verdict == "linearizable":
            return HELD, ""
        verdict = VIOLATED if lin.verdict == "not-linearizable" else UNKNOWN
        return verdict, _short(lin.explain())
    if model == "convergent" and not finals:
        return UNKNOWN, "no live replica to read after the run"
    events = history + finals if model == "convergent" else history
    try:
        result = check_consistency(History.from_events(events), model, initial=initial,
                                   timeout_s=CHECK_TIMEOUT_S)
    except ValueError as exc:
        return UNKNOWN, f"checker refused the history: {exc}"
    if result.ok:
        return HELD, ""
    verdict = VIOLATED if result.verdict.startswith("not-") else UNKNOWN
    return verdict, _short(result.explain())


def _short(text: str, lines: int = 12) -> str:
    kept = text.splitlines()[:lines]
    return "\n".join(kept)


def split_sessions(history: list[HistoryEvent]) -> list[HistoryEvent]:
    """``history`` with each process's operations after an ``info`` one renumbered as a new
    session (Jepsen's convention: a process whose operation's outcome is unknown is done;
    its write may still take effect later, after operations the same client starts next)."""
    session: dict[int, int] = {}
    renamed: list[HistoryEvent] = []
    for event in history:
        count = session.get(event.process, 0)
        process = event.process + SESSION_STRIDE * count if count else event.process
        renamed.append(event if process == event.process else
                       HistoryEvent(process, event.type, event.f, event.value, event.key,
                                    event.time))
        if event.type == "info":
            session[event.process] = count + 1
    return renamed


def quiescent(spec: ProtocolDef, item: Scheme) -> ProtocolDef:
    """``spec`` whose heal phase, once its own liveness holds, also waits (at most
    :data:`CONVERGE_WAIT_US`) for the replicas to agree, so that final reads are taken
    after quiescence; otherwise the same run."""
    reader = _STATE_READERS[item.kind]

    def make_monitor(node_ids: tuple[int, ...]) -> Monitor:
        return _QuiescenceMonitor(spec.make_monitor(node_ids), reader, item.initial)

    return dataclasses.replace(spec, make_monitor=make_monitor)


class _QuiescenceMonitor(Monitor):
    """The spec's monitor; its liveness also waits for the replicas to agree."""

    def __init__(self, inner: Monitor, reader: StateReader, initial: Any) -> None:
        self.inner = inner
        self.reader = reader
        self.initial = initial
        self.live_since_us: int | None = None

    def on_apply(self, world: World, node_id: int, item: Apply | Restore, result: Any
                 ) -> Violation | None:
        return self.inner.on_apply(world, node_id, item, result)

    def on_restart(self, world: World, node_id: int) -> None:
        self.inner.on_restart(world, node_id)

    def on_step(self, world: World, node_id: int, node: Node) -> None:
        self.inner.on_step(world, node_id, node)

    def after_event(self, world: World) -> Violation | None:
        return self.inner.after_event(world)

    def liveness(self, world: World) -> str | None:
        missing = self.inner.liveness(world)
        if missing is not None:
            self.live_since_us = None
            return missing
        if self.live_since_us is None:
            self.live_since_us = world.now_us
        if world.now_us - self.live_since_us >= CONVERGE_WAIT_US:
            return None  # give up waiting: the final reads will show the difference
        differ = _differing_key(self.reader(world, self.initial))
        return None if differ is None else f"{NOT_CONVERGED}key {differ!r}"

    def at_end(self, world: World) -> Violation | None:
        return self.inner.at_end(world)

    def unknowns(self) -> list[str]:
        return self.inner.unknowns()


def _differing_key(states: dict[int, dict[str, Any]]) -> str | None:
    keys = sorted({k for state in states.values() for k in state})
    for key in keys:
        if len({repr(state[key]) for state in states.values() if key in state}) > 1:
            return key
    return None


# -- final replica states (convergence) ------------------------------------------------------


def final_reads(item: Scheme, sim: World, history: list[HistoryEvent]
                ) -> list[HistoryEvent]:
    """``final-read`` operations of every live replica and key after the run, as the
    convergence checker reads them (key per operation; value the replica's state)."""
    states = _STATE_READERS[item.kind](sim, item.initial)
    time_ns = (history[-1].time if history else 0) + 1
    events: list[HistoryEvent] = []
    for replica, state in sorted(states.items()):
        process = FINAL_READ_PROCESS + replica
        if not state:  # nothing stored: one whole-state read of the empty state
            events.append(HistoryEvent(process, "invoke", "final-read", f"n{replica}", None,
                                       time_ns))
            events.append(HistoryEvent(process, "ok", "final-read", {}, None, time_ns + 1))
            time_ns += 2
        for key in sorted(state):
            events.append(HistoryEvent(process, "invoke", "final-read", f"n{replica}", key,
                                       time_ns))
            events.append(HistoryEvent(process, "ok", "final-read", state[key], key,
                                       time_ns + 1))
            time_ns += 2
    return events


def _dynamo_states(sim: World, initial: Any) -> dict[int, dict[str, Any]]:
    from pnyx.protocols.dynamo import DynamoNode

    nodes = {n: node for n in sim.node_ids if isinstance(node := sim.node(n), DynamoNode)}
    keys = sorted({k for node in nodes.values() for k in node.store})
    states: dict[int, dict[str, Any]] = {}
    for key in keys:
        for replica, node in sorted(nodes.items()):
            owners = node.ring.preference_list(key)[: node.config.n]
            if replica in owners:
                values = sorted(str(v.value) for v in node.store.get(key, ()))
                shown = initial if not values else "|".join(values)
                states.setdefault(replica, {})[key] = shown
    return states


def _chain_states(sim: World, initial: Any) -> dict[int, dict[str, Any]]:
    from pnyx.protocols.chain import ChainMaster, ChainNode

    master = sim.node(max(sim.node_ids))
    members = master.chain if isinstance(master, ChainMaster) else ()
    nodes = {n: node for n in members
             if isinstance(node := sim.node(n), ChainNode) and node.has_state}
    keys = sorted({k for node in nodes.values() for k in node.versions})
    return {n: {k: (node.versions[k][-1][1] if node.versions.get(k) else initial)
                for k in keys} for n, node in nodes.items()}


def _primary_backup_states(sim: World, initial: Any) -> dict[int, dict[str, Any]]:
    from pnyx.protocols.primary_backup import Server, ViewManager

    manager = sim.node(min(sim.node_ids))
    if not isinstance(manager, ViewManager):
        return {}
    view = manager.view
    holders = [n for n in (view.primary, view.backup) if n]
    nodes = {n: node for n in holders if isinstance(node := sim.node(n), Server)
             and node.installed_view == view.num}  # holds the view's data
    data = {n: dict(node.sm.data) for n, node in nodes.items()}
    keys = sorted({k for d in data.values() for k in d})
    return {n: {k: d.get(k, initial) for k in keys} for n, d in data.items()}


_STATE_READERS: dict[str, StateReader] = {
    "dynamo": _dynamo_states,
    "chain": _chain_states,
    "primary-backup": _primary_backup_states,
}


# -- latency and availability ----------------------------------------------------------------


def latencies(history: list[HistoryEvent], tick_ns: int) -> tuple[list[float], list[float]]:
    """Latencies in ticks of the ``ok`` gets and puts of ``history``."""
    started: dict[int, int] = {}
    gets: list[float] = []
    puts: list[float] = []
    for event in history:
        if event.type == "invoke":
            started[event.process] = event.time
            continue
        begin = started.pop(event.process, None)
        if begin is None or event.type != "ok":
            continue
        ticks = (event.time - begin) / tick_ns
        if event.f == "get":
            gets.append(ticks)
        elif event.f == "put":
            puts.append(ticks)
    return gets, puts


def partition_schedule(item: Scheme, nodes: int, fault_ms: int) -> Schedule:
    """One cut from :data:`PARTITION_START_US` to the end of the fault phase: the scheme's
    minority nodes and the second half of the clients on one side, the rest on the other."""
    clients = tuple(CLIENT_ID_BASE + i for i in range(AVAILABILITY_CLIENTS))
    everyone = (*range(1, nodes + 1), *clients)
    minority = (*item.minority, *clients[AVAILABILITY_CLIENTS // 2:])
    cut = FaultEvent("partition", PARTITION_START_US, fault_ms * 1000, node=item.minority[0],
                     shape="availability", links=split(minority, everyone))
    return Schedule(nodes=nodes, clients=AVAILABILITY_CLIENTS, fault_ms=fault_ms,
                    faults=frozenset({"partition"}), events=(cut,))


def availability(item: Scheme, seed: int) -> dict[str, tuple[int, int]]:
    """Per side of the availability partition: (ops that succeeded during it, ops invoked
    during it)."""
    spec = get_protocol(item.spec)
    base = SimConfig(seed=seed)
    schedule = partition_schedule(item, spec.default_nodes, base.fault_ms)
    result = Simulation(spec, SimConfig(seed=seed, schedule=schedule)).run()
    end_ns = base.fault_ms * 1_000_000
    start_ns = PARTITION_START_US * 1000
    minority_clients = {CLIENT_ID_BASE + i
                        for i in range(AVAILABILITY_CLIENTS // 2, AVAILABILITY_CLIENTS)}
    counts = {"majority": [0, 0], "minority": [0, 0]}
    started: dict[int, int] = {}
    for event in result.history:
        if event.type == "invoke":
            started[event.process] = event.time
            continue
        begin = started.pop(event.process, None)
        if begin is None or not start_ns <= begin < end_ns:
            continue
        side = "minority" if _client_of(event.process) in minority_clients else "majority"
        counts[side][1] += 1
        if event.type == "ok" and event.time < end_ns:
            counts[side][0] += 1
    return {side: (ok, total) for side, (ok, total) in counts.items()}


def _client_of(process: int) -> int:
    """The client id of a history process (Dynamo clients renumber later sessions)."""
    from pnyx.protocols.dynamo.client import SESSION_STRIDE

    return process % SESSION_STRIDE


# -- many seeds ------------------------------------------------------------------------------


def _run_task(task: tuple[str, int, bool]) -> SeedOutcome:
    key, seed, tradeoffs = task
    return run_seed(key, seed, MODELS, tradeoffs=tradeoffs)


def run_matrix(keys: Sequence[str], seeds: Sequence[int], jobs: int = 1,
               tradeoff_seeds: int | None = None) -> Iterator[SeedOutcome]:
    """Outcomes of every (scheme, seed), in order, from ``jobs`` worker processes; the
    trade-off runs (no faults, partition) only for the first ``tradeoff_seeds`` seeds
    (None: all)."""
    for key in keys:
        scheme(key)  # refuse an unknown name before starting anything
    limit = len(seeds) if tradeoff_seeds is None else tradeoff_seeds
    tasks = [(key, seed, index < limit) for key in keys for index, seed in enumerate(seeds)]
    if jobs <= 1:
        for task in tasks:
            yield _run_task(task)
        return
    pool = multiprocessing.get_context("spawn").Pool(jobs, initializer=_ignore_sigint)
    try:
        yield from pool.imap(_run_task, tasks, chunksize=4)
    finally:
        pool.terminate()  # whatever ended the iteration: no worker outlives it
        pool.join()


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the parent, which terminates them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass
class Cell:
    """One (scheme, model) entry: seeds that held, were violated, were unknown."""

    held: int = 0
    violated: list[int] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``violated`` if any seed violated it, else ``unknown`` if any seed could not be
        decided, else ``held``."""
        if self.violated:
            return VIOLATED
        return UNKNOWN if self.unknown else HELD

    def add(self, seed: int, verdict: str) -> None:
        """Count one seed's verdict."""
        if verdict == HELD:
            self.held += 1
        elif verdict == UNKNOWN:
            self.unknown.append(seed)
        else:
            self.violated.append(seed)


@dataclass
class Matrix:
    """Aggregated outcomes of many seeds."""

    cells: dict[str, dict[str, Cell]] = field(default_factory=dict)
    """scheme -> model (and ``monitor``) -> cell."""
    details: dict[tuple[str, str, str], str] = field(default_factory=dict)
    """(scheme, model, ``violated``/``unknown``) -> the first such seed's counterexample (or
    why it is unknown)."""
    latency: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    availability: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    seeds: dict[str, list[int]] = field(default_factory=dict)

    def add(self, outcome: SeedOutcome) -> None:
        """Fold one seed's outcome in."""
        row = self.cells.setdefault(outcome.scheme, {})
        self.seeds.setdefault(outcome.scheme, []).append(outcome.seed)
        monitor = row.setdefault("monitor", Cell())
        monitor.add(outcome.seed, outcome.monitor if outcome.monitor in (HELD, UNKNOWN)
                    else VIOLATED)
        if outcome.monitor not in (HELD, UNKNOWN):
            self.details.setdefault((outcome.scheme, "monitor", VIOLATED), outcome.monitor)
        for model, verdict in outcome.verdicts.items():
            row.setdefault(model, Cell()).add(outcome.seed, verdict)
            if verdict != HELD and model in outcome.details:
                self.details.setdefault((outcome.scheme, model, verdict),
                                        outcome.details[model])
        lat = self.latency.setdefault(outcome.scheme, {})
        for name, values in outcome.latency_ticks.items():
            lat.setdefault(name, []).extend(values)
        avail = self.availability.setdefault(outcome.scheme, {})
        for side, (ok, total) in outcome.availability.items():
            counts = avail.setdefault(side, [0, 0])
            counts[0] += ok
            counts[1] += total

    def to_json(self) -> dict[str, Any]:
        """Everything, as plain data."""
        return {
            "models": list(MODELS),
            "schemes": {
                key: {
                    "spec": scheme(key).spec,
                    "faults": scheme(key).faults,
                    "seeds": [min(self.seeds[key]), max(self.seeds[key])],
                    "cells": {m: {"status": c.status, "held": c.held,
                                  "violated": c.violated, "unknown": c.unknown}
                              for m, c in row.items()},
                    "latency_ticks": {n: percentiles(v) for n, v in
                                      sorted(self.latency.get(key, {}).items())},
                    "availability": self.availability.get(key, {}),
                }
                for key, row in self.cells.items()
            },
        }


def aggregate(outcomes: Iterable[SeedOutcome]) -> Matrix:
    """A :class:`Matrix` of ``outcomes``."""
    matrix = Matrix()
    for outcome in outcomes:
        matrix.add(outcome)
    return matrix


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50 and p99 (nearest rank) and the count; zeros when empty."""
    if not values:
        return {"p50": 0.0, "p99": 0.0, "n": 0}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    return {"p50": round(statistics.median(ordered), 2), "p99": round(rank(0.99), 2),
            "n": len(ordered)}


# -- rendering ------------------------------------------------------------------------------


def replay_commands(item: Scheme, seed: int, model: str) -> tuple[str, str]:
    """The command that shows the verdict of ``model`` on ``seed``, and the one that
    replays the run itself."""
    show = f"pnyx consistency seed {item.key} --seed {seed}"
    if model in MODELS:  # the monitor's verdict is always shown
        show += f" --model {model}"
    replay = f"pnyx sim {item.spec} --seed {seed} --faults {item.faults}"
    return show, replay


def _cell_text(cell: Cell, total: int) -> str:
    if cell.status == HELD:
        return f"held ({cell.held}/{total})"
    if cell.status == UNKNOWN:
        return f"unknown on {len(cell.unknown)}/{total} (seed {cell.unknown[0]})"
    text = f"**violated** {len(cell.violated)}/{total} (seed {cell.violated[0]})"
    if cell.unknown:
        text += f", unknown on {len(cell.unknown)}"
    return text


def _clip(text: str, chars: int = 160) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def render_table(matrix: Matrix) -> str:
    """The Markdown table of models per scheme, then the first violating seeds."""
    columns = ["monitor", *MODELS]
    lines = ["| scheme (`pnyx sim` spec, faults) | " + " | ".join(columns) + " |",
             "| --- | " + " | ".join("---" for _ in columns) + " |"]
    for key, row in matrix.cells.items():
        item = scheme(key)
        total = len(matrix.seeds[key])
        cells = [_cell_text(row[c], total) if c in row else "-" for c in columns]
        lines.append(f"| {item.label} (`{item.spec}`, `{item.faults}`) | "
                     + " | ".join(cells) + " |")
    lines += ["", "First violating (or undecided) seed of each entry, with the command that "
              "shows the counterexample and the one that replays the run:", ""]
    for key, row in matrix.cells.items():
        item = scheme(key)
        for model in columns:
            cell = row.get(model)
            if cell is None or cell.status == HELD:
                continue
            seed = (cell.violated or cell.unknown)[0]
            show, replay = replay_commands(item, seed, model)
            what = matrix.details.get((key, model, cell.status), "").splitlines()
            first = f": {_clip(what[0])}" if what else ""
            lines.append(f"- {item.key} / {model}, seed {seed}{first}  \n"
                         f"  `{show}` · `{replay}`")
    notes = [f"- {s.key}: {s.note}" for s in SCHEMES if s.key in matrix.cells and s.note]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines)


def render_tradeoffs(matrix: Matrix) -> str:
    """Latency percentiles and availability per side, as a Markdown table."""
    lines = ["| scheme | get p50 / p99 | put p50 / p99 | get p99, faults | put p99, faults | "
             "available, majority side | available, minority side |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [_tradeoff_row(matrix, key) for key in matrix.cells]
    return "\n".join(lines)


def _tradeoff_row(matrix: Matrix, key: str) -> str:
    lat = {n: percentiles(v) for n, v in matrix.latency.get(key, {}).items()}
    empty = percentiles([])
    avail = matrix.availability.get(key, {})

    def pair(name: str) -> str:
        p = lat.get(name, empty)
        return f"{p['p50']:g} / {p['p99']:g}"

    def side(name: str) -> str:
        ok, total = avail.get(name, [0, 0])
        return f"{ok / total:.0%} ({ok}/{total})" if total else "no operations"

    return (f"| {scheme(key).label} | {pair('get')} | {pair('put')} | "
            f"{lat.get('get-faults', empty)['p99']:g} | {lat.get('put-faults', empty)['p99']:g}"
            f" | {side('majority')} | {side('minority')} |")


def replace_between(text: str, name: str, body: str) -> str:
    """``text`` with the lines between ``<!-- name:begin -->`` and ``<!-- name:end -->``
    replaced by ``body``; ValueError when the markers are missing or out of order."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"markers {begin} ... {end} not found (in this order)")
    return text[: start + len(begin)] + "\n" + body.rstrip("\n") + "\n" + text[stop:]


def write_doc(path: Path, table: str, tradeoffs: str) -> None:
    """Put ``table`` and ``tradeoffs`` between their markers in the document at ``path``."""
    text = path.read_text(encoding="utf-8")
    text = replace_between(text, "consistency-table", table)
    text = replace_between(text, "consistency-tradeoffs", tradeoffs)
    path.write_text(text, encoding="utf-8")


def plot(summary: dict[str, Any], directory: Path) -> list[Path]:
    """consistency-latency.png and consistency-availability.png in ``directory``, from
    :meth:`Matrix.to_json` (so a saved ``--json`` file can be drawn again); the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: dict[str, Any] = summary["schemes"]
    keys = list(rows)
    positions = list(range(len(keys)))
    written: list[Path] = []
    fig, ax = plt.subplots(figsize=(11, 4.5))
    series = [("get", "p50", "get p50"), ("put", "p50", "put p50"),
              ("get", "p99", "get p99"), ("put", "p99", "put p99"),
              ("get-faults", "p99", "get p99, faults"), ("put-faults", "p99", "put p99, faults")]
    width = 0.8 / len(series)
    for index, (name, stat, label) in enumerate(series):
        values = [max(MIN_PLOTTED_TICKS, rows[k]["latency_ticks"].get(name, {}).get(stat, 0.0))
                  for k in keys]
        offset = (index - (len(series) - 1) / 2) * width
        ax.bar([p + offset for p in positions], values, width, label=label)
    ax.set_xticks(positions, keys, rotation=30, ha="right")
    ax.set_ylabel("latency (ticks of 10 ms, log scale)")
    ax.set_yscale("log")
    ax.set_title("Read and write latency in the simulator (no faults; p99 also with faults)")
    ax.legend(fontsize="small", ncols=3)
    fig.tight_layout()
    written.append(directory / "consistency-latency.png")
    fig.savefig(written[-1], dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for index, side in enumerate(("majority", "minority")):
        values = []
        for k in keys:
            ok, total = rows[k]["availability"].get(side, [0, 0])
            values.append(100.0 * ok / total if total else 0.0)
        ax.bar([p + (index - 0.5) * 0.35 for p in positions], values, 0.35,
               label=f"{side} side")
    ax.set_xticks(positions, keys, rotation=30, ha="right")
    ax.set_ylabel("operations that succeed during the cut (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Availability under a partition (minority of nodes + half of the clients)")
    ax.legend()
    fig.tight_layout()
    written.append(directory / "consistency-availability.png")
    fig.savefig(written[-1], dpi=90)
    plt.close(fig)
    return written
