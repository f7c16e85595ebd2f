"""Directed multi-Raft scenarios on a tiny deterministic driver: a split (what it carries,
what it refuses), splits by size, a replica move by membership change, a restart from the
journal and its checkpoint, and bad input."""

from __future__ import annotations

import random

import pytest

from pnyx.core import CLIENT_ID_BASE, DurableState, InvalidMessage
from pnyx.protocols.multiraft import (
    KEY_NOT_IN_RANGE,
    META_GROUP,
    Batch,
    GroupRequest,
    MetaPropose,
    MetaQuery,
    MetaStateMachine,
    MoveReplica,
    MultiRaftNode,
    RangeBounds,
    RangeDesc,
    RangeStateMachine,
    check_range_map,
)
from pnyx.protocols.multiraft.messages import RangeWrite, SplitCmd, SplitDone
from pnyx.protocols.multiraft.node import LEADERSHIP_LOST
from pnyx.protocols.raft import ClientRequest, KvOp, ReadRequest
from tests.multiraft.harness import CLIENT, Net, config


def _ready_net(n: int, **changes: object) -> Net:
    net = Net(n, config(**changes))
    net.run(80)
    return net


def test_split_carries_every_key_and_refuses_writes_in_flight_across_it() -> None:
    net = _ready_net(3, split_threshold_keys=100)
    for i in range(6):
        assert net.put_routed(f"k{i}", f"v{i}").ok
    lead = net.leader(1)
    assert net.nodes[lead].groups[1].propose([SplitCmd(1, 1, "k3", 7)]) > 0
    late_right = net.put(lead, 1, "k4", "late")  # in the log after the split
    late_left = net.put(lead, 1, "k1", "late")
    net.run(80)
    refused = net.replies[late_right]
    assert not refused.ok and refused.error == KEY_NOT_IN_RANGE
    assert net.replies[late_left].ok
    for pid in net.ids:
        left, right = net.nodes[pid].range_machine(1), net.nodes[pid].range_machine(7)
        assert left is not None and right is not None
        assert left.bounds == RangeBounds(1, "", "k3", 2)
        assert right.bounds == RangeBounds(7, "k3", None, 2)
        assert left.data == {"k0": "v0", "k1": "late", "k2": "v2"}
        assert right.data == {"k3": "v3", "k4": "v4", "k5": "v5"}  # "late" never applied
        spans = [(d.range_id, d.start, d.end, d.version) for d in net.meta_map(pid)]
        assert spans == [(1, "", "k3", 2), (7, "k3", None, 2)]
    assert net.put_routed("k4", "again").ok  # routed to range 7 now
    lead7 = net.leader(7)
    rid = net.get(lead7, 7, "k4")
    net.run(5)
    assert net.replies[rid].ok and net.replies[rid].result == "again"


def test_ranges_split_by_size_into_a_partition_of_the_keyspace() -> None:
    net = _ready_net(3, split_threshold_keys=3)
    written = {}
    for i in range(14):
        key, value = f"k{i:02d}", f"v{i}"
        for _ in range(20):  # a route may go stale while ranges split: retry refusals
            reply = net.put_routed(key, value)
            if reply.ok:
                written[key] = value
                break
            net.run(5)
        assert key in written, f"{key} never written"
    net.run(150)
    meta = net.meta_map(net.leader(META_GROUP))
    assert len(meta) >= 4, meta
    assert check_range_map(meta) == ""
    held: dict[str, str] = {}
    for desc in meta:
        sm = net.nodes[net.leader(desc.range_id)].range_machine(desc.range_id)
        assert sm is not None and sm.bounds == desc.bounds
        assert len(sm.data) <= 3
        for key, value in sm.data.items():
            assert desc.contains(key) and key not in held
            held[key] = value
    assert held == written


def test_replica_moves_to_another_process_by_membership_change() -> None:
    net = _ready_net(5, split_threshold_keys=100)  # the meta range survives two crashes
    for i in range(3):
        assert net.put_routed(f"k{i}", f"v{i}").ok
    lead = net.leader(1)  # the leader moves its own replica away
    assert set(net.nodes[lead].groups[1].log.config().voters) == {1, 2, 3}
    rid = net.next_id()
    net.nodes[lead].step(MoveReplica(rid, 1, lead, 4), CLIENT)
    net.pump(lead)
    net.run(250)
    assert net.replies[rid].ok
    new_lead = net.leader(1)
    expected = {1, 2, 3, 4} - {lead}
    assert net.nodes[5].range_machine(1) is None  # process 5 never held range 1
    assert set(net.nodes[new_lead].groups[1].log.config().voters) == expected
    sm4 = net.nodes[4].range_machine(1)
    assert sm4 is not None and sm4.data == {"k0": "v0", "k1": "v1", "k2": "v2"}
    for pid in net.ids:
        (desc,) = [d for d in net.meta_map(pid) if d.range_id == 1]
        assert set(desc.replicas) == expected
    # Process 4 votes now: with the old leader gone and one more old replica down, the
    # range still commits (process 4 is one of its two live voters).
    other = min(expected - {4})
    net.crash(lead)
    net.crash(other)
    net.run(80)
    reply = net.put_routed("k1", "after-move")
    assert reply.ok
    assert net.leader(1) in expected - {other}


def test_restart_rebuilds_every_group_from_the_journal_and_its_checkpoint() -> None:
    net = _ready_net(3, split_threshold_keys=3, checkpoint_entries=8)
    for i in range(10):
        for _ in range(20):
            if net.put_routed(f"k{i:02d}", f"v{i}").ok:
                break
            net.run(5)
    net.run(100)
    disk = net.disks[2]
    assert disk.snapshot is not None and disk.log_start > 1  # checkpointed and compacted
    before = {
        g: dict(sm.data) for g in net.nodes[2].groups if (sm := net.nodes[2].range_machine(g))
    }
    assert len(before) >= 3
    net.crash(2)
    net.restart(2)
    net.run(60)
    after = {g: dict(sm.data) for g in net.nodes[2].groups if (sm := net.nodes[2].range_machine(g))}
    assert after == before


def test_bad_input_gets_clear_answers_and_never_crashes_the_process() -> None:
    node = MultiRaftNode(1, (1, 2, 3), random.Random(1), DurableState())
    node.step(GroupRequest(99, ReadRequest(5, KvOp("get", "a"))), CLIENT_ID_BASE)
    batch = node.ready()
    replies = [s.msg for s in batch.send if s.to == CLIENT_ID_BASE]
    assert replies and replies[0].error == "range_not_found"  # type: ignore[attr-defined]
    node.advance(batch)
    node.step(GroupRequest(META_GROUP, ClientRequest(6, MetaQuery())), CLIENT_ID_BASE)
    assert any(getattr(s.msg, "error", "") == "meta_is_read_only" for s in node.ready().send)
    with pytest.raises(InvalidMessage, match="not a peer"):
        node.step(Batch(()), 9)
    with pytest.raises(InvalidMessage, match="not a meta command"):
        node.step(MetaPropose(KvOp("put", "a", "b")), 2)  # type: ignore[arg-type]
    with pytest.raises(InvalidMessage, match="unexpected client message"):
        node.step(Batch(()), CLIENT_ID_BASE)
    sm = RangeStateMachine(RangeBounds(1, "", None, 1))
    assert "malformed" in sm.apply({"kind": 5})["error"]
    assert "unknown operation kind 'nonsense'" in sm.apply(["nonsense", "a"])["error"]
    assert sm.apply(KvOp("put", 3, "x"))["error"] == "key 3 is not a string"  # type: ignore[arg-type]
    stale = sm.apply(SplitCmd(1, 9, "m", 2))
    assert stale["error"] == "stale_split"
    assert isinstance(sm.apply(SplitCmd(1, 1, "m", 2)), SplitDone)
    assert "malformed" in MetaStateMachine().apply({"x": 1})["error"]
    with pytest.raises(ValueError, match="split_threshold_keys"):
        config(split_threshold_keys=1)
    with pytest.raises(ValueError, match="unknown mutants"):
        config(mutants=frozenset({"nope"}))


def _desc(rid: int, start: str, end: str | None) -> RangeDesc:
    return RangeDesc(rid, start, end, 1, 1, (1,))


def test_range_map_check_accepts_partitions_and_names_each_defect() -> None:
    assert check_range_map([_desc(2, "m", None), _desc(1, "", "m")]) == ""
    assert "empty" in check_range_map([])
    assert "before 'a'" in check_range_map([_desc(1, "a", None)])
    assert "starts at 'n'" in check_range_map([_desc(1, "", "m"), _desc(2, "n", None)])
    assert "starts at 'k'" in check_range_map([_desc(1, "", "m"), _desc(2, "k", None)])
    assert "from 'm'" in check_range_map([_desc(1, "", "m")])
    assert "inverted" in check_range_map(
        [_desc(1, "", "m"), _desc(2, "m", "m"), _desc(3, "m", None)]
    )


def test_meta_updates_only_move_forward() -> None:
    whole = RangeDesc(1, "", None, 1, 10, (1, 2, 3))
    meta = MetaStateMachine((whole,), next_id=2)
    assert meta.apply(_reserve(1, 1)) == 2 and meta.apply(_reserve(1, 1)) == 2
    assert meta.apply(_reserve(1, 5)) == 0
    left = RangeDesc(1, "", "m", 2, 12, (1, 2, 3))
    right = RangeDesc(2, "m", None, 2, 10, (1, 2, 3))
    split = _split(left, right)
    assert meta.apply(split) is True
    assert meta.apply(split) is False  # a duplicate changes nothing
    assert check_range_map(list(meta.ranges.values())) == ""
    assert meta.apply(_replicas(1, 2, 11, (1, 2, 4))) is False  # older observation
    assert meta.apply(_replicas(1, 2, 20, (1, 2, 4))) is True
    assert meta.ranges[1].replicas == (1, 2, 4)
    restored = MetaStateMachine()
    restored.restore(meta.snapshot())
    assert restored.ranges == meta.ranges and restored.next_id == meta.next_id


def _reserve(rid: int, version: int) -> object:
    from pnyx.protocols.multiraft.messages import ReserveSplit

    return ReserveSplit(rid, version)


def _split(left: RangeDesc, right: RangeDesc) -> object:
    from pnyx.protocols.multiraft.messages import MetaSplit

    return MetaSplit(left, right)


def _replicas(rid: int, version: int, conf_ver: int, replicas: tuple[int, ...]) -> object:
    from pnyx.protocols.multiraft.messages import MetaReplicas

    return MetaReplicas(rid, version, conf_ver, replicas)


def test_a_write_appended_before_leadership_is_lost_is_answered_as_indeterminate() -> None:
    net = _ready_net(3, split_threshold_keys=100)
    lead = net.leader(1)
    for pid in net.ids:
        if pid != lead:
            net.crash(pid)  # the leader can no longer commit, and check-quorum demotes it
    rid = net.put(lead, 1, "k1", "maybe")
    refused = net.put(lead, 99, "k1", "no")  # unknown range: a refusal
    net.run(40)
    assert net.nodes[lead].groups[1].role != "leader"
    assert net.replies[rid].error == LEADERSHIP_LOST  # appended: it may still commit
    assert net.replies[refused].error == "range_not_found"
    for pid in net.ids:
        if pid != lead:
            net.restart(pid)
    net.run(100)
    assert net.put_routed("k1", "later").ok


def test_a_duplicated_write_applies_once_even_after_its_key_moved_by_a_split() -> None:
    net = _ready_net(3, split_threshold_keys=100)
    lead = net.leader(1)
    first = RangeWrite(CLIENT, 1, KvOp("put", "k5", "old"))
    second = RangeWrite(CLIENT, 2, KvOp("put", "k5", "new"))
    for write in (first, second):
        rid = net.next_id()
        net.send(lead, 1, ClientRequest(rid, write))
        net.run(10)
        assert net.replies[rid].ok
    late_copy = net.next_id()  # the network delivers an old request again
    net.send(lead, 1, ClientRequest(late_copy, first))
    net.run(10)
    assert net.replies[late_copy].error == "stale_request"
    assert net.nodes[lead].groups[1].propose([SplitCmd(1, 1, "k3", 7)]) > 0
    net.run(80)
    lead7 = net.leader(7)
    other = RangeWrite(CLIENT + 1, 1, KvOp("put", "k5", "other"))
    rid = net.next_id()
    net.send(lead7, 7, ClientRequest(rid, other))
    net.run(10)
    assert net.replies[rid].ok
    retry = net.next_id()  # a retry of op 2, now routed to the right half
    net.send(lead7, 7, ClientRequest(retry, second))
    net.run(10)
    assert net.replies[retry].ok  # it happened (in range 1, before the split) ...
    for pid in net.ids:
        sm = net.nodes[pid].range_machine(7)
        assert sm is not None and sm.data["k5"] == "other"  # ... and is not applied again
