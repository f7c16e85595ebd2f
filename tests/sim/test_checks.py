"""Checks between steps: inside one resume event, node invariants, undecided verdicts."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from click.testing import CliRunner
from rich.console import Console

from pnyx.cli import sim_cmd
from pnyx.core import Message
from pnyx.sim.runner import SimConfig, Simulation, run_sim
from pnyx.sim.schedule import FaultEvent, Schedule
from pnyx.sim.spec import OUTSIDE_FAULT_MODEL, Monitor, ProtocolDef, Violation, World
from tests.sim.probe import PROBE, ProbeNode

PAUSE_US = (100_000, 500_000)


class Flicker(ProbeNode):
    """Claims leadership on every odd message it receives, gives it up on every even one."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.leading = False
        self.stepped = 0
        self.bad_at = -1

    def step(self, msg: Message, from_id: int) -> None:
        super().step(msg, from_id)
        self.stepped += 1
        self.leading = self.stepped % 2 == 1

    def invariants(self) -> list[str]:
        return ["planted: step 7 broke it"] if self.stepped == self.bad_at else []


class LeaderWatch(Monitor):
    """Records every (time, leading) it sees of node 1."""

    def __init__(self, node_ids: tuple[int, ...]) -> None:
        self.seen: list[tuple[int, bool]] = []

    def after_event(self, world: World) -> Violation | None:
        node = world.node(1)
        if isinstance(node, Flicker):
            self.seen.append((world.now_us, node.leading))
        return None


def _paused_run(make_node: Any) -> Simulation:
    spec = ProtocolDef("flicker", "test", make_node, PROBE.make_client, LeaderWatch)
    pause = FaultEvent("pause", PAUSE_US[0], PAUSE_US[1], node=1)
    schedule = Schedule(nodes=2, clients=1, fault_ms=1_000, faults=frozenset({"pause"}))
    schedule = replace(schedule, events=(pause,))
    sim = Simulation(spec, SimConfig(seed=1, schedule=schedule))
    sim.result = sim.run()  # type: ignore[attr-defined]
    return sim


def test_a_leader_rising_and_falling_inside_one_resume_is_seen() -> None:
    sim = _paused_run(Flicker)
    monitor = sim.monitor
    assert isinstance(monitor, LeaderWatch)
    at_resume = {leading for t, leading in monitor.seen if t == PAUSE_US[1]}
    # Dozens of held messages replay at the resume instant: both states are observed
    # (checking once per event saw only the last one).
    assert at_resume == {True, False}


def test_node_invariants_are_checked_after_every_step() -> None:
    class Broken(Flicker):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.bad_at = 7  # wrong for exactly one step, right again after the next

    spec = ProtocolDef("broken", "test", Broken, PROBE.make_client, LeaderWatch)
    result = run_sim(spec, SimConfig(seed=1))
    assert result.violation is not None
    assert result.violation.prop == "invariant"
    assert "planted: step 7" in result.violation.detail


class Undecided(Monitor):
    def __init__(self, node_ids: tuple[int, ...]) -> None:
        pass

    def unknowns(self) -> list[str]:
        return ["linearizability unknown: timed out"]


def test_unknown_verdicts_are_reported_and_fail_a_seed_set_over_the_bound() -> None:
    spec = ProtocolDef("undecided", "test", ProbeNode, PROBE.make_client, Undecided)
    result = run_sim(spec, SimConfig(seed=1, fault_ms=200, heal_ms=200))
    assert result.ok and result.unknown == ["linearizability unknown: timed out"]
    base = SimConfig(seed=0, fault_ms=200, heal_ms=200)
    console = Console(file=open("/dev/null", "w"))  # noqa: SIM115 - closed below
    try:
        seeds = range(3)
        assert sim_cmd._run_many(spec, base, seeds, True, True, None, max_unknown=2) == 1
        assert sim_cmd._run_many(spec, base, seeds, True, True, None, max_unknown=3) == 0
        assert sim_cmd._report_unknown(console, [(1, "x"), (1, "y")], 0)
        assert not sim_cmd._report_unknown(console, [(1, "x"), (1, "y")], 1)
    finally:
        console.file.close()


def test_runs_outside_the_fault_model_are_listed_but_not_counted_as_undecided() -> None:
    console = Console(record=True, width=200)
    outside = f"{OUTSIDE_FAULT_MODEL}: 3 replicas down; liveness not required"
    assert not sim_cmd._report_unknown(console, [(4, outside), (9, outside)], 0)
    assert "2 seed(s) left the fault model" in console.export_text()
    assert sim_cmd._report_unknown(console, [(4, outside), (5, "timed out")], 0)
    assert "1 seed(s) with an undecided check" in console.export_text()


def test_pnyx_sim_vr_exits_0_when_seeds_only_left_the_fault_model() -> None:
    result = CliRunner().invoke(sim_cmd.sim, ["vr", "--seeds", "0..5", "--no-shrink"])
    assert "left the fault model" in result.output, result.output  # seeds 0, 3, 5 do
    assert result.exit_code == 0, result.output


def test_raft_counts_a_timed_out_linearizability_check(monkeypatch: Any) -> None:
    from pnyx.check import linearizability
    from pnyx.protocols.raft import spec as raft

    real = linearizability.check_linearizable

    def timed_out(*args: Any, **kwargs: Any) -> Any:
        return replace(real(*args, **kwargs), verdict="unknown")

    monkeypatch.setattr(linearizability, "check_linearizable", timed_out)
    result = run_sim(raft.RAFT, SimConfig(seed=3))
    assert result.ok
    assert result.unknown and "linearizability" in result.unknown[0]


class Stalling(Flicker):
    """Records clock stalls and when they came relative to the replayed messages."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.stalls: list[tuple[int, int, int]] = []
        """(dropped ticks, ticks so far, messages received so far)"""

    def clock_stalled(self, missed_ticks: int) -> None:
        self.stalls.append((missed_ticks, self.ticks, self.stepped))


def test_ticks_beyond_the_catch_up_bound_are_reported_as_a_stall_before_replay() -> None:
    from pnyx.sim.runner import MAX_CATCH_UP_TICKS

    sim = _paused_run(Stalling)
    node = sim.node(1)
    assert isinstance(node, Stalling)
    [(dropped, ticks_then, stepped_then)] = node.stalls
    missed = (PAUSE_US[1] - PAUSE_US[0]) // sim.config.tick_us
    assert missed - MAX_CATCH_UP_TICKS - 1 <= dropped <= missed - MAX_CATCH_UP_TICKS
    before_pause = PAUSE_US[0] // sim.config.tick_us
    # Reported before the catch-up ticks and before the ~40 held messages were replayed.
    assert ticks_then <= before_pause + 1
    assert stepped_then <= before_pause + 2 and node.stepped >= stepped_then + 30
    assert sim.stats.stalls == 1
