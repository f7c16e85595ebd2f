"""Reads (ReadIndex, lease, serializable), snapshots, membership, sessions: scenario tests."""

from __future__ import annotations

from pnyx.protocols.raft import (
    FOLLOWER,
    LEADER,
    AdminRequest,
    ClientRequest,
    Command,
    InstallSnapshot,
    KvOp,
    KvStateMachine,
    RaftConfig,
    ReadRequest,
)
from pnyx.protocols.raft.kv import OPEN_SESSION, SESSION_EXPIRED
from pnyx.protocols.raft.progress import SNAPSHOT

from .cluster import Cluster

GET_X = KvOp("get", "x")


def _write_x(c: Cluster, leader: int, value: str, seq: int, rid: int) -> None:
    c.put(leader, "x", value, 1, seq, rid)
    c.deliver()


def _session_cluster(n: int = 3, config: RaftConfig | None = None) -> Cluster:
    c = Cluster(n, config)
    c.elect(1)
    assert c.open_session(1, rid=100) == 1
    return c


# -- reads -------------------------------------------------------------------------------


def test_read_index_waits_for_a_heartbeat_round() -> None:
    c = _session_cluster()
    _write_x(c, 1, "1", 1, 1)
    c.take_trace()
    c.node(1).step(ReadRequest(2, GET_X), 1000)
    c.flush(1)
    assert all(r.request_id != 2 for _, r in c.replies), "no answer before the round"
    c.deliver()
    assert c.take_trace()[:2] == [
        "1->2 Heartbeat term=1 commit=3 ctx=1 sent_tick=1",
        "1->3 Heartbeat term=1 commit=3 ctx=1 sent_tick=1",
    ]
    assert c.reply(2).result == "1"


def test_a_deposed_leader_cannot_serve_a_read() -> None:
    c = _session_cluster()
    _write_x(c, 1, "1", 1, 1)
    c.isolate(1)
    c.node(1).step(ReadRequest(2, GET_X), 1000)
    c.deliver()
    assert all(r.request_id != 2 for _, r in c.replies)


def test_lease_read_is_served_without_a_round_and_expires() -> None:
    config = RaftConfig(lease_reads=True)
    c = _session_cluster(config=config)
    _write_x(c, 1, "1", 1, 1)
    c.settle(2)  # heartbeat acks start the lease
    c.take_trace()
    c.node(1).step(ReadRequest(2, GET_X), 1000)
    c.flush(1)
    assert c.reply(2).result == "1" and not c.take_trace()
    c.isolate(1)
    for _ in range(config.election_timeout_ticks):
        c.tick(1)
        c.deliver()
    c.node(1).step(ReadRequest(3, GET_X), 1000)
    c.deliver()
    assert all(r.request_id != 3 for _, r in c.replies), "lease over: needs a round again"


def test_serializable_read_is_local_and_may_be_stale() -> None:
    c = _session_cluster()
    _write_x(c, 1, "1", 1, 1)
    c.settle(2)
    c.isolate(3)
    _write_x(c, 1, "2", 2, 2)
    c.node(3).step(ReadRequest(5, GET_X, "serializable"), 1000)
    c.flush(3)
    assert c.reply(5).result == "1"


# -- snapshots ------------------------------------------------------------------------------


def test_lagging_follower_gets_a_chunked_snapshot_and_restarts_from_it() -> None:
    config = RaftConfig(snapshot_threshold_entries=10, snapshot_chunk_bytes=8)
    c = _session_cluster(config=config)
    c.isolate(3)
    for seq in range(1, 30):
        _write_x(c, 1, f"value-{seq}", seq, seq)
    leader = c.node(1)
    assert leader.log.offset > 0 and leader.snapshot is not None
    c.heal()
    c.take_trace()
    c.settle(3)
    chunks = [line for line in c.take_trace() if line.startswith("1->3 InstallSnapshot")]
    assert len(chunks) >= 2, "the snapshot travels in several chunks"
    assert c.node(3).log.offset >= 10
    assert c.sms[3].data == c.sms[1].data == {"x": "value-29"}
    c.crash(3)
    c.applied[3].clear()
    c.restart(3)
    assert type(c.applied[3][0]).__name__ == "Restore"
    assert c.sms[3].data == {"x": "value-29"}


def test_snapshot_state_pauses_appends() -> None:
    config = RaftConfig(snapshot_threshold_entries=5, snapshot_chunk_bytes=16)
    c = _session_cluster(config=config)
    c.isolate(2)
    for seq in range(1, 12):
        _write_x(c, 1, str(seq), seq, seq)
    c.heal()
    c.tick_all(2)
    c.deliver(keep=lambda s, d, m: isinstance(m, InstallSnapshot) and d == 2)
    assert c.node(1).progress[2].state == SNAPSHOT


# -- membership -----------------------------------------------------------------------------


def test_learner_catches_up_then_joint_consensus_promotes_it() -> None:
    c = Cluster(4, RaftConfig(initial_voters=(1, 2, 3)))
    c.elect(1)
    leader = c.node(1)
    assert leader.config.learners == frozenset({4})
    c.settle(2)
    assert c.node(4).commit == leader.commit, "learners receive the log"
    c.take_trace()
    leader.step(AdminRequest(7, "promote", 4), 1000)
    c.flush(1)
    assert leader.config.joint and leader.config.outgoing == frozenset({1, 2, 3})
    c.settle(3)
    assert not leader.config.joint, "C_new is proposed automatically once C_old,new commits"
    assert leader.config.voters == frozenset({1, 2, 3, 4})
    assert all(n.config == leader.config for n in c.live())
    assert c.reply(7).ok


def test_learners_do_not_count_toward_commit() -> None:
    c = Cluster(5, RaftConfig(initial_voters=(1, 2, 3)))
    c.elect(1)
    c.settle(2)
    c.isolate(2)
    c.isolate(3)
    c.blocked -= {(1, 4), (4, 1), (1, 5), (5, 1)}
    commit = c.node(1).commit
    c.node(1).propose([Command(1, 1, KvOp("put", "x", "1"))])
    c.deliver()
    assert c.node(4).log.last_index == c.node(1).log.last_index
    assert c.node(1).commit == commit, "two learners and the leader are not a quorum"


def test_removed_leader_steps_down_after_the_new_config_commits() -> None:
    c = Cluster(4)
    c.elect(1)
    c.settle(2)
    c.node(1).step(AdminRequest(3, "remove", 1, min_voters=3), 1000)
    c.deliver()
    c.settle(3)
    assert c.node(1).role == FOLLOWER
    for _ in range(40):
        c.tick_all()
        c.deliver()
    leader = c.leader()
    assert leader is not None and leader.node_id != 1
    assert leader.config.voters == frozenset({2, 3, 4})


def test_replace_changes_two_voters_at_once_through_joint_consensus() -> None:
    c = Cluster(4, RaftConfig(initial_voters=(1, 2, 3)))
    c.elect(1)
    c.settle(2)
    c.node(1).step(AdminRequest(3, "replace", 3, other=4), 1000)
    c.flush(1)
    conf = c.node(1).config
    assert conf.voters == frozenset({1, 2, 4}) and conf.outgoing == frozenset({1, 2, 3})
    c.settle(3)
    assert c.node(1).config.voters == frozenset({1, 2, 4}) and not c.node(1).config.joint


def test_admin_requests_are_validated() -> None:
    c = Cluster(3)
    c.elect(1)
    c.settle(1)
    c.node(1).step(AdminRequest(1, "promote", 2), 1000)
    c.node(1).step(AdminRequest(2, "remove", 2, min_voters=3), 1000)
    c.flush(1)
    assert c.reply(1).error == "not_learner"
    assert c.reply(2).error == "too_few_voters"
    assert c.node(1).role == LEADER


# -- sessions ---------------------------------------------------------------------------------


def test_a_retried_command_is_applied_once_with_the_cached_reply() -> None:
    c = _session_cluster()
    cas = Command(1, 1, KvOp("cas", "x", "new", ""))
    c.node(1).step(ClientRequest(1, cas), 1000)
    c.node(1).step(ClientRequest(2, cas), 1000)  # the client retried before hearing back
    c.deliver()
    assert c.reply(1).result is True
    assert c.reply(2).result is True, "the retry gets the first result, not a failed compare"
    c.settle(2)  # followers learn the commit index from the next heartbeat
    assert c.sms[2].data == {"x": "new"}


def test_sessions_expire_deterministically() -> None:
    sm = KvStateMachine(session_idle_commands=3, max_sessions=2)
    first = sm.apply(Command(0, 0, OPEN_SESSION))
    second = sm.apply(Command(0, 0, OPEN_SESSION))
    assert sm.apply(Command(first, 1, KvOp("put", "k", "a"))) is None
    third = sm.apply(Command(0, 0, OPEN_SESSION))  # evicts the least recently used
    assert sorted(sm.sessions) == [first, third]
    assert sm.apply(Command(second, 1, KvOp("put", "k", "b"))) == SESSION_EXPIRED
    for _ in range(4):
        sm.apply(Command(third, sm.sessions[third].last_seq + 1, KvOp("append", "k", "z")))
    assert first not in sm.sessions, "idle for more than 3 commands"
    twin = KvStateMachine(session_idle_commands=3, max_sessions=2)
    twin.restore(sm.snapshot())
    assert twin.snapshot() == sm.snapshot() and twin.data == {"k": "azzzz"}
