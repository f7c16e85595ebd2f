"""All-to-all heartbeat nodes with phi-accrual and fixed-timeout detectors, driven by hand."""

from __future__ import annotations

import pytest

from pnyx.core import InvalidMessage, SplitMix64
from pnyx.protocols.membership import (
    FixedConfig,
    FixedDetector,
    Gossip,
    Heartbeat,
    HeartbeatNode,
    MemberEvent,
    PhiConfig,
    PhiDetector,
)

TICK_MS = 100
PEERS = (1, 2, 3, 4)


def group(detector: PhiConfig | FixedConfig, interval_ticks: int = 10) -> dict[int, HeartbeatNode]:
    return {i: HeartbeatNode(i, PEERS, SplitMix64(i), detector, interval_ticks) for i in PEERS}


def run(
    nodes: dict[int, HeartbeatNode], ticks: int, crashed: frozenset[int] = frozenset()
) -> list[tuple[int, int, MemberEvent]]:
    """Tick live nodes, deliver heartbeats at once; return (tick, observer, event)."""
    events: list[tuple[int, int, MemberEvent]] = []
    for tick in range(ticks):
        for node_id, node in nodes.items():
            if node_id not in crashed:
                node.tick()
        for node_id, node in nodes.items():
            ready = node.ready()
            if node_id in crashed:
                continue
            for send in ready.send:
                if send.to not in crashed:
                    nodes[send.to].step(send.msg, node_id)
        for node_id, node in nodes.items():
            events.extend((tick, node_id, e) for e in node.take_events())
    return events


@pytest.mark.parametrize(
    "detector", [PhiConfig.akka(TICK_MS), FixedConfig.default(TICK_MS)], ids=["phi", "fixed"]
)
def test_crash_is_detected_by_every_peer_and_the_return_seen(
    detector: PhiConfig | FixedConfig,
) -> None:
    nodes = group(detector)
    assert run(nodes, 600) == []  # a minute of steady heartbeats: no false positive
    crash_events = run(nodes, 200, crashed=frozenset({3}))
    dead = {(observer, e.member_id) for _, observer, e in crash_events if e.state == "dead"}
    assert dead == {(1, 3), (2, 3), (4, 3)}
    for observer in (1, 2, 4):
        assert nodes[observer].members()[3].state == "dead"
        assert nodes[observer].members()[2].state == "alive"
    back = run(nodes, 30)
    alive = {(observer, e.member_id) for _, observer, e in back if e.state == "alive"}
    assert alive == {(1, 3), (2, 3), (4, 3)}


def test_fixed_detection_time_is_the_timeout_after_the_last_heartbeat() -> None:
    nodes = group(FixedConfig(timeout_ticks=25))
    run(nodes, 100)
    last_heard = nodes[1].detector(3).last_heartbeat_ticks
    assert isinstance(nodes[1].detector(3), FixedDetector) and last_heard is not None
    events = run(nodes, 100, crashed=frozenset({3}))
    (tick, _, _), *_ = [ev for ev in events if ev[1] == 1 and ev[2].member_id == 3]
    assert 100 + tick + 1 == last_heard + 25


def test_phi_detection_waits_for_the_acceptable_pause() -> None:
    config = PhiConfig.akka(TICK_MS)
    nodes = group(config)
    run(nodes, 300)
    detector = nodes[1].detector(3)
    assert isinstance(detector, PhiDetector)
    assert detector.mean_ticks == pytest.approx(10.0, abs=0.5)
    expected = detector.unavailable_at_ticks()
    last_heard = detector.last_heartbeat_ticks
    assert expected is not None and last_heard is not None
    events = run(nodes, 200, crashed=frozenset({3}))
    ticks = [300 + tick + 1 for tick, obs, e in events if obs == 1 and e.member_id == 3]
    assert ticks == [expected]
    # mean 1 s + pause 3 s, plus a few (floored) standard deviations
    assert last_heard + 40 < expected < last_heard + 60


def test_silent_peer_is_declared_dead_although_it_never_sent_a_heartbeat() -> None:
    nodes = group(FixedConfig(timeout_ticks=30))
    events = run(nodes, 50, crashed=frozenset({4}))
    assert {obs for _, obs, e in events if e.member_id == 4 and e.state == "dead"} == {1, 2, 3}


def test_heartbeat_node_bounds_and_bad_input() -> None:
    node = HeartbeatNode(1, PEERS, SplitMix64(1), FixedConfig(5), 2)
    assert set(node.members()) == set(PEERS)
    with pytest.raises(InvalidMessage, match="unexpected message Gossip"):
        node.step(Gossip(()), 2)
    node.step(Heartbeat(1), 99)
    assert node.stats()["unknown_sender"] == 1
    with pytest.raises(ValueError, match="heartbeat_interval_ticks must be positive, got 0"):
        HeartbeatNode(1, PEERS, SplitMix64(1), FixedConfig(5), 0)
    for _ in range(20):
        node.tick()
    assert node.stats()["sent_heartbeat"] == 3 * 10
