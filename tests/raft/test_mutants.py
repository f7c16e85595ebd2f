"""Directed scenarios for the mutants random seeds rarely reach (see README bug catalogue)."""

from __future__ import annotations

from pnyx.protocols.raft import LEADER, KvOp, RaftConfig, ReadRequest, RequestVote, VoteResponse

from .cluster import Cluster


def _double_vote(mutants: frozenset[str]) -> list[VoteResponse]:
    """Node 2 votes for 1 in term 1, crashes (only synced writes survive), then 3 asks."""
    c = Cluster(3, RaftConfig(mutants=mutants))
    c.node(2).step(RequestVote(1, 0, 0), 1)
    c.flush(2)
    c.crash(2)
    node = c.restart(2)
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
