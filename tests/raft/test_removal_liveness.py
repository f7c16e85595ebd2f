"""A server removed by a configuration change that is not yet committed may still campaign.

The shape of simulator seed 40431: leader 3 removes itself (C_old = {1,2,3,4}, C_new =
{1,2,4}); C_old,new commits, C_new is appended at 3 only, 3 loses leadership, and voter 1
stops for good.  Nodes 2 and 4 still run C_old,new and need 3's vote for C_old's majority,
but 3 holds the longer log and refuses them.  Only 3 can be elected (by a quorum of its
latest configuration, C_new = {2, 4} of {1, 2, 4}); it commits C_new and steps down.
"""

from __future__ import annotations

from pnyx.protocols.raft import FOLLOWER, LEADER, AdminRequest, RaftConfig

from .cluster import Cluster

C_NEW = frozenset({1, 2, 4})


def _stalemate(config: RaftConfig) -> tuple[Cluster, int]:
    """The cluster right after the stalemate shape is set up; also C_new's index at 3."""
    c = Cluster(4, config)
    c.elect(3)
    c.settle(2)
    c.node(3).step(AdminRequest(1, "remove", 3, min_voters=3), 1000)
    c.flush(3)
    assert c.node(3).config.joint and c.node(3).config.voters == C_NEW
    # Deliver until C_old,new commits at 3 and it appends C_new, then lose what it sent.
    for _ in range(1000):
        if not c.node(3).config.joint:
            break
        assert c.queue, "the network went quiet before C_new was appended\n" + c.text()
        c.deliver_one(*c.queue.pop(0))
    conf_index = c.node(3).log.configs[-1][0]
    assert c.node(3).config.voters == C_NEW and not c.node(3).config.joint
    c.drop_queued()
    c.crash(1)  # for good
    for i in (2, 4):
        assert c.node(i).config.joint, f"node {i} must not have C_new yet"
        assert c.node(i).log.last_index < conf_index
    c.isolate(3)  # 3 loses its leadership (check-quorum) or its followers time out
    for _ in range(3 * config.election_timeout_ticks):
        c.tick_all()
        c.deliver()
    for i in (2, 4):
        assert c.node(i).role != LEADER, "2 and 4 cannot win C_old's majority without 3"
    c.crash(3)  # (without check-quorum 3 would still lead) it restarts from its disk
    c.restart(3)
    assert c.node(3).log.last_index == conf_index and c.node(3).commit < conf_index
    c.heal()
    return c, conf_index


def _run_until_leader(c: Cluster, max_rounds: int) -> None:
    for _ in range(max_rounds):
        c.tick_all()
        c.deliver()
        leader = c.leader()
        if leader is not None and leader.node_id != 3 and leader.commit >= leader.log.last_index:
            return
    raise AssertionError("no leader of C_new within the bound\n" + "\n".join(c.trace[-60:]))


def _check_recovered(c: Cluster, conf_index: int) -> None:
    leader = c.leader()
    assert leader is not None and leader.node_id in (2, 4)
    assert leader.config.voters == C_NEW and not leader.config.joint
    assert leader.commit >= conf_index, "C_new committed"
    assert c.node(3).role == FOLLOWER
    assert c.node(3).commit >= conf_index, "3 led until C_new committed, then stepped down"
    assert not c.node(3)._promotable(), "removed for good once C_new is committed"
    # The removed node does not disrupt the new configuration afterwards.
    term = leader.term
    for _ in range(5 * c.config.election_timeout_ticks):
        c.tick_all()
        c.deliver()
    assert c.leader() is leader and leader.term == term and leader.role == LEADER


def test_a_node_removed_by_an_uncommitted_change_can_still_be_elected() -> None:
    config = RaftConfig()
    c, conf_index = _stalemate(config)
    promotable = c.node(3)._promotable()
    _run_until_leader(c, 20 * config.election_timeout_ticks)
    assert promotable, "C_new was not committed: 3 might still be needed"
    assert any(line.startswith("3->") and "RequestVote" in line for line in c.trace)
    _check_recovered(c, conf_index)


def test_the_same_without_pre_vote_and_check_quorum() -> None:
    config = RaftConfig(pre_vote=False, check_quorum=False)
    c, conf_index = _stalemate(config)
    _run_until_leader(c, 20 * config.election_timeout_ticks)
    _check_recovered(c, conf_index)


def test_a_removed_node_that_missed_the_commit_does_not_disrupt_the_cluster() -> None:
    """3 appended the C_new removing it, sent it to 2 only and lost its leadership; 2 then
    commits C_new, and nobody tells 3 (it is no member).  3 keeps campaigning (C_new is
    uncommitted in its view); with neither pre-vote nor check-quorum its higher terms would
    depose every leader.  Its log is behind, so the members drop its requests."""
    config = RaftConfig(pre_vote=False, check_quorum=False)
    c = Cluster(4, config)
    c.elect(3)
    c.settle(2)
    c.node(3).step(AdminRequest(1, "remove", 3, min_voters=3), 1000)
    c.flush(3)
    for _ in range(1000):
        if not c.node(3).config.joint:
            break
        assert c.queue, "the network went quiet before C_new was appended\n" + c.text()
        c.deliver_one(*c.queue.pop(0))
    conf_index = c.node(3).log.configs[-1][0]
    c.queue = [q for q in c.queue if q[1] == 2]  # C_new reaches node 2 only
    c.deliver()
    c.crash(3)
    c.restart(3)
    c.isolate(3)
    _run_until_leader(c, 20 * config.election_timeout_ticks)
    c.settle(3)
    leader = c.leader()
    assert leader is not None and leader.config.voters == C_NEW and leader.commit >= conf_index
    assert c.node(3).commit < conf_index and c.node(3)._promotable()
    c.heal()
    term, started = leader.term, c.node(3).elections_started
    for _ in range(10 * config.election_timeout_ticks):
        c.tick_all()
        c.deliver()
    assert c.node(3).elections_started > started, "3 did campaign"
    assert c.leader() is leader and leader.term == term, "and nobody adopted its term"
