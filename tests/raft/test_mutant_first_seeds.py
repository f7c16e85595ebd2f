"""The first random swarm seed that catches each Raft mutant, recorded (issue 11 item 6).

``tests/raft/test_sim.py`` searches seeds 0..199 for each mutant and asserts the catch and
its property; this file keeps the first catching seed of each, measured 2026-12-06 with
``--swarm --faults all``, and replays it: a change to the simulator's draws that moves a
seed shows up here (measure again with the search and update the table).
"""

from __future__ import annotations

import pytest

from pnyx.protocols.raft import config as raft_config
from pnyx.protocols.raft.config import MUTANTS
from pnyx.protocols.raft.spec import raft_spec
from pnyx.sim.runner import SimConfig, run_sim
from pnyx.sim.schedule import parse_faults

ALL = parse_faults("all")
MUTANT_SEED_BUDGET = 200

FIRST_CATCH: dict[str, int] = {
    "append_skips_term_check": 2,
    "count_previous_term_entries": 35,
    "heartbeat_commit_unclamped": 2,
    "joint_counts_new_only": 35,
    "joint_leave_dropped": 35,
    "leader_apply_before_quorum": 0,
    "learner_in_quorum": 18,
    "lease_ignores_stall": 16,
    "no_noop_on_election": 10,
    "read_index_no_heartbeat": 13,
    "restart_votes_at_once": 23,
    "session_no_dedup": 0,
    "snapshot_drops_term": 0,
    "snapshot_offset_of_other": 0,
    "stale_term_accepted": 2,
    "transfer_to_outgoing": 65,
    "truncate_matching_suffix": 5,
    "vote_ignores_log": 4,
    "vote_not_persisted": 19,
}
"""mutant -> first swarm seed catching it; replay: ``pnyx sim raft+NAME --seed N --swarm``."""


def test_every_mutant_has_a_recorded_seed_within_the_budget() -> None:
    assert set(FIRST_CATCH) == set(MUTANTS)
    assert all(seed < MUTANT_SEED_BUDGET for seed in FIRST_CATCH.values())


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_recorded_seed_still_catches_its_mutant_by_its_property(mutant: str) -> None:
    seed = FIRST_CATCH[mutant]
    spec = raft_spec(frozenset({mutant}))
    violation = run_sim(spec, SimConfig(seed=seed, faults=ALL, swarm=True)).violation
    expected = raft_config.MUTANT_PROPERTIES[mutant]
    accepted = {expected, *raft_config.MUTANT_ALSO_CAUGHT_AS.get(mutant, ())}
    assert violation is not None and violation.prop in accepted, (
        f"pnyx sim raft+{mutant} --seed {seed} --swarm --faults all: {violation} "
        f"(expected {expected})"
    )
