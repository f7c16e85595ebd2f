"""Simulator features added for large membership runs: slow members, grouped ticks, the
spec's own tick and schedule, and a monitor that ends a run early."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

from pnyx.core import DurableState, Message, Outbox, Rng
from pnyx.sim.runner import SimConfig, Simulation, run_sim
from pnyx.sim.schedule import FaultEvent, Schedule, generate, parse_faults
from pnyx.sim.spec import Monitor, ProtocolDef, World


class Ping(Message, frozen=True):
    seq: int


class Pinger(Outbox):
    """Node 1 pings node 2 every 10 ticks; each node notes the tick of every receipt."""

    def __init__(
        self, node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState
    ) -> None:
        super().__init__()
        self.node_id = node_id
        self.ticks = 0
        self.received_at: list[int] = []

    def step(self, msg: Message, from_id: int) -> None:
        self.received_at.append(self.ticks)

    def tick(self) -> None:
        self.ticks += 1
        if self.node_id == 1 and self.ticks % 10 == 1:
            self._send(2, Ping(self.ticks))


class StopAt(Monitor):
    """Ends the run once virtual time reaches ``stop_us``; counts steps per node."""

    def __init__(self, node_ids: tuple[int, ...], stop_us: int = 1_000_000) -> None:
        self.stop_us = stop_us
        self.steps: dict[int, int] = dict.fromkeys(node_ids, 0)
        self.faults: list[tuple[str, bool]] = []

    def on_step(self, world: World, node_id: int, node: Any) -> None:
        self.steps[node_id] += 1

    def on_fault(self, world: World, event: FaultEvent, started: bool) -> None:
        self.faults.append((event.kind, started))

    def finished(self, world: World) -> bool:
        return world.now_us >= self.stop_us


@dataclass(frozen=True)
class ShapedSpec(ProtocolDef):
    sim_tick_us: int = 10_000
    tick_slots: int = 0
    slow_lag_us: int = 0

    def draw_schedule(
        self, seed: int, nodes: int, fault_ms: int, faults: frozenset[str]
    ) -> Schedule:
        events: tuple[FaultEvent, ...] = ()
        if self.slow_lag_us:
            events = (FaultEvent("slow", 0, fault_ms * 1000, node=2, lag_us=self.slow_lag_us),)
        return Schedule(nodes, 0, fault_ms, faults, events=events)


def _spec(**kw: Any) -> ShapedSpec:
    return ShapedSpec(
        name="pinger",
        summary="test",
        make_node=Pinger,
        make_client=lambda *a: Pinger(0, (), a[2], DurableState()),
        make_monitor=StopAt,
        default_nodes=2,
        default_clients=0,
        **kw,
    )


def _receipts(spec: ShapedSpec) -> list[int]:
    sim = Simulation(spec, SimConfig(seed=1, fault_ms=2_000))
    assert sim.run().ok
    node = sim.node(2)
    assert isinstance(node, Pinger)
    return node.received_at


def test_a_slow_member_receives_every_message_late_by_its_lag() -> None:
    prompt = _receipts(_spec())
    late = _receipts(_spec(slow_lag_us=300_000))
    assert prompt and late
    # sent every 10 ticks: received within a tick of being sent, or 30 ticks (300 ms) later
    assert all(b - a == 10 for a, b in itertools.pairwise(prompt))
    assert len(late) >= len(prompt) - 3
    assert all(29 <= b - a <= 31 for a, b in zip(prompt, late, strict=False))


def test_the_monitor_ends_the_run_and_sees_every_step_and_fault() -> None:
    sim = Simulation(_spec(slow_lag_us=1), SimConfig(seed=1, fault_ms=5_000))
    result = sim.run()
    assert 1_000_000 <= result.stats.virtual_us < 1_100_000  # finished at 1 s, not 5 s
    monitor = sim.monitor
    assert isinstance(monitor, StopAt)
    assert monitor.steps[1] >= 100 and monitor.steps[2] >= 100  # ticks and receipts
    assert monitor.faults == [("slow", True)]


def test_grouped_ticks_tick_every_node_at_the_nominal_rate_and_replay() -> None:
    spec = _spec(tick_slots=4, sim_tick_us=50_000)
    config = SimConfig(seed=3, fault_ms=2_000, nodes=40, hash_trace=True)
    first, again = run_sim(spec, config), run_sim(spec, config)
    assert first.trace_hash == again.trace_hash
    assert first.stats.ticks == 40 * 20  # 1 s at 50 ms ticks, every node
    other = run_sim(spec, replace(config, seed=4))
    assert other.trace_hash != first.trace_hash


def test_slow_is_off_in_all_and_drawn_from_its_own_stream() -> None:
    assert "slow" not in parse_faults("all")
    plain = generate(7, 5, 2, 3000, parse_faults("all"))
    with_slow = generate(7, 5, 2, 3000, parse_faults("all,slow"))
    assert [e for e in with_slow.events if e.kind != "slow"] == list(plain.events)
    slow = [e for e in with_slow.events if e.kind == "slow"]
    assert slow and all(e.lag_us > 0 for e in slow)
    assert Schedule.from_json(with_slow.to_json()) == with_slow
