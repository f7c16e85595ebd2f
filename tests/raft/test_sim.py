"""Raft under every simulator fault: many seeds clean, same seed same trace, mutants caught."""

from __future__ import annotations

import os

import pytest

from pnyx.protocols.raft.config import MUTANTS
from pnyx.sim.catalog import get_spec
from pnyx.sim.runner import SimConfig, run_sim
from pnyx.sim.schedule import parse_faults
from pnyx.sim.specs.raft import RAFT, raft_spec

ALL = parse_faults("all")
SOAK = bool(os.environ.get("PNYX_SOAK"))
SEEDS = 500
SOAK_SEEDS = 10_000
MUTANT_SEED_BUDGET = 200

DIRECTED_ONLY = frozenset(
    {"vote_not_persisted", "read_index_no_heartbeat", "joint_counts_new_only"}
)
"""Mutants whose failure needs a coincidence random schedules rarely line up within the
budget; directed scenarios in test_mutants.py pin them (README: bug catalogue)."""
SIM_CAUGHT = sorted(MUTANTS - DIRECTED_ONLY)
"""Mutants the randomized simulator catches within the budget."""


def test_catalogue_has_at_least_ten_sim_caught_mutants() -> None:
    assert len(SIM_CAUGHT) >= 10, SIM_CAUGHT


def _first_catch(mutant: str, budget: int) -> tuple[int, str] | None:
    spec = raft_spec(frozenset({mutant}))
    for seed in range(budget):
        try:
            violation = run_sim(spec, SimConfig(seed=seed, faults=ALL)).violation
        except AssertionError as exc:  # a node's own invariant assertion fired
            return seed, f"assertion: {exc}"
        if violation is not None:
            return seed, str(violation)
    return None


def test_registered_in_the_catalog() -> None:
    assert get_spec("raft") is RAFT
    assert not RAFT.broken


@pytest.mark.slow
def test_seeds_with_all_faults_have_no_violation() -> None:
    failures = []
    for seed in range(SEEDS):
        result = run_sim(RAFT, SimConfig(seed=seed, faults=ALL))
        if not result.ok:
            failures.append((seed, str(result.violation)))
    assert not failures, f"replay with: pnyx sim raft --seed {failures[0][0]}: {failures[0][1]}"


@pytest.mark.slow
@pytest.mark.soak
def test_soak_seeds_with_all_faults() -> None:
    bad = [s for s in range(SEEDS, SOAK_SEEDS) if not run_sim(RAFT, SimConfig(s, faults=ALL)).ok]
    assert not bad, f"failing seeds: {bad[:20]}"


def test_same_seed_same_trace_hash() -> None:
    first = run_sim(RAFT, SimConfig(seed=11, faults=ALL, hash_trace=True))
    again = run_sim(RAFT, SimConfig(seed=11, faults=ALL, hash_trace=True))
    other = run_sim(RAFT, SimConfig(seed=12, faults=ALL, hash_trace=True))
    assert first.trace_hash and first.trace_hash == again.trace_hash
    assert first.trace_hash != other.trace_hash


def test_runs_exercise_snapshots_and_membership_changes() -> None:
    """Guard against a quiet sim: faults, snapshots, joint configurations all happen."""
    from pnyx.protocols.raft import RaftNode
    from pnyx.sim.runner import Simulation

    joint = snapshots = ops = 0
    for seed in range(20):
        sim = Simulation(RAFT, SimConfig(seed=seed, faults=ALL))
        result = sim.run()
        assert result.ok, result.violation
        ops += len(result.history) // 2
        for node_id in sim.node_ids:
            node = sim.node(node_id)
            assert isinstance(node, RaftNode)
            snapshots += node.log.offset > 0
            joint += any(conf.joint for _, conf in node.log.configs)
    assert ops > 300 and snapshots > 20 and joint > 0, (ops, snapshots, joint)


@pytest.mark.slow
@pytest.mark.parametrize("mutant", SIM_CAUGHT)
def test_mutant_is_caught_within_budget(mutant: str) -> None:
    caught = _first_catch(mutant, MUTANT_SEED_BUDGET)
    assert caught is not None, f"{mutant} survived {MUTANT_SEED_BUDGET} seeds"
    assert raft_spec(frozenset({mutant})).broken
