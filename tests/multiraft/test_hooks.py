"""The extension hooks of multi-Raft: a range machine subclass with its own commands, per-key
records and range-wide state runs in every group (bootstrap, splits, snapshots, restarts),
and a cluster can start with several ranges (``initial_split_keys``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import pytest

from pnyx.catalog import get_protocol
from pnyx.core import InvalidMessage
from pnyx.protocols.multiraft import (
    KEY_NOT_IN_RANGE,
    META_GROUP,
    GroupRequest,
    MultiRaftConfig,
    RangeBounds,
    RangeStateMachine,
    check_range_map,
)
from pnyx.protocols.multiraft.messages import RangeWrite, SplitCmd, SplitDone
from pnyx.protocols.multiraft.spec import SIM_CONFIG, multiraft_spec
from pnyx.protocols.raft import ClientRequest, KvOp, ReadRequest
from pnyx.sim.runner import SimConfig, run_sim
from pnyx.sim.schedule import parse_faults
from tests.multiraft.harness import CLIENT, Net, config


class Incr(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """Add ``by`` to the counter at ``key`` (a subclass's own command)."""

    key: str
    by: int


class Counter(msgspec.Struct, array_like=True):
    """A key's record: its count and how many increments made it."""

    count: int
    increments: int


class CounterRange(RangeStateMachine):
    """Counters per key, and a range-wide high-water mark of every count it produced."""

    op_types = (Incr,)

    def __init__(self, bounds: RangeBounds, mutants: frozenset[str] = frozenset()) -> None:
        super().__init__(bounds, mutants)
        self.high = 0

    def apply_other(self, op: Any) -> Any:
        if type(op) is not Incr:
            return super().apply_other(op)
        error = self.key_error(op.key)
        if error is not None:
            return error
        rec = self.store.data.get(op.key)
        if not isinstance(rec, Counter):
            rec = self.store.data[op.key] = Counter(0, 0)
        rec.count += op.by
        rec.increments += 1
        self.high = max(self.high, rec.count)
        self.mutations += 1
        return rec.count

    def op_keys(self, op: Any) -> tuple[str, ...]:
        return (op.key,) if type(op) is Incr else super().op_keys(op)

    def load_records(self, records: list[tuple[str, Any]]) -> None:
        self.store.data = {
            k: msgspec.convert(v, Counter) if isinstance(v, list) else v for k, v in records
        }

    def image_extra(self) -> Any:
        return {"high": self.high}

    def split_extra(self, right: RangeBounds) -> Any:
        return {"high": self.high}

    def restore_extra(self, extra: Any) -> None:
        self.high = 0 if extra is None else int(extra["high"])


def test_split_carries_whole_records_and_extra_state_to_the_right_half() -> None:
    sm = CounterRange(RangeBounds(1, "", None, 1))
    for key, by in (("a", 1), ("m", 5), ("m", 2), ("z", 3)):
        sm.apply(RangeWrite(1, sm.applied_ops.get(1, 0) + 1, Incr(key, by)))
    done = sm.apply(SplitCmd(1, 1, "k", 2))
    assert type(done) is SplitDone
    right = CounterRange(RangeBounds(2, "", "", 0))
    right.restore(done.right_data)
    assert right.bounds == RangeBounds(2, "k", None, 2)
    assert right.data == {"m": Counter(7, 2), "z": Counter(3, 1)}
    assert right.high == 7 and right.applied_ops == {1: 4}
    assert sm.data == {"a": Counter(1, 1)}
    # An increment of a key that moved right is refused by the left half at apply time.
    assert sm.apply(RangeWrite(1, 5, Incr("m", 1)))["error"] == KEY_NOT_IN_RANGE


def test_snapshot_of_a_subclass_round_trips_records_and_extra_state() -> None:
    sm = CounterRange(RangeBounds(3, "b", "y", 4))
    sm.apply(RangeWrite(9, 1, Incr("c", 4)))
    sm.apply(KvOp("put", "d", "plain"))
    copy = CounterRange(RangeBounds(3, "", "", 0))
    copy.restore(sm.snapshot())
    assert copy.data == {"c": Counter(4, 1), "d": "plain"} == sm.data
    assert (copy.bounds, copy.high, copy.applied_ops) == (sm.bounds, 4, {9: 1})
    # A plain range's image (no extra) restores into the subclass with the default.
    plain = RangeStateMachine(RangeBounds(3, "b", "y", 4))
    plain.apply(KvOp("put", "c", "v"))
    copy.restore(plain.snapshot())
    assert copy.high == 0 and copy.data == {"c": "v"}


def test_untyped_commands_are_typed_by_the_subclass_and_garbage_is_refused() -> None:
    sm = CounterRange(RangeBounds(1, "", None, 1))
    raw = msgspec.msgpack.decode(msgspec.msgpack.encode(RangeWrite(4, 1, Incr("q", 2))))
    assert sm.convert_command(raw) == RangeWrite(4, 1, Incr("q", 2))
    assert sm.apply(raw) == 2
    with pytest.raises(msgspec.ValidationError):
        sm.convert_command(["RangeWrite", 4, 2, ["Nope", "q"]])
    assert "malformed command" in sm.apply(["RangeWrite", 4, 2, {"x": 1}])["error"]
    # The plain machine does not know Incr.
    with pytest.raises(msgspec.ValidationError):
        RangeStateMachine(RangeBounds(1, "", None, 1)).convert_command(raw)


def test_a_subclass_tag_that_collides_is_refused() -> None:
    class Clash(msgspec.Struct, frozen=True, tag="SplitCmd", array_like=True):
        key: str

    class Bad(RangeStateMachine):
        op_types = (Clash,)

    with pytest.raises(TypeError, match="Clash"):
        Bad(RangeBounds(1, "", None, 1))


def test_initial_split_keys_are_validated() -> None:
    for keys in (("b", "a"), ("",), ("a", "a")):
        with pytest.raises(ValueError, match="initial_split_keys"):
            MultiRaftConfig(initial_split_keys=keys)


def _counter_net(n: int, **changes: Any) -> Net:
    net = Net(n, config(make_range_machine=CounterRange, **changes))
    net.run(80)
    return net


def _incr(net: Net, key: str, client: int, op_seq: int, by: int) -> Any:
    gid = net.owner(key)
    rid = net.next_id()
    net.send(net.leader(gid), gid, ClientRequest(rid, RangeWrite(client, op_seq, Incr(key, by))))
    for _ in range(50):
        net.deliver()
        if rid in net.replies:
            return net.replies[rid]
        net.run(1)
    raise AssertionError(f"no reply to incr {key!r}")


def test_initial_ranges_are_spread_round_robin_and_recorded_in_the_meta_range() -> None:
    keys = ("c", "f", "i", "l", "o", "r", "u")
    net = _counter_net(3, initial_split_keys=keys)
    for pid in net.ids:
        ranges = net.meta_map(pid)
        assert check_range_map(ranges) == ""
        assert [d.start for d in ranges] == ["", *keys]
        assert [d.range_id for d in ranges] == list(range(1, 9))
        assert all(len(d.replicas) == 3 for d in ranges)
    net5 = Net(5, config(initial_split_keys=("m",)))
    net5.run(80)
    assert [d.replicas for d in net5.meta_map(1)] == [(1, 2, 3), (2, 3, 4)]
    assert sorted(net5.nodes[5].groups) == [META_GROUP]
    for gid in (1, 2):
        net5.leader(gid)  # every range elected a leader


def test_a_subclass_runs_in_every_group_through_splits_and_restarts() -> None:
    net = _counter_net(3, split_threshold_keys=4, initial_split_keys=("m",))
    keys = [f"{c}{i}" for c in "aknx" for i in range(3)]
    seq = 0
    for round_ in range(2):
        for key in keys:
            seq += 1
            reply = _incr(net, key, 7, seq, 1)
            assert reply.ok and reply.result == round_ + 1, (key, reply)
        net.run(40)
    net.crash(2)
    net.run(30)
    net.restart(2)  # rebuilt from its journal and checkpoint, read back untyped
    net.run(120)
    ranges = net.meta_map(net.leader(META_GROUP))
    assert len(ranges) > 2, "the ranges never split"
    for pid in net.ids:
        for gid, sm in net.nodes[pid].machines.items():
            if gid != META_GROUP:
                assert type(sm) is CounterRange, (pid, gid)
    for key in keys:
        gid = net.owner(key)
        sm = net.nodes[net.leader(gid)].range_machine(gid)
        assert isinstance(sm, CounterRange)
        assert sm.data[key] == Counter(2, 2)
        assert sm.high == 2
    # A retry of an applied write is not applied again in the range that owns the key now.
    again = _incr(net, keys[-1], 7, seq, 1)
    assert again.ok
    gid = net.owner(keys[-1])
    sm = net.nodes[net.leader(gid)].range_machine(gid)
    assert sm is not None and sm.data[keys[-1]] == Counter(2, 2)


def test_a_client_request_without_a_valid_command_is_refused_by_the_node() -> None:
    net = _counter_net(3)
    lead = net.leader(1)
    node = net.nodes[lead]
    bad = [
        ClientRequest(1, ["RangeWrite", 1, 1, ["Nope", "k"]]),
        ClientRequest(2, {"kind": 5}),
        ClientRequest(3, SplitCmd(1, 1, "k", 9)),
        ReadRequest(4, "garbage"),
    ]
    for request in bad:
        with pytest.raises(InvalidMessage, match="group 1"):
            node.step(GroupRequest(1, request), CLIENT)
    with pytest.raises(InvalidMessage, match="group 0"):
        node.step(GroupRequest(META_GROUP, ReadRequest(5, ["x"])), CLIENT)
    good = msgspec.msgpack.decode(msgspec.msgpack.encode(RangeWrite(3, 1, Incr("k", 5))))
    net.send(lead, 1, ClientRequest(6, good))
    net.run(5)
    assert net.replies[6].ok and net.replies[6].result == 5


def test_default_hooks_change_no_simulated_run() -> None:
    # A subclass that overrides nothing and an explicit empty layout run exactly as the
    # defaults (trace hashes equal); hook code must not draw randomness or reorder events.
    class Same(RangeStateMachine):
        pass

    same = dataclasses.replace(SIM_CONFIG, make_range_machine=Same, initial_split_keys=())
    faults = parse_faults("all")
    for seed in (1, 7):
        sim = SimConfig(seed, faults=faults, hash_trace=True)
        base = run_sim(get_protocol("multiraft"), sim)
        other = run_sim(multiraft_spec(config=same), sim)
        assert base.ok and base.trace_hash == other.trace_hash


def test_a_cluster_started_with_several_ranges_passes_simulated_faults() -> None:
    cfg = dataclasses.replace(
        SIM_CONFIG, make_range_machine=CounterRange, initial_split_keys=("k03", "k06", "k09")
    )
    spec = multiraft_spec(config=cfg)
    failures = []
    for seed in range(1, 6):
        result = run_sim(spec, SimConfig(seed=seed, faults=parse_faults("all")))
        if not result.ok or result.unknown:
            failures.append(f"seed {seed}: {result.violation} {result.unknown}")
    assert not failures, "\n".join(failures)
