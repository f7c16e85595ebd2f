"""Ranges split by size in bytes: the range machine's incremental size, the key that halves
the bytes (not the keys), the same for the transaction range's Percolator records, and
simulated runs whose ranges split by bytes only (key-count splits out of reach) under all
faults; the default (off) leaves the simulator's traces as they were.  Also what a range's
leader answers to every kind of replica move (``MoveReplicaExplained``: a reason for each
refusal; the simulator's ``MoveReplica``: the bare answers it always had)."""

from __future__ import annotations

import dataclasses
import random

import msgspec
import pytest

from pnyx.catalog import get_protocol
from pnyx.core import ClientReply, DurableState
from pnyx.protocols.multiraft.machines import RangeStateMachine
from pnyx.protocols.multiraft.messages import (
    MoveReplica,
    MoveReplicaExplained,
    RangeBounds,
    RangeWrite,
    SplitCmd,
    SplitDone,
)
from pnyx.protocols.multiraft.node import MultiRaftConfig, MultiRaftNode
from pnyx.protocols.multiraft.spec import SIM_CONFIG, MultiRaftMonitor, multiraft_spec
from pnyx.protocols.raft.kv import APPEND, DELETE, PUT, KvOp
from pnyx.protocols.txn.machine import TxnRangeMachine
from pnyx.protocols.txn.messages import Mutation, Prewrite, Resolve
from pnyx.sim.runner import SimConfig, run_sim
from pnyx.sim.schedule import parse_faults
from pnyx.sim.spec import Violation, World
from tests.multiraft.harness import CLIENT, Net
from tests.multiraft.harness import config as harness_config

WHOLE = RangeBounds(1, "", None, 1)


def _measured(sm: RangeStateMachine) -> int:
    """The size computed from scratch (what the incremental one must equal)."""
    return sum(len(k.encode()) + len(msgspec.msgpack.encode(v)) for k, v in sm.data.items())


def test_size_follows_puts_appends_deletes_split_and_restore() -> None:
    sm = RangeStateMachine(WHOLE)
    assert sm.size_bytes() == 0
    sm.apply(KvOp(PUT, "a", "x" * 100))
    sm.apply(RangeWrite(7, 1, KvOp(PUT, "b", "y" * 10)))
    assert sm.size_bytes() == _measured(sm) > 110
    sm.apply(KvOp(APPEND, "b", "z" * 50))
    sm.apply(KvOp(PUT, "c", "w"))
    assert sm.size_bytes() == _measured(sm)
    sm.apply(KvOp(DELETE, "a"))
    assert sm.size_bytes() == _measured(sm) < 100
    done = sm.apply(SplitCmd(1, 1, "c", 2))
    assert type(done) is SplitDone
    assert set(sm.data) == {"b"} and sm.size_bytes() == _measured(sm)
    right = RangeStateMachine(RangeBounds(2, "", None, 0))
    right.restore(done.right_data)
    assert set(right.data) == {"c"} and right.size_bytes() == _measured(right) > 0


def test_only_written_keys_are_measured_again() -> None:
    calls: list[str] = []

    class Counting(RangeStateMachine):
        def record_size_bytes(self, key: str, record: object) -> int:
            calls.append(key)
            return super().record_size_bytes(key, record)

    sm = Counting(WHOLE)
    for i in range(50):
        sm.apply(KvOp(PUT, f"k{i:02d}", "v"))
    sm.size_bytes()
    assert len(calls) == 50
    calls.clear()
    sm.apply(KvOp(PUT, "k07", "longer"))
    assert sm.size_bytes() == _measured(sm)
    assert calls == ["k07"]
    sm.size_bytes()
    assert calls == ["k07"]  # nothing written since: nothing measured


def test_byte_split_key_halves_the_bytes_not_the_keys() -> None:
    sm = RangeStateMachine(WHOLE)
    sm.apply(KvOp(PUT, "a", "x" * 1000))
    for c in "bcdefghijk":
        sm.apply(KvOp(PUT, c, "y"))
    # The median key is "f"; half the bytes lie before "b".
    assert sm.byte_split_key() == "b"
    sm.apply(KvOp(PUT, "k", "z" * 5000))
    assert sm.byte_split_key() == "k"
    single = RangeStateMachine(WHOLE)
    single.apply(KvOp(PUT, "only", "x" * 1000))
    assert single.byte_split_key() is None  # one key cannot be split


def test_transaction_records_are_measured_as_they_change() -> None:
    sm = TxnRangeMachine(WHOLE)
    prewrite = Prewrite(10, "acct1", (Mutation("acct1", "v" * 300), Mutation("acct2", "w")))
    sm.apply(prewrite)
    assert sm.size_bytes() == _measured(sm) > 300
    before = sm.size_bytes()
    sm.apply(Resolve(("acct1", "acct2"), 10, 11))  # the lock's value becomes a version
    assert sm.size_bytes() == _measured(sm) != before
    done = sm.apply(SplitCmd(1, 1, "acct2", 2))
    assert type(done) is SplitDone
    assert set(sm.data) == {"acct1"} and sm.size_bytes() == _measured(sm)


def _node(**changes: int) -> MultiRaftNode:
    """A one-process cluster whose range 1 has restored its initial snapshot."""
    config = dataclasses.replace(MultiRaftConfig(), **changes)
    node = MultiRaftNode(1, (1,), random.Random(1), DurableState(), config)
    for _ in range(10):
        if not node.has_ready():
            break
        node.advance(node.ready())
    sm = node.range_machine(1)
    assert sm is not None and sm.bounds == WHOLE
    return node


def test_the_node_splits_at_the_byte_half_only_above_the_threshold() -> None:
    node = _node(split_threshold_keys=100, split_threshold_bytes=2_000)
    sm = node.range_machine(1)
    assert sm is not None
    sm.apply(KvOp(PUT, "a", "x" * 1500))
    for c in "bcd":
        sm.apply(KvOp(PUT, c, "y" * 100))
    assert node._split_key(sm) is None  # 1,8xx bytes: under the threshold
    sm.apply(KvOp(PUT, "e", "y" * 400))
    assert node._split_key(sm) == "b"  # over it: at the byte half, not the median "c"
    off = _node(split_threshold_keys=100)
    sm_off = off.range_machine(1)
    assert sm_off is not None
    sm_off.apply(KvOp(PUT, "a", "x" * 100_000))
    sm_off.apply(KvOp(PUT, "b", "x"))
    assert off._split_key(sm_off) is None  # 0: no split by bytes


def test_a_negative_byte_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match=r"split_threshold_bytes must be >= 0 \(0: off\), got -1"):
        MultiRaftConfig(split_threshold_bytes=-1)


BYTES_CONFIG = dataclasses.replace(SIM_CONFIG, split_threshold_keys=1_000, split_threshold_bytes=40)
"""Key-count splits out of reach (12 keys); a range splits above 40 bytes (about three of
the simulator's keys with their values)."""


def _counting_spec(ranges_seen: list[int]) -> object:
    """The byte-splitting spec whose monitor records, at the end of a run, the most ranges
    any process's meta replica holds."""

    class Counting(MultiRaftMonitor):
        def at_end(self, world: World) -> Violation | None:
            counts = [
                len(node.meta.ranges)
                for pid in self.node_ids
                if isinstance(node := world.node(pid), MultiRaftNode)
            ]
            ranges_seen.append(max(counts, default=0))
            return super().at_end(world)

    spec = multiraft_spec(name="multiraft-bytes", config=BYTES_CONFIG)
    return dataclasses.replace(spec, make_monitor=Counting)


@pytest.mark.parametrize("faults", ["all", "none"])
def test_simulated_ranges_split_by_bytes_and_every_check_passes(faults: str) -> None:
    ranges_seen: list[int] = []
    spec = _counting_spec(ranges_seen)
    seeds = range(1, 21) if faults == "all" else range(1, 4)
    failures = []
    for seed in seeds:
        result = run_sim(spec, SimConfig(seed=seed, faults=parse_faults(faults)))  # type: ignore[arg-type]
        if not result.ok or result.unknown:
            failures.append(f"seed {seed}: {result.violation} {result.unknown}")
    assert not failures, "\n".join(failures)
    assert len(ranges_seen) == len(seeds)
    # Every key-count split is out of reach: the ranges split by bytes.
    assert max(ranges_seen) >= 4, ranges_seen
    assert sum(n > 1 for n in ranges_seen) >= len(seeds) // 2, ranges_seen


def test_the_default_leaves_the_simulator_trace_unchanged() -> None:
    # split_threshold_bytes=0 (the simulator's default) and a huge threshold split alike:
    # the size check never decides anything (and never draws randomness).
    huge = dataclasses.replace(SIM_CONFIG, split_threshold_bytes=10**12)
    base = get_protocol("multiraft")
    for seed in (1, 2):
        config = SimConfig(seed=seed, faults=parse_faults("all"), hash_trace=True)
        a = run_sim(base, config).trace_hash
        b = run_sim(multiraft_spec(config=huge), config).trace_hash
        assert a == b != ""


# -- what a range's leader answers to a move (MoveReplicaExplained; MoveReplica unchanged) ----


def _move(net: Net, pid: int, move: MoveReplica) -> ClientReply:
    net.nodes[pid].step(move, CLIENT)
    net.pump(pid)
    return net.replies[move.request_id]


def test_every_move_gets_a_definite_answer_with_its_reason() -> None:
    net = Net(5, harness_config(split_threshold_keys=100))
    net.run(80)
    lead = net.leader(1)
    follower = min({1, 2, 3} - {lead})

    def ask(pid: int, range_id: int, source: int, target: int) -> ClientReply:
        return _move(net, pid, MoveReplicaExplained(net.next_id(), range_id, source, target))

    answer = ask(follower, 1, lead, 4)
    assert (answer.ok, answer.error, answer.leader_hint) == (False, "not_leader", lead)
    cases = {
        (lead, 1, 4, 5): "process 4 is not a voter of range 1 (voters [1, 2, 3], learners [])",
        (lead, 1, follower, 2 if follower != 2 else 3): "already holds a replica of range 1",
        (lead, 1, follower, 9): "process 9 is not a process of the cluster [1, 2, 3, 4, 5]",
        (4, 1, 1, 4): "process 4 has no replica of range 1",
        (lead, 0, 1, 4): "the meta range (0) is never moved",
        (lead, 77, 1, 4): "has no replica of range 77",
    }
    for (pid, rng, src, dst), reason in cases.items():
        answer = ask(pid, rng, src, dst)
        assert not answer.ok and answer.error in ("move_refused", "range_not_found"), answer
        assert isinstance(answer.result, str) and reason in answer.result, answer
    started = ask(lead, 1, follower, 4)
    assert (started.ok, started.result) == (True, "started")
    again = ask(lead, 1, follower, 4)  # a retry of the move under way
    assert (again.ok, again.result) == (True, "started")
    other = ask(lead, 1, follower, 5)
    assert other.error == "move_refused" and "already moving a replica" in other.result
    # The simulator's plain MoveReplica keeps its bare answers (its traces are pinned).
    plain = _move(net, lead, MoveReplica(net.next_id(), 1, follower, 4))
    assert (plain.ok, plain.error, plain.result) == (False, "move_refused", None)
    net.run(250)
    voters = net.nodes[net.leader(1)].groups[1].log.config().voters
    assert set(voters) == {1, 2, 3, 4} - {follower}
