"""The simulator monitor's checks must fail on broken states, not only pass on good ones."""

from __future__ import annotations

from typing import Any

import msgspec

from pnyx.core import HistoryEvent
from pnyx.protocols.multiraft import META_GROUP, MultiRaftNode
from pnyx.protocols.multiraft.spec import MultiRaftMonitor
from tests.multiraft.harness import Net, config


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
