"""PnyxSystem and EtcdSystem: 3-node clusters in namespaces start and serve; the leader is
found; kill/restart and pause/resume work; processes are the nodes themselves (pid) inside
their namespaces; stop leaves nothing."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from pnyx.harness.net import LoopbackNet, NamespaceNet
from pnyx.harness.systems import EtcdSystem, ProcessSystem
from tests.harness.conftest import pids_gone, scratch_dir, wait_for

Factory = Callable[[str], tuple[NamespaceNet, ProcessSystem]]
SYSTEMS = ["pnyx", "etcd"]
WAIT_S = 60.0


@pytest.fixture(scope="module", params=SYSTEMS)
def cluster(
    request: pytest.FixtureRequest, cluster_factory: Factory
) -> tuple[NamespaceNet, ProcessSystem]:
    return cluster_factory(request.param)




@pytest.mark.root
def test_every_node_serves_in_its_namespace(cluster: tuple[NamespaceNet, ProcessSystem]) -> None:
    net, system = cluster
    assert system.endpoints() == [f"{h.address}:{h.port_base + 1}" for h in net.hosts]
    assert all(system.serving(h) for h in net.hosts)
    for host in net.hosts:
        pid = system.pids()[host.name]
        # `ip netns exec` execs the node: the pid is the node's, in the host's namespace
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert (b"serve" in argv) if system.name == "pnyx" else argv[0].endswith(b"etcd")
        assert host.netns is not None
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{host.netns}").st_ino
        assert system.logs()[host.name].stat().st_size > 0


@pytest.mark.root
def test_the_leader_is_found(cluster: tuple[NamespaceNet, ProcessSystem]) -> None:
    net, system = cluster
    leader = wait_for("a leader", system.leader)
    assert leader in net.hosts
    statuses = system.statuses()
    assert len(statuses) == 3
    assert len({s.member_id for s in statuses}) == 3


@pytest.mark.root
def test_kill_the_leader_and_restart_it(cluster: tuple[NamespaceNet, ProcessSystem]) -> None:
    net, system = cluster
    leader = wait_for("a leader", system.leader)
    assert isinstance(leader, type(net.hosts[0]))
    pid = system.pids()[leader.name]
    system.kill(leader)
    assert leader.name not in system.pids() and pids_gone([pid])
    assert not system.serving(leader)
    wait_for("a new leader", lambda: system.leader() not in (None, leader))
    system.start_node(leader)
    system.wait_serving((leader,), WAIT_S)
    assert system.pids()[leader.name] != pid
    assert "starting" in system.logs()[leader.name].read_text(errors="replace")


@pytest.mark.root
def test_pause_and_resume_a_node(cluster: tuple[NamespaceNet, ProcessSystem]) -> None:
    net, system = cluster
    host = net.hosts[1]
    pid = system.pids()[host.name]
    system.pause(host)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state == "T"  # stopped
        assert not system.serving(host)
        assert system.paused(host)
    finally:
        system.resume(host)
    system.wait_serving((host,), WAIT_S)
    assert system.pids()[host.name] == pid


def test_etcd_in_loopback_mode() -> None:
    """Without namespaces, a cluster runs on 127.0.0.1 with each host's port range."""
    net = LoopbackNet(3)
    system = EtcdSystem()
    directory = scratch_dir()
    try:
        system.start(net.hosts, directory)
        assert all(e.startswith("127.0.0.1:") for e in system.endpoints())
        assert len(set(system.endpoints())) == 3
        assert wait_for("a leader", system.leader) in net.hosts
        pids = list(system.pids().values())
    finally:
        system.stop()
        net.close()
        shutil.rmtree(directory, ignore_errors=True)
    assert pids_gone(pids)
    system.stop()  # idempotent


def test_a_node_that_cannot_start_fails_start_with_its_log() -> None:
    net = LoopbackNet(1)
    system = EtcdSystem(extra_args=("--no-such-flag",), start_timeout_s=30)
    directory = scratch_dir()
    try:
        with pytest.raises(RuntimeError, match="not running") as info:
            system.start(net.hosts, directory)
        assert "exit 2" in str(info.value) and "Usage" in str(info.value)
        assert system.pids() == {}
    finally:
        system.stop()
        shutil.rmtree(directory, ignore_errors=True)
