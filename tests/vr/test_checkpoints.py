"""VR log compaction (Liskov & Cowling 2012, section 5.1): checkpoints drop the log prefix,
and state transfer, recovery, view changes and durable restarts work from a checkpoint;
malformed checkpoints are refused; the monitor's ``checkpoint-state`` check fails and
passes where it must."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import pytest

from pnyx.core import DurableState, InvalidMessage, Message, SplitMix64
from pnyx.protocols.raft import AdminRequest
from pnyx.protocols.raft.kv import APPEND, Command, KvOp, KvStateMachine
from pnyx.protocols.raft.messages import ADD_LEARNER
from pnyx.protocols.vr import (
    NORMAL,
    RECOVERING,
    STANDBY,
    DoViewChange,
    NewState,
    RecoveryResponse,
    StartView,
    VrConfig,
    VrNode,
)
from pnyx.protocols.vr import config as mut
from pnyx.protocols.vr.messages import Checkpoint, VrEntry
from pnyx.protocols.vr.spec import SIM_CONFIG, VrMonitor
from tests.vr.net import CLIENT, CONFIG, Net

INTERVAL = 4
COMPACTING = dataclasses.replace(CONFIG, checkpoint_interval_ops=INTERVAL)
MAX_TICKS = 200


def _tick_until(net: Net, done: Any, what: str) -> None:
    for _ in range(MAX_TICKS):
        if done():
            return
        net.tick()
    raise AssertionError(f"not reached within {MAX_TICKS} ticks: {what}")


def _write(net: Net, writes: int, first_seq: int = 1, session: int | None = None) -> int:
    """``writes`` appends to key "a" through the current primary; the session used."""
    primary = next(n for n in net.live() if n.is_primary)
    if session is None:
        session = net.open_session(primary.node_id)
    for seq in range(first_seq, first_seq + writes):
        command = Command(session, seq, KvOp(APPEND, "a", f"w{seq};"))
        reply = net.request(primary.node_id, 100 + seq, command)
        assert reply is not None and reply.ok, reply
    net.tick(2)
    return session


def _expected(last_seq: int) -> str:
    return "".join(f"w{seq};" for seq in range(1, last_seq + 1))


def _record(net: Net) -> list[tuple[int, int, Message]]:
    seen: list[tuple[int, int, Message]] = []

    def keep(src: int, dst: int, msg: Message) -> bool:
        seen.append((src, dst, msg))
        return False

    net.lose = keep
    return seen


def _converged(net: Net) -> VrNode:
    net.tick(3)
    nodes = net.live()
    primary = next(n for n in nodes if n.is_primary)
    for node in nodes:
        if node.node_id not in primary.members:
            continue
        assert node.state == NORMAL and node.view == primary.view, node.status()
        assert node.op_number == primary.op_number and node.commit == primary.commit
        assert net.sms[node.node_id].data == net.sms[primary.node_id].data
    return primary


def test_checkpoints_drop_the_log_prefix_at_multiples_of_the_interval() -> None:
    net = Net(3, COMPACTING)
    _write(net, 9)  # ops: open session + 9 writes = 10
    net.tick(1)  # the next input drops the log through the checkpoint
    for node in net.live():
        assert node.op_number == 10 and node.commit == 10
        assert node.offset == 8 and len(node.log) == 2, node.status()
        assert node.checkpoint is not None and node.checkpoint.op == 8
        image = KvStateMachine()
        image.restore(node.checkpoint.data)
        assert image.data["a"] == _expected(7)  # op 1 opened the session
    assert net.sms[1].data["a"] == _expected(9)


def _cut_off_backup_catches_up(config: VrConfig) -> tuple[Net, list[NewState]]:
    """Node 3 is cut off for ten writes (the others compact through op 12), then returns."""
    net = Net(3, config)
    session = _write(net, 2)
    net.cut = {3}
    _write(net, 10, first_seq=3, session=session)
    net.tick(1)
    assert net.nodes[1].offset == 12 and net.nodes[3].op_number == 3
    seen = _record(net)
    net.cut = set()
    _tick_until(net, lambda: net.nodes[3].op_number == net.nodes[1].op_number, "catch-up")
    sent = [m for _, dst, m in seen if isinstance(m, NewState) and dst == 3]
    return net, sent


def test_a_cut_off_backup_catches_up_from_the_primary_checkpoint() -> None:
    net, sent = _cut_off_backup_catches_up(COMPACTING)
    assert any(m.checkpoint is not None and m.checkpoint.op == 12 for m in sent), sent
    lagging = net.nodes[3]
    assert lagging.installs == 1 and lagging.offset == 12
    assert net.sms[3].data["a"] == _expected(12)
    _converged(net)


def test_mutant_checkpoint_no_restore_leaves_the_state_machine_behind() -> None:
    mutants = frozenset({mut.CHECKPOINT_NO_RESTORE})
    net, _ = _cut_off_backup_catches_up(dataclasses.replace(COMPACTING, mutants=mutants))
    assert net.nodes[3].installs == 1 and net.nodes[3].op_number == 13
    # ops 4..12 (w3..w11) reached it only inside the checkpoint it did not restore
    assert net.sms[3].data["a"] == "w1;w2;w12;", net.sms[3].data
    assert net.sms[1].data["a"] == _expected(12)


def test_a_recovering_replica_restores_the_primary_checkpoint() -> None:
    net = Net(3, COMPACTING)
    session = _write(net, 6)
    net.crash(3)
    _write(net, 4, first_seq=7, session=session)
    seen = _record(net)
    net.restart(3)
    _tick_until(net, lambda: net.nodes[3].state == NORMAL, "node 3 recovers")
    answers = [m for _, dst, m in seen if dst == 3 and type(m) is RecoveryResponse]
    assert any(m.checkpoint is not None and m.log is not None for m in answers), answers
    recovered = net.nodes[3]
    assert recovered.recoveries == 1 and recovered.installs == 1 and recovered.offset == 8
    assert net.sms[3].data["a"] == _expected(10)
    _converged(net)


def test_a_view_change_over_compacted_logs_keeps_every_committed_op() -> None:
    net = Net(5, COMPACTING)
    session = _write(net, 9)
    net.tick(1)
    assert all(n.offset == 8 for n in net.live())
    net.crash(1)  # the primary; its successor starts view 1 from DoViewChange suffixes
    seen = _record(net)
    _tick_until(net, lambda: net.nodes[2].is_primary, "node 2 leads view 1")
    changes = [m for _, _, m in seen if isinstance(m, (DoViewChange, StartView))]
    assert changes and all(m.checkpoint is not None for m in changes)
    assert all(len(m.log) == m.op - 8 for m in changes)  # suffixes, not whole logs
    _write(net, 3, first_seq=10, session=session)
    primary = _converged(net)
    assert net.sms[primary.node_id].data["a"] == _expected(12)


def test_a_durable_replica_restarts_from_its_saved_checkpoint() -> None:
    net = Net(3, dataclasses.replace(COMPACTING, durable=True))
    _write(net, 9)
    net.tick(1)
    assert net.disks[3].snapshot is not None and net.disks[3].snapshot.index == 8
    assert net.disks[3].log_start == 9
    net.crash(3)
    net.restart(3)
    restarted = net.nodes[3]
    assert restarted.offset == 8 and restarted.applied >= 8 and restarted.state != RECOVERING
    assert restarted.checkpoint is not None and restarted.checkpoint.op == 8
    _tick_until(net, lambda: net.nodes[3].state == NORMAL, "node 3 rejoins")
    _converged(net)
    assert net.sms[3].data["a"] == _expected(9)


def test_epochs_over_compacted_logs_a_new_member_and_a_recovery_start_from_checkpoints() -> None:
    net = Net(5, dataclasses.replace(COMPACTING, initial_members=(1, 2, 3)))
    session = _write(net, 3)  # ops 1-4: the checkpoint at 4 drops them all
    net.tick(1)
    assert net.nodes[1].offset == 4 and net.nodes[4].state == STANDBY
    seen = _record(net)
    net.nodes[1].step(AdminRequest(40, ADD_LEARNER, 4, 3), CLIENT)  # op 5 starts epoch 1
    net.pump()
    _tick_until(net, lambda: net.nodes[4].state == NORMAL, "node 4 joins epoch 1")
    joined = net.nodes[4]
    assert joined.epoch == 1 and joined.epoch_op == 5 and joined.installs == 1
    assert any(type(m) is NewState and m.checkpoint is not None for _, d, m in seen if d == 4)
    _write(net, 4, first_seq=4, session=session)  # ops 6-9: the checkpoint at 8 drops op 5
    net.tick(1)
    assert all(n.offset == 8 for n in net.live() if n.node_id in (1, 2, 3, 4))
    checkpoint = net.nodes[1].checkpoint
    assert checkpoint is not None and (checkpoint.epoch, checkpoint.epoch_op) == (1, 5)
    net.crash(2)
    net.restart(2)  # disk-less: recovers from the primary's checkpoint of epoch 1
    _tick_until(net, lambda: net.nodes[2].state == NORMAL, "node 2 recovers")
    recovered = net.nodes[2]
    assert recovered.epoch == 1 and recovered.epoch_op == 5 and recovered.offset == 8
    primary = _converged(net)
    assert net.sms[primary.node_id].data["a"] == _expected(7)
    assert net.sms[2].data == net.sms[4].data == net.sms[primary.node_id].data


# -- malformed checkpoints are refused before any state changes -----------------------------


def _node() -> VrNode:
    return VrNode(1, (1, 2, 3), SplitMix64(1), DurableState(), COMPACTING)


CKPT = Checkpoint(4, b"x")
ENTRY = VrEntry(0, data="c")


@pytest.mark.parametrize(
    ("msg", "match"),
    [
        (NewState(0, 3, (ENTRY,), 5, checkpoint=CKPT), "first_op 3 after a checkpoint at op 4"),
        (NewState(0, 5, (ENTRY,), 3, checkpoint=CKPT), "checkpoint at op 4 beyond commit 3"),
        (StartView(0, (ENTRY,), 6, 6, checkpoint=CKPT), "op 6 but a checkpoint at 4 and 1"),
        (DoViewChange(0, (), 0, 4, 4, checkpoint=Checkpoint(0, b"")), "checkpoint at op 0"),
        (StartView(0, (), 4, 4, checkpoint=Checkpoint(4, b"", 1, 5)), "epoch started at 5"),
        (RecoveryResponse(0, 1, (ENTRY,), 6, 6, checkpoint=CKPT), "op 6, commit 6, 1 entries"),
    ],
)
def test_malformed_checkpoints_are_refused(msg: Message, match: str) -> None:
    node = _node()
    before = msgspec.json.encode(node.status())
    with pytest.raises(InvalidMessage, match=match):
        node.step(msg, 2)
    assert msgspec.json.encode(node.status()) == before and node.offset == 0


def test_a_checkpoint_of_a_wire_decoded_message_is_typed() -> None:
    wire = msgspec.msgpack.encode(NewState(0, 5, (ENTRY,), 5, checkpoint=CKPT))
    decoded = msgspec.msgpack.decode(wire, type=NewState)
    assert decoded.checkpoint == CKPT


# -- the monitor's checkpoint-state check (must fail and must pass) ---------------------------


class _World:
    def __init__(self, nodes: dict[int, VrNode]) -> None:
        self.nodes = nodes
        self.now_us = 0

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self.nodes))

    def node(self, node_id: int) -> Any:
        return self.nodes.get(node_id)

    def stopped(self, node_id: int) -> bool:
        return False

    def as_world(self) -> Any:
        return self


PUTS = [VrEntry(0, data=KvOp("put", f"k{i}", f"v{i}")) for i in range(1, 5)]


def _reference_image(ops: int) -> bytes:
    machine = KvStateMachine()
    for entry in PUTS[:ops]:
        machine.apply(entry.data)
    return machine.snapshot()


def _replica(node_id: int, log: list[VrEntry], checkpoint: Checkpoint | None = None) -> VrNode:
    node = VrNode(node_id, (1, 2, 3), SplitMix64(node_id), DurableState(), SIM_CONFIG)
    node.log, node.commit, node.applied = list(log), len(log), len(log)
    if checkpoint is not None:
        node.checkpoint, node.offset = checkpoint, checkpoint.op
        node.log = list(log[checkpoint.op :])
    return node


def test_monitor_accepts_a_checkpoint_of_the_committed_state() -> None:
    world = _World({1: _replica(1, PUTS)}).as_world()
    monitor = VrMonitor((1, 2, 3), make_sm=KvStateMachine, checkpoint_interval_ops=2)
    assert monitor.after_event(world) is None
    world.nodes[2] = _replica(2, PUTS, Checkpoint(2, _reference_image(2)))
    assert monitor.after_event(world) is None
    world.nodes[3] = _replica(3, PUTS, Checkpoint(4, _reference_image(4)))
    assert monitor.after_event(world) is None


def test_monitor_catches_a_checkpoint_that_differs_from_the_committed_state() -> None:
    world = _World({1: _replica(1, PUTS)}).as_world()
    monitor = VrMonitor((1, 2, 3), make_sm=KvStateMachine, checkpoint_interval_ops=2)
    assert monitor.after_event(world) is None
    world.nodes[2] = _replica(2, PUTS, Checkpoint(2, _reference_image(1)))
    violation = monitor.after_event(world)
    assert violation is not None and violation.prop == "checkpoint-state", violation


def test_monitor_catches_a_checkpoint_beyond_the_committed_ops() -> None:
    node = _replica(1, PUTS[:2], Checkpoint(2, _reference_image(2)))
    node.checkpoint, node.offset = Checkpoint(3, _reference_image(3)), 3
    node.log, node.commit, node.applied = [], 3, 3  # op 3 never seen committed
    monitor = VrMonitor((1, 2, 3), make_sm=KvStateMachine)
    violation = monitor.after_event(_World({1: node}).as_world())
    assert violation is not None and violation.prop == "checkpoint-state", violation
