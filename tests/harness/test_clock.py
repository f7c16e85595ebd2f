"""The clock nemesis (``skew``): unavailable for etcd, its seeded choices, and on 3 real
pnyx nodes in namespaces a forward jump of the leader's clock (a stall its runtime
reports), clock rates the nodes' tick counters follow, a reset that restores them; and a
short ``run_test`` under ``skew`` that ends with a verdict."""

from __future__ import annotations

import random
import re
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pnyx.harness.api import Host, NemesisUnavailable
from pnyx.harness.clock import ClockNemesis
from pnyx.harness.nemeses import make_nemesis
from pnyx.harness.net import LoopbackNet, NamespaceNet, leftovers, new_run_id
from pnyx.harness.run import run_test
from pnyx.harness.systems import PnyxSystem
from pnyx.harness.workloads import make_workload
from pnyx.runtime.faultclock import RESET, ClockSetting, parse_setting
from tests.harness.conftest import in_netns, pids_gone, require_namespaces, scratch_dir

METRICS_PORT = 9464
"""Each node serves /metrics on 127.0.0.1:9464 of its own namespace."""
WAIT_S = 60.0
"""Bound of every wait on the real cluster (generous: a busy 2-core machine)."""


class NamedSystem:
    """A system without a fault clock (etcd, or someone's own adapter)."""

    def __init__(self, name: str) -> None:
        self.name = name


class LeaderlessPnyx(PnyxSystem):
    """A PnyxSystem that never started: no leader to ask."""

    def leader(self) -> Host | None:
        return None


def test_skew_is_unavailable_for_etcd_with_the_reason() -> None:
    net = LoopbackNet(3)
    with pytest.raises(NemesisUnavailable, match="etcd: libfaketime cannot move a Go binary"):
        make_nemesis("skew", net, NamedSystem("etcd"), 0)  # type: ignore[arg-type]
    with pytest.raises(NemesisUnavailable, match="no fault clock"):
        make_nemesis("skew", net, NamedSystem("custom"), 0)  # type: ignore[arg-type]


def test_building_skew_gives_the_nodes_a_fault_clock_unless_they_already_run() -> None:
    net = LoopbackNet(3)
    system = PnyxSystem()
    make_nemesis("skew", net, system, 0)
    assert system.fault_clock
    system.hosts, system.directory = net.hosts, Path("/run/x")
    argv = system._argv(net.hosts[1])
    assert argv[argv.index("--fault-clock") + 1] == "/run/x/n2.clock"
    running = PnyxSystem()
    running.hosts = net.hosts  # started without a fault clock: too late to give one
    with pytest.raises(NemesisUnavailable, match="without a fault clock"):
        make_nemesis("skew", net, running, 0)


def test_skew_choices_repeat_with_the_seed_and_stop_resets_every_clock(tmp_path: Path) -> None:
    net = LoopbackNet(3)

    def run(seed: int) -> list[str]:
        system = LeaderlessPnyx()
        nemesis = make_nemesis("skew", net, system, seed)
        system.hosts, system.directory = net.hosts, tmp_path / str(seed)
        system.directory.mkdir(exist_ok=True)
        out = []
        for _ in range(12):
            out.append(nemesis.start())
            files = {h.name: system.clock_file(h) for h in net.hosts}
            written = {n: parse_setting(p.read_text()) for n, p in files.items() if p.exists()}
            assert written and any(s != RESET for s in written.values()), out[-1]
            out.append(nemesis.stop())
            assert all(parse_setting(p.read_text()) == RESET for p in files.values())
        return out

    first = run(7)
    assert first == run(7)
    assert first != run(8)
    starts = " ".join(first[::2])
    assert " rate x" in starts and " ms (held)" in starts and re.search(r"\+\d+ ms", starts)
    assert all(s == "clocks reset: n1 n2 n3" for s in first[1::2])


# -- on a real cluster ----------------------------------------------------------------------


@pytest.fixture
def skewed_cluster() -> Iterator[tuple[NamespaceNet, PnyxSystem]]:
    """3 pnyx nodes in namespaces on fault clocks, serving /metrics; removed afterwards."""
    require_namespaces()
    net = NamespaceNet(3, "k" + new_run_id()[:7])
    directory = scratch_dir()
    system = PnyxSystem(fault_clock=True, extra_args=("--metrics-port", str(METRICS_PORT)))
    pids: list[int] = []
    try:
        system.start(net.hosts, directory)
        pids = list(system.pids().values())
        yield net, system
    finally:
        system.stop()
        net.close()
        shutil.rmtree(directory, ignore_errors=True)
    assert pids_gone(pids)
    assert leftovers(net.run_id) == []


def ticks(host: Host) -> float:
    """The node's ``pnyx_ticks_total`` (read in its namespace, bounded)."""
    url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
    text = in_netns(host, lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    match = re.search(r"^pnyx_ticks_total (\S+)$", text, re.MULTILINE)
    assert match, text[:500]
    return float(match.group(1))


def tick_ratios(hosts: tuple[Host, ...], reference: Host, window_ticks: int) -> dict[str, float]:
    """Each node's ticks per tick of ``reference`` while ``reference`` counts
    ``window_ticks`` (bounded by :data:`WAIT_S`)."""
    before = {h.name: ticks(h) for h in hosts}
    deadline = time.monotonic() + WAIT_S
    while ticks(reference) < before[reference.name] + window_ticks:
        assert time.monotonic() < deadline, f"{reference.name} stopped ticking"
        time.sleep(0.2)  # poll interval
    after = {h.name: ticks(h) for h in hosts}
    done = after[reference.name] - before[reference.name]
    return {h.name: (after[h.name] - before[h.name]) / done for h in hosts}


def wait_for_log(system: PnyxSystem, host: Host, pattern: str, skip: int) -> re.Match[str]:
    """The first match of ``pattern`` in ``host``'s log after its first ``skip`` bytes."""
    deadline = time.monotonic() + WAIT_S
    while True:
        text = system.log_path(host).read_text(errors="replace")[skip:]
        match = re.search(pattern, text)
        if match:
            return match
        assert time.monotonic() < deadline, f"no {pattern!r} in {host.name}'s log"
        time.sleep(0.1)  # poll interval


def wait_for_leader(system: PnyxSystem) -> Host:
    deadline = time.monotonic() + WAIT_S
    while (leader := system.leader()) is None:
        assert time.monotonic() < deadline, "no leader"
        time.sleep(0.1)  # poll interval
    return leader


@pytest.mark.root
def test_skew_moves_the_clocks_of_real_pnyx_nodes_and_stop_restores_them(
    skewed_cluster: tuple[NamespaceNet, PnyxSystem],
) -> None:
    net, system = skewed_cluster
    # a forward jump of the leader's clock: its runtime sees a stall of that many ticks
    leader = wait_for_leader(system)
    skip = system.log_path(leader).stat().st_size
    jump = ClockNemesis(net, system, random.Random(1), kinds=("jump",), target="leader")
    said = jump.start()
    found = re.fullmatch(r"clock: (n\d) \+(\d+) ms \(leader\)", said)
    assert found, said
    jumped = system.host(found.group(1))
    missed = wait_for_log(system, jumped, r"clock_stalled node=\d+ missed_ticks=(\d+)", skip)
    expected = int(found.group(2)) // system.tick_ms
    assert expected - 16 - 10 <= int(missed.group(1)) <= expected + 10, (said, missed.group(0))
    assert jump.stop() == "clocks reset: n1 n2 n3"
    # rates: n1 four times as fast, n2 half as fast, n3 real
    nemesis = ClockNemesis(net, system, random.Random(1))
    n1, n2, n3 = net.hosts
    nemesis.set_clock(n1, ClockSetting(rate=4.0))
    nemesis.set_clock(n2, ClockSetting(rate=0.5))
    skewed = tick_ratios(net.hosts, n3, window_ticks=300)
    assert skewed["n1"] > 2.5 and skewed["n2"] < 0.7, skewed
    nemesis.stop()
    restored = tick_ratios(net.hosts, n3, window_ticks=300)
    assert all(0.7 < r < 1.4 for r in restored.values()), (skewed, restored)
    system.wait_serving(timeout_s=WAIT_S)


@pytest.mark.root
def test_a_short_run_under_skew_ends_with_a_verdict(tmp_path: Path) -> None:
    require_namespaces()
    run_id = "s" + new_run_id()[:7]
    net = NamespaceNet(3, run_id)
    system = PnyxSystem()
    try:
        faults = [make_nemesis("skew", net, system, 3)]
        assert system.fault_clock
        result = run_test(system, net, make_workload("register", seed=3), faults, 12.0, 40,
                          4, 3, tmp_path / "run", nemesis_interval_s=1.0,
                          nemesis_duration_s=3.0, quiesce_s=1.0)  # fmt: skip
    finally:
        net.close()
    assert result.verdict == "valid", (result.error, [c.summary for c in result.checks])
    assert result.cleanup_errors == []
    assert [i.name for i in result.intervals] and all(
        i.name == "skew" and i.start.startswith("clock: ") for i in result.intervals
    ), result.intervals
    assert sum(o.outcome == "ok" for o in result.recorder.history().operations) > 50
    logs = " ".join(p.read_text(errors="replace") for p in result.logs.values())
    assert "fault_clock_set" in logs
    assert leftovers(run_id) == []
