"""Simulator specs for failure detection: SWIM (with and without Lifeguard), phi-accrual and
a fixed timeout, under crashes, pauses, message loss and slow members.

``pnyx sim swim|swim-lifeguard|phi|fixed --nodes N --seeds A..B`` runs a group of ``N``
members that starts formed (every member knows every other as alive).  Each seed draws
its faults from the kinds named by ``--faults`` (:data:`SUPPORTED_KINDS`; other kinds are
ignored): ``crash`` (crash-stop of up to :data:`MAX_CRASHES` members, no restart),
``pause`` (a member stops and resumes; short pauses that the detector must tolerate and
long ones that it may report), ``drop`` (a loss rate of 1-20 % for the whole run),
``duplicate`` and ``slow`` (a member processes every message it receives late, see
:mod:`pnyx.sim.schedule`).  ``--fault-ms`` is the length of the fault window (at least
:data:`MIN_WINDOW_MS`) after a warm-up of :data:`WARMUP_MS`.

The :class:`MembershipMonitor` checks two properties and the run exits 1 on a violation:

- **completeness**: every crashed member is declared dead by every member that is live
  at the deadline, within :meth:`Detector.completeness_bound_us` of the crash (plus, for
  each observer, the time it spent paused and the largest slow-member lag of the run),
  and stays dead there;
- **accuracy** (only in runs without loss and without slow members): no *healthy* member
  (never crashed, never slow, never paused longer than
  :meth:`Detector.tolerated_pause_us`) is ever declared dead by anyone.

A run ends early once every crashed member is dead everywhere and the fault window plus
:data:`SETTLE_MS` has passed.  The monitor also counts what the measurements need: false
positives (healthy and unhealthy members declared dead), detection and dissemination
times (see ``bench/bench_membership.py`` and docs/FAILURE_DETECTION.md).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import msgspec

from pnyx.core import DurableState, Message, Node, Outbox, Ready, Rng, Send
from pnyx.protocols.membership import (
    FixedConfig,
    HeartbeatNode,
    PhiConfig,
    SwimConfig,
    SwimNode,
    detection_bound_ticks,
    push_pull_period_ticks,
    suspicion_max_ticks,
    suspicion_min_ticks,
)
from pnyx.protocols.membership.messages import ALIVE, MemberEvent, PushPull, Update
from pnyx.protocols.membership.phi import threshold_y
from pnyx.sim.schedule import FaultEvent, NetworkFaults, Schedule
from pnyx.sim.spec import Monitor, ProtocolDef, SimRandom, Violation, World

TICK_MS = 50
"""Tick of membership runs: probe timeout 10 ticks, gossip 4, probe period 20."""
TICK_SLOTS = 10
"""Phase slots of the grouped ticks (see ``ProtocolDef.tick_slots``)."""
WARMUP_MS = 2_000
"""Faults start after this (the group starts formed; this lets timers spread out)."""
MIN_WINDOW_MS = 10_000
"""Shortest fault window (``--fault-ms`` below it is raised to it)."""
SETTLE_MS = 2_000
"""Observation after the fault window before a run may end."""
MAX_CRASHES = 3
"""Crash-stops per run (at most a tenth of the group, at least one)."""
MAX_LATENCY_US = 32_000
"""Slack for one message's latency (base latency plus a duplicate or a delay)."""
SUPPORTED_KINDS: frozenset[str] = frozenset({"crash", "pause", "drop", "duplicate", "slow"})
"""Fault kinds membership runs draw; other ``--faults`` kinds are ignored."""
SLOW_LAG_MS = (1_000, 10_000)
"""Processing lag of a slow member (log-uniform): up to about twice SWIM's suspicion
timeout at small groups, within Lifeguard's longest one."""
FIRST_PROBE_PERIODS = 20
"""Probe periods within which some live member probes a crashed one: each of the n - 1
members meets it at a uniform place of its shuffled round-robin list, so none has in k
periods with probability about e^-k (2e-9 at 20)."""
HEARTBEAT_SLACK = 2
"""Factor on the phi-accrual detection time in its completeness bound: the window's mean
is taken as two intervals and its deviation as one (20 % loss gives 1.25 and 0.56)."""
PAUSE_TOLERANCE = 2
"""A pause of at most 1/this of the detector's shortest way to declare a member dead must
not get the member declared dead (the rest is slack for the refutation to spread)."""


# -- detectors -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detector:
    """One failure detector with its configuration (ticks of :data:`TICK_MS`)."""

    name: str
    swim: SwimConfig | None = None
    heartbeat: PhiConfig | FixedConfig | None = None
    heartbeat_interval_ticks: int = 0
    refute: bool = True
    """False: the broken variant, whose members never refute a suspicion of themselves."""
    join_last: bool = False
    """SWIM: the member with the highest id is not part of the formed group; it joins
    through member 1 (to measure how fast a join spreads)."""

    def make_node(
        self, node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState
    ) -> Node:
        """A member of a group that starts formed (every peer known alive); nothing of it is
        durable (``durable`` is ignored)."""
        if self.swim is not None:
            joiner = max(peers) if self.join_last else None
            if node_id == joiner:
                return SwimNode(node_id, "", self.swim, rng, {min(peers): ""})
            everyone = {p: "" for p in peers if p != joiner}
            node = SwimNode(node_id, "", self.swim, rng, {}, initial_members=everyone)
            return node if self.refute else _NoRefutation(node)
        if self.heartbeat is None:
            raise ValueError(f"detector {self.name!r} has neither SWIM nor heartbeat settings")
        return HeartbeatNode(node_id, peers, rng, self.heartbeat, self.heartbeat_interval_ticks)

    def completeness_bound_us(self, n: int, tick_us: int) -> int:
        """Virtual time from a crash until every live member has declared it dead.

        SWIM: the smaller of the configuration's worst case
        (:func:`~pnyx.protocols.membership.detection_bound_ticks`: each member probes the
        crashed one itself) and a bound that holds with high probability: some member
        probes it within :data:`FIRST_PROBE_PERIODS` periods (stretched by the largest
        local-health factor), its probe times out, its suspicion runs out (at most
        :func:`~pnyx.protocols.membership.suspicion_max_ticks`), and the death reaches
        every member by gossip or, failing that, by two push/pull periods.
        Fixed timeout: the timeout after the last heartbeat (exact).  Phi: the detection
        time for a window of mean two intervals and deviation one, times
        :data:`HEARTBEAT_SLACK`.  Each plus two ticks of rounding and one message latency.
        """
        slack_us = 2 * tick_us + MAX_LATENCY_US
        if self.swim is not None:
            return _swim_bound_ticks(self.swim, n) * tick_us + slack_us
        if isinstance(self.heartbeat, FixedConfig):
            return self.heartbeat.timeout_ticks * tick_us + slack_us
        if isinstance(self.heartbeat, PhiConfig):
            return math.ceil(_phi_nominal_ticks(self.heartbeat) * HEARTBEAT_SLACK) * tick_us + (
                slack_us
            )
        raise ValueError(f"detector {self.name!r} has no configuration")

    def tolerated_pause_us(self, n: int, tick_us: int) -> int:
        """Longest pause of a member that must not get it declared dead.

        Half (:data:`PAUSE_TOLERANCE`) of the quickest way the detector can declare a
        member dead: SWIM's shortest suspicion timeout (the refutation needs the rest),
        phi's acceptable heartbeat pause, the fixed timeout less one heartbeat interval.
        """
        if self.swim is not None:
            ticks = suspicion_min_ticks(self.swim, n)
        elif isinstance(self.heartbeat, PhiConfig):
            ticks = self.heartbeat.acceptable_heartbeat_pause_ticks
        elif isinstance(self.heartbeat, FixedConfig):
            ticks = max(0, self.heartbeat.timeout_ticks - self.heartbeat_interval_ticks)
        else:
            raise ValueError(f"detector {self.name!r} has no configuration")
        return ticks * tick_us // PAUSE_TOLERANCE


def _swim_bound_ticks(config: SwimConfig, n: int) -> int:
    if n < 2:
        return 0
    scale = config.awareness_scale_max()
    likely = (
        FIRST_PROBE_PERIODS * config.probe_interval_ticks * scale
        + config.probe_timeout_ticks * scale
        + suspicion_max_ticks(config, n)
        + 2 * push_pull_period_ticks(config, n)
    )
    return min(detection_bound_ticks(config, n), likely)


def _phi_nominal_ticks(config: PhiConfig) -> float:
    interval = config.heartbeat_interval_ticks
    std = max(config.min_std_dev_ticks, float(interval))
    return (
        2 * interval + config.acceptable_heartbeat_pause_ticks + threshold_y(config.threshold) * std
    )


def swim_detector(
    *, lifeguard: bool, suspicion_mult: int = 4, refute: bool = True, name: str = ""
) -> Detector:
    """SWIM with memberlist's LAN defaults (``suspicion_mult`` overridden)."""
    config = SwimConfig.lan(TICK_MS, lifeguard=lifeguard)
    if suspicion_mult != config.suspicion_mult:
        config = replace(config, suspicion_mult=suspicion_mult)
    default = "swim-lifeguard" if lifeguard else "swim"
    return Detector(name or default, swim=config, refute=refute)


def phi_detector(*, threshold: float = 8.0) -> Detector:
    """Phi-accrual with Akka's defaults (heartbeats every second)."""
    config = PhiConfig.akka(TICK_MS, threshold=threshold)
    return Detector(
        "phi", heartbeat=config, heartbeat_interval_ticks=config.heartbeat_interval_ticks
    )


def fixed_detector(*, timeout_ms: int = 5_000) -> Detector:
    """A fixed timeout after the last heartbeat (heartbeats every second)."""
    config = FixedConfig.default(TICK_MS, timeout_ms=timeout_ms)
    interval_ticks = PhiConfig.akka(TICK_MS).heartbeat_interval_ticks
    return Detector("fixed", heartbeat=config, heartbeat_interval_ticks=interval_ticks)


class _NoRefutation:
    """A SWIM member with a bug: it never tells others it is alive after all (its alive
    updates about itself with a raised incarnation are taken out of what it sends)."""

    def __init__(self, inner: SwimNode) -> None:
        self.inner = inner
        self.node_id = inner.node_id

    def step(self, msg: Message, from_id: int) -> None:
        self.inner.step(msg, from_id)

    def tick(self) -> None:
        self.inner.tick()

    def has_ready(self) -> bool:
        return self.inner.has_ready()

    def ready(self) -> Ready:
        ready = self.inner.ready()
        ready.send = [Send(s.to, self._strip(s.msg)) for s in ready.send]
        return ready

    def advance(self, ready: Ready) -> None:
        self.inner.advance(ready)

    def take_events(self) -> list[MemberEvent]:
        return self.inner.take_events()

    def _strip(self, msg: Message) -> Message:
        me = self.node_id
        if isinstance(msg, PushPull):
            kept = tuple(u for u in msg.states if not _refutes(u, me))
            return msgspec.structs.replace(msg, states=kept)
        updates: tuple[Update, ...] | None = getattr(msg, "updates", None)
        if not updates:
            return msg
        return msgspec.structs.replace(
            msg, updates=tuple(u for u in updates if not _refutes(u, me))
        )


def _refutes(update: Update, me: int) -> bool:
    return update.member_id == me and update.state == ALIVE and update.incarnation > 0


# -- the fault schedule -----------------------------------------------------------------------


def draw_schedule(
    detector: Detector, seed: int, nodes: int, fault_ms: int, faults: frozenset[str]
) -> Schedule:
    """The faults of one membership run (their own RNG stream, so a seed replays)."""
    rng = SimRandom(f"pnyx-membership-schedule:{seed}")
    tick_us = TICK_MS * 1000
    kinds = faults & SUPPORTED_KINDS
    window_us = max(fault_ms, MIN_WINDOW_MS) * 1000
    start_us, end_us = WARMUP_MS * 1000, WARMUP_MS * 1000 + window_us
    node_ids = list(range(1, nodes + 1))
    events: list[FaultEvent] = []
    crashed: list[int] = []
    if "crash" in kinds and nodes >= 2:
        count = rng.randrange(1, max(1, min(MAX_CRASHES, nodes // 10)) + 1)
        crashed = rng.sample(node_ids, count)
        for node in crashed:
            at_us = rng.randrange(start_us, start_us + window_us // 2)
            events.append(FaultEvent("crash", at_us, 0, node=node))  # end set below
    if "pause" in kinds:
        tolerated_us = detector.tolerated_pause_us(nodes, tick_us)
        for node in rng.sample(node_ids, min(nodes, rng.randrange(1, 4))):
            events.append(_draw_pause(rng, node, start_us, end_us, tolerated_us))
    if "slow" in kinds:
        for node in rng.sample(node_ids, min(nodes, rng.randrange(1, 3))):
            events.append(_draw_slow(rng, node, start_us, end_us))
    bound_us = detector.completeness_bound_us(nodes, tick_us)
    run_us = end_us + SETTLE_MS * 1000 + _tail_us(events, bound_us)
    events = [e if e.kind != "crash" else _until(e, run_us + 1) for e in events]
    events.sort(key=lambda e: (e.start_us, e.kind, e.node))
    network = NetworkFaults(
        drop_p=rng.uniform(0.01, 0.2) if "drop" in kinds else 0.0,
        duplicate_p=rng.uniform(0.01, 0.05) if "duplicate" in kinds else 0.0,
    )
    return Schedule(nodes, 0, -(-run_us // 1000), kinds, network, (), tuple(events))


def _tail_us(events: list[FaultEvent] | tuple[FaultEvent, ...], bound_us: int) -> int:
    """Time a run goes on after its fault window and settling: the completeness bound, the
    largest slow lag and every pause (an observer's deadline moves by its pauses)."""
    lag_us = max((e.lag_us for e in events), default=0)
    paused_us = sum(e.end_us - e.start_us for e in events if e.kind == "pause")
    return bound_us + lag_us + paused_us


def _until(event: FaultEvent, end_us: int) -> FaultEvent:
    return FaultEvent(event.kind, event.start_us, end_us, node=event.node)


def _draw_pause(
    rng: SimRandom, node: int, start_us: int, end_us: int, tolerated_us: int
) -> FaultEvent:
    """Half the pauses are short (tolerated, at least half the tolerated length), half long
    (up to 20 s: the member may be reported dead, and must then come back)."""
    at_us = rng.randrange(start_us, end_us)
    if rng.random() < 0.5:
        length_us = rng.randrange(max(1, tolerated_us // 2), max(2, tolerated_us + 1))
    else:
        low = max(tolerated_us + 1, 1_000)
        length_us = int(low * (max(low + 1, 20_000_000) / low) ** rng.random())
    return FaultEvent("pause", at_us, at_us + length_us, node=node)


def _draw_slow(rng: SimRandom, node: int, start_us: int, end_us: int) -> FaultEvent:
    at_us = rng.randrange(start_us, start_us + (end_us - start_us) // 2)
    lo, hi = SLOW_LAG_MS
    lag_us = int(lo * (hi / lo) ** rng.random()) * 1000
    return FaultEvent("slow", at_us, end_us, node=node, lag_us=lag_us)


# -- the monitor ------------------------------------------------------------------------------


@dataclass
class Crash:
    """What the monitor saw of one crashed member."""

    member: int
    at_us: int
    declared_us: dict[int, int] = field(default_factory=dict)
    """observer -> when it declared the member dead (removed if it changed its mind)."""
    paused_us_at_crash: dict[int, int] = field(default_factory=dict)
    complete_us: int | None = None
    """When every member live at that time had it dead (None until then)."""


class MembershipMonitor(Monitor):
    """Completeness and accuracy of a failure detector (see the module doc), plus counts."""

    def __init__(self, node_ids: tuple[int, ...], detector: Detector) -> None:
        n = len(node_ids)
        tick_us = TICK_MS * 1000
        self.node_ids = node_ids
        self.detector = detector
        self.bound_us = detector.completeness_bound_us(n, tick_us)
        self.tolerated_pause_us = detector.tolerated_pause_us(n, tick_us)
        self.crashes: dict[int, Crash] = {}
        self.unhealthy: set[int] = set()
        """Members that were slow or paused beyond the tolerated pause (or crashed)."""
        self.paused_since: dict[int, int] = {}
        self.paused_total_us: dict[int, int] = {}
        self.max_lag_us = 0
        self.dead_views: dict[int, set[int]] = {}
        """live member -> observers that currently have it dead."""
        self.false_positives: list[tuple[int, int, int, bool]] = []
        """(time, observer, member, healthy) of each incident: a live member declared dead
        while no one else had it dead."""
        self.declarations = 0
        """Every observer's declaration of a live member dead."""
        self.alive_seen: dict[int, dict[int, int]] = {}
        """member -> observer -> when the observer first reported it alive (joins and
        refutations; a formed group's members are known without an event)."""
        self.accuracy: bool | None = None
        self.end_us = 0
        self._deadlines: list[tuple[int, int, int]] = []
        self._violation: Violation | None = None

    # -- hooks of the runner ---------------------------------------------------------

    def on_fault(self, world: World, event: FaultEvent, started: bool) -> None:
        """Crashes, pauses and slow members as they start and end."""
        self._setup(world)
        node = event.node
        now = world.now_us
        if event.kind == "crash" and started:
            self._crashed(node, now)
        elif event.kind == "pause":
            if started:  # the runner resumes a node at the first end of its pauses
                self.paused_since.setdefault(node, now)
                if event.end_us - event.start_us > self.tolerated_pause_us:
                    self.unhealthy.add(node)
            elif node in self.paused_since:
                begun = self.paused_since.pop(node)
                self.paused_total_us[node] = self.paused_total_us.get(node, 0) + now - begun
        elif event.kind == "slow" and started:
            self.unhealthy.add(node)
            self.max_lag_us = max(self.max_lag_us, event.lag_us)

    def on_step(self, world: World, node_id: int, node: Node) -> None:
        """Collect the membership changes the node saw in this step."""
        if world.healing:
            return
        events: list[MemberEvent] = node.take_events()  # type: ignore[attr-defined]
        for event in events:
            self._observe(world, node_id, event)

    def after_event(self, world: World) -> Violation | None:
        if self._violation is not None:
            return self._violation
        if self._deadlines and self._deadlines[0][0] <= world.now_us and not world.healing:
            self._check_due(world)
        return self._violation

    def finished(self, world: World) -> bool:
        """True once the fault window plus settling passed and every crash is complete."""
        self._setup(world)
        if world.now_us < self.end_us:
            return False
        return all(self._complete(world, crash) for crash in self.crashes.values())

    def at_end(self, world: World) -> Violation | None:
        if self._violation is None and not world.healing:
            self._check_due(world)
        return self._violation

    # -- bookkeeping -------------------------------------------------------------------

    def _setup(self, world: World) -> None:
        if self.accuracy is not None:
            return
        schedule = world.schedule
        slow = any(e.kind == "slow" for e in schedule.events)
        self.accuracy = schedule.network.drop_p == 0 and not slow
        # The fault window plus settling: what the schedule's length has beyond the tail.
        settled_us = schedule.fault_ms * 1000 - _tail_us(schedule.events, self.bound_us)
        ends = [e.end_us + SETTLE_MS * 1000 for e in schedule.events if e.kind != "crash"]
        self.end_us = max([settled_us, *ends])

    def _crashed(self, member: int, now_us: int) -> None:
        self.unhealthy.add(member)
        begun = self.paused_since.pop(member, None)
        if begun is not None:
            self.paused_total_us[member] = self.paused_total_us.get(member, 0) + now_us - begun
        crash = Crash(member, now_us, paused_us_at_crash=self._paused_snapshot(now_us))
        self.crashes[member] = crash
        heapq.heappush(self._deadlines, (now_us + self.bound_us, member, -1))
        views = self.dead_views.pop(member, set())
        for observer in views:
            crash.declared_us[observer] = now_us

    def _paused_snapshot(self, now_us: int) -> dict[int, int]:
        snap = dict(self.paused_total_us)
        for node, since in self.paused_since.items():
            snap[node] = snap.get(node, 0) + now_us - since
        return snap

    def _observe(self, world: World, observer: int, event: MemberEvent) -> None:
        member = event.member_id
        dead = event.state in ("dead", "left")
        if event.state == "alive":
            self.alive_seen.setdefault(member, {}).setdefault(observer, world.now_us)
        crash = self.crashes.get(member)
        if crash is not None:
            if dead:
                crash.declared_us.setdefault(observer, world.now_us)
            elif observer in crash.declared_us and event.state == "alive":
                del crash.declared_us[observer]
                if world.now_us >= self._due_us(crash, observer, world.now_us):
                    self._fail(
                        "completeness",
                        f"member {member} (crashed at {crash.at_us / 1e3:.0f} ms) is alive "
                        f"again at member {observer} at {world.now_us / 1e3:.0f} ms "
                        f"(incarnation {event.incarnation})",
                    )
            return
        views = self.dead_views.setdefault(member, set())
        if not dead:
            views.discard(observer)
            return
        if observer in views:
            return
        self.declarations += 1
        healthy = member not in self.unhealthy
        if not views:
            self.false_positives.append((world.now_us, observer, member, healthy))
        views.add(observer)
        if healthy and self.accuracy:
            self._fail(
                "accuracy",
                f"member {observer} declared live member {member} {event.state} at "
                f"{world.now_us / 1e3:.0f} ms (no loss, no slow members; it never crashed, "
                f"was never slow and never paused longer than "
                f"{self.tolerated_pause_us / 1e3:.0f} ms)",
            )

    def _fail(self, prop: str, detail: str) -> None:
        if self._violation is None:
            self._violation = Violation(prop, detail)

    # -- completeness --------------------------------------------------------------------

    def _due_us(self, crash: Crash, observer: int, now_us: int) -> int:
        """The observer's deadline: the bound, plus its pauses since the crash, plus lag."""
        paused_now = self._paused_snapshot(now_us).get(observer, 0)
        paused = paused_now - crash.paused_us_at_crash.get(observer, 0)
        return crash.at_us + self.bound_us + paused + self.max_lag_us

    def _check_due(self, world: World) -> None:
        now_us = world.now_us
        while self._deadlines and self._deadlines[0][0] <= now_us and self._violation is None:
            _, member, only = heapq.heappop(self._deadlines)
            crash = self.crashes[member]
            observers = self.node_ids if only < 0 else (only,)
            for observer in observers:
                self._check_observer(world, crash, observer)

    def _check_observer(self, world: World, crash: Crash, observer: int) -> None:
        if observer == crash.member or observer in crash.declared_us:
            return
        if world.node(observer) is None or world.stopped(observer):
            return  # crashed itself: owes nothing
        due_us = self._due_us(crash, observer, world.now_us)
        if due_us > world.now_us or observer in self.paused_since:
            later = max(due_us, world.now_us + TICK_MS * 1000)
            heapq.heappush(self._deadlines, (later, crash.member, observer))
            return
        self._fail(
            "completeness",
            f"member {crash.member} crashed at {crash.at_us / 1e3:.0f} ms and member "
            f"{observer} has not declared it dead {(world.now_us - crash.at_us) / 1e3:.0f} ms "
            f"later (its view: {_view(world, observer, crash.member)}; bound "
            f"{self.bound_us / 1e3:.0f} ms from the {self.detector.name} configuration)",
        )

    def _complete(self, world: World, crash: Crash) -> bool:
        if crash.complete_us is not None:
            return True
        for observer in self.node_ids:
            if observer == crash.member or observer in crash.declared_us:
                continue
            if world.node(observer) is None or world.stopped(observer):
                continue
            return False
        crash.complete_us = max(crash.declared_us.values(), default=crash.at_us)
        return True


def _view(world: World, observer: int, member: int) -> str:
    members = getattr(world.node(observer), "members", None)
    if members is None:
        return "unknown"
    view = members().get(member)
    return "not a member" if view is None else f"{view.state} at incarnation {view.incarnation}"


# -- specs ------------------------------------------------------------------------------------


class _NoClient(Outbox):
    """Membership runs have no clients; one asked for anyway does nothing."""

    def __init__(self, client_id: int, _nodes: tuple[int, ...], _rng: Rng) -> None:
        super().__init__()
        self.node_id = client_id

    def step(self, msg: Message, from_id: int) -> None:
        """Ignore."""

    def tick(self) -> None:
        """Nothing to do."""


@dataclass(frozen=True)
class MembershipSpec(ProtocolDef):
    """A :class:`ProtocolDef` with its own run shape: its own tick, grouped ticks, its own
    fault schedule."""

    detector: Detector | None = None
    sim_tick_us: int | None = TICK_MS * 1000
    tick_slots: int = TICK_SLOTS

    def draw_schedule(
        self, seed: int, nodes: int, fault_ms: int, faults: frozenset[str]
    ) -> Schedule:
        """This detector's fault schedule for ``seed`` (see :func:`draw_schedule`)."""
        if self.detector is None:
            raise ValueError(f"membership spec {self.name!r} has no detector")
        return draw_schedule(self.detector, seed, nodes, fault_ms, faults)


def membership_spec(detector: Detector, summary: str, *, broken: bool = False) -> MembershipSpec:
    """The spec running ``detector`` (named after it)."""

    def make_monitor(node_ids: tuple[int, ...]) -> Monitor:
        return MembershipMonitor(node_ids, detector)

    return MembershipSpec(
        name=detector.name,
        summary=summary,
        make_node=detector.make_node,
        make_client=_NoClient,
        make_monitor=make_monitor,
        default_nodes=16,
        default_clients=0,
        broken=broken,
        detector=detector,
    )


SWIM = membership_spec(
    swim_detector(lifeguard=False), "SWIM failure detection and membership (no Lifeguard)"
)
SWIM_LIFEGUARD = membership_spec(
    swim_detector(lifeguard=True), "SWIM with Lifeguard (memberlist's LAN defaults)"
)
PHI = membership_spec(phi_detector(), "all-to-all heartbeats, phi-accrual (Akka's defaults)")
FIXED = membership_spec(fixed_detector(), "all-to-all heartbeats, fixed 5 s timeout")
SWIM_BROKEN = membership_spec(
    swim_detector(lifeguard=False, refute=False, name="swim-broken"),
    "deliberately broken SWIM: members never refute a suspicion of themselves",
    broken=True,
)

SPECS: Mapping[str, MembershipSpec] = {
    s.name: s for s in (SWIM, SWIM_LIFEGUARD, PHI, FIXED, SWIM_BROKEN)
}
"""The membership specs by name."""
