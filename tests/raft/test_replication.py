"""Replication: log matching, conflict back-off with hints, the Figure 8 rule, flow control."""

from __future__ import annotations

from pnyx.core import LogAppend
from pnyx.protocols.raft import (
    LEADER,
    AdminRequest,
    AppendEntries,
    AppendResponse,
    ClientRequest,
    Command,
    Entry,
    KvOp,
    RaftConfig,
    ReadRequest,
)
from pnyx.protocols.raft.progress import PROBE, REPLICATE

from .cluster import Cluster


def _cmd(n: int) -> Command:
    return Command(1, n, KvOp("put", "k", str(n)))


def test_commit_needs_a_majority_and_the_leader_replies_once_applied() -> None:
    c = Cluster(3)
    c.elect(1)
    sid = c.open_session(1, rid=1)
    c.take_trace()
    c.isolate(2)
    c.put(1, "k", "v", sid, 1, 7)
    c.deliver()
    assert c.node(1).commit == 3 and c.reply(7).ok  # 1 and 3 are a majority
    c.isolate(3)
    c.put(1, "k", "w", sid, 2, 8)
    c.deliver()
    assert c.node(1).commit == 3, "one node alone commits nothing"
    assert all(r.request_id != 8 for _, r in c.replies)


def test_conflicting_follower_is_repaired_with_few_round_trips() -> None:
    c = Cluster(3)
    c.elect(1)
    c.settle(2)
    # Node 1 appends five entries nobody else gets, then loses leadership.
    c.isolate(1)
    assert c.node(1).propose([_cmd(i) for i in range(5)]) == 6
    c.deliver()
    c.crash(1)
    c.heal()
    c.elect(2)
    c.node(2).propose([_cmd(i) for i in range(3)])
    c.deliver()
    c.node(2).step(AdminRequest(1, "transfer", 3), 1000)  # term 3 leader: node 3,
    c.deliver()  # whose fresh progress for node 1 starts probing at its last index
    assert c.node(3).role == LEADER
    c.restart(1)
    c.take_trace()
    c.settle(3)
    trace = c.take_trace()
    # The leader probes at its last index; node 1's one rejection names its conflicting term
    # and where that term starts, so the second probe lands right after the common prefix.
    assert trace[-4:] == [
        "3->1 AppendEntries term=3 prev_index=5 prev_term=2 entries=[3] commit=6",
        "1->3 AppendResponse term=3 index=5 reject=True hint_index=2 hint_term=1",
        "3->1 AppendEntries term=3 prev_index=1 prev_term=1 entries=[2,2,2,2,3] commit=6",
        "1->3 AppendResponse term=3 index=6",
    ], "\n".join(trace)
    logs = [[n.log.term(i) for i in range(1, n.log.last_index + 1)] for n in c.live()]
    assert logs[0] == logs[1] == logs[2] == [1, 2, 2, 2, 2, 3]


def _figure_8(mutants: frozenset[str]) -> tuple[Cluster, int, int]:
    """Leader 1 of term 2 re-replicates its term-1 entry 2 to node 3, one entry per message.

    Once node 3 acknowledges index 2, a majority (1, 3) holds it — but it is from an earlier
    term, so counting replicas must not commit it (Raft §5.4.2, Figure 8).  Returns the
    cluster and the leader's commit index at that moment.
    """
    c = Cluster(3, RaftConfig(max_entries_per_msg=1, mutants=mutants))
    c.elect(1)
    c.settle(2)
    c.isolate(1)
    old = c.node(1).propose([_cmd(1)])  # index 2, term 1: only node 1 has it
    c.deliver()
    c.crash(1)
    c.heal()
    c.restart(1)
    c.isolate(2)
    c.blocked -= {(1, 3), (3, 1)}
    node = c.node(1)
    c.node(3).election_elapsed_ticks = c.config.election_timeout_ticks
    node.election_elapsed_ticks = node.randomized_timeout_ticks - 1
    c.tick(1)
    c.deliver_until(f"3->1 AppendResponse term=2 index={old}")
    assert node.role == LEADER and node.term == 2
    assert [c.node(i).log.term(old) for i in (1, 3)] == [1, 1]
    return c, old, node.commit


def test_figure_8_previous_term_entries_are_not_committed_by_counting() -> None:
    c, old, commit = _figure_8(frozenset())
    assert (old, commit) == (2, 1), "index 2 is on a majority but from term 1: not committed yet"
    c.deliver()
    node = c.node(1)
    assert node.commit == 3 and node.log.term(3) == 2, "the term-2 no-op commits both"


def test_figure_8_mutant_commits_a_previous_term_entry_by_counting() -> None:
    _, old, commit = _figure_8(frozenset({"count_previous_term_entries"}))
    assert commit == old == 2


def test_mutant_no_noop_on_election_leaves_previous_term_entries_uncommitted() -> None:
    """Without its no-op a new leader commits nothing until a client writes: the entry of
    term 1 stays uncommitted and a linearizable read waits for ever (liveness)."""
    c, old, commit = _figure_8(frozenset({"no_noop_on_election"}))
    assert (old, commit) == (1, 0)  # no no-op in term 1 either: the command is entry 1
    c.deliver()
    c.settle(3)
    node = c.node(1)
    assert node.role == LEADER and node.log.last_index == old and node.commit == 0
    node.step(ReadRequest(9, KvOp("get", "x")), 1000)
    c.settle(3)
    assert all(r.request_id != 9 for _, r in c.replies), "the read never gets an answer"


def test_a_late_duplicate_append_does_not_truncate_a_matching_suffix() -> None:
    c = Cluster(3)
    c.elect(1)
    c.settle(2)
    follower = c.node(2)
    old = AppendEntries(1, 1, 1, (Entry(1, 0, _cmd(1)),), 1)
    follower.step(old, 1)
    follower.step(AppendEntries(1, 2, 1, (Entry(1, 0, _cmd(2)), Entry(1, 0, _cmd(3))), 1), 1)
    c.flush(2)
    assert follower.log.last_index == 4
    follower.step(old, 1)  # delivered again, late
    ready = follower.ready()
    assert follower.log.last_index == 4
    assert not [op for op in ready.persist if isinstance(op, LogAppend)]
    assert [s.msg for s in ready.send] == [AppendResponse(1, 2)]
    follower.advance(ready)


def test_inflight_window_and_batch_size_are_bounded() -> None:
    config = RaftConfig(max_entries_per_msg=4, max_inflight_msgs=3)
    c = Cluster(3, config)
    c.elect(1)
    c.settle(2)
    leader = c.node(1)
    assert leader.progress[2].state == REPLICATE
    leader.propose([_cmd(i) for i in range(40)])
    c.flush(1)
    appends = [m for s, d, m in c.queue if s == 1 and d == 2 and isinstance(m, AppendEntries)]
    assert len(appends) == 3, "at most max_inflight_msgs appends unacknowledged"
    assert all(len(m.entries) == 4 for m in appends)
    c.deliver()
    assert leader.commit == leader.log.last_index == 41


def test_lost_appends_send_the_follower_back_to_probe() -> None:
    c = Cluster(3)
    c.elect(1)
    c.settle(2)
    leader = c.node(1)
    leader.propose([_cmd(1)])
    c.flush(1)
    c.queue = [q for q in c.queue if q[1] != 3]  # node 3 loses the append
    leader.propose([_cmd(2)])
    c.flush(1)
    c.deliver()
    trace = c.take_trace()
    assert any(line.startswith("3->1 AppendResponse") and "reject=True" in line for line in trace)
    assert leader.progress[3].state in (PROBE, REPLICATE)
    c.settle(3)
    assert c.node(3).log.last_index == leader.log.last_index == 3
    assert leader.progress[3].match == 3


def test_proposals_to_a_follower_are_redirected() -> None:
    c = Cluster(3)
    c.elect(1)
    c.settle(1)
    c.node(2).step(ClientRequest(5, _cmd(1)), 1000)
    c.flush(2)
    reply = c.reply(5)
    assert not reply.ok and reply.error == "not_leader" and reply.leader_hint == 1
    assert c.node(1).role == LEADER
