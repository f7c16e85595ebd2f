"""The deterministic simulator: a discrete-event scheduler in virtual time.

One seed fixes everything — message latencies, drops, duplicates, partitions, crashes,
torn writes, pauses, clock drift and every client operation — so a run is a pure
function of (protocol, seed, schedule).  Each process (node or client) follows the node
contract of :mod:`pnyx.core.node`; the simulator is its runtime.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgspec

from pnyx.core import (
    CLIENT_ID_BASE,
    Apply,
    ClientReply,
    DurableState,
    HistoryEvent,
    Message,
    Node,
    Quiesce,
    Ready,
    Restore,
    encode,
)
from pnyx.core.node import StateMachine
from pnyx.sim.disk import SimDisk
from pnyx.sim.nemesis import LATE_KINDS, NO_NEMESIS, NemesisPlan, Strike, rule_stream
from pnyx.sim.schedule import DISK_KINDS, FaultEvent, Schedule, generate, isolate, split
from pnyx.sim.spec import Monitor, ProtocolDef, Violation
from pnyx.sim.swarm import SwarmDraw, draw_swarm

# Event kinds in the queue (small ints: compared only for ordering ties, never)
_DELIVER, _TICK, _PERSISTED, _FAULT_ON, _FAULT_OFF, _HEAL, _POLL = range(7)
_CARRY = 7
"""A held Ready batch (a nemesis paused the node just before carrying it out)."""
_TICKS = 8
"""One tick of a group of processes that share a period and a phase slot (``tick_slots``)."""
_FINISH = 9
"""Poll of the monitor's optional ``finished(world)`` (the run may end early)."""

BASE_LATENCY_US = (100, 1_500)
"""Uniform one-way latency range on a healthy link."""
REORDER_JITTER_US = 30_000
"""Extra latency range when per-link FIFO is off (``reorder``)."""
FSYNC_LATENCY_US = (200, 3_000)
"""Uniform duration of one durable write batch."""
MAX_CATCH_UP_TICKS = 16
"""Ticks a resumed process gets at once for the time it was paused (the real runtime's
``RunnerConfig.max_ticks_per_round`` bound); the rest are reported to the node's optional
``clock_stalled(missed_ticks)``.  Swarm seeds draw smaller bounds."""
LIVENESS_POLL_TICKS = 5
"""How often (in nominal ticks) liveness is polled during the heal phase."""
LINK_CLOCK_PRUNE = 50_000
"""Per-link FIFO clocks kept before the ones already in the past are dropped (a clock in
the past constrains nothing), so that a large group's all-pairs traffic stays small."""


@dataclass(frozen=True)
class SimConfig:
    """Parameters of one simulated run.  ``schedule`` overrides the drawn schedule."""

    seed: int
    nodes: int | None = None
    clients: int | None = None
    faults: frozenset[str] = frozenset()
    fault_ms: int = 3_000
    heal_ms: int = 6_000
    tick_us: int = 10_000
    schedule: Schedule | None = None
    trace: bool = False
    """Keep every event (for ``--replay``); the trace hash is always computed when set."""
    hash_trace: bool = False
    swarm: bool = False
    """Swarm testing: the seed draws its fault mix (within ``faults``), intensity, cluster
    size, protocol settings and nemesis rules (:mod:`pnyx.sim.swarm`)."""
    nemesis: NemesisPlan | None = None
    """Nemesis rules to run, overriding the swarm draw (directed tests); None: the draw's."""

    def resolve_swarm(self, spec: ProtocolDef) -> SwarmDraw | None:
        """The swarm draw of this run's seed (None without ``swarm``, and for a spec that
        draws its own schedule: swarm testing does not apply to it)."""
        if not self.swarm or spec.draws_schedule:
            return None
        return draw_swarm(self.seed, spec, self.faults, self.nodes, self.clients)

    def resolve_schedule(self, spec: ProtocolDef, swarm: SwarmDraw | None = None) -> Schedule:
        """The schedule this run uses: the given one, or one drawn from the seed."""
        if self.schedule is not None:
            return self.schedule
        if spec.draws_schedule and swarm is None:
            nodes = self.nodes if self.nodes is not None else spec.default_nodes
            own = spec.draw_schedule(self.seed, nodes, self.fault_ms, self.faults)
            if own is not None:
                # a spec's own schedule draws nothing from its client count (its faults
                # name nodes only), so --clients replaces that count as it is
                return own if self.clients is None else replace(own, clients=self.clients)
        if swarm is not None:
            return generate(
                self.seed, swarm.nodes, swarm.clients, self.fault_ms, swarm.faults, swarm.intensity
            )
        nodes = self.nodes if self.nodes is not None else spec.default_nodes
        clients = self.clients if self.clients is not None else spec.default_clients
        return generate(self.seed, nodes, clients, self.fault_ms, self.faults)


@dataclass
class SimStats:
    """Counters of one run."""

    events: int = 0
    deliveries: int = 0
    dropped: int = 0
    duplicated: int = 0
    fsyncs: int = 0
    crashes: int = 0
    strikes: int = 0
    """Nemesis strikes carried out."""
    ticks: int = 0
    """Node and client ticks (each tick of a tick group counts, as an event too)."""
    stalls: int = 0
    """Resumes that dropped ticks beyond the catch-up bound (reported as clock stalls)."""
    disk_faults: int = 0
    """Disk faults that took effect (damage, lost or misdirected writes, lying fsyncs)."""
    fail_stops: int = 0
    """Restarts refused because recovery detected a damaged disk (the node stays down)."""
    virtual_us: int = 0
    wall_s: float = 0.0


@dataclass
class SimResult:
    """Outcome of one run."""

    seed: int
    schedule: Schedule
    violation: Violation | None
    stats: SimStats
    history: list[HistoryEvent]
    trace_hash: str = ""
    trace: list[tuple[Any, ...]] = field(default_factory=list)
    injected: list[FaultEvent] = field(default_factory=list)
    """Discrete faults as injected (leader-targeted ones pinned to the leader of the time;
    nemesis strikes have the shape ``nemesis:<rule>``)."""
    unknown: list[str] = field(default_factory=list)
    """Checks that could not decide (the monitor's ``unknowns()``), e.g. checker time-outs."""
    swarm: SwarmDraw | None = None
    """What a swarm seed drew (None without swarm)."""

    @property
    def ok(self) -> bool:
        """True when no property was violated."""
        return self.violation is None


class _Proc:
    """Runtime state the simulator keeps for one node or client."""

    __slots__ = (
        "alive",
        "disk",
        "held",
        "incarnation",
        "invariants",
        "is_client",
        "node",
        "paused",
        "paused_at_us",
        "pending",
        "pid",
        "sm",
        "stopped",
        "tick_us",
    )

    def __init__(self, pid: int, node: Node, tick_us: int, is_client: bool) -> None:
        self.pid = pid
        self.node = node
        self.is_client = is_client
        self.tick_us = tick_us
        self.alive = True
        self.paused = False
        self.paused_at_us = 0
        self.incarnation = 0
        self.pending: Ready | None = None
        self.held: list[tuple[int, Any, Any]] = []
        self.disk = SimDisk()
        self.sm: StateMachine | None = None
        self.stopped = False
        """Recovery refused a damaged disk: down for the rest of the run."""
        self.invariants: Callable[[], list[str]] | None = getattr(node, "invariants", None)


class _Stop(Exception):
    """Raised inside the loop when a property is violated."""

    def __init__(self, violation: Violation) -> None:
        super().__init__(str(violation))
        self.violation = violation


class Simulation:
    """One run of one protocol under one schedule.  Use :func:`run_sim`."""

    def __init__(self, spec: ProtocolDef, config: SimConfig) -> None:
        self.swarm = config.resolve_swarm(spec)
        if self.swarm is not None and self.swarm.settings and spec.configure is not None:
            spec = spec.configure(dict(self.swarm.settings))
        self.spec = spec
        if spec.sim_tick_us is not None and spec.sim_tick_us != config.tick_us:
            config = replace(config, tick_us=spec.sim_tick_us)
        self._tick_slots = spec.tick_slots
        self.config = config
        self.schedule = config.resolve_schedule(spec, self.swarm)
        sched = self.schedule
        assert sched.nodes >= 1, "a run needs at least one node"
        self.seed = config.seed
        self._node_ids = tuple(range(1, sched.nodes + 1))
        self._client_ids = tuple(CLIENT_ID_BASE + i for i in range(sched.clients))
        self._net_rng = random.Random(f"pnyx-net:{config.seed}")
        self._disk_rng = random.Random(f"pnyx-disk:{config.seed}")
        self._now_us = 0
        self._seq = 0
        self._queue: list[tuple[int, int, int, Any, Any, Any]] = []
        self._procs: dict[int, _Proc] = {}
        self._blocked: dict[tuple[int, int], int] = {}
        self._link_clock: dict[tuple[int, int], int] = {}
        self._link_prune_at = LINK_CLOCK_PRUNE
        self._active: dict[int, FaultEvent] = {}
        self.injected: list[FaultEvent] = []
        """Discrete faults as they were injected (leader-targeted ones resolved)."""
        self._healing = False
        self._history: list[HistoryEvent] = []
        self.stats = SimStats()
        self.monitor: Monitor = spec.make_monitor(self._node_ids)
        self._check_events = type(self.monitor).after_event is not Monitor.after_event
        monitor_type = type(self.monitor)
        self._on_step_hook: Callable[[Simulation, int, Node], None] | None = (
            self.monitor.on_step if monitor_type.on_step is not Monitor.on_step else None
        )
        self._on_fault_hook: Callable[[Simulation, FaultEvent, bool], None] | None = (
            self.monitor.on_fault if monitor_type.on_fault is not Monitor.on_fault else None
        )
        self._polls_finished = monitor_type.finished is not Monitor.finished
        self._finished = False
        self._slow: dict[int, list[int]] = {}
        """node -> processing lags of its active ``slow`` faults (the largest applies)."""
        self._tracing = config.trace or config.hash_trace
        self._trace: list[tuple[Any, ...]] = []
        self._hasher = hashlib.blake2b(digest_size=16)
        net = sched.network
        self._drop_p = net.drop_p
        self._dup_p = net.duplicate_p
        self._delay_p = net.delay_p
        self._delay_max_us = net.delay_max_us
        self._reorder = net.reorder
        self._torn = "torn" in sched.faults
        self._catch_up_ticks_max = (
            self.swarm.catch_up_ticks if self.swarm is not None else MAX_CATCH_UP_TICKS
        )
        plan = self.swarm.nemesis if self.swarm is not None else NO_NEMESIS
        if config.nemesis is not None:
            plan = config.nemesis
        self._plan: NemesisPlan = plan
        self._nemesis: Any = None
        if plan.rules and spec.make_nemesis is not None:
            self._nemesis = spec.make_nemesis(plan.rules)
        self._nemesis_rng = random.Random(f"pnyx-nemesis:{config.seed}")
        self._rule_rngs = {
            rule: rule_stream(config.seed, rule)
            for rule in sorted(plan.rules)
            if rule in spec.stream_nemesis_rules
        }
        """Each active stream rule's own RNG stream (:mod:`pnyx.sim.nemesis`)."""
        self._rule_strikes: dict[str, int] = {}
        self._rule_ready_us: dict[str, int] = {}
        """rule -> earliest time it may strike again (strikes spread over the fault phase)."""
        self._dynamic = 0
        """Dynamic fault events (nemesis strikes) get negative indices -1, -2, ..."""

    # -- World view (read by monitors) ---------------------------------------------------

    @property
    def now_us(self) -> int:
        return self._now_us

    @property
    def node_ids(self) -> tuple[int, ...]:
        return self._node_ids

    @property
    def healing(self) -> bool:
        return self._healing

    @property
    def client_ids(self) -> tuple[int, ...]:
        return self._client_ids

    @property
    def tick_us(self) -> int:
        return self.config.tick_us

    @property
    def history(self) -> list[HistoryEvent]:
        return self._history

    def node(self, node_id: int) -> Node | None:
        proc = self._procs[node_id]
        return proc.node if proc.alive else None

    def durable(self, node_id: int) -> DurableState:
        return self._procs[node_id].disk.state

    def stopped(self, node_id: int) -> bool:
        return self._procs[node_id].stopped

    def state_machine(self, node_id: int) -> StateMachine | None:
        return self._procs[node_id].sm

    # -- running ---------------------------------------------------------------------

    def run(self) -> SimResult:
        """Run the fault phase, then the heal phase until liveness or the deadline."""
        started = time.perf_counter()
        violation: Violation | None = None
        try:
            self._boot()
            self._loop()
            violation = self.monitor.at_end(self)
        except _Stop as stop:
            violation = stop.violation
        except Exception as exc:  # a node's own assertion or a crash of protocol code
            violation = Violation("exception", _describe_exception(exc))
        self.stats.virtual_us = self._now_us
        self.stats.wall_s = time.perf_counter() - started
        if violation is not None:
            self._trace_event("violation", violation.prop, violation.detail)
        return SimResult(
            seed=self.seed,
            schedule=self.schedule,
            violation=violation,
            stats=self.stats,
            history=self._history,
            trace_hash=self._hasher.hexdigest() if self._tracing else "",
            trace=self._trace if self.config.trace else [],
            injected=self.injected,
            unknown=self.monitor.unknowns(),
            swarm=self.swarm,
        )

    def _boot(self) -> None:
        sched = self.schedule
        tick_us = self.config.tick_us
        for i, nid in enumerate(self._node_ids):
            drift = sched.drift[i] if i < len(sched.drift) else 0.0
            period = max(1, round(tick_us * (1.0 + drift)))
            proc = _Proc(nid, self._build_node(nid, 0, DurableState()), period, False)
            proc.disk = SimDisk()
            proc.sm = self._build_sm()
            self._procs[nid] = proc
        for cid in self._client_ids:
            rng = random.Random(f"pnyx-client:{self.seed}:{cid}")
            self._procs[cid] = _Proc(
                cid, self.spec.make_client(cid, self._node_ids, rng), tick_us, True
            )
        phase_rng = random.Random(f"pnyx-phase:{self.seed}")
        groups: dict[tuple[int, int], list[_Proc]] = {}
        slot_us = max(1, tick_us // self._tick_slots) if self._tick_slots else 0
        for pid in self._node_ids + self._client_ids:
            phase_us = phase_rng.randrange(1, tick_us + 1)
            if slot_us:
                proc = self._procs[pid]
                first_us = (phase_us - 1) // slot_us * slot_us + 1
                groups.setdefault((first_us, proc.tick_us), []).append(proc)
            else:
                self._push(phase_us, _TICK, pid, 0, None)
        for (first_us, period_us), procs in groups.items():
            self._push(first_us, _TICKS, period_us, procs, None)
        if self._polls_finished:
            self._push(tick_us * LIVENESS_POLL_TICKS, _FINISH, None, None, None)
        for index, event in enumerate(sched.events):
            self._push(event.start_us, _FAULT_ON, index, None, None)
            self._push(event.end_us, _FAULT_OFF, index, None, None)
        self._push(sched.fault_ms * 1000, _HEAL, None, None, None)

    def _build_node(self, nid: int, incarnation: int, durable: DurableState) -> Node:
        rng = random.Random(f"pnyx-node:{self.seed}:{nid}:{incarnation}")
        return self.spec.make_node(nid, self._node_ids, rng, durable)

    def _build_sm(self) -> StateMachine | None:
        factory = self.spec.make_state_machine
        return factory() if factory is not None else None

    def _push(self, at_us: int, kind: int, a: Any, b: Any, c: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at_us, self._seq, kind, a, b, c))

    def _loop(self) -> None:
        queue = self._queue
        pop = heapq.heappop
        deadline_us = (self.schedule.fault_ms + self.config.heal_ms) * 1000
        handlers: dict[int, Callable[[Any, Any, Any], None]] = {
            _DELIVER: self._on_deliver,
            _TICK: self._on_tick,
            _PERSISTED: self._on_persisted,
            _FAULT_ON: self._on_fault_on,
            _FAULT_OFF: self._on_fault_off,
            _HEAL: self._on_heal,
            _POLL: self._on_poll,
            _TICKS: self._on_ticks,
            _FINISH: self._on_finish,
        }
        check = self._check_events
        monitor = self.monitor
        stats = self.stats
        while queue:
            at_us, _, kind, a, b, c = pop(queue)
            if at_us > deadline_us:
                missing = monitor.liveness(self)
                if missing is not None:
                    raise _Stop(Violation("liveness", f"not reached within heal phase: {missing}"))
                return
            self._now_us = at_us
            stats.events += 1
            handlers[kind](a, b, c)
            if check:
                violation = monitor.after_event(self)
                if violation is not None:
                    raise _Stop(violation)
            if kind == _POLL and b:
                return
            if kind == _FINISH and self._finished:
                return

    # -- event handlers ----------------------------------------------------------------

    def _on_deliver(self, dst: int, src: int, msg: Message) -> None:
        proc = self._procs[dst]
        if not proc.alive or (self._blocked and (src, dst) in self._blocked):
            self.stats.dropped += 1
            return
        if proc.paused:
            proc.held.append((_DELIVER, src, msg))
            return
        self.stats.deliveries += 1
        if self._tracing:
            self._trace_event("deliver", src, dst, msg)
        proc.node.step(msg, src)
        self._drain(proc)
        if proc.invariants is not None:
            self._check_invariants(proc)

    def _on_tick(self, pid: int, incarnation: int, _: Any) -> None:
        proc = self._procs[pid]
        if not proc.alive or proc.incarnation != incarnation:
            return
        self._push(self._now_us + proc.tick_us, _TICK, pid, incarnation, None)
        if proc.paused:
            return
        if self._tracing:
            self._trace_event("tick", pid)
        self.stats.ticks += 1
        proc.node.tick()
        self._drain(proc)
        if proc.invariants is not None:
            self._check_invariants(proc)

    def _on_ticks(self, period_us: int, procs: list[_Proc], _: Any) -> None:
        """One tick of every live, running process of a tick group, in id order, with the
        monitor's check after each (as if each tick were an event of its own)."""
        self._push(self._now_us + period_us, _TICKS, period_us, procs, None)
        stats = self.stats
        tracing = self._tracing
        check = self._check_events
        ticked = 0
        for proc in procs:
            if not proc.alive or proc.paused:
                continue
            ticked += 1
            if tracing:
                self._trace_event("tick", proc.pid)
            node = proc.node
            node.tick()
            self._drain(proc)
            if proc.invariants is not None:
                self._check_invariants(proc)
            if check:
                self._check_world()
        stats.ticks += ticked
        stats.events += max(0, ticked - 1)

    def _on_persisted(self, pid: int, incarnation: int, _: Any) -> None:
        proc = self._procs[pid]
        if not proc.alive or proc.incarnation != incarnation:
            return
        if proc.paused:
            proc.held.append((_PERSISTED, incarnation, None))
            return
        ready = proc.pending
        if ready is None:
            raise RuntimeError(f"fsync completion for {pid} without a pending batch")
        proc.pending = None
        self.stats.fsyncs += 1
        fault = proc.disk.sync(ready.persist, self._disk_rng.randrange(0, 1 << 16))
        if self._tracing:
            self._trace_event("fsync", pid, len(ready.persist))
            if fault:
                self._trace_event("disk", pid, fault)
        if fault:
            self.stats.disk_faults += 1
        self._carry_out(proc, ready)
        self._drain(proc)
        if proc.invariants is not None:
            self._check_invariants(proc)

    def _on_fault_on(self, index: int, _b: Any, _c: Any) -> None:
        if self._healing:
            return
        self._start_fault(index, self._resolve(self.schedule.events[index]))

    def _start_fault(self, index: int, event: FaultEvent) -> None:
        self._active[index] = event
        self.injected.append(event)
        if self._tracing:
            self._trace_event("fault", event.describe())
        kind = event.kind
        if self._on_fault_hook is not None:
            self._on_fault_hook(self, event, True)
        if kind == "slow":
            self._slow.setdefault(event.node, []).append(event.lag_us)
        elif kind == "partition":
            for link in event.links:
                self._blocked[link] = self._blocked.get(link, 0) + 1
        elif kind == "crash":
            self._crash(self._procs[event.node])
        elif kind == "pause":
            self._pause(self._procs[event.node])
        elif kind in DISK_KINDS:
            self._start_disk_fault(self._procs[event.node], kind)

    def _pause(self, proc: _Proc) -> None:
        if proc.alive and not proc.paused:
            proc.paused = True
            proc.paused_at_us = self._now_us

    def _start_disk_fault(self, proc: _Proc, kind: str) -> None:
        disk = proc.disk
        if kind == "corrupt":
            if disk.corrupt_sector():
                self.stats.disk_faults += 1
            self._crash(proc)
        elif kind == "misdirect":
            disk.misdirect_next = True
        elif kind == "lost-write":
            disk.lose_next = True
        else:
            disk.lying = True

    def _end_disk_fault(self, proc: _Proc, kind: str) -> None:
        """The node crashes (corrupt: it already has) and recovery reads the disk back."""
        disk = proc.disk
        disk.misdirect_next = disk.lose_next = False
        if kind == "lying-fsync":
            disk.lying = False
        self._crash(proc)
        if not proc.alive and not proc.stopped:
            self._restart(proc)

    def _on_fault_off(self, index: int, _b: Any, _c: Any) -> None:
        event = self._active.pop(index, None)
        if self._healing or event is None:
            return
        if self._tracing:
            self._trace_event("heal", event.describe())
        self._end_fault(event)

    def _resolve(self, event: FaultEvent) -> FaultEvent:
        """Pin a leader-targeted fault to the node that leads now (else its fallback)."""
        if event.target != "leader":
            return event
        node = self._current_leader() or event.node
        if event.kind == "partition":
            return replace(
                event, node=node, target="", shape="isolate", links=isolate(node, self._node_ids)
            )
        return replace(event, node=node, target="")

    def _current_leader(self) -> int | None:
        """The leader most live nodes report through their optional ``status()``."""
        votes: dict[int, int] = {}
        for nid in self._node_ids:
            proc = self._procs[nid]
            status = getattr(proc.node, "status", None) if proc.alive else None
            if status is not None:
                leader = status().get("leader")
                if isinstance(leader, int) and leader in self._procs:
                    votes[leader] = votes.get(leader, 0) + 1
        if not votes:
            return None
        return max(sorted(votes), key=lambda n: votes[n])

    def _end_fault(self, event: FaultEvent) -> None:
        if self._on_fault_hook is not None:
            self._on_fault_hook(self, event, False)
        if event.kind == "slow":
            lags = self._slow[event.node]
            lags.remove(event.lag_us)
            if not lags:
                del self._slow[event.node]
        elif event.kind == "partition":
            for link in event.links:
                left = self._blocked.get(link, 0) - 1
                if left > 0:
                    self._blocked[link] = left
                else:
                    self._blocked.pop(link, None)
        elif event.kind == "crash":
            proc = self._procs[event.node]
            if not proc.alive:
                self._restart(proc)
        elif event.kind == "pause":
            self._resume(self._procs[event.node])
        elif event.kind in DISK_KINDS:
            self._end_disk_fault(self._procs[event.node], event.kind)

    def _on_heal(self, _a: Any, _b: Any, _c: Any) -> None:
        """End of the fault phase: heal everything, quiesce clients, start polling liveness."""
        if self._tracing:
            self._trace_event("heal-phase")
        self._blocked.clear()
        self._slow.clear()
        self._drop_p = self._dup_p = self._delay_p = 0.0
        self._reorder = False
        # Healing first: a node resumed or restarted here carries out batches at once, and a
        # nemesis strike at one of them (a pause, a crash, an isolation) would never end.
        self._healing = True
        for rule in self._rule_rngs:  # stream rules' late copies get a budget of their own
            self._rule_strikes.pop(rule, None)
            self._rule_ready_us.pop(rule, None)
        for nid in self._node_ids:
            proc = self._procs[nid]
            proc.disk.lying = proc.disk.lose_next = proc.disk.misdirect_next = False
            if not proc.alive and not proc.stopped:
                self._restart(proc)
            elif proc.paused:
                self._resume(proc)
        for cid in self._client_ids:
            self._send(0, cid, Quiesce())
        self._push(
            self._now_us + self.config.tick_us * LIVENESS_POLL_TICKS, _POLL, None, False, None
        )

    def _on_finish(self, _a: Any, _b: Any, _c: Any) -> None:
        if self.monitor.finished(self):
            self._finished = True
            if self._tracing:
                self._trace_event("finished")
            return
        self._push(
            self._now_us + self.config.tick_us * LIVENESS_POLL_TICKS, _FINISH, None, None, None
        )

    def _on_poll(self, _a: Any, _b: Any, _c: Any) -> None:
        if self.monitor.liveness(self) is None:
            # Reached: stop after this event (the loop sees the True flag on a fresh poll).
            self._push(self._now_us, _POLL, None, True, None)
            return
        self._push(
            self._now_us + self.config.tick_us * LIVENESS_POLL_TICKS, _POLL, None, False, None
        )

    # -- processes -----------------------------------------------------------------------

    def _crash(self, proc: _Proc) -> None:
        if not proc.alive:
            return
        self.stats.crashes += 1
        pending = proc.pending
        if pending is not None and pending.persist and self._torn:
            # The batch was written but its fsync had not returned.  Like the real WAL
            # (sync batches are atomic: recovery drops an incomplete last batch whole), the
            # crash keeps all of it or none of it, never a prefix.
            keep = len(pending.persist) if self._disk_rng.random() < 0.5 else 0
            proc.disk.write_torn(pending.persist[:keep])
            if self._tracing:
                self._trace_event("torn", proc.pid, keep, len(pending.persist))
        lost = proc.disk.power_loss()
        if lost and self._tracing:
            self._trace_event("cache-lost", proc.pid, lost)
        proc.alive = False
        proc.paused = False
        proc.pending = None
        proc.held.clear()
        if self._tracing:
            self._trace_event("crash", proc.pid)

    def _restart(self, proc: _Proc) -> None:
        if proc.alive:
            raise RuntimeError(f"restart of live process {proc.pid}")
        if proc.disk.damage:
            # Like the real WAL: damage followed by valid data refuses to start.  The node
            # stays down rather than run with a silently shorter log or an older vote.
            if not proc.stopped:
                proc.stopped = True
                self.stats.fail_stops += 1
                if self._tracing:
                    self._trace_event("fail-stop", proc.pid, proc.disk.damage)
            return
        proc.incarnation += 1
        proc.node = self._build_node(proc.pid, proc.incarnation, proc.disk.state.copy())
        proc.invariants = getattr(proc.node, "invariants", None)
        proc.sm = self._build_sm()
        proc.alive = True
        proc.paused = False
        if self._tracing:
            self._trace_event("restart", proc.pid, proc.incarnation)
        if not self._tick_slots:  # a tick group keeps ticking its processes
            self._push(self._now_us + proc.tick_us, _TICK, proc.pid, proc.incarnation, None)
        self.monitor.on_restart(self, proc.pid)
        self._drain(proc)
        if proc.invariants is not None:
            self._check_invariants(proc)

    def _resume(self, proc: _Proc) -> None:
        """Resume a paused process: report a clock stall, replay what it missed, catch up.

        The monitor checks after every replayed step, so a leader that rises and falls
        inside one resume is seen.
        """
        if not proc.paused:
            return
        proc.paused = False
        if self._tracing:
            self._trace_event("resume", proc.pid)
        missed = (self._now_us - proc.paused_at_us) // proc.tick_us
        given = min(missed, self._catch_up_ticks_max)
        held, proc.held = proc.held, []
        if missed > given:
            # A batch the pause held back is still out (taken, not advanced): the node's
            # next batch must wait until it is carried out (seed 61130 served a read
            # before applying the command that the held batch applied).
            carrying = any(kind == _CARRY for kind, _, _ in held)
            self._report_stall(proc, missed - given, drain=not carrying)
        for kind, a, b in held:
            if kind == _DELIVER:
                self._on_deliver(proc.pid, a, b)
            elif kind == _CARRY:
                self._replay_batch(proc, a)
            else:
                self._on_persisted(proc.pid, a, b)
            self._check_world()
        self._catch_up_ticks(proc, given)

    def _report_stall(self, proc: _Proc, dropped: int, drain: bool = True) -> None:
        """Ticks beyond the catch-up bound are dropped: tell the node (its optional
        ``clock_stalled``) so that time-based promises such as a lease end.  Its next batch
        is taken at once unless ``drain`` is off (a held batch goes first)."""
        self.stats.stalls += 1
        if self._tracing:
            self._trace_event("stall", proc.pid, dropped)
        stalled = getattr(proc.node, "clock_stalled", None)
        if stalled is not None:
            stalled(dropped)
            if drain:
                self._drain(proc)
            self._check_world()

    def _replay_batch(self, proc: _Proc, ready: Ready) -> None:
        """Carry out a batch held back by a nemesis pause (no second strike on it)."""
        if not proc.alive:
            return
        if proc.paused:
            proc.held.append((_CARRY, ready, None))
            return
        self._carry_out(proc, ready, strike=False)
        self._drain(proc)
        if proc.invariants is not None:
            self._check_invariants(proc)

    def _catch_up_ticks(self, proc: _Proc, ticks: int) -> None:
        """A paused process's clock kept running: like the real runtime, it gets the ticks
        it missed (at most the catch-up bound) right after its queued messages."""
        for _ in range(ticks):
            if not proc.alive or proc.paused:
                return
            if self._tracing:
                self._trace_event("tick", proc.pid)
            self.stats.ticks += 1
            proc.node.tick()
            self._drain(proc)
            if proc.invariants is not None:
                self._check_invariants(proc)
            self._check_world()

    # -- checks between steps --------------------------------------------------------------

    def _check_invariants(self, proc: _Proc) -> None:
        """The node's own ``invariants()`` after each of its steps (independent of assert)."""
        assert proc.invariants is not None
        if not proc.alive:
            return
        problems = proc.invariants()
        if problems:
            raise _Stop(Violation("invariant", f"node {proc.pid}: {'; '.join(problems)}"))

    def _check_world(self) -> None:
        """The monitor's safety check, between the steps of one event."""
        if self._check_events:
            violation = self.monitor.after_event(self)
            if violation is not None:
                raise _Stop(violation)

    # -- carrying out Ready batches ----------------------------------------------------------

    def _drain(self, proc: _Proc) -> None:
        """Take ready batches until one needs a durable write (which completes later)."""
        node = proc.node
        if self._on_step_hook is not None and proc.alive:
            self._on_step_hook(self, proc.pid, node)
        while proc.pending is None and proc.alive and not proc.paused and node.has_ready():
            ready = node.ready()
            if ready.persist:
                proc.pending = ready
                lo, hi = FSYNC_LATENCY_US
                done_us = self._now_us + self._disk_rng.randrange(lo, hi)
                self._push(done_us, _PERSISTED, proc.pid, proc.incarnation, None)
                return
            self._carry_out(proc, ready)

    def _carry_out(self, proc: _Proc, ready: Ready, strike: bool = True) -> None:
        pid = proc.pid
        hit: Strike | None = None
        if strike and self._nemesis is not None and not proc.is_client:
            hit = self._nemesis_strike(proc, ready)
            if hit is not None and self._strike_before(proc, ready, hit):
                return
        if hit is not None and hit.kind == "drop":
            for send in ready.send:
                if send.to >= CLIENT_ID_BASE:
                    self._send(pid, send.to, send.msg)
        else:
            for send in ready.send:
                self._send(pid, send.to, send.msg)
        for item in ready.apply:
            self._apply(proc, item)
        for record in ready.record:
            event = record.event
            assert isinstance(event, HistoryEvent), f"unexpected record {event!r}"
            stamped = msgspec.structs.replace(event, time=self._now_us * 1000)
            self._history.append(stamped)
            if self._tracing:
                self._trace_event("history", stamped)
        serve = self.spec.serve
        for request in ready.services:
            assert serve is not None, f"{self.spec.name} asked for service {request!r}"
            serve(proc.node, proc.sm, request)
        proc.node.advance(ready)
        if hit is not None:
            self._strike_after(proc, ready, hit)

    # -- the nemesis -------------------------------------------------------------------------

    def _nemesis_strike(self, proc: _Proc, ready: Ready) -> Strike | None:
        """The strike the nemesis proposes at this batch, if the rule's budget allows it.

        The main rules first (fault phase only, drawing from the nemesis stream); where
        none strikes, the stream rules, each drawing from its own stream (in the heal phase
        too, but only strikes that start no fault).
        """
        hit: Strike | None = None
        if not self._healing:
            rng = self._nemesis_rng
            hit = self._allowed(self._nemesis.on_batch(self, proc.pid, ready, rng), rng)
        if hit is None and self._rule_rngs:
            hit = self._stream_strike(proc, ready)
        if hit is not None:
            self.stats.strikes += 1
            if self._tracing:
                self._trace_event("strike", hit.describe())
        return hit

    def _stream_strike(self, proc: _Proc, ready: Ready) -> Strike | None:
        rngs = self._rule_rngs
        hit: Strike | None = self._nemesis.stream_strike(self, proc.pid, ready, rngs)
        if hit is None or (self._healing and hit.kind not in LATE_KINDS):
            return None
        if not hit.followup:  # a followup is the next step of a sequence its rule started
            hit = self._allowed(hit, rngs[hit.rule])
        if hit is not None:
            self._nemesis.stream_struck(hit)
        return hit

    def _allowed(self, hit: Strike | None, rng: random.Random) -> Strike | None:
        """``hit`` if its rule's budget and the firing draw (from ``rng``) let it happen.

        Each rule gets ``max_strikes`` and, after each strike, waits a random share of the
        fault phase: a rule whose moment comes at every batch does not spend its strikes
        (or starve the others) in the first milliseconds.
        """
        if hit is None:
            return None
        plan = self._plan
        rule = hit.rule
        done = self._rule_strikes.get(rule, 0)
        if done >= plan.max_strikes or self._now_us < self._rule_ready_us.get(rule, 0):
            return None
        if rng.random() >= plan.fire_p:
            return None
        self._rule_strikes[rule] = done + 1
        spread_us = self.schedule.fault_ms * 1000 // max(1, plan.max_strikes)
        self._rule_ready_us[rule] = self._now_us + rng.randrange(0, spread_us + 1)
        return hit

    def _dynamic_fault(
        self, hit: Strike, kind: str, links: tuple[tuple[int, int], ...] = ()
    ) -> None:
        """Start a fault for a strike now; it ends (heals) after the strike's duration."""
        self._dynamic += 1
        index = -self._dynamic
        end_us = self._now_us + hit.duration_us
        event = FaultEvent(
            kind, self._now_us, end_us, node=hit.node, shape=f"nemesis:{hit.rule}", links=links
        )
        self._push(end_us, _FAULT_OFF, index, None, None)
        self._start_fault(index, event)

    def _strike_before(self, proc: _Proc, ready: Ready, hit: Strike) -> bool:
        """Strikes that act before the batch; True when the batch is held back."""
        if hit.kind == "halt":
            self._dynamic_fault(hit, "crash")
            return True
        if hit.kind == "pause":
            if hit.isolate_us:
                cut = replace(hit, kind="isolate", duration_us=hit.isolate_us)
                self._dynamic_fault(cut, "partition", isolate(hit.node, self._node_ids))
            self._dynamic_fault(hit, "pause")
            proc.held.append((_CARRY, ready, None))
            return True
        if hit.kind == "isolate":
            self._dynamic_fault(hit, "partition", isolate(hit.node, self._node_ids))
        elif hit.kind == "split":
            self._dynamic_fault(hit, "partition", split(hit.group, self._node_ids))
        elif hit.kind == "cut":
            self._dynamic_fault(hit, "partition", split((hit.node,), (hit.node, *hit.group)))
        return False

    def _strike_after(self, proc: _Proc, ready: Ready, hit: Strike) -> None:
        self._strike_after_batch(proc, ready, hit)
        for extra in hit.also:
            if extra.kind == "isolate":
                self._dynamic_fault(extra, "partition", isolate(extra.node, self._node_ids))
            elif extra.kind == "cut":
                links = split((extra.node,), (extra.node, *extra.group))
                self._dynamic_fault(extra, "partition", links)
            else:
                self._strike_after_batch(proc, ready, extra)

    def _strike_after_batch(self, proc: _Proc, ready: Ready, hit: Strike) -> None:
        if hit.kind == "crash":
            self._dynamic_fault(hit, "crash")
        elif hit.kind == "inject":
            self._push(self._now_us + hit.duration_us, _DELIVER, hit.node, hit.source, hit.message)
        elif hit.kind == "echo":
            at_us = self._now_us + hit.duration_us
            for send in ready.send:
                if send.to < CLIENT_ID_BASE:
                    self._push(at_us, _DELIVER, send.to, proc.pid, send.msg)

    def _apply(self, proc: _Proc, item: Apply | Restore) -> None:
        sm = proc.sm
        result: Any = None
        if isinstance(item, Restore):
            if sm is not None:
                sm.restore(item.data)
        elif sm is not None:
            result = sm.apply(item.command)
            if item.reply_to is not None:
                self._send(proc.pid, item.reply_to, ClientReply(item.request_id, True, result))
        if self._tracing:
            self._trace_event("apply", proc.pid, item, result)
        violation = self.monitor.on_apply(self, proc.pid, item, result)
        if violation is not None:
            raise _Stop(violation)

    def _send(self, src: int, dst: int, msg: Message) -> None:
        """Put a message on the network, subject to this run's network faults."""
        rng = self._net_rng
        if self._drop_p and rng.random() < self._drop_p:
            self.stats.dropped += 1
            return
        self._enqueue(src, dst, msg, rng)
        if self._dup_p and rng.random() < self._dup_p:
            self.stats.duplicated += 1
            self._enqueue(src, dst, msg, rng)

    def _enqueue(self, src: int, dst: int, msg: Message, rng: random.Random) -> None:
        lo, hi = BASE_LATENCY_US
        latency = lo + _below(rng, hi - lo)
        if self._delay_p and rng.random() < self._delay_p:
            latency += rng.randrange(0, self._delay_max_us)
        at_us = self._now_us + latency
        if self._slow:
            lags = self._slow.get(dst)
            if lags:
                at_us += max(lags)
        if self._reorder:
            at_us += rng.randrange(0, REORDER_JITTER_US)
        else:
            link = (src, dst)
            clocks = self._link_clock
            at_us = max(at_us, clocks.get(link, 0))
            clocks[link] = at_us
            if len(clocks) > self._link_prune_at:
                self._prune_link_clocks()
        self._push(at_us, _DELIVER, dst, src, msg)

    def _prune_link_clocks(self) -> None:
        """Drop the FIFO clocks already in the past (they constrain no future message)."""
        now_us = self._now_us
        kept = {link: t for link, t in self._link_clock.items() if t > now_us}
        self._link_clock = kept
        self._link_prune_at = max(LINK_CLOCK_PRUNE, 2 * len(kept))

    # -- tracing ---------------------------------------------------------------------------

    def _trace_event(self, *fields: Any) -> None:
        record = (self._now_us, *fields)
        self._hasher.update(encode(record))
        if self.config.trace:
            self._trace.append(record)


def _below(rng: random.Random, n: int) -> int:
    """``rng.randrange(n)`` for ``n > 0``, the same draws without its argument checks (the
    hot path of every message): CPython's ``Random._randbelow_with_getrandbits``."""
    bits = n.bit_length()
    r = rng.getrandbits(bits)
    while r >= n:
        r = rng.getrandbits(bits)
    return r


def _describe_exception(exc: Exception) -> str:
    """``Type: message (file:line)`` of where protocol code raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def run_sim(spec: ProtocolDef, config: SimConfig) -> SimResult:
    """Run one simulation and return its result (never raises for protocol violations)."""
    return Simulation(spec, config).run()
