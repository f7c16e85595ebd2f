"""Directed SWIM / Lifeguard scenarios, driving nodes by hand in a tiny in-test network.

The network ticks every live node once per tick and then delivers every message sent,
in send order, with zero latency (replies included) before the next tick.  Links can be
cut one way, nodes crashed; every delivered message is recorded.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from pnyx.core import InvalidMessage, Message, SplitMix64
from pnyx.protocols.membership import (
    Ack,
    Gossip,
    MemberEvent,
    Ping,
    PingReq,
    PushPull,
    SwimConfig,
    SwimNode,
    Update,
    detection_bound_ticks,
    suspicion_max_ticks,
    suspicion_min_ticks,
    suspicion_timeout_ticks,
)
from pnyx.protocols.membership.messages import ALIVE, DEAD, SUSPECT

TICK_MS = 100
"""Ticks of 100 ms: probe interval 10, probe timeout 5, gossip every 2 ticks."""


class Net:
    """Zero-latency delivery between SwimNodes, with cut links and crashed nodes."""

    def __init__(self, nodes: dict[int, SwimNode]) -> None:
        self.nodes = nodes
        self.crashed: set[int] = set()
        self.cut: set[tuple[int, int]] = set()
        self.log: list[tuple[int, int, int, Message]] = []
        self.now = 0
        self.events: dict[int, list[tuple[int, MemberEvent]]] = {i: [] for i in nodes}
        self.drop: Callable[[int, int, Message], bool] = lambda _sender, _to, _msg: False

    def isolate(self, a: int, b: int) -> None:
        self.cut |= {(a, b), (b, a)}

    def _deliver(self) -> None:
        for _ in range(100):
            batch: list[tuple[int, int, Message]] = []
            for node_id in sorted(self.nodes):
                node = self.nodes[node_id]
                if not node.has_ready():
                    continue
                ready = node.ready()
                node.advance(ready)
                if node_id not in self.crashed:
                    batch.extend((node_id, send.to, send.msg) for send in ready.send)
            if not batch:
                return
            for sender, to, msg in batch:
                if to in self.crashed or (sender, to) in self.cut or to not in self.nodes:
                    continue
                if self.drop(sender, to, msg):
                    continue
                self.log.append((self.now, sender, to, msg))
                self.nodes[to].step(msg, sender)
        raise AssertionError("messages still flowing after 100 delivery rounds")

    def run(self, ticks: int, until: Callable[[], bool] | None = None) -> int:
        """Run up to ``ticks`` ticks (or until ``until()``); return the ticks run."""
        for done in range(1, ticks + 1):
            self.now += 1
            for node_id in sorted(self.nodes):
                if node_id not in self.crashed:
                    self.nodes[node_id].tick()
            self._deliver()
            for node_id, node in self.nodes.items():
                self.events[node_id].extend((self.now, e) for e in node.take_events())
            if until is not None and until():
                return done
        return ticks

    def states_of(self, member: int) -> dict[int, str]:
        """What every live node believes about ``member``."""
        return {
            i: node.members()[member].state
            for i, node in self.nodes.items()
            if i not in self.crashed and i != member and member in node.members()
        }

    def event_states(self, observer: int, member: int) -> list[str]:
        return [e.state for _, e in self.events[observer] if e.member_id == member]


def formed_group(n: int, config: SwimConfig, seed: int = 7) -> Net:
    addrs = {i: f"10.0.0.{i}:7946" for i in range(n)}
    return Net(
        {
            i: SwimNode(
                i, addrs[i], config, SplitMix64(seed * 1_000 + i), {}, initial_members=addrs
            )
            for i in range(n)
        }
    )


def lan(lifeguard: bool = True, **changes: int) -> SwimConfig:
    base = SwimConfig.lan(TICK_MS, lifeguard=lifeguard)
    fields = {**base.__dict__, **changes}
    return SwimConfig(**fields)


# -- accuracy in a healthy group and completeness after a crash -----------------------


@pytest.mark.parametrize("lifeguard", [True, False])
def test_healthy_group_never_suspects_anyone(lifeguard: bool) -> None:
    net = formed_group(8, lan(lifeguard))
    net.run(1_200)  # two simulated minutes
    for observer in net.nodes:
        assert net.events[observer] == [], (observer, net.events[observer][:3])
    assert all(node.stats()["probes"] > 100 for node in net.nodes.values())


@pytest.mark.parametrize("lifeguard", [True, False])
def test_crashed_member_is_declared_dead_by_all_within_the_bound(lifeguard: bool) -> None:
    config = lan(lifeguard)
    net = formed_group(8, config)
    net.run(50)
    net.crashed.add(3)
    bound = detection_bound_ticks(config, 8)
    ran = net.run(bound, until=lambda: set(net.states_of(3).values()) == {"dead"})
    assert set(net.states_of(3).values()) == {"dead"}, net.states_of(3)
    assert ran <= bound
    assert net.nodes[0].member(3) == net.nodes[0].members()[3]
    assert net.nodes[0].member(99) is None
    # nobody refutes for a crashed member: it went suspect → dead, never back to alive
    for observer in net.nodes:
        if observer != 3:
            assert net.event_states(observer, 3)[-1] == "dead"
            assert "alive" not in net.event_states(observer, 3)
            assert net.event_states(observer, 3)[-2:] in (["suspect", "dead"], ["dead"])


def test_suspect_becomes_dead_exactly_at_the_timeout_when_nobody_refutes() -> None:
    config = lan(lifeguard=False)
    net = formed_group(5, config)
    observer = net.nodes[0]
    net.crashed |= {1, 2, 3, 4}  # observer alone hears the suspicion: no refutation possible
    observer.step(Gossip((Update(4, 0, SUSPECT, "", 2),)), 2)
    start = observer.now_ticks
    timeout = suspicion_timeout_ticks(config, 5, 0)
    assert observer.suspicion_deadline_ticks(4) == start + timeout
    net.run(timeout - 1)
    assert observer.members()[4].state == "suspect"
    net.run(1)
    assert observer.members()[4].state == "dead"
    assert net.event_states(0, 4) == ["suspect", "dead"]


# -- refutation -------------------------------------------------------------------------


def test_suspected_member_refutes_with_a_higher_incarnation() -> None:
    net = formed_group(4, lan())
    accuser, accused = net.nodes[0], net.nodes[2]
    accuser.step(Gossip((Update(2, 0, SUSPECT, "", 1),)), 1)
    assert accuser.members()[2].state == "suspect"
    # the accused hears about it (piggybacked on the next messages) and refutes
    net.run(200)
    assert accused.incarnation == 1
    assert accused.stats()["refutations"] == 1
    assert accused.local_health() >= 0
    for i, node in net.nodes.items():
        if i != 2:
            assert node.members()[2].state == "alive"
            assert node.members()[2].incarnation == 1
    assert net.event_states(0, 2) == ["suspect", "alive"]
    assert all("dead" not in net.event_states(i, 2) for i in net.nodes)


def test_alive_at_a_higher_incarnation_cancels_the_suspicion() -> None:
    net = formed_group(4, lan())
    node = net.nodes[0]
    node.step(Gossip((Update(2, 3, SUSPECT, "", 1),)), 1)
    deadline = node.suspicion_deadline_ticks(2)
    assert deadline is not None
    node.step(Gossip((Update(2, 3, ALIVE, "a", 2),)), 2)  # same incarnation: not a refutation
    assert node.members()[2].state == "suspect"
    node.step(Gossip((Update(2, 4, ALIVE, "a", 2),)), 2)
    assert node.members()[2].state == "alive" and node.suspicion_deadline_ticks(2) is None
    net.run(deadline + 5)
    assert node.members()[2].state == "alive"
    assert net.event_states(0, 2) == ["suspect", "alive"]


def test_stale_suspicion_about_self_is_not_refuted() -> None:
    node = formed_group(3, lan()).nodes[1]
    node.step(Gossip((Update(1, 0, SUSPECT, "", 0),)), 0)
    assert node.incarnation == 1
    node.step(Gossip((Update(1, 0, DEAD, "", 2),)), 2)  # older than our incarnation
    assert node.incarnation == 1 and node.stats()["refutations"] == 1


# -- indirect probes --------------------------------------------------------------------


def test_indirect_probe_saves_a_member_whose_direct_link_drops() -> None:
    net = formed_group(6, lan())
    net.isolate(0, 4)
    net.run(1_200)
    assert net.nodes[0].stats()["sent_ping_req"] > 0
    assert "suspect" not in net.event_states(0, 4)
    assert set(net.states_of(4).values()) == {"alive"}


def test_without_indirect_probes_the_same_cut_makes_a_suspicion() -> None:
    """Control for the test above: the ping-reqs are what saved the member."""
    net = formed_group(6, lan(indirect_checks=0))
    net.isolate(0, 4)
    net.run(1_200)
    assert net.nodes[0].stats()["sent_ping_req"] == 0
    assert "suspect" in net.event_states(0, 4)


def test_ping_req_intermediary_relays_the_ack_and_nacks_when_the_target_is_silent() -> None:
    net = formed_group(4, lan())
    helper = net.nodes[1]
    helper.step(PingReq(77, 2, "10.0.0.2:7946", True), 0)
    net._deliver()
    acks = [m for _, s, t, m in net.log if s == 1 and t == 0 and isinstance(m, Ack)]
    assert [a.seq for a in acks] == [77]
    net.crashed.add(3)
    helper.step(PingReq(78, 3, "10.0.0.3:7946", True), 0)
    net.run(10)
    nacks = [m for _, s, t, m in net.log if s == 1 and t == 0 and type(m).__name__ == "Nack"]
    assert [n.seq for n in nacks] == [78]  # type: ignore[attr-defined]


# -- Lifeguard: dynamic suspicion timeout -------------------------------------------------


def suspicion_deadlines(config: SwimConfig, origins: list[int]) -> list[int]:
    node = formed_group(10, config).nodes[0]
    deadlines = []
    for origin in origins:
        node.step(Gossip((Update(9, 0, SUSPECT, "", origin),)), origin)
        deadline = node.suspicion_deadline_ticks(9)
        assert deadline is not None
        deadlines.append(deadline)
    return deadlines


def test_suspicion_timeout_shrinks_with_independent_confirmations() -> None:
    config = lan()
    low, high = suspicion_min_ticks(config, 10), suspicion_max_ticks(config, 10)
    assert high == 6 * low
    deadlines = suspicion_deadlines(config, [1, 2, 3, 4, 5])
    assert deadlines[0] == high
    assert deadlines[0] > deadlines[1] > deadlines[2] > deadlines[3]
    assert deadlines[3] == low  # K = 3 confirmations bring it to the minimum
    assert deadlines[4] == low
    expected = [suspicion_timeout_ticks(config, 10, c) for c in range(4)]
    assert deadlines[:4] == expected


def test_repeated_suspicion_from_the_same_member_does_not_shrink_it() -> None:
    deadlines = suspicion_deadlines(lan(), [1, 1, 1, 1])
    assert len(set(deadlines)) == 1


def test_without_lifeguard_the_suspicion_timeout_is_fixed() -> None:
    config = lan(lifeguard=False)
    deadlines = suspicion_deadlines(config, [1, 2, 3, 4])
    assert set(deadlines) == {suspicion_min_ticks(config, 10)}


def test_confirmed_suspicion_declares_dead_earlier() -> None:
    config = lan()
    net = formed_group(10, config)
    net.crashed |= set(range(1, 10))
    node = net.nodes[0]
    for origin in (1, 2, 3, 4):
        node.step(Gossip((Update(9, 0, SUSPECT, "", origin),)), origin)
    net.run(suspicion_min_ticks(config, 10))
    assert node.members()[9].state == "dead"


# -- Lifeguard: local health --------------------------------------------------------------


def ping_ticks(net: Net, sender: int) -> list[int]:
    return [t for t, s, _, m in net.log if s == sender and isinstance(m, Ping)]


def test_local_health_rises_on_missed_acks_and_stretches_the_probe_interval() -> None:
    config = lan()
    net = formed_group(6, config)
    net.run(30)
    assert net.nodes[0].local_health() == 0
    net.cut |= {(other, 0) for other in range(1, 6)}  # node 0 hears nothing: no acks, no nacks
    net.run(600)
    health = net.nodes[0].local_health()
    assert health == config.awareness_max_multiplier - 1
    late = ping_ticks(net, 0)[-3:]
    gaps = {b - a for a, b in itertools.pairwise(late)}
    assert gaps == {config.probe_interval_ticks * (health + 1)}
    # Healthy members keep the nominal probe interval
    assert net.nodes[1].local_health() <= 1


def test_local_health_recovers_with_successful_probes() -> None:
    net = formed_group(6, lan())
    net.cut |= {(other, 0) for other in range(1, 6)}
    net.run(300)
    assert net.nodes[0].local_health() > 3
    net.cut.clear()
    net.run(1_500)
    assert net.nodes[0].local_health() == 0


def test_local_health_stays_zero_without_lifeguard() -> None:
    config = lan(lifeguard=False)
    net = formed_group(6, config)
    net.cut |= {(other, 0) for other in range(1, 6)}
    net.run(300)
    assert net.nodes[0].local_health() == 0
    late = ping_ticks(net, 0)[-4:]
    assert {b - a for a, b in itertools.pairwise(late)} == {config.probe_interval_ticks}


def test_ping_to_a_suspect_carries_the_suspicion_first() -> None:
    """Buddy system: even with newer updates queued (and a budget of one update), the
    suspect hears of its suspicion from the member probing it."""
    config = lan(max_piggyback_updates=1, suspicion_max_timeout_mult=100)
    addrs = {0: "a", 3: "d"}
    net = Net(
        {
            i: SwimNode(i, a, config, SplitMix64(i), {}, initial_members=addrs)
            for i, a in addrs.items()
        }
    )
    net.drop = lambda _s, to, msg: to == 3 and not isinstance(msg, Ping)
    node = net.nodes[0]
    node.step(Gossip(tuple(Update(100 + i, 0, ALIVE, "", 100 + i) for i in range(5))), 1)
    node.step(Gossip((Update(3, 0, SUSPECT, "", 1),)), 1)
    net.run(2_000, until=lambda: bool(pings_to(net, 0, 3)))
    pings = pings_to(net, 0, 3)
    assert pings, "node 0 never probed the suspect"
    assert (pings[0].updates[0].member_id, pings[0].updates[0].state) == (3, SUSPECT)
    net.run(5)
    assert net.nodes[3].incarnation == 1  # and it refuted at once


def pings_to(net: Net, sender: int, target: int) -> list[Ping]:
    return [m for _, s, t, m in net.log if s == sender and t == target and isinstance(m, Ping)]


# -- join and leave ----------------------------------------------------------------------


def test_join_through_a_seed_reaches_everyone() -> None:
    config = lan()
    addrs = {i: f"h{i}" for i in range(12)}
    nodes = {0: SwimNode(0, addrs[0], config, SplitMix64(1), {})}
    for i in range(1, 12):
        nodes[i] = SwimNode(i, addrs[i], config, SplitMix64(100 + i), {0: addrs[0]})
    net = Net(nodes)
    ran = net.run(600, until=lambda: all(len(n.members()) == 12 for n in nodes.values()))
    assert ran < 600
    for node in nodes.values():
        views = node.members()
        assert {v.state for v in views.values()} == {"alive"}
        assert {i: v.addr for i, v in views.items()} == addrs
    assert sorted(e.member_id for _, e in net.events[5]) == [i for i in range(12) if i != 5]


def test_join_is_retried_until_the_seed_answers() -> None:
    config = lan()
    nodes = {
        0: SwimNode(0, "a", config, SplitMix64(1), {}),
        1: SwimNode(1, "b", config, SplitMix64(2), {0: "a"}),
    }
    net = Net(nodes)
    net.crashed.add(0)
    net.run(35)
    nodes[1].ready()
    net.crashed.clear()
    net.run(15)
    assert set(nodes[0].members()) == {0, 1} and set(nodes[1].members()) == {0, 1}


def test_graceful_leave_marks_left_not_dead() -> None:
    net = formed_group(8, lan())
    net.run(20)
    net.nodes[5].leave()
    net.run(100, until=lambda: set(net.states_of(5).values()) == {"left"})
    assert net.nodes[5].leave_done()
    net.crashed.add(5)
    net.run(400)  # well past any suspicion timeout, before the reaping (600 ticks)
    assert set(net.states_of(5).values()) == {"left"}
    for observer in net.nodes:
        if observer != 5:
            assert net.event_states(observer, 5) == ["left"]


def test_dead_members_are_reaped_after_the_configured_time() -> None:
    config = lan(dead_reap_ticks=50)
    net = formed_group(4, config)
    net.crashed.add(3)
    net.run(detection_bound_ticks(config, 4), until=lambda: 3 not in net.nodes[0].members())
    assert 3 not in net.nodes[0].members()
    assert net.event_states(0, 3)[-1] == "dead"


def test_member_back_from_the_dead_refutes_and_is_readmitted() -> None:
    config = lan()
    net = formed_group(5, config)
    net.crashed.add(2)
    net.run(800, until=lambda: set(net.states_of(2).values()) == {"dead"})
    net.crashed.clear()  # a paused member resumes (same node object, same incarnation)
    net.run(300, until=lambda: set(net.states_of(2).values()) == {"alive"})
    assert set(net.states_of(2).values()) == {"alive"}
    assert net.nodes[2].incarnation >= 1


# -- bad input, bounds, determinism -------------------------------------------------------


def test_malformed_updates_are_refused_before_any_change() -> None:
    node = formed_group(3, lan()).nodes[0]
    before = node.members()
    bad = Gossip((Update(7, 0, ALIVE, "x", 7), Update(2, -1, DEAD, "", 1)))
    with pytest.raises(InvalidMessage, match="negative incarnation -1"):
        node.step(bad, 1)
    with pytest.raises(InvalidMessage, match="unknown member state 9"):
        node.step(PushPull((Update(2, 0, 9),)), 1)
    with pytest.raises(InvalidMessage, match="unexpected message type"):
        node.step(Message(), 1)
    assert node.members() == before and not node.has_ready()


def test_ping_for_someone_else_is_ignored() -> None:
    node = formed_group(3, lan()).nodes[0]
    node.ready()
    node.step(Ping(5, 1), 2)
    assert not node.has_ready() and node.stats()["misdirected"] == 1


def test_piggyback_is_bounded_and_updates_stop_after_the_retransmit_limit() -> None:
    config = lan(max_piggyback_updates=4)
    net = formed_group(4, config)
    node = net.nodes[0]
    node.step(Gossip(tuple(Update(100 + i, 0, ALIVE, "", 100 + i) for i in range(30))), 1)
    net.crashed |= {100 + i for i in range(30)}
    net.run(400)
    sizes = [len(m.updates) for _, s, _, m in net.log if s == 0 and hasattr(m, "updates")]
    assert max(sizes) == 4
    carried = [
        u.member_id for _, s, _, m in net.log if s == 0 and isinstance(m, Gossip) for u in m.updates
    ]
    assert carried, "node 0 gossiped nothing"
    assert node.stats()["queued_updates"] <= config.max_queued_updates


def test_same_seed_gives_the_same_message_trace() -> None:
    def trace(seed: int) -> list[str]:
        net = formed_group(6, lan(), seed=seed)
        net.crashed.add(4)
        net.run(300)
        return [repr(entry) for entry in net.log]

    assert trace(3) == trace(3)
    assert trace(3) != trace(4)


def test_invariants_hold_through_a_crash_and_a_refutation() -> None:
    net = formed_group(6, lan())
    net.crashed.add(1)
    net.nodes[0].step(Gossip((Update(2, 0, SUSPECT, "", 3),)), 3)
    for _ in range(30):
        net.run(20)
        for i, node in net.nodes.items():
            assert node.invariants() == [], (i, node.invariants())


def test_lan_defaults_are_memberlists() -> None:
    config = SwimConfig.lan(10)
    assert (config.probe_interval_ticks, config.probe_timeout_ticks) == (100, 50)
    assert (config.gossip_interval_ticks, config.push_pull_interval_ticks) == (20, 3_000)
    assert (config.indirect_checks, config.suspicion_mult, config.suspicion_max_timeout_mult) == (
        3,
        4,
        6,
    )
    assert (config.gossip_nodes, config.retransmit_mult, config.awareness_max_multiplier) == (
        3,
        4,
        8,
    )
    assert SwimConfig.lan(3_000).probe_timeout_ticks == 1  # rounded up, at least one tick
    with pytest.raises(ValueError, match="probe_timeout_ticks=20 exceeds"):
        lan(probe_timeout_ticks=20)
