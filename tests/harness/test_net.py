"""NamespaceNet: hosts reach each other, cuts drop one way, heal restores, close leaves
nothing (also when the body raised); LoopbackNet: no partitions, a clear error."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import time

import pytest

from pnyx.harness.api import NemesisUnavailable
from pnyx.harness.net import (
    LoopbackNet,
    NamespaceNet,
    exit_on_signals,
    leftovers,
    open_net,
    remove_leftovers,
)
from tests.harness.conftest import require_namespaces, tcp_connects, tcp_listener, udp_arrives


@pytest.mark.root
def test_hosts_in_their_namespaces_reach_each_other(net3: NamespaceNet) -> None:
    hosts = net3.hosts
    assert [h.name for h in hosts] == ["n1", "n2", "n3"]
    assert len({h.address for h in hosts}) == 3
    assert all(h.netns and h.netns.startswith(f"pnyx-{net3.run_id}-") for h in hosts)
    assert all(ipaddress.ip_address(h.address) in net3.subnet for h in hosts)
    for src in hosts:
        for dst in hosts:
            if src != dst:
                assert tcp_connects(src, dst, timeout_s=5.0), f"{src.name} -> {dst.name}"
    # loopback is up inside each namespace
    argv = hosts[0].command(["ip", "-o", "link", "show", "lo"])
    assert "UP" in subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout


@pytest.mark.root
def test_the_test_process_reaches_every_host(net3: NamespaceNet) -> None:
    """The control link (root namespace) lets clients reach each node."""
    for host in net3.hosts:
        listener = tcp_listener(host)
        try:
            with socket.create_connection(listener.getsockname(), timeout=5.0):
                pass
        finally:
            listener.close()


@pytest.mark.root
def test_cut_drops_one_way_and_heal_restores(net3: NamespaceNet) -> None:
    n1, n2, n3 = net3.hosts
    net3.cut([(n1, n2)])
    assert net3.cuts == {("n1", "n2")}
    assert net3.rules(n2) == [f"ip saddr {n1.address} drop"]
    assert net3.rules(n1) == []
    assert not udp_arrives(n1, n2)  # cut direction: dropped
    assert udp_arrives(n2, n1)  # the other direction still flows
    assert udp_arrives(n1, n3) and udp_arrives(n3, n2)
    # TCP needs both directions: a one-way cut breaks connections either way
    assert not tcp_connects(n1, n2)
    assert not tcp_connects(n2, n1)
    assert tcp_connects(n1, n3, timeout_s=5.0)
    net3.cut([(n1, n2), (n3, n2)])  # idempotent per link, cumulative
    assert net3.cuts == {("n1", "n2"), ("n3", "n2")}
    assert len(net3.rules(n2)) == 2
    net3.heal()
    assert net3.cuts == frozenset()
    assert all(net3.rules(h) == [] for h in net3.hosts)
    assert udp_arrives(n1, n2, timeout_s=5.0)
    assert tcp_connects(n1, n2, timeout_s=5.0)
    assert tcp_connects(n3, n2, timeout_s=5.0)


@pytest.mark.root
def test_loss_drops_between_hosts_only_and_is_independent_of_cuts(net3: NamespaceNet) -> None:
    n1, n2, n3 = net3.hosts
    net3.lose(30)
    assert all(len(net3.rules(h, "loss")) == 1 for h in net3.hosts)
    assert "numgen random mod 100 < 30 drop" in net3.rules(n2, "loss")[0]
    assert n1.address in net3.rules(n2, "loss")[0] and n2.address not in net3.rules(n2, "loss")[0]
    net3.lose(100)  # every packet between hosts: the rule works
    assert len(net3.rules(n2, "loss")) == 1
    assert not udp_arrives(n1, n2) and not udp_arrives(n3, n1)
    listener = tcp_listener(n1)
    with listener, socket.create_connection(listener.getsockname(), timeout=5.0):
        pass  # the control link (clients) is never affected
    net3.heal()  # heals cuts, keeps the loss
    assert net3.loss_percent == 100 and not udp_arrives(n2, n3)
    net3.lose(0)
    assert all(net3.rules(h, "loss") == [] for h in net3.hosts)
    assert udp_arrives(n1, n2, timeout_s=5.0) and udp_arrives(n3, n1, timeout_s=5.0)
    with pytest.raises(ValueError, match="0 to 100"):
        net3.lose(101)


@pytest.mark.root
def test_close_leaves_nothing_even_when_the_body_raised(run_id: str) -> None:
    with pytest.raises(ZeroDivisionError), NamespaceNet(2, run_id) as net:
        n1, n2 = net.hosts
        net.cut([(n1, n2)])
        found = leftovers(run_id)
        assert f"netns pnyx-{run_id}-n1" in found
        assert f"netns pnyx-{run_id}-sw" in found
        assert f"link pnyx-{run_id}" in found
        assert any(f.startswith(f"nft pnyx-{run_id}-n2") for f in found)
        1 / 0  # noqa: B018
    assert leftovers(run_id) == []
    net.close()  # idempotent
    assert leftovers(run_id) == []
    with pytest.raises(RuntimeError, match="closed"):
        net.cut([(n1, n2)])


@pytest.mark.root
def test_remove_leftovers_cleans_up_after_a_crashed_run(run_id: str) -> None:
    net = NamespaceNet(2, run_id)
    try:
        with pytest.raises(RuntimeError, match="in use"):
            NamespaceNet(2, run_id)
        removed = remove_leftovers(run_id)  # as after a kill -9 of the harness
        assert f"netns pnyx-{run_id}-n1" in removed
    finally:
        net.close()  # waits until the kernel dropped everything
    assert leftovers(run_id) == []


@pytest.mark.root
def test_nothing_outside_the_run_is_touched(net3: NamespaceNet) -> None:
    """Only the one root link of the run is added to the root namespace."""
    links = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=10
    ).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()]
    assert f"pnyx-{net3.run_id}" in names
    assert not [
        n for n in names if n.startswith(f"pnyx-{net3.run_id}") and n != f"pnyx-{net3.run_id}"
    ]
    routes = subprocess.run(
        ["ip", "-4", "route", "show", "dev", f"pnyx-{net3.run_id}"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.split()
    assert routes[0] == str(net3.subnet)  # one on-link route: the run's private /24


@pytest.mark.root
def test_bad_run_ids_are_refused() -> None:
    require_namespaces()
    for bad in ("", "UPPER", "has-dash", "x" * 11):
        with pytest.raises(ValueError, match="run id"):
            NamespaceNet(1, bad)


def test_loopback_net_has_port_ranges_and_no_partitions() -> None:
    with LoopbackNet(3) as net:
        assert net.isolated is False
        assert {h.address for h in net.hosts} == {"127.0.0.1"}
        assert all(h.netns is None for h in net.hosts)
        bases = [h.port_base for h in net.hosts]
        assert len(set(bases)) == 3 and all(b >= 1024 for b in bases)
        assert net.hosts[0].command(["true"]) == ["true"]
        with pytest.raises(NemesisUnavailable, match="partitions need network namespaces"):
            net.cut([(net.hosts[0], net.hosts[1])])
        with pytest.raises(NemesisUnavailable, match="loss needs network namespaces"):
            net.lose(10)
        net.heal()


@pytest.mark.root
def test_open_net_picks_namespaces_as_root(run_id: str) -> None:
    assert os.geteuid() == 0
    with open_net(2, run_id) as net:
        assert isinstance(net, NamespaceNet) and net.isolated
    with open_net(2, run_id, loopback=True) as lo:
        assert isinstance(lo, LoopbackNet)


def test_exit_on_signals_turns_sigterm_into_system_exit() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as info, exit_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    assert info.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before
