"""The simulator monitor's checks must fail on broken states, not only pass on good ones."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import pytest

from pnyx.catalog import get_protocol
from pnyx.core import HistoryEvent
from pnyx.protocols.multiraft import META_GROUP, MultiRaftNode
from pnyx.protocols.multiraft.spec import MultiRaftMonitor
from pnyx.sim.runner import SimConfig, run_sim
from pnyx.sim.schedule import parse_faults
from tests.multiraft.harness import Net, config

ALL = parse_faults("all")


class _World:
    """What the monitor reads of a run, taken from the test driver."""

    def __init__(self, net: Net, history: list[HistoryEvent]) -> None:
        self._net = net
        self.history = history
        self.node_ids = net.ids

    def node(self, pid: int) -> MultiRaftNode | None:
        return None if pid in self._net.down else self._net.nodes[pid]


def _settled_net() -> tuple[Net, list[HistoryEvent]]:
    net = Net(3, config(split_threshold_keys=3))
    net.run(80)
    history = []
    for i in range(8):
        key = f"k{i}"
        for _ in range(20):
            if net.put_routed(key, "v").ok:
                history.append(HistoryEvent(1000, "ok", "put", "v", key))
                break
            net.run(5)
    net.run(150)
    return net, history


def test_monitor_passes_a_good_run_and_catches_each_broken_state() -> None:
    net, history = _settled_net()
    world: Any = _World(net, history)
    monitor = MultiRaftMonitor(net.ids)
    assert monitor.after_event(world) is None
    assert monitor.liveness(world) is None
    assert monitor._lost_at_end(world) is None

    # An acknowledged key missing from the range that owns it.
    owner = net.owner("k3")
    sm = net.nodes[net.leader(owner)].range_machine(owner)
    assert sm is not None
    value = sm.data.pop("k3")
    lost = monitor._lost_at_end(world)
    assert lost is not None and lost.prop == "lost-write" and "'k3'" in lost.detail
    sm.data["k3"] = value

    # A key stored outside its range's bounds.
    other = next(g for g in net.nodes[1].groups if g not in (META_GROUP, owner))
    stray = net.nodes[1].range_machine(other)
    assert stray is not None
    outside = "k3" if not stray.bounds.contains("k3") else "k7"
    stray.data[outside] = "x"
    stray.mutations += 1
    found = monitor.after_event(world)
    assert found is not None and found.prop == "lost-write"
    del stray.data[outside]
    stray.mutations += 1
    assert monitor.after_event(world) is None

    # A meta replica whose map has a hole, then one whose range version went back.
    meta = net.nodes[2].meta
    saved = dict(meta.ranges)
    first = min(meta.ranges.values(), key=lambda d: d.start)
    del meta.ranges[first.range_id]
    meta.mutations += 1
    hole = monitor.after_event(world)
    assert hole is not None and hole.prop == "range-map" and "nothing covers" in hole.detail
    meta.ranges = dict(saved)
    back = msgspec.structs.replace(first, version=first.version - 1)
    meta.ranges[first.range_id] = back
    meta.mutations += 1
    went_back = monitor.after_event(world)
    assert went_back is not None and went_back.prop == "range-map"
    assert "went from version" in went_back.detail

    # No meta leader at all: liveness is not reached.
    for pid in net.ids:
        net.crash(pid)
    assert monitor.liveness(world) == "no meta leader"


def test_a_stepped_monitor_checks_a_process_once_the_simulator_stepped_it() -> None:
    # The simulator's definitions check only processes stepped since the last check (it
    # calls on_step before every batch it drains); a change made behind its back is seen
    # once the process is stepped.
    net, history = _settled_net()
    world: Any = _World(net, history)
    monitor = MultiRaftMonitor(net.ids, only_stepped=True)
    assert monitor.after_event(world) is None
    other = next(g for g in net.nodes[1].groups if g != META_GROUP)
    stray = net.nodes[1].range_machine(other)
    assert stray is not None
    outside = next(f"k{i}" for i in range(10) if not stray.bounds.contains(f"k{i}"))
    stray.data[outside] = "x"
    stray.mutations += 1
    assert monitor.after_event(world) is None  # process 1 was not stepped
    monitor.on_step(world, 1, net.nodes[1])
    found = monitor.after_event(world)
    assert found is not None and found.prop == "lost-write" and f"range {other}" in found.detail


def test_a_change_of_raft_state_alone_is_checked_again() -> None:
    # Only the group's commit index changes (no data): its Raft checks must run again.
    net, history = _settled_net()
    world: Any = _World(net, history)
    monitor = MultiRaftMonitor(net.ids)
    assert monitor.after_event(world) is None
    group = net.nodes[2].groups[META_GROUP]
    assert group.commit > 0
    group.commit -= 1
    found = monitor.after_event(world)
    assert found is not None and found.prop == "monotone-commit"
    assert found.detail.startswith(f"group {META_GROUP}: node 2 commit went from")


class _EveryGroupMonitor(MultiRaftMonitor):
    """Checks every group of every process after every event (no marks, no dirty set)."""

    def _changed_groups(self, node: MultiRaftNode) -> list[Any]:
        machines = node.machines
        return [(gid, (g, machines.get(gid))) for gid, g in node.groups.items()]


def test_skipping_unchanged_groups_finds_the_same_violations_as_checking_all() -> None:
    # The Raft mutant and the split mutant break per-event properties; a monitor checking
    # everything after every event must report the same violation at the same seed.
    for name, seeds in (
        ("multiraft+leader_apply_before_quorum", range(1, 41)),
        ("multiraft+split_loses_inflight", range(1, 201)),
    ):
        spec = get_protocol(name)
        eager = dataclasses.replace(spec, make_monitor=_EveryGroupMonitor)
        for seed in seeds:
            config = SimConfig(seed=seed, faults=ALL)
            result = run_sim(spec, config)
            if result.violation is not None:
                break
        else:
            pytest.fail(f"{name} survived {len(seeds)} seeds")
        assert run_sim(eager, config).violation == result.violation
        if seed > 1:
            earlier = SimConfig(seed=seed - 1, faults=ALL)
            assert run_sim(eager, earlier).violation is None
