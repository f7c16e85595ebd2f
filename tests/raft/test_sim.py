"""Raft under every simulator fault: many seeds clean, same seed same trace, mutants caught."""

from __future__ import annotations

import os

import pytest

from pnyx.catalog import get_protocol
from pnyx.core import DurableState, LogAppend, PutRecord
from pnyx.protocols.raft import config as raft_config
from pnyx.protocols.raft.config import MUTANTS
from pnyx.protocols.raft.messages import HARD_STATE_KEY, Entry, HardState
from pnyx.protocols.raft.node import LEADER, RaftNode
from pnyx.protocols.raft.spec import RAFT, SIM_CONFIG, RaftMonitor, raft_spec
from pnyx.sim.runner import SimConfig, run_sim
from pnyx.sim.schedule import parse_faults

ALL = parse_faults("all")
SOAK = bool(os.environ.get("PNYX_SOAK"))
SEEDS = 300
"""Plain seeds in ``make test`` (in blocks, so -n 2 spreads them); ``make soak`` runs the
rest up to ``SOAK_SEEDS``."""
SEED_BLOCKS = 2
SOAK_SEEDS = 10_000
MUTANT_SEED_BUDGET = 200
MUTANT_PROPERTIES: dict[str, str] = getattr(raft_config, "MUTANT_PROPERTIES", {})
"""mutant -> the violation (monitor property name) it must be caught by."""
ALSO_CAUGHT_AS: dict[str, frozenset[str]] = getattr(raft_config, "MUTANT_ALSO_CAUGHT_AS", {})
"""mutant -> further violations its defect is known to cause (accepted too)."""


def _first_catch(mutant: str, budget: int) -> tuple[int, str, str] | None:
    """First swarm seed below ``budget`` that the mutant fails: (seed, property, detail)."""
    spec = raft_spec(frozenset({mutant}))
    for seed in range(budget):
        violation = run_sim(spec, SimConfig(seed=seed, faults=ALL, swarm=True)).violation
        if violation is not None:
            return seed, violation.prop, violation.detail
    return None


def test_registered_in_the_catalog() -> None:
    assert get_protocol("raft") is RAFT
    assert not RAFT.broken


@pytest.mark.slow
@pytest.mark.parametrize("block", range(SEED_BLOCKS))
def test_seeds_with_all_faults_have_no_violation(block: int) -> None:
    failures = []
    for seed in range(block, SEEDS, SEED_BLOCKS):
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
            if node is None and sim.stopped(node_id):
                continue  # down for good on a damaged disk (fault kinds corrupt, misdirect)
            assert isinstance(node, RaftNode)
            snapshots += node.log.offset > 0
            joint += any(conf.joint for _, conf in node.log.configs)
    assert ops > 300 and snapshots > 10 and joint > 0, (ops, snapshots, joint)


def test_every_mutant_names_the_property_it_violates() -> None:
    assert set(MUTANT_PROPERTIES) == set(MUTANTS)


def test_a_mutant_seed_replays_with_one_command_name() -> None:
    from pnyx.catalog import get_protocol

    spec = get_protocol("raft+vote_not_persisted,session_no_dedup")
    assert spec.name == "raft+vote_not_persisted,session_no_dedup" and spec.broken
    with pytest.raises(KeyError, match="unknown mutants"):
        get_protocol("raft+no_such_mutant")
    with pytest.raises(KeyError, match=r"BASE one of 2pc, 3pc, etcd, .*multiraft, paxos"):
        get_protocol("broadcast+vote_not_persisted")  # broadcast has none


NOT_YET_CAUGHT_BY_SWARM: dict[str, str] = {}
"""Open gaps of issue 16 item 16: strict xfail, so catching them turns the test red until
they are moved out of this list."""


def _mutant_param(mutant: str) -> object:
    reason = NOT_YET_CAUGHT_BY_SWARM.get(mutant)
    if reason is None:
        return mutant
    return pytest.param(mutant, marks=pytest.mark.xfail(strict=True, reason=reason))


@pytest.mark.slow
@pytest.mark.parametrize("mutant", [_mutant_param(m) for m in sorted(MUTANTS)])
def test_mutant_is_caught_by_its_property_within_budget(mutant: str) -> None:
    """Random swarm seeds (no directed scenario) catch the mutant by the right property."""
    caught = _first_catch(mutant, MUTANT_SEED_BUDGET)
    assert caught is not None, f"{mutant} survived {MUTANT_SEED_BUDGET} swarm seeds"
    seed, prop, detail = caught
    expected = MUTANT_PROPERTIES.get(mutant)
    assert prop == expected or prop in ALSO_CAUGHT_AS.get(mutant, ()), (
        f"{mutant} caught at seed {seed} by {prop} (expected {expected}): {detail}; "
        f"replay: pnyx sim raft+{mutant} --seed {seed} --swarm --faults all"
    )


@pytest.mark.slow
def test_swarm_seeds_of_the_correct_protocol_are_clean() -> None:
    bad = []
    for seed in range(MUTANT_SEED_BUDGET):
        result = run_sim(RAFT, SimConfig(seed=seed, faults=ALL, swarm=True))
        if not result.ok:
            bad.append(f"pnyx sim raft --seed {seed} --swarm: {result.violation}")
    assert not bad, bad[:5]


# -- leader completeness binds only leaders of later terms (issue item 20) ------------------


class _Rng:
    def randrange(self, start: int, stop: int | None = None) -> int:
        return start

    def random(self) -> float:
        return 0.0


def _node(node_id: int, term: int, entry_terms: list[int], commit: int = 0) -> RaftNode:
    """A node in ``term`` whose log has entries of ``entry_terms`` and ``commit``."""
    durable = DurableState()
    durable.apply(LogAppend(1, tuple(Entry(t) for t in entry_terms)))
    durable.apply(PutRecord(HARD_STATE_KEY, HardState(term, 0, commit)))
    node = RaftNode(node_id, (1, 2, 3), _Rng(), durable, SIM_CONFIG)
    assert node.commit == commit and node.term == term
    return node


def _leader(node_id: int, term: int, entry_terms: list[int]) -> RaftNode:
    node = _node(node_id, term, entry_terms)
    node.role = LEADER
    return node


def test_a_stale_lower_term_leader_is_not_a_completeness_violation() -> None:
    """Seed 20018's shape: term 6 committed index 2, then a paused term-4 candidate wins."""
    monitor = RaftMonitor((1, 2, 3))
    assert monitor._check_node(_node(2, 6, [1, 6], commit=2)) is None
    assert monitor._check_node(_leader(1, 4, [1, 4])) is None


def test_a_later_term_leader_missing_a_committed_entry_is_caught() -> None:
    monitor = RaftMonitor((1, 2, 3))
    assert monitor._check_node(_node(2, 6, [1, 6], commit=2)) is None
    violation = monitor._check_node(_leader(1, 7, [1, 4]))
    assert violation is not None and violation.prop == "leader-completeness"
    assert "committed in term 6 or earlier" in violation.detail


def test_commit_term_is_the_lowest_term_it_was_seen_in() -> None:
    monitor = RaftMonitor((1, 2, 3))
    monitor._check_node(_node(2, 6, [1, 6], commit=2))
    monitor._check_node(_node(3, 5, [1, 6], commit=2))
    assert monitor.commit_seen_term[2] == 5
    violation = monitor._check_node(_leader(1, 6, [1, 4]))  # 6 is later than 5: bound
    assert violation is not None and violation.prop == "leader-completeness"


def test_two_leaders_of_one_term_seen_by_followers_are_caught() -> None:
    monitor = RaftMonitor((1, 2, 3))
    a = _node(2, 3, [1])
    a.leader = 1
    b = _node(3, 3, [1])
    b.leader = 2
    assert monitor._check_node(a) is None
    violation = monitor._check_node(b)
    assert violation is not None and violation.prop == "election-safety"
