"""Nemeses: the grudges of each partition, seeded reproducibility, and every nemesis
started and stopped once on a real 3-node pnyx cluster in namespaces (partitions cut
with nftables, kills, pauses); link faults and clock skew report why they are
unavailable where they are."""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from aetcd.rpc import rpc_pb2, rpc_pb2_grpc

from pnyx.harness.api import Host, NemesisUnavailable
from pnyx.harness.nemeses import (
    NEMESES,
    PARTITIONS,
    LinkNemesis,
    ProxyDelayNemesis,
    grudge_bridge,
    grudge_halves,
    grudge_isolate,
    grudge_links,
    grudge_one_way,
    grudge_ring,
    make_nemesis,
    netem_support,
)
from pnyx.harness.net import LoopbackNet, NamespaceNet
from pnyx.harness.systems import EtcdSystem, ProcessSystem
from tests.harness.conftest import pids_gone, scratch_dir, wait_for

Factory = Callable[[str], tuple[NamespaceNet, ProcessSystem]]
WAIT_S = 60.0


def hosts(n: int) -> tuple[Host, ...]:
    return tuple(Host(f"n{i}", f"10.0.0.{i}", f"ns{i}", 20000) for i in range(1, n + 1))


class FakeNet:
    isolated = True

    def __init__(self, n: int) -> None:
        self.hosts = hosts(n)
        self.cut_links: list[tuple[Host, Host]] = []

    def cut(self, links: list[tuple[Host, Host]]) -> None:
        self.cut_links += links

    def heal(self) -> None:
        self.cut_links = []

    def close(self) -> None:
        pass


class FakeSystem:
    def __init__(self, name: str = "fake", leader: Host | None = None) -> None:
        self.name = name
        self._leader = leader
        self.calls: list[str] = []

    def start(self, hosts: tuple[Host, ...], directory: Path) -> None:
        pass

    def start_node(self, host: Host) -> None:
        self.calls.append(f"start {host.name}")

    def kill(self, host: Host) -> None:
        self.calls.append(f"kill {host.name}")

    def pause(self, host: Host) -> None:
        self.calls.append(f"pause {host.name}")

    def resume(self, host: Host) -> None:
        self.calls.append(f"resume {host.name}")

    def endpoints(self) -> list[str]:
        return []

    def leader(self) -> Host | None:
        return self._leader

    def logs(self) -> dict[str, Path]:
        return {}

    def stop(self) -> None:
        pass


# -- grudges ------------------------------------------------------------------------------


def test_halves_split_into_a_majority_and_a_minority() -> None:
    grudge = grudge_halves(hosts(5), random.Random(1))
    sides = {frozenset(v) for v in grudge.values()}
    assert sorted(len(s) for s in sides) == [2, 3]
    for name, unheard in grudge.items():
        assert name not in unheard
        assert all(name in grudge[other] for other in unheard)  # symmetric


def test_isolate_and_one_way() -> None:
    h = hosts(3)
    assert grudge_isolate(h, h[0]) == {
        "n1": frozenset({"n2", "n3"}),
        "n2": frozenset({"n1"}),
        "n3": frozenset({"n1"}),
    }
    assert grudge_one_way(h, h[1]) == {"n2": frozenset({"n1", "n3"})}
    links = grudge_links(h, grudge_one_way(h, h[1]))
    assert [(a.name, b.name) for a, b in links] == [("n1", "n2"), ("n3", "n2")]


def test_bridge_hears_both_halves() -> None:
    grudge = grudge_bridge(hosts(5), random.Random(3))
    assert len(grudge) == 4
    (bridge,) = {f"n{i}" for i in range(1, 6)} - set(grudge)
    assert all(bridge not in unheard for unheard in grudge.values())
    assert sorted(len(v) for v in grudge.values()) == [2, 2, 2, 2]


def test_majorities_ring_gives_each_node_a_different_majority() -> None:
    names = {f"n{i}" for i in range(1, 6)}
    grudge = grudge_ring(hosts(5), random.Random(5))
    heard = [frozenset(names - grudge[n]) for n in sorted(names)]
    assert all(len(h) == 3 for h in heard)  # a majority of 5
    assert len(set(heard)) == 5  # no two the same
    assert grudge_ring(hosts(3), random.Random(5)) == {}  # 3 nodes: a majority is a ring


def test_a_seed_repeats_the_choices() -> None:
    def run(seed: int) -> list[str]:
        nemesis = make_nemesis("partition", FakeNet(5), FakeSystem(), seed)
        return [nemesis.start() + nemesis.stop() for _ in range(8)]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_kill_and_pause_on_a_fake_system_follow_the_leader() -> None:
    net = FakeNet(3)
    system = FakeSystem(leader=net.hosts[2])
    kill = make_nemesis("kill-leader", net, system, 1)
    assert kill.start() == "killed n3 (leader)"
    assert kill.stop() == "restarted n3"
    pause = make_nemesis("pause-leader", net, FakeSystem(), 1)
    assert pause.start().endswith("(no leader known: random)")
    assert pause.stop().startswith("resumed n")
    assert pause.stop() == "nothing to resumed"
    assert system.calls == ["kill n3", "start n3"]


def test_unavailable_and_unknown_nemeses() -> None:
    with pytest.raises(ValueError, match="unknown nemesis"):
        make_nemesis("flood", FakeNet(3), FakeSystem(), 0)
    for system in ("pnyx", "etcd"):
        with pytest.raises(NemesisUnavailable, match=f"clock skew is not available for {system}"):
            make_nemesis("skew", FakeNet(3), FakeSystem(system), 0)
    lo = LoopbackNet(3)
    for name in ["partition", *(f"partition-{m}" for m in PARTITIONS), "delay", "loss"]:
        with pytest.raises(NemesisUnavailable, match="network namespaces"):
            make_nemesis(name, lo, FakeSystem(), 0)
    # the faults that need no namespaces work in loopback mode
    assert make_nemesis("kill", lo, FakeSystem(), 0).name == "kill"
    assert make_nemesis("pause", lo, FakeSystem(), 0).name == "pause"


# -- on a real cluster ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pnyx(cluster_factory: Factory) -> tuple[NamespaceNet, ProcessSystem]:
    return cluster_factory("pnyx")


@pytest.mark.root
@pytest.mark.parametrize("mode", [*PARTITIONS, "any"])
def test_every_partition_cuts_and_heals(
    pnyx: tuple[NamespaceNet, ProcessSystem], mode: str
) -> None:
    net, system = pnyx
    name = "partition" if mode == "any" else f"partition-{mode}"
    nemesis = make_nemesis(name, net, system, seed=11)
    assert nemesis.name == name
    try:
        started = nemesis.start()
        assert started.startswith("partition ")
        grudge = nemesis.grudge  # type: ignore[attr-defined]
        expected = {(a.name, b.name) for a, b in grudge_links(net.hosts, grudge)}
        assert net.cuts == expected
        assert f"({len(expected)} links cut)" in started
        for receiver in net.hosts:
            rules = net.rules(receiver)
            assert len(rules) == len(grudge.get(receiver.name, ()))
    finally:
        assert nemesis.stop() == "partition healed"
    assert net.cuts == frozenset()
    assert all(net.rules(h) == [] for h in net.hosts)
    system.wait_serving(None, WAIT_S)


@pytest.mark.root
def test_isolating_the_leader_makes_the_majority_elect_another(
    pnyx: tuple[NamespaceNet, ProcessSystem],
) -> None:
    net, system = pnyx
    old = wait_for("a leader", system.leader)
    nemesis = make_nemesis("partition-leader", net, system, seed=1)
    try:
        assert nemesis.start().startswith(f"partition isolate leader {old.name}")  # type: ignore[attr-defined]

        def majority_leader() -> Host | None:
            named = [s for s in system.statuses() if s.host != old and s.leader_id not in (0, None)]
            ids = {s.member_id: s.host for s in system.statuses()}
            leaders = {ids.get(s.leader_id) for s in named}
            return next(iter(leaders)) if len(leaders) == 1 and old not in leaders else None

        new = wait_for("a new leader in the majority", majority_leader)
        assert new != old
    finally:
        nemesis.stop()
    system.wait_serving(None, WAIT_S)


@pytest.mark.root
@pytest.mark.parametrize("name", ["kill", "kill-leader", "pause", "pause-leader"])
def test_process_nemeses_start_and_stop(
    pnyx: tuple[NamespaceNet, ProcessSystem], name: str
) -> None:
    net, system = pnyx
    wait_for("a leader", system.leader)
    nemesis = make_nemesis(name, net, system, seed=3)
    started = nemesis.start()
    try:
        verb = "killed" if name.startswith("kill") else "paused"
        assert started.startswith(f"{verb} n")
        victim = net.host(started.split()[1])
        if name.endswith("leader"):
            assert started.endswith("(leader)")
        if verb == "killed":
            assert not system.running(victim)
        else:
            assert system.paused(victim)
        assert not system.serving(victim)
    finally:
        stopped = nemesis.stop()
    assert stopped == f"{'restarted' if verb == 'killed' else 'resumed'} {victim.name}"
    system.wait_serving(None, WAIT_S)


@pytest.mark.root
@pytest.mark.parametrize(("name", "victims"), [("kill-majority", 2), ("kill-all", 3)])
def test_crash_nemeses_kill_several_at_once_and_restart_them(
    pnyx: tuple[NamespaceNet, ProcessSystem], name: str, victims: int
) -> None:
    net, system = pnyx
    wait_for("a leader", system.leader)
    nemesis = make_nemesis(name, net, system, seed=3)
    started = nemesis.start()
    try:
        assert started.startswith("killed ") and started.endswith(" at once"), started
        hit = [net.host(n) for n in started.split()[1:-2]]
        assert len(hit) == victims
        assert not any(system.running(h) for h in hit)
        assert all(system.running(h) for h in net.hosts if h not in hit)
    finally:
        stopped = nemesis.stop()
    assert stopped == "restarted " + " ".join(h.name for h in hit)
    system.wait_serving(None, WAIT_S)


@pytest.mark.root
def test_loss_nemesis_drops_with_nftables_and_the_cluster_recovers(
    pnyx: tuple[NamespaceNet, ProcessSystem],
) -> None:
    net, system = pnyx
    nemesis = make_nemesis("loss", net, system, 0)
    try:
        assert nemesis.start() == "loss: 20% of the packets between nodes dropped"
        assert all(len(net.rules(h, "loss")) == 1 for h in net.hosts)
        # (not asserted: serving during the loss; see docs/HARNESS.md for what pnyx does)
    finally:
        assert nemesis.stop() == "loss removed"
    assert all(net.rules(h, "loss") == [] for h in net.hosts)
    system.wait_serving(None, WAIT_S)


def put_latency_s(system: ProcessSystem, host: Host, count: int = 5) -> float:
    """Mean time of a Put sent to ``host`` (a follower: the write crosses links)."""
    with grpc.insecure_channel(system.endpoint(host)) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), timeout=10)
        began = time.monotonic()
        for _ in range(count):
            kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), timeout=10)
        return (time.monotonic() - began) / count


@pytest.mark.root
def test_delay_slows_the_links_between_nodes_of_real_etcd(run_id: str) -> None:
    """netem where the kernel has it; here (no sch_netem) the userspace link proxy, built
    before the system starts so every peer connection passes it."""
    net = NamespaceNet(3, run_id)
    system = EtcdSystem()
    directory = scratch_dir()
    proxies: list[int] = []
    try:
        nemesis = make_nemesis("delay", net, system, 0)
        if netem_support(net.hosts[0]) is None:
            assert isinstance(nemesis, LinkNemesis)
        else:  # this machine's kernel: no sch_netem
            assert isinstance(nemesis, ProxyDelayNemesis)
            proxies = [p.pid for p in nemesis.procs]
        system.start(net.hosts, directory)
        leader = wait_for("a leader", system.leader)
        follower = next(h for h in net.hosts if h != leader)
        before = put_latency_s(system, follower)
        try:
            assert nemesis.start().startswith("delay: ")
            slowed = put_latency_s(system, follower)
        finally:
            assert nemesis.stop() == "delay removed"
        after = put_latency_s(system, follower)
        # follower -> leader -> a quorum -> back: at least two 50 ms hops each way
        assert slowed > 0.1 > before, (before, slowed)
        assert after < 0.1, (before, slowed, after)
    finally:
        system.stop()
        net.close()  # kills the proxies
        shutil.rmtree(directory, ignore_errors=True)
    assert pids_gone(proxies)


def test_every_nemesis_name_is_covered() -> None:
    covered = {"partition", *(f"partition-{m}" for m in PARTITIONS)}
    covered |= {"kill", "kill-leader", "pause", "pause-leader", "delay", "loss", "skew"}
    covered |= {"member"}  # tests/harness/test_membership.py
    covered |= {"pause-holder"}  # tests/harness/test_lock_pauses.py
    covered |= {"kill-all", "kill-majority"}  # above, and tests/harness/test_broken_builds.py
    assert set(NEMESES) == covered
