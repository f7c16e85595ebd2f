"""2PC and 3PC in the simulator: 3PC's atomicity violation under partitions, 2PC's blocking."""

from __future__ import annotations

import pytest

from pnyx.catalog import get_protocol
from pnyx.protocols.commit.common import CommitNode
from pnyx.protocols.commit.mutants import HaltingThreePcCoordinator, HaltingTwoPcCoordinator
from pnyx.protocols.commit.spec import CommitMonitor
from pnyx.protocols.commit.twopc import TwoPcParticipant
from pnyx.sim.runner import SimConfig, Simulation, run_sim
from pnyx.sim.schedule import parse_faults

PARTITIONS = frozenset({"partition"})


def _first_failure(name: str, seeds: range, faults: frozenset[str]) -> int | None:
    spec = get_protocol(name)
    for seed in seeds:
        if not run_sim(spec, SimConfig(seed=seed, faults=faults)).ok:
            return seed
    return None


def test_3pc_commits_on_one_side_and_aborts_on_the_other_under_a_partition() -> None:
    seed = _first_failure("3pc", range(1, 201), PARTITIONS)
    assert seed is not None, "3PC survived 200 partitioned seeds"
    result = run_sim(get_protocol("3pc"), SimConfig(seed=seed, faults=PARTITIONS))
    violation = result.violation
    assert violation is not None and violation.prop == "atomicity"
    # the counterexample names who committed, who aborted, and the partition in force
    assert "committed at" in violation.detail and "aborted at" in violation.detail
    assert "partition" in violation.detail and "blocks" in violation.detail
    # 2PC under the very same fault schedules never splits a decision: it blocks instead
    # (a participant cut off from the coordinator waits in doubt until the partition heals)
    two = get_protocol("2pc")
    longest_doubt_us = 0
    for same in range(1, seed + 1):
        sim = Simulation(two, SimConfig(seed=same, faults=PARTITIONS))
        outcome = sim.run()
        assert outcome.ok, f"2pc seed {same}: {outcome.violation}"
        assert isinstance(sim.monitor, CommitMonitor)
        longest_doubt_us = max(longest_doubt_us, sim.monitor.longest_doubt[0])
    assert longest_doubt_us >= 500_000, longest_doubt_us


def test_3pc_is_atomic_when_the_only_faults_are_crashes() -> None:
    # Skeen's protocol is correct for crash failures with reliable links: the termination
    # protocol is not what the partition test above catches by accident.
    assert _first_failure("3pc", range(1, 9), parse_faults("crash")) is None


def test_2pc_passes_all_faults() -> None:
    assert _first_failure("2pc", range(1, 21), parse_faults("all")) is None


@pytest.mark.soak
@pytest.mark.parametrize("name", ["2pc", "3pc"])
def test_soak_2pc_all_faults_and_3pc_crashes(name: str) -> None:
    faults = parse_faults("all" if name == "2pc" else "crash")
    assert _first_failure(name, range(1, 301), faults) is None


def test_2pc_blocks_when_the_coordinator_halts_before_deciding() -> None:
    sim = Simulation(get_protocol("2pc+coordinator_halts"), SimConfig(seed=1))
    result = sim.run()
    assert result.violation is not None and result.violation.prop == "liveness"
    assert "in doubt (blocked)" in result.violation.detail
    coordinator = sim.node(1)
    assert isinstance(coordinator, CommitNode)
    assert isinstance(coordinator.engine, HaltingTwoPcCoordinator)
    assert coordinator.engine.halted
    monitor = sim.monitor
    assert isinstance(monitor, CommitMonitor)
    stuck = monitor.in_doubt()
    assert stuck, "no participant in doubt"
    for node, txn in stuck:
        assert monitor.votes[txn][node] is True  # voted yes: may not abort on its own
        participant = sim.node(node)
        assert isinstance(participant, CommitNode)
        assert isinstance(participant.engine, TwoPcParticipant)
        assert txn in participant.engine.in_doubt()  # still asking, 6 s after the heal


def test_3pc_terminates_without_the_coordinator() -> None:
    sim = Simulation(get_protocol("3pc+coordinator_halts"), SimConfig(seed=1))
    result = sim.run()
    assert result.ok, result.violation
    coordinator = sim.node(1)
    assert isinstance(coordinator, CommitNode)
    assert isinstance(coordinator.engine, HaltingThreePcCoordinator)
    assert coordinator.engine.halted
    monitor = sim.monitor
    assert isinstance(monitor, CommitMonitor)
    assert monitor.in_doubt() == []
    # the transaction the coordinator abandoned was decided by the termination protocol
    by_termination = [
        txn
        for txn, decided in monitor.decisions.items()
        if any(how == "termination" for _, how, _ in decided.values())
    ]
    assert by_termination


def test_2pc_with_a_coordinator_down_for_good_reports_its_blocked_participants() -> None:
    # seed 16 (all faults) damages the coordinator's disk: it stays down after the heal
    sim = Simulation(get_protocol("2pc"), SimConfig(seed=16, faults=parse_faults("all")))
    result = sim.run()
    assert result.ok, result.violation
    assert sim.stopped(1)
    monitor = sim.monitor
    assert isinstance(monitor, CommitMonitor)
    assert monitor.blocked and monitor.blocked == [
        (n, t) for n, t in monitor.in_doubt() if not sim.stopped(n)
    ]


@pytest.mark.parametrize("name", ["2pc", "3pc"])
def test_same_seed_same_trace(name: str) -> None:
    config = SimConfig(seed=7, faults=parse_faults("all"), hash_trace=True)
    first = run_sim(get_protocol(name), config)
    second = run_sim(get_protocol(name), config)
    assert first.trace_hash == second.trace_hash and first.trace_hash


def test_unknown_commit_mutant_lists_the_valid_ones() -> None:
    with pytest.raises(KeyError, match="coordinator_halts"):
        get_protocol("2pc+no_such_mutant")
