"""Directed VR scenarios on a hand-driven network: a view change during a view change,
recovery of a replica while a view change runs, the nonce, durable restarts, bad input."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from pnyx.core import DurableState, InvalidMessage, Message, PutRecord, SplitMix64
from pnyx.protocols.raft.kv import APPEND, Command, KvOp
from pnyx.protocols.vr import (
    BOOT_KEY,
    NORMAL,
    RECOVERING,
    RETIRED,
    SHUT_DOWN,
    STANDBY,
    VIEW_CHANGE,
    Commit,
    DoViewChange,
    Prepare,
    RecoveryResponse,
    StartView,
    StartViewChange,
    VrConfig,
    VrEntry,
    VrNode,
)
from pnyx.protocols.vr import config as mut
from tests.vr.net import CLIENT, CONFIG, Net

MAX_TICKS = 200


def _tick_until(net: Net, done: object, what: str) -> None:
    assert callable(done)
    for _ in range(MAX_TICKS):
        if done():
            return
        net.tick()
    raise AssertionError(f"not reached within {MAX_TICKS} ticks: {what}")


def _append(net: Net, to: int, request_id: int, session: int, seq: int, token: str) -> Any:
    return net.request(to, request_id, Command(session, seq, KvOp(APPEND, "a", token)))


def _committed_setup(net: Net, writes: int = 3) -> tuple[int, list[VrEntry]]:
    session = net.open_session(1)
    for seq in range(1, writes + 1):
        reply = _append(net, 1, 10 + seq, session, seq, f"w{seq};")
        assert reply is not None and reply.ok, reply
    net.tick(2)  # Commit reaches the backups
    committed = list(net.nodes[1].log)
    members = net.nodes[1].members
    assert all(n.commit == len(committed) for n in net.live() if n.node_id in members)
    return session, committed


def _assert_converged(net: Net, committed: list[VrEntry]) -> VrNode:
    net.tick(3)  # the primary's Commit carries its commit-number to every backup
    nodes = net.live()
    primaries = [n for n in nodes if n.is_primary]
    assert len(primaries) == 1, [n.status() for n in nodes]
    primary = primaries[0]
    for node in nodes:
        assert node.state == NORMAL and node.view == primary.view, node.status()
        assert node.log[: len(committed)] == committed, f"node {node.node_id} lost ops"
        assert net.sms[node.node_id].data == net.sms[primary.node_id].data
    return primary


def test_view_change_during_a_view_change_keeps_committed_ops_and_exactly_once() -> None:
    net = Net(5)
    session, committed = _committed_setup(net)
    net.crash(1)

    # Node 2 becomes primary of view 1, but nobody hears its StartView or Prepares.
    def silenced(src: int, dst: int, msg: Message) -> bool:
        return src == 2 and type(msg) in (StartView, Prepare, Commit)

    net.lose = silenced
    _tick_until(net, lambda: net.nodes[2].is_primary and net.nodes[2].view == 1, "view 1 at 2")
    assert [net.nodes[i].state for i in (3, 4, 5)] == [VIEW_CHANGE] * 3
    # A client write reaches only the would-be primary of view 1: never committed there.
    assert _append(net, 2, 20, session, 4, "x;") is None
    assert net.nodes[2].op_number == len(committed) + 1
    assert net.nodes[2].commit == len(committed)

    # The others give up on view 1 and change to view 2 while 2 still thinks view 1 runs.
    _tick_until(net, lambda: any(net.nodes[i].view >= 2 for i in (3, 4, 5)), "view 2 starts")
    net.lose = None
    _tick_until(
        net,
        lambda: all(n.state == NORMAL and n.view >= 2 for n in net.live()),
        "every live replica normal in view 2 or later",
    )
    primary = _assert_converged(net, committed)
    assert primary.view >= 2 and primary.node_id != 2

    # The client retries its write at the new primary: applied exactly once.
    reply = _append(net, primary.node_id, 21, session, 4, "x;")
    net.tick(2)
    assert reply is not None and reply.ok, reply
    value = net.sms[primary.node_id].data["a"]
    assert value == "w1;w2;w3;x;", value
    _assert_converged(net, committed)


def test_recovery_while_a_view_change_runs() -> None:
    net = Net(5)
    _, committed = _committed_setup(net)
    net.crash(3)
    net.crash(1)  # the primary: a view change to view 1 (primary 2) follows
    net.cut = {3}  # the restarted replica's Recovery messages are lost for now
    net.restart(3)
    assert net.nodes[3].state == RECOVERING and net.nodes[3].op_number == 0

    def stall(src: int, dst: int, msg: Message) -> bool:
        return type(msg) is DoViewChange  # the view change cannot complete yet

    net.lose = stall
    _tick_until(net, lambda: net.nodes[2].state == VIEW_CHANGE, "the view change starts")
    net.cut = set()
    net.tick(CONFIG.resend_ticks * 2)
    # Replicas in a view change do not answer Recovery: 3 keeps waiting meanwhile.
    assert net.nodes[3].state == RECOVERING
    assert all(net.nodes[i].state == VIEW_CHANGE for i in (2, 4, 5))
    net.lose = None
    _tick_until(net, lambda: net.nodes[3].state == NORMAL, "node 3 recovers")
    recovered = net.nodes[3]
    assert recovered.recoveries == 1 and recovered.view >= 1
    assert recovered.log[: len(committed)] == committed
    net.tick(3)
    _assert_converged(net, committed)
    assert net.sms[3].data["a"] == "w1;w2;w3;"  # replayed into its fresh state machine


def test_stale_recovery_response_is_ignored_by_its_nonce() -> None:
    def recovering(mutants: frozenset[str]) -> VrNode:
        disk = DurableState()
        disk.apply(PutRecord(BOOT_KEY, 1))
        cfg = dataclasses.replace(CONFIG, mutants=mutants)
        node = VrNode(3, (1, 2, 3), SplitMix64(9), disk, cfg)
        assert node.state == RECOVERING
        return node

    def answer(node: VrNode, nonce: int) -> None:
        node.step(RecoveryResponse(0, nonce, (), 0, 0), 1)  # the primary of view 0
        node.step(RecoveryResponse(0, nonce, None, 0, 0), 2)

    node = recovering(frozenset())
    answer(node, node.nonce + 1)
    assert node.state == RECOVERING  # an answer to an earlier life's request
    answer(node, node.nonce)
    assert node.state == NORMAL and node.recoveries == 1

    broken = recovering(frozenset({mut.RECOVERY_NO_NONCE}))
    answer(broken, broken.nonce + 1)
    assert broken.state == NORMAL  # the mutant takes the stale answer


def test_durable_mode_survives_every_replica_crashing_at_once() -> None:
    net = Net(3, dataclasses.replace(CONFIG, durable=True))
    _, committed = _committed_setup(net)
    for i in net.ids:
        net.crash(i)
    for i in net.ids:
        net.restart(i)
    _tick_until(net, lambda: all(n.state == NORMAL for n in net.live()), "a view after restart")
    net.tick(3)
    primary = _assert_converged(net, committed)
    assert primary.view >= 1
    assert net.sms[primary.node_id].data["a"] == "w1;w2;w3;"


def test_disk_less_mode_writes_only_the_boot_marker() -> None:
    net = Net(3)
    _committed_setup(net)
    for disk in net.disks.values():
        assert disk.records == {BOOT_KEY: 1} and disk.log == []


def test_bad_input_is_refused_before_any_state_changes() -> None:
    node = VrNode(1, (1, 2, 3), SplitMix64(1), DurableState(), VrConfig())
    with pytest.raises(InvalidMessage, match="view must be an int >= 0"):
        node.step(Commit(-1, 0), 2)
    with pytest.raises(InvalidMessage, match="not a peer"):
        node.step(Commit(0, 0), 7)
    with pytest.raises(InvalidMessage, match="op 2 but a checkpoint at 0 and 0 entries"):
        node.step(StartView(1, (), 2, 0), 2)
    assert node.view == 0 and node.state == NORMAL
    with pytest.raises(ValueError, match="unknown mutants"):
        VrConfig(mutants=frozenset({"nope"}))
    with pytest.raises(ValueError, match="not among the peers"):
        VrNode(4, (1, 2, 3), SplitMix64(1), DurableState())


def test_an_even_group_commits_only_with_a_majority() -> None:
    net = Net(4)
    assert net.nodes[1].quorum == 3 and net.nodes[1].f == 1
    session = net.open_session(1)
    net.cut = {3, 4}  # two of four replicas: not a quorum
    assert _append(net, 1, 30, session, 1, "x;") is None
    assert net.nodes[1].commit == 1  # only the session is committed
    net.cut = set()
    net.tick(2)
    assert net.nodes[1].commit == 2 and net.replies[30].ok


def _admin(net: Net, to: int, request_id: int, action: str, node: int) -> Any:
    from pnyx.protocols.raft import AdminRequest

    net.nodes[to].step(AdminRequest(request_id, action, node, 3), CLIENT)
    net.pump()
    return net.replies.get(request_id)


def test_reconfiguration_by_epochs_adds_and_retires_members() -> None:
    net = Net(5, dataclasses.replace(CONFIG, initial_members=(1, 2, 3)))
    assert net.nodes[4].state == STANDBY and net.nodes[1].members == (1, 2, 3)
    _, committed = _committed_setup(net)
    # Epoch 1: node 4 joins; it fetches the log through the reconfiguration op.
    reply = _admin(net, 1, 40, "add_learner", 4)
    assert reply is not None and reply.ok, reply
    net.tick(3)
    joined = net.nodes[4]
    assert joined.epoch == 1 and joined.state == NORMAL and joined.members == (1, 2, 3, 4)
    assert joined.log[: len(committed)] == committed
    assert net.sms[4].data == net.sms[1].data == {"a": "w1;w2;w3;"}
    assert net.nodes[5].state == STANDBY  # never a member
    # Epoch 2: node 1 (the primary) leaves; the others go on without it.
    reply = _admin(net, 1, 41, "remove", 1)
    assert reply is not None and reply.ok, reply
    net.tick(3)
    assert net.nodes[1].state in (RETIRED, SHUT_DOWN) and net.nodes[1].epoch == 2
    primary = next(n for n in net.live() if n.is_primary)
    assert primary.epoch == 2 and primary.members == (2, 3, 4)
    # Writes commit in the new epoch (the session survives the reconfigurations).
    session = 1
    reply = _append(net, primary.node_id, 42, session, 4, "w4;")
    net.tick(3)
    assert reply is not None and reply.ok, reply
    for i in (2, 3, 4):
        assert net.sms[i].data == {"a": "w1;w2;w3;w4;"}, i
    assert net.nodes[1].state == SHUT_DOWN  # a quorum of the new members said EpochStarted
    # A refused change says why.
    refused = _admin(net, primary.node_id, 43, "remove", 2)
    assert refused is not None and not refused.ok and "fewer than 3" in refused.error


def _new_primary_choice(mutants: frozenset[str]) -> tuple[VrNode, list[Message]]:
    """Node 2 becomes primary of view 4 (of 1, 2, 3) from two DoViewChanges: its own, last
    normal in view 3 with ops [A, C], and node 3's, last normal in view 1 with the longer
    stale log [A, B, B2].  Returns node 2 and the messages it sent."""
    a, b, b2, c = (VrEntry(v, data=d) for v, d in ((0, "a"), (1, "b"), (1, "b2"), (3, "c")))
    node = VrNode(2, (1, 2, 3), SplitMix64(2), DurableState(), VrConfig(mutants=mutants))
    node.view, node.last_normal_view, node.log, node.commit = 3, 3, [a, c], 1
    node.step(StartViewChange(4), 3)
    assert node.state == VIEW_CHANGE and node.view == 4 and node.primary == 2
    node.ready()
    node.step(DoViewChange(4, (a, b, b2), 1, 3, 1), 3)
    return node, [s.msg for s in node.ready().send]


def test_the_new_primary_takes_the_log_of_the_latest_normal_view_not_the_longest() -> None:
    node, sent = _new_primary_choice(frozenset())
    assert node.is_primary and [e.data for e in node.log] == ["a", "c"]
    starts = [m for m in sent if isinstance(m, StartView)]
    assert starts and all([e.data for e in m.log] == ["a", "c"] for m in starts)


def test_mutant_dvc_by_op_number_takes_the_longest_stale_log() -> None:
    node, _ = _new_primary_choice(frozenset({mut.DVC_BY_OP_NUMBER}))
    assert node.is_primary and [e.data for e in node.log] == ["a", "b", "b2"]
