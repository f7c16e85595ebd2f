"""Directed scenarios for the mutants random seeds rarely reach (see README bug catalogue)."""

from __future__ import annotations

from pnyx.protocols.raft import (
    LEADER,
    AdminRequest,
    KvOp,
    RaftConfig,
    ReadRequest,
    RequestVote,
    VoteResponse,
)

from .cluster import Cluster


def _double_vote(mutants: frozenset[str]) -> list[VoteResponse]:
    """Node 2 votes for 1 in term 1, crashes (only synced writes survive), then 3 asks."""
    c = Cluster(3, RaftConfig(mutants=mutants))
    c.node(2).step(RequestVote(1, 0, 0), 1)
    c.flush(2)
    c.crash(2)
    node = c.restart(2)
    c.tick(2, c.config.election_timeout_ticks)  # a restarted node sits out one timeout
    assert node.term == 1 and node.vote_quiet_ticks == 0, node
    node.step(RequestVote(1, 0, 0), 3)
    c.flush(2)
    return [m for s, d, m in c.queue if s == 2 and d == 3 and isinstance(m, VoteResponse)]


def test_vote_survives_a_crash() -> None:
    assert _double_vote(frozenset()) == [VoteResponse(1, False)]


def test_mutant_vote_not_persisted_votes_twice_in_a_term() -> None:
    assert _double_vote(frozenset({"vote_not_persisted"})) == [VoteResponse(1, True)]


def _stale_read(mutants: frozenset[str]) -> list[object]:
    """Old leader 1 is cut off; 2 wins term 2 and commits x=new; then 1 is asked for x."""
    c = Cluster(3, RaftConfig(mutants=mutants))
    c.elect(1)
    assert c.open_session(1, rid=100) == 1
    c.put(1, "x", "old", 1, 1, 1)
    c.deliver()
    c.settle(2)
    c.isolate(1)
    c.elect(2)
    c.put(2, "x", "new", 1, 2, 2)
    c.deliver()
    assert c.reply(2).ok and c.node(1).role == LEADER  # not yet deposed by check-quorum
    c.node(1).step(ReadRequest(3, KvOp("get", "x")), 1000)
    c.deliver()
    return [r.result for _, r in c.replies if r.request_id == 3]


def test_read_index_round_refuses_a_stale_read() -> None:
    assert _stale_read(frozenset()) == []


def test_mutant_read_without_heartbeat_round_returns_stale_data() -> None:
    assert _stale_read(frozenset({"read_index_no_heartbeat"})) == ["old"]


def _joint_commit(mutants: frozenset[str]) -> tuple[int, int]:
    """Voters {1,2,3} replace 3 by 4 (C_new = {1,2,4}); then 2 and 3 are cut off, so only
    C_new has a majority ({1,4}) for the joint entry.  Returns (commit before, after)."""
    c = Cluster(5, RaftConfig(initial_voters=(1, 2, 3), mutants=mutants))
    c.elect(1)
    c.settle(2)
    before = c.node(1).commit
    c.isolate(2)
    c.isolate(3)
    c.blocked -= {(1, 4), (4, 1)}
    c.node(1).step(AdminRequest(9, "replace", 3, other=4), 1000)
    c.flush(1)
    assert c.node(1).config.joint, "the leader entered C_old,new"
    c.settle(3)
    return before, c.node(1).commit


def test_joint_consensus_needs_both_majorities() -> None:
    before, after = _joint_commit(frozenset())
    assert after == before, "C_old has no majority: nothing may commit"


def test_mutant_joint_counting_only_c_new_commits_without_c_old() -> None:
    before, after = _joint_commit(frozenset({"joint_counts_new_only"}))
    assert after > before


def test_every_mutant_names_the_violation_it_must_cause() -> None:
    from pnyx.protocols.raft.config import (
        MUTANT_ALSO_CAUGHT_AS,
        MUTANT_INVARIANTS,
        MUTANT_PROPERTIES,
        MUTANTS,
    )

    known = {
        "state-machine-safety",
        "leader-completeness",
        "log-matching",
        "election-safety",
        "snapshot-term",
        "linearizability",
        "liveness",
        "exception",
        "invariant",
    }
    assert set(MUTANT_PROPERTIES) == MUTANTS
    assert set(MUTANT_PROPERTIES.values()) <= known
    assert set(MUTANT_ALSO_CAUGHT_AS) <= MUTANTS
    assert all(props <= known - {"invariant"} for props in MUTANT_ALSO_CAUGHT_AS.values())
    invariant_caught = {m for m, p in MUTANT_PROPERTIES.items() if p == "invariant"}
    assert invariant_caught == set(MUTANT_INVARIANTS)
