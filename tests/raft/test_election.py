"""Elections: pre-vote, check-quorum, persistence before votes, restarts, leadership transfer."""

from __future__ import annotations

from pnyx.core import PutRecord, SplitMix64
from pnyx.protocols.raft import (
    FOLLOWER,
    LEADER,
    PRE_CANDIDATE,
    AdminRequest,
    HardState,
    RaftNode,
    RequestVote,
    VoteResponse,
)
from pnyx.protocols.raft.messages import HARD_STATE_KEY

from .cluster import Cluster


def test_election_trace_reads_like_the_paper() -> None:
    c = Cluster(3)
    c.elect(1)
    assert c.take_trace() == [
        "1->2 RequestVote term=1 last_index=0 last_term=0 pre_vote=True",
        "1->3 RequestVote term=1 last_index=0 last_term=0 pre_vote=True",
        "2->1 VoteResponse term=1 granted=True pre_vote=True",
        "3->1 VoteResponse term=1 granted=True pre_vote=True",
        "1->2 RequestVote term=1 last_index=0 last_term=0",
        "1->3 RequestVote term=1 last_index=0 last_term=0",
        "2->1 VoteResponse term=1 granted=True",
        "3->1 VoteResponse term=1 granted=True",
        # the new leader's no-op (term 1) commits everything before it
        "1->2 AppendEntries term=1 prev_index=0 prev_term=0 entries=[1] commit=0",
        "1->3 AppendEntries term=1 prev_index=0 prev_term=0 entries=[1] commit=0",
        "2->1 AppendResponse term=1 index=1",
        "3->1 AppendResponse term=1 index=1",
    ]
    assert c.node(1).commit == 1
    c.settle(2)
    assert all(n.commit == 1 and n.term == 1 for n in c.live())


def test_pre_vote_does_not_bump_terms() -> None:
    c = Cluster(3)
    node = c.node(1)
    node.election_elapsed_ticks = node.randomized_timeout_ticks - 1
    c.tick(1)
    assert node.role == PRE_CANDIDATE and node.term == 0
    c.drop_queued()  # the pre-votes are lost
    assert all(n.term == 0 for n in c.live())


def test_partitioned_node_cannot_disrupt_a_healthy_leader() -> None:
    c = Cluster(3)
    c.elect(1)
    c.settle(2)
    c.isolate(3)
    for _ in range(100):  # many election timeouts for node 3
        c.tick_all()
        c.deliver()
    assert c.node(3).term == 1, "pre-vote must keep the isolated node's term still"
    c.heal()
    c.settle(20)
    assert c.node(1).role == LEADER and c.node(1).term == 1
    assert c.node(3).role == FOLLOWER and c.node(3).leader == 1


def test_vote_request_ignored_while_leader_is_live() -> None:
    c = Cluster(3)
    c.elect(1)
    c.settle(2)
    follower = c.node(2)
    follower.step(RequestVote(5, 100, 5), 3)  # a disruptive candidate with a later term
    c.flush(2)
    assert follower.term == 1 and follower.vote == 1
    assert not [m for s, d, m in c.queue if s == 2 and isinstance(m, VoteResponse)]


def test_check_quorum_deposes_an_isolated_leader() -> None:
    c = Cluster(3)
    c.elect(1)
    c.settle(2)
    c.isolate(1)
    for _ in range(2 * c.config.election_timeout_ticks + 1):
        c.tick(1)
        c.deliver()
    assert c.node(1).role == FOLLOWER, "check-quorum: no quorum heard, so stop leading"


def test_vote_is_persisted_in_the_batch_that_sends_it() -> None:
    node = RaftNode(2, (1, 2, 3), SplitMix64(1), _empty())
    node.step(RequestVote(1, 0, 0), 1)
    ready = node.ready()
    assert [s.msg for s in ready.send] == [VoteResponse(1, True)]
    records = [op for op in ready.persist if isinstance(op, PutRecord)]
    assert records == [PutRecord(HARD_STATE_KEY, HardState(term=1, vote=1, commit=0))]


def test_restart_keeps_term_vote_and_log_and_refuses_a_second_vote() -> None:
    c = Cluster(3)
    c.elect(1)
    c.settle(2)
    c.crash(2)
    node = c.restart(2)
    assert (node.term, node.vote, node.log.last_index) == (1, 1, 1)
    node.step(RequestVote(1, 5, 1), 3)  # same term, other candidate
    c.flush(2)
    sent = [m for s, d, m in c.queue if s == 2]
    assert sent == [VoteResponse(1, False)]


def test_restart_reapplies_committed_entries() -> None:
    c = Cluster(3)
    c.elect(1)
    sid = c.open_session(1, rid=1)
    c.put(1, "x", "1", sid, 1, 2)
    c.deliver()
    c.settle(2)
    c.crash(3)
    c.applied[3].clear()
    c.restart(3)
    # The state machine starts empty; the persisted commit hint lets the node re-apply at once.
    assert [a.index for a in c.applied[3]] == [2, 3]
    assert c.sms[3].data == {"x": "1"}


def test_leadership_transfer_with_timeout_now() -> None:
    c = Cluster(3)
    c.elect(1)
    c.settle(2)
    c.take_trace()
    c.node(1).step(AdminRequest(9, "transfer", 3), 1000)
    c.deliver()
    trace = c.take_trace()
    assert trace[0] == "1->3 TimeoutNow term=1"
    assert "3->1 RequestVote term=2 last_index=1 last_term=1 transfer=True" in trace
    assert c.node(3).role == LEADER and c.node(3).term == 2
    assert c.node(1).role == FOLLOWER
    assert c.reply(9).ok


def test_learner_does_not_campaign() -> None:
    c = Cluster(3)
    c.elect(1)
    c.node(1).step(AdminRequest(1, "add_learner", 4), 1000)
    c.settle(3)
    assert 4 in c.node(1).config.learners


def _empty():  # type: ignore[no-untyped-def]
    from pnyx.core import DurableState

    return DurableState()
