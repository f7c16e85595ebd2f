"""Directed regressions for issue 16, items 12-14: leases across restarts and stalls,
snapshot streaming that cannot livelock, leaving a joint configuration, transfer targets.

Each scenario runs on the correct code and on the mutant that re-introduces the defect
(``restart_votes_at_once``, ``lease_ignores_stall``, ``snapshot_offset_of_other``,
``joint_leave_dropped``, ``transfer_to_outgoing``): the first must hold the property, the
second must break it — so each test fails on the old code.
"""

from __future__ import annotations

from typing import Any

from pnyx.core import Message
from pnyx.protocols.raft import (
    LEADER,
    AdminRequest,
    InstallSnapshot,
    KvOp,
    RaftConfig,
    ReadRequest,
    SnapshotResponse,
)
from pnyx.protocols.raft.config import (
    JOINT_LEAVE_DROPPED,
    LEASE_IGNORES_STALL,
    RESTART_VOTES_AT_ONCE,
    SNAPSHOT_OFFSET_OF_OTHER,
    TRANSFER_TO_OUTGOING,
)
from pnyx.protocols.raft.progress import SNAPSHOT

from .cluster import Cluster

GET_X = KvOp("get", "x")
NONE: frozenset[str] = frozenset()


def _reads(c: Cluster, rid: int) -> list[Any]:
    return [r.result for _, r in c.replies if r.request_id == rid and r.ok]


def _lease_cluster(mutants: frozenset[str]) -> Cluster:
    """Leader 1 of term 1 with a fresh lease and x=old committed everywhere."""
    c = Cluster(3, RaftConfig(lease_reads=True, mutants=mutants))
    c.elect(1)
    assert c.open_session(1, rid=100) == 1
    c.put(1, "x", "old", 1, 1, 1)
    c.deliver()
    c.settle(2)
    return c


# -- item 12: a restarted voter and the old leader's lease -----------------------------------


def _restart_scenario(mutants: frozenset[str]) -> tuple[list[str], int]:
    """Node 3 cut off from leader 1; node 2 crashed and restarted; node 1 isolated.  All
    three tick in lockstep; every tick node 1 is asked for x (a lease read).  Returns the
    values node 1 answered after x=new was committed elsewhere, and the tick at which a new
    leader (3 with 2's vote, or 2 itself) took over."""
    c = _lease_cluster(mutants)
    c.blocked |= {(1, 3), (3, 1)}
    # Time passes; node 2 keeps acknowledging node 1's heartbeats, node 3 hears nothing.
    while c.node(3).election_elapsed_ticks < c.node(3).randomized_timeout_ticks - 1:
        c.tick_all()
        c.deliver()
    c.crash(2)
    c.restart(2)
    c.isolate(1)
    stale: list[str] = []
    new_committed = False
    won_at = -1
    for tick in range(1, 60):
        c.tick_all()
        c.deliver()
        new = [i for i in (2, 3) if c.node(i).role == LEADER]
        if new and won_at < 0:
            won_at = tick
            c.put(new[0], "x", "new", 1, 2, 2)
            c.deliver()
            new_committed = c.reply(2).ok
        rid = 1000 + tick
        if c.node(1).role == LEADER:
            c.node(1).step(ReadRequest(rid, GET_X), 1000)
            c.deliver()
            if new_committed:
                stale += [v for v in _reads(c, rid) if v == "old"]
    assert won_at > 0 and new_committed, "nodes 2 and 3 never took over\n" + c.text()
    return stale, won_at


def test_a_restarted_voter_sits_out_an_election_timeout() -> None:
    stale, won_at = _restart_scenario(NONE)
    assert stale == [], "node 1 answered a lease read with stale data"
    assert won_at >= RaftConfig().election_timeout_ticks, won_at


def test_mutant_restart_votes_at_once_serves_a_stale_lease_read() -> None:
    stale, won_at = _restart_scenario(frozenset({RESTART_VOTES_AT_ONCE}))
    assert won_at <= 2, "node 3 wins within a tick with the restarted node's vote"
    assert stale, "the old leader's lease still counted the restarted node"


# -- item 12: a stalled leader's lease ---------------------------------------------------------


def _stall_scenario(mutants: frozenset[str]) -> list[Any]:
    """Leader 1 stalls (its ticks stop) while 2 and 3 elect 2 and commit x=new; then node 1's
    runtime delivers one tick, reports the dropped ones, and node 1 is asked for x."""
    c = _lease_cluster(mutants)
    config = c.config
    c.isolate(1)
    for _ in range(3 * config.election_timeout_ticks):
        for i in (2, 3):
            c.tick(i)
        c.deliver()
        if c.leader() is not None and c.leader() is not c.node(1):
            break
    two = c.node(2) if c.node(2).role == LEADER else c.node(3)
    assert two.role == LEADER and two.term == 2
    c.put(two.node_id, "x", "new", 1, 2, 2)
    c.deliver()
    assert c.reply(2).ok
    one = c.node(1)
    assert one.role == LEADER and one.term == 1
    one.tick()  # the stall ends: the runtime delivers a bounded number of ticks ...
    one.clock_stalled(3 * config.election_timeout_ticks)  # ... and reports the dropped ones
    c.flush(1)
    one.step(ReadRequest(7, GET_X), 1000)
    c.deliver()
    return _reads(c, 7)


def test_a_stall_ends_the_lease() -> None:
    assert _stall_scenario(NONE) == []


def test_mutant_lease_ignores_stall_serves_a_stale_read() -> None:
    assert _stall_scenario(frozenset({LEASE_IGNORES_STALL})) == ["old"]


def test_the_lease_comes_back_after_a_round_following_the_stall() -> None:
    c = _lease_cluster(NONE)
    leader = c.node(1)
    leader.clock_stalled(50)
    c.node(1).step(ReadRequest(5, GET_X), 1000)
    c.flush(1)
    assert _reads(c, 5) == [], "no lease right after a stall"
    c.deliver()  # the read's heartbeat round, sent after the stall, confirms it
    assert _reads(c, 5) == ["old"]
    c.settle(2)
    c.take_trace()
    c.node(1).step(ReadRequest(6, GET_X), 1000)
    c.flush(1)
    assert _reads(c, 6) == ["old"] and not c.take_trace(), "lease again: served at once"


# -- item 13: snapshot streaming cannot livelock ---------------------------------------------


def _is_snapshot_to_3(src: int, dst: int, msg: Message) -> bool:
    return dst == 3 and isinstance(msg, InstallSnapshot)


def _snapshot_livelock(mutants: frozenset[str]) -> tuple[bool, list[str]]:
    """Node 3 lags; the leader streams snapshot S1 to it, a copy of S1's chunk 0 is held
    back; the stream stalls, the leader compacts again (S2) and streams S2; after two chunks
    of S2 the held chunk 0 of S1 arrives.  Then a lossless network: does node 3 install S2
    within a bound?  Returns (installed, the trace lines of the last ticks)."""
    config = RaftConfig(snapshot_threshold_entries=5, snapshot_chunk_bytes=8, mutants=mutants)
    c = Cluster(3, config)
    c.elect(1)
    assert c.open_session(1, rid=100) == 1
    c.isolate(3)
    for seq in range(1, 12):
        c.put(1, "x", f"value-{seq}", 1, seq, seq)
        c.deliver()
    leader = c.node(1)
    first = leader.snapshot
    assert first is not None
    c.heal()
    c.tick(1, config.heartbeat_interval_ticks)
    c.deliver(keep=_is_snapshot_to_3)  # the heartbeat answer sends the leader to snapshot
    held = [(s, d, m) for s, d, m in c.queue if isinstance(m, InstallSnapshot)]
    assert held and held[0][2].index == first.index and held[0][2].offset == 0
    late_chunk0 = held[0]
    c.drop_queued()  # the stream stalls: chunk 0 of S1 is "lost" (a copy arrives later)
    c.isolate(3)
    for seq in range(12, 24):  # more writes: the leader compacts again (S2)
        c.put(1, "x", f"value-{seq}", 1, seq, seq)
        c.deliver()
    second = leader.snapshot
    assert second is not None and second.index > first.index
    c.tick(1, config.election_timeout_ticks + 1)  # stall detector: back to probe
    c.drop_queued()
    c.heal()
    c.tick(1, config.heartbeat_interval_ticks)
    for _ in range(2):  # S2 is being streamed: chunks 0 and 8 are acknowledged
        c.deliver_until_type(SnapshotResponse)
    pr = leader.progress[3]
    assert pr.state == SNAPSHOT and pr.snapshot is not None
    assert pr.snapshot.index == second.index and pr.snapshot_offset == 16
    assert len(second.data) > 24, "S2 needs more chunks"
    c.queue.insert(0, late_chunk0)  # the late duplicate of S1's chunk 0 overtakes chunk 16
    c.take_trace()
    for _ in range(40):  # lossless, a bounded number of deliveries per tick
        c.tick_all()
        for _ in range(200):
            if not c.queue:
                break
            c.deliver_one(*c.queue.pop(0))
        if c.node(3).log.offset >= second.index:
            return True, []
    return False, c.take_trace()[-6:]


def test_a_late_chunk_of_an_older_snapshot_does_not_livelock_the_stream() -> None:
    installed, trace = _snapshot_livelock(NONE)
    assert installed, "\n".join(trace)


def test_mutant_snapshot_offset_of_other_livelocks() -> None:
    installed, trace = _snapshot_livelock(frozenset({SNAPSHOT_OFFSET_OF_OTHER}))
    assert not installed
    assert any("InstallSnapshot" in line for line in trace), trace
    assert any("SnapshotResponse" in line for line in trace), trace


def test_a_chunk_of_another_snapshot_is_answered_with_offset_zero() -> None:
    c = Cluster(3)
    c.elect(1)
    follower = c.node(2)
    conf = follower.config_data()
    follower.step(InstallSnapshot(1, 9, 1, conf, 0, b"12345678", False), 1)
    follower.step(InstallSnapshot(1, 12, 1, conf, 8, b"abcdefgh", False), 1)
    c.flush(2)
    answers = [m for s, d, m in c.queue if s == 2 and isinstance(m, SnapshotResponse)]
    assert answers[-1] == SnapshotResponse(1, 12, 0), "resume S2 from 0, not S1's offset 8"


# -- item 14: leaving the joint configuration; transfer targets ------------------------------


def _joint_during_transfer(mutants: frozenset[str]) -> Cluster:
    """Voters {1,2,3} promote learner 4; the joint entry commits while a transfer to 2 is
    pending, and the transfer times out (2 stays cut off from 1).  Then an idle cluster."""
    c = Cluster(4, RaftConfig(initial_voters=(1, 2, 3), mutants=mutants))
    c.elect(1)
    c.settle(2)
    leader = c.node(1)
    leader.step(AdminRequest(7, "promote", 4), 1000)
    c.flush(1)
    assert leader.config.joint
    c.blocked |= {(1, 2)}  # 2 misses the joint entry: the transfer must wait for it
    leader.step(AdminRequest(8, "transfer", 2), 1000)
    c.flush(1)
    assert leader.transfer_target == 2 and c.reply(8).ok
    c.deliver()
    assert leader.commit >= leader.pending_conf_index, "C_old,new committed during the transfer"
    assert leader.config.joint
    for _ in range(c.config.election_timeout_ticks + 1):  # 2 stays behind: the transfer
        c.tick_all()  # times out and 1 leads on
        c.deliver()
    assert leader.role == LEADER and leader.transfer_target == 0 and c.leader() is leader
    c.blocked.clear()
    c.settle(3 * c.config.election_timeout_ticks)
    return c


def test_c_new_is_proposed_after_a_transfer_ends() -> None:
    c = _joint_during_transfer(NONE)
    leader = c.leader()
    assert leader is not None and not leader.config.joint
    assert leader.config.voters == frozenset({1, 2, 3, 4})
    assert all(n.config == leader.config for n in c.live())


def test_mutant_joint_leave_dropped_stays_joint() -> None:
    c = _joint_during_transfer(frozenset({JOINT_LEAVE_DROPPED}))
    leader = c.leader()
    assert leader is not None and leader.config.joint, "an idle cluster stays in C_old,new"
    assert any("joint" in problem for problem in leader.invariants())


def _transfer_to_outgoing(mutants: frozenset[str]) -> tuple[str, list[str]]:
    """Voters {1,2,3} replace 3 by learner 4 (C_new = {1,2,4}); during the joint phase
    someone asks to transfer leadership to 3, which only C_old has."""
    c = Cluster(4, RaftConfig(initial_voters=(1, 2, 3), mutants=mutants))
    c.elect(1)
    c.settle(2)
    leader = c.node(1)
    leader.step(AdminRequest(3, "replace", 3, other=4), 1000)
    c.flush(1)
    assert leader.config.joint and 3 in leader.config.outgoing
    leader.step(AdminRequest(4, "transfer", 3), 1000)
    c.flush(1)
    return c.reply(4).error or "", leader.invariants()


def test_transfer_to_an_outgoing_only_voter_is_refused() -> None:
    error, problems = _transfer_to_outgoing(NONE)
    assert error == "not_voter" and problems == []


def test_mutant_transfer_to_outgoing_accepts_it() -> None:
    error, problems = _transfer_to_outgoing(frozenset({TRANSFER_TO_OUTGOING}))
    assert error == ""
    assert any("transfer" in problem for problem in problems), problems


# -- found by swarm seed 147: a learner must not hold on to a dead leader ---------------------


def test_a_stale_learner_votes_once_its_leader_is_gone() -> None:
    """Learner 4 misses its own promotion (C_old,new and C_new = {1,2,3,4} commit through
    1, 2, 3); then leader 1 dies.  2 and 3 need 4's vote for a C_new majority; 4 still
    sees itself as a learner following 1 and must not ignore them for ever."""
    # No jitter: the learner's timer fires exactly when its lease view would run out.
    c = Cluster(4, RaftConfig(initial_voters=(1, 2, 3), election_jitter_ticks=1))
    c.elect(1)
    c.settle(2)
    c.blocked |= {(1, 4)}
    c.node(1).step(AdminRequest(5, "promote", 4), 1000)
    c.deliver()
    assert c.node(1).config.is_voter(4) and c.node(1).commit == c.node(1).log.last_index
    assert not c.node(4).config.is_voter(4), "4 has not heard of its promotion"
    c.crash(1)
    c.heal()
    c.tick(2, 3)  # 2's clock runs a little ahead of 3's (no split votes for ever)
    for _ in range(8 * c.config.election_timeout_ticks):
        c.tick_all()
        c.deliver()
        if c.leader() is not None:
            break
    leader = c.leader()
    assert leader is not None and leader.node_id in (2, 3), "no leader: 4 ignored the candidates"


def _restarted_answers(config: RaftConfig, ticks: int) -> list[bool]:
    """Node 2 voted in term 1, restarts, ticks ``ticks`` times, then 3 asks for term 2."""
    from pnyx.protocols.raft import RequestVote, VoteResponse

    c = Cluster(3, config)
    c.node(2).step(RequestVote(1, 0, 0), 1)
    c.flush(2)
    c.crash(2)
    node = c.restart(2)
    for _ in range(ticks):
        node.election_elapsed_ticks = 0  # (its own election timer is not the point here)
        c.tick(2)
    c.queue.clear()
    node.step(RequestVote(2, 0, 0, pre_vote=True), 3)
    node.step(RequestVote(2, 0, 0), 3)
    c.flush(2)
    return [m.granted for s, d, m in c.queue if s == 2 and isinstance(m, VoteResponse)]


def test_a_restarted_node_refuses_votes_for_an_election_timeout_then_votes() -> None:
    config = RaftConfig(election_jitter_ticks=1)
    timeout = config.election_timeout_ticks
    assert _restarted_answers(config, timeout - 1) == [], "ignored, like inside a lease"
    assert _restarted_answers(config, timeout) == [True, True]
    assert _restarted_answers(RaftConfig(check_quorum=False), 0) == [True, True], (
        "without check-quorum there is no lease to protect"
    )
