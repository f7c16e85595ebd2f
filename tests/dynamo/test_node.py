"""Directed tests of the Dynamo node: siblings, hinted handoff, read repair, Merkle sync."""

from __future__ import annotations

import pytest

from pnyx.protocols.dynamo import DynamoConfig, Get, Put, ReadResult, WriteResult, merkle
from pnyx.protocols.dynamo.messages import MerkleDiff, MerklePush, MerkleTree, ReplicaWrite
from pnyx.protocols.dynamo.versions import Version
from tests.dynamo.net import Net

KEY = "k"


def _owners(net: Net, key: str = KEY) -> tuple[int, ...]:
    return net.nodes[1].ring.preference_list(key)[: net.config.n]


def _get(net: Net, at: int, key: str = KEY) -> ReadResult:
    net.send(at, Get(len(net.replies) + 1, key))
    result = net.last_result()
    assert isinstance(result, ReadResult)
    return result


def _put(net: Net, at: int, value: str, context: object = ((), ()), key: str = KEY) -> None:
    net.send(at, Put(len(net.replies) + 1, key, value, context))  # type: ignore[arg-type]
    assert isinstance(net.last_result(), WriteResult)


def test_concurrent_writes_become_siblings_and_a_write_with_the_read_context_resolves_them(
) -> None:
    net = Net(DynamoConfig(n=3, r=2, w=2, anti_entropy=False))
    first, second, _ = _owners(net)
    _put(net, first, "x")
    _put(net, second, "y")  # same (empty) context: concurrent with x
    read = _get(net, first)
    assert sorted(read.values) == ["x", "y"]
    _put(net, second, "z", read.context)
    assert _get(net, first).values == ("z",)
    for node in _owners(net):
        assert [v.value for v in net.nodes[node].store[KEY]] == ["z"]


def test_two_blind_writes_through_one_coordinator_are_both_kept() -> None:
    """A vector clock bumped at the coordinator would let the second replace the first."""
    net = Net(DynamoConfig(n=3, r=2, w=2, anti_entropy=False))
    coordinator = _owners(net)[0]
    _put(net, coordinator, "x")
    _put(net, coordinator, "y")
    assert sorted(_get(net, coordinator).values) == ["x", "y"]


def test_hinted_handoff_delivers_after_recovery() -> None:
    net = Net(DynamoConfig(n=3, r=2, w=3, sloppy=True, anti_entropy=False,
                           request_timeout_ticks=2, handoff_ticks=3))
    coordinator, _, absent = _owners(net)
    net.down.add(absent)
    net.send(coordinator, Put(1, KEY, "x", ((), ())))
    assert not net.replies  # W=3 needs the absent replica or a stand-in
    net.tick(2)  # the request times out: a stand-in takes a hinted copy
    assert isinstance(net.last_result(), WriteResult)
    holders = [n for n in net.ids if net.nodes[n].hints.get(absent, {}).get(KEY)]
    assert len(holders) == 1 and holders[0] not in _owners(net)
    assert KEY not in net.nodes[absent].store
    net.tick(6)  # hand-off attempts while still down change nothing
    assert net.nodes[holders[0]].hints
    net.down.discard(absent)
    net.restart(absent)
    net.tick(3)
    assert [v.value for v in net.nodes[absent].store[KEY]] == ["x"]
    assert not net.nodes[holders[0]].hints  # dropped once acknowledged
    assert net.disks[holders[0]].records[f"hint:{absent}:{KEY}"] is None


def test_strict_quorum_does_not_use_stand_ins() -> None:
    net = Net(DynamoConfig(n=3, r=2, w=3, anti_entropy=False, request_timeout_ticks=2,
                           max_rounds=2))
    coordinator, _, absent = _owners(net)
    net.down.add(absent)
    net.send(coordinator, Put(1, KEY, "x", ((), ())))
    net.tick(6)
    assert net.replies and not net.replies[-1].ok and net.replies[-1].error == "timeout"
    assert not any(node.hints for node in net.nodes.values())


def test_read_repair_fixes_a_stale_replica() -> None:
    net = Net(DynamoConfig(n=3, r=2, w=2, anti_entropy=False, request_timeout_ticks=2))
    coordinator, _, stale = _owners(net)
    net.down.add(stale)
    _put(net, coordinator, "x")
    net.down.discard(stale)
    assert KEY not in net.nodes[stale].store
    assert _get(net, coordinator).values == ("x",)  # every replica answers; stale one repaired
    assert [v.value for v in net.nodes[stale].store[KEY]] == ["x"]
    repairs = [m for _, dst, m in net.sent if dst == stale and isinstance(m, ReplicaWrite)]
    assert len(repairs) == 1 and repairs[0].op_id == 0


def test_without_read_repair_the_stale_replica_stays_stale() -> None:
    net = Net(DynamoConfig(n=3, r=2, w=2, anti_entropy=False, read_repair=False))
    coordinator, _, stale = _owners(net)
    net.down.add(stale)
    _put(net, coordinator, "x")
    net.down.discard(stale)
    assert _get(net, coordinator).values == ("x",)
    assert KEY not in net.nodes[stale].store


def test_merkle_sync_exchanges_exactly_the_differing_leaf() -> None:
    net = Net(DynamoConfig(n=3, r=1, w=1, anti_entropy=False))
    keys = [f"key{i}" for i in range(200)]
    a, b, _ = _owners(net, keys[0])
    range_index = net.nodes[a].range_of(keys[0])
    same_range = [k for k in keys if net.nodes[a].range_of(k) == range_index]
    assert len(same_range) >= 3, "test needs several keys in one range"
    for i, key in enumerate(same_range):
        for node in (a, b):
            net.nodes[node].step(ReplicaWrite(0, key, (Version(9, i + 1, ((), ()), key),)), 9)
    odd = same_range[1]
    net.nodes[a].step(ReplicaWrite(0, odd, (Version(8, 1, ((), ()), "new"),)), 8)
    other_range = next(r for r in net.nodes[a].my_ranges
                       if r != range_index and b in net.nodes[a].ring.replicas(r, 3))
    net.send(b, MerkleTree(other_range, net.nodes[a].tree(other_range)), a)
    assert len(net.sent) == 1  # equal trees: no answer
    net.send(b, MerkleTree(range_index, net.nodes[a].tree(range_index)), a)
    diff = next(m for _, _, m in net.sent if isinstance(m, MerkleDiff))
    assert diff.leaves == (merkle.leaf_of(odd),)
    same_leaf = {k for k in same_range if merkle.leaf_of(k) == merkle.leaf_of(odd)}
    assert {k for k, _ in diff.data} == same_leaf
    push = next(m for _, _, m in net.sent if isinstance(m, MerklePush))
    assert {k for k, _ in push.data} == same_leaf
    assert net.nodes[b].store[odd] == net.nodes[a].store[odd]
    assert sorted(v.value for v in net.nodes[b].store[odd]) == [odd, "new"]
    assert net.nodes[a].tree(range_index) == net.nodes[b].tree(range_index)


def test_periodic_anti_entropy_converges_replicas() -> None:
    net = Net(DynamoConfig(n=3, r=1, w=1, anti_entropy_ticks=2, request_timeout_ticks=50))
    coordinator, *others = _owners(net)
    net.down.update(others)
    _put(net, coordinator, "x")  # W=1: acknowledged with the coordinator's copy only
    net.down.clear()
    assert all(KEY not in net.nodes[n].store for n in others)
    net.tick(2 * len(net.nodes[coordinator].my_ranges) * 3)
    for node in _owners(net):
        assert [v.value for v in net.nodes[node].store[KEY]] == ["x"]


def test_writes_survive_a_restart_and_dots_stay_unique() -> None:
    net = Net(DynamoConfig(n=3, r=3, w=3, anti_entropy=False))
    coordinator = _owners(net)[0]
    _put(net, coordinator, "x")
    net.restart(coordinator)
    assert [v.value for v in net.nodes[coordinator].store[KEY]] == ["x"]
    _put(net, coordinator, "y")  # blind write after restart: a new dot, so a sibling
    assert sorted(_get(net, coordinator).values) == ["x", "y"]


@pytest.mark.parametrize("bad", [Put(1, "", "v"), Put(1, KEY, "v", ((("a", 1),), ())),  # type: ignore[arg-type]
                                 Put(1, KEY, "v", ((), ((1, -1),))), Get(1, "x" * 300)])
def test_bad_requests_get_a_clear_error(bad: Get | Put) -> None:
    net = Net(DynamoConfig())
    net.send(1, bad)
    reply = net.replies[-1]
    assert not reply.ok and ("key" in reply.error or "context" in reply.error)
    assert not net.nodes[1].store and not net.nodes[1].counters


def test_config_rejects_impossible_quorums() -> None:
    with pytest.raises(ValueError, match="r=4"):
        DynamoConfig(n=3, r=4, w=1)
