"""Multi-Paxos under every simulator fault: many seeds clean, same seed same trace, every
mutant caught by random swarm seeds through the property it breaks, the monitor itself."""

from __future__ import annotations

import pytest

from pnyx.catalog import get_protocol
from pnyx.protocols.paxos import MUTANT_ALSO_CAUGHT_AS, MUTANT_PROPERTIES, MUTANTS, Slot
from pnyx.protocols.paxos.spec import PAXOS, PaxosMonitor, paxos_spec
from pnyx.sim.runner import SimConfig, run_sim
from pnyx.sim.schedule import parse_faults

ALL = parse_faults("all")
SEEDS = 300
SOAK_SEEDS = 10_000
MUTANT_SEED_BUDGET = 200

FIRST_CATCH: dict[str, int] = {
    "accept_lower_ballot": 8,
    "adopt_lowest_ballot": 4,
    "commit_before_quorum": 0,
    "gap_skipped": 1,
    "ignore_phase1_values": 0,
    "promise_not_persisted": 101,
    "read_without_quorum": 15,
    "session_no_dedup": 5,
}
"""The first swarm seed (``--faults all``) that caught each mutant when the table was
measured (2026-12-06); replay with ``pnyx sim paxos+NAME --seed N --swarm --faults all``.
The budget test searches from seed 0 again and asserts the catch lies within the budget;
``test_recorded_seed_still_catches_its_mutant`` replays each recorded seed (a change to
the simulator's draws that moves one shows up there: measure again, update the table)."""


def test_registered_in_the_catalog() -> None:
    assert get_protocol("paxos") is PAXOS and not PAXOS.broken
    spec = get_protocol("paxos+gap_skipped,session_no_dedup")
    assert spec.broken and spec.name == "paxos+gap_skipped,session_no_dedup"
    with pytest.raises(KeyError, match="unknown paxos mutants"):
        get_protocol("paxos+no_such_bug")


def test_every_mutant_names_its_property_and_has_a_recorded_seed() -> None:
    assert set(MUTANT_PROPERTIES) == set(MUTANTS) == set(FIRST_CATCH)
    assert all(seed < MUTANT_SEED_BUDGET for seed in FIRST_CATCH.values())
    assert len(MUTANTS) >= 6


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_recorded_seed_still_catches_its_mutant(mutant: str) -> None:
    seed = FIRST_CATCH[mutant]
    violation = run_sim(
        paxos_spec(frozenset({mutant})), SimConfig(seed, faults=ALL, swarm=True)
    ).violation
    accepted = {MUTANT_PROPERTIES[mutant], *MUTANT_ALSO_CAUGHT_AS.get(mutant, ())}
    assert violation is not None and violation.prop in accepted, (
        f"pnyx sim paxos+{mutant} --seed {seed} --swarm --faults all: {violation}"
    )


@pytest.mark.slow
def test_seeds_with_all_faults_have_no_violation() -> None:
    failures = []
    for seed in range(SEEDS):
        result = run_sim(PAXOS, SimConfig(seed=seed, faults=ALL))
        if not result.ok:
            failures.append((seed, str(result.violation)))
    assert not failures, f"replay: pnyx sim paxos --seed {failures[0][0]}: {failures[0][1]}"


@pytest.mark.slow
@pytest.mark.soak
def test_soak_seeds_with_all_faults() -> None:
    bad = [s for s in range(SEEDS, SOAK_SEEDS) if not run_sim(PAXOS, SimConfig(s, faults=ALL)).ok]
    assert not bad, f"failing seeds: {bad[:20]}"


@pytest.mark.slow
def test_swarm_seeds_of_the_correct_protocol_are_clean() -> None:
    bad = []
    for seed in range(MUTANT_SEED_BUDGET):
        result = run_sim(PAXOS, SimConfig(seed=seed, faults=ALL, swarm=True))
        if not result.ok:
            bad.append(f"pnyx sim paxos --seed {seed} --swarm --faults all: {result.violation}")
    assert not bad, bad[:5]


def test_same_seed_same_trace_hash() -> None:
    first = run_sim(PAXOS, SimConfig(seed=11, faults=ALL, hash_trace=True))
    again = run_sim(PAXOS, SimConfig(seed=11, faults=ALL, hash_trace=True))
    other = run_sim(PAXOS, SimConfig(seed=12, faults=ALL, hash_trace=True))
    assert first.trace_hash and first.trace_hash == again.trace_hash
    assert first.trace_hash != other.trace_hash


def test_runs_exercise_elections_and_snapshots() -> None:
    """Guard against a quiet sim: operations, leader changes and snapshots happen (no-op
    gaps are rare in random runs: test_scenarios.py drives one)."""
    from pnyx.protocols.paxos import PaxosNode
    from pnyx.sim.runner import Simulation

    ops = snapshots = rounds = 0
    for seed in range(10):
        sim = Simulation(PAXOS, SimConfig(seed=seed, faults=ALL, swarm=True))
        result = sim.run()
        assert result.ok, result.violation
        ops += sum(1 for e in result.history if e.type == "ok")
        for node_id in sim.node_ids:
            node = sim.node(node_id)
            if isinstance(node, PaxosNode):
                snapshots += node.offset > 0
                rounds = max(rounds, node.promised[0])
    assert ops > 300 and snapshots > 10 and rounds > 3, (ops, snapshots, rounds)


@pytest.mark.slow
@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_mutant_is_caught_by_its_property_within_budget(mutant: str) -> None:
    """Random swarm seeds (no directed scenario) catch the mutant by the right property."""
    spec = paxos_spec(frozenset({mutant}))
    for seed in range(MUTANT_SEED_BUDGET):
        violation = run_sim(spec, SimConfig(seed=seed, faults=ALL, swarm=True)).violation
        if violation is not None:
            break
    else:
        pytest.fail(f"{mutant} survived {MUTANT_SEED_BUDGET} swarm seeds")
    expected = MUTANT_PROPERTIES[mutant]
    accepted = {expected, *MUTANT_ALSO_CAUGHT_AS.get(mutant, ())}
    assert violation.prop in accepted, (
        f"{mutant} caught at seed {seed} by {violation.prop} (expected {expected}): "
        f"{violation.detail}; replay: pnyx sim paxos+{mutant} --seed {seed} --swarm --faults all"
    )


# -- the monitor on cases that must fail and must pass -------------------------------------


def _slot(ballot: tuple[int, int], value: str) -> Slot:
    return Slot(ballot, 0, value)


def test_monitor_accepts_one_value_chosen_and_reproposed_higher() -> None:
    monitor = PaxosMonitor((1, 2, 3))
    for node in (1, 2):
        assert monitor._accepted(node, 1, (1, 1), (0, "A")) is None
    assert monitor.chosen[1] == ((1, 1), (0, "A"))
    assert monitor._accepted(3, 1, (2, 3), (0, "A")) is None


def test_monitor_catches_a_different_value_accepted_above_a_chosen_one() -> None:
    monitor = PaxosMonitor((1, 2, 3))
    monitor._accepted(1, 1, (1, 1), (0, "A"))
    monitor._accepted(2, 1, (1, 1), (0, "A"))
    violation = monitor._accepted(3, 1, (2, 3), (0, "B"))
    assert violation is not None and violation.prop == "accepted-above-chosen"


def test_monitor_catches_an_earlier_higher_acceptance_once_a_lower_ballot_is_chosen() -> None:
    monitor = PaxosMonitor((1, 2, 3))
    assert monitor._accepted(3, 1, (2, 3), (0, "B")) is None  # not chosen: fine so far
    monitor._accepted(1, 1, (1, 1), (0, "A"))
    violation = monitor._accepted(2, 1, (1, 1), (0, "A"))
    assert violation is not None and violation.prop == "accepted-above-chosen"


def test_monitor_catches_two_values_for_one_ballot_and_slot() -> None:
    monitor = PaxosMonitor((1, 2, 3))
    monitor._accepted(1, 1, (1, 1), (0, "A"))
    violation = monitor._accepted(2, 1, (1, 1), (0, "B"))
    assert violation is not None and violation.prop == "ballot-value"
