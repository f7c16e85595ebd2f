"""Failure detectors in the simulator: completeness and accuracy over seeds, a broken SWIM
caught by accuracy, the monitor catching a detector slower than its bound, and Lifeguard's
false positives under slow members against SWIM's on the same seeds."""

from __future__ import annotations

from dataclasses import replace

import pytest
from click.testing import CliRunner

from pnyx.catalog import get_protocol
from pnyx.cli.main import cli
from pnyx.protocols.membership.spec import (
    MembershipMonitor,
    MembershipSpec,
    fixed_detector,
    membership_spec,
)
from pnyx.sim.runner import SimConfig, SimResult, Simulation, run_sim
from pnyx.sim.schedule import parse_faults

DETECTORS = ("swim", "swim-lifeguard", "phi", "fixed")


def _run(name: str, seed: int, faults: str, nodes: int = 12) -> SimResult:
    return run_sim(
        get_protocol(name), SimConfig(seed=seed, nodes=nodes, faults=parse_faults(faults))
    )


def _failures(results: list[SimResult]) -> list[str]:
    return [f"seed {r.seed}: {r.violation}" for r in results if not r.ok]


@pytest.mark.parametrize("name", DETECTORS)
def test_complete_and_accurate_under_crashes_and_pauses(name: str) -> None:
    """No loss, no slow members: accuracy is checked as well as completeness."""
    results = [_run(name, seed, "crash,pause") for seed in range(1, 13)]
    assert _failures(results) == []
    assert sum(r.stats.crashes for r in results) >= 12  # every seed crashed someone


@pytest.mark.parametrize("name", DETECTORS)
def test_complete_under_loss_slow_members_and_pauses(name: str) -> None:
    results = [_run(name, seed, "crash,pause,drop,duplicate,slow") for seed in range(1, 7)]
    assert _failures(results) == []
    assert all(r.stats.dropped > 0 for r in results)


def test_accuracy_is_checked_only_without_loss_and_slow_members() -> None:
    for faults, checked in (("crash,pause", True), ("crash,drop", False), ("slow", False)):
        sim = Simulation(
            get_protocol("swim"), SimConfig(seed=3, nodes=8, faults=parse_faults(faults))
        )
        sim.run()
        assert isinstance(sim.monitor, MembershipMonitor)
        assert sim.monitor.accuracy is checked, faults


def test_swim_without_refutation_is_caught_by_accuracy() -> None:
    """First catching seed (2026-12-06, 12 members, pauses): 1 (9 of seeds 1..20)."""
    seeds = range(1, 21)
    broken = [_run("swim-broken", seed, "pause") for seed in seeds]
    caught = [r for r in broken if not r.ok]
    assert caught, "no seed caught SWIM without refutation"
    assert {r.violation.prop for r in caught if r.violation} == {"accuracy"}
    # The same seeds with refutation pass.
    assert _failures([_run("swim", seed, "pause") for seed in seeds]) == []


def test_monitor_catches_a_detector_slower_than_its_bound() -> None:
    """Nodes time out after 20 s while the monitor holds them to the 5 s configuration."""
    slow_nodes = fixed_detector(timeout_ms=20_000)
    spec = membership_spec(fixed_detector(timeout_ms=5_000), "test: nodes slower than the bound")
    spec = replace(spec, make_node=slow_nodes.make_node)
    result = run_sim(spec, SimConfig(seed=1, nodes=6, faults=parse_faults("crash")))
    assert result.violation is not None
    assert result.violation.prop == "completeness"
    assert "has not declared it dead" in result.violation.detail


def _healthy_false_positives(name: str, seeds: range) -> int:
    total = 0
    for seed in seeds:
        spec = get_protocol(name)
        assert isinstance(spec, MembershipSpec)
        sim = Simulation(spec, SimConfig(seed=seed, nodes=16, faults=parse_faults("slow")))
        result = sim.run()
        assert result.ok, result.violation
        assert isinstance(sim.monitor, MembershipMonitor)
        total += sum(1 for *_, healthy in sim.monitor.false_positives if healthy)
    return total


def test_lifeguard_has_ten_times_fewer_false_positives_under_slow_members() -> None:
    """Healthy members declared dead (incidents) with slow members, same seeds; the +1
    keeps the ratio meaningful when Lifeguard has none."""
    seeds = range(1, 25)
    swim = _healthy_false_positives("swim", seeds)
    lifeguard = _healthy_false_positives("swim-lifeguard", seeds)
    assert swim >= 10 * max(1, lifeguard), (swim, lifeguard)


def test_same_seed_same_trace() -> None:
    spec = get_protocol("swim-lifeguard")
    config = SimConfig(seed=5, nodes=10, faults=parse_faults("crash,pause,drop,slow"))
    first = run_sim(spec, replace(config, hash_trace=True))
    again = run_sim(spec, replace(config, hash_trace=True))
    other = run_sim(spec, replace(config, seed=6, hash_trace=True))
    assert first.trace_hash == again.trace_hash
    assert first.trace_hash != other.trace_hash


def test_cli_runs_seeds_and_exits_1_on_a_violation() -> None:
    runner = CliRunner()
    ok = runner.invoke(cli, ["sim", "swim", "--nodes", "8", "--seeds", "1..2", "--faults", "crash"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(
        cli, ["sim", "swim-broken", "--nodes", "12", "--seeds", "1..20", "--faults", "pause"]
    )
    assert bad.exit_code == 1
    assert "accuracy" in bad.output
