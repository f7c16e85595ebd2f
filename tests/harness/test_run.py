"""The run loop: with a system and nemeses of the test's own (a one-node etcd on loopback,
call-recording wrappers) — the schedule, the history's nemesis events, the heal and the
clean-up on success, failure and SIGTERM — and then real runs: ``register`` on a 3-node
pnyx cluster in namespaces under partitions and kills, and on real etcd under pauses, each
clean, with its report, and nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pnyx.harness.api import Host, NemesisUnavailable
from pnyx.harness.nemeses import make_nemesis
from pnyx.harness.net import LoopbackNet, NamespaceNet, leftovers, new_run_id
from pnyx.harness.run import RunResult, overall, run_test
from pnyx.harness.systems import EtcdSystem, PnyxSystem
from pnyx.harness.workloads import NEMESIS_PROCESS, CheckResult, make_workload
from tests.harness.conftest import pids_gone, require_namespaces


class RecordingSystem(EtcdSystem):
    """Real etcd (one node per host on loopback) that records the calls made on it."""

    def __init__(self, fail_endpoints: bool = False) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.fail_endpoints = fail_endpoints
        self.started_pids: list[int] = []

    def start(self, hosts: tuple[Host, ...], directory: Path) -> None:
        self.calls.append("start")
        super().start(hosts, directory)
        self.started_pids = list(self.pids().values())

    def endpoints(self) -> list[str]:
        if self.fail_endpoints:
            raise RuntimeError("no endpoints today")
        return super().endpoints()

    def resume(self, host: Host) -> None:
        self.calls.append(f"resume {host.name}")
        super().resume(host)

    def stop(self) -> None:
        self.calls.append("stop")
        super().stop()


class RecordingNet(LoopbackNet):
    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.calls: list[str] = []

    def heal(self) -> None:
        self.calls.append("heal")
        super().heal()

    def close(self) -> None:
        self.calls.append("close")
        super().close()


class FakeNemesis:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.calls: list[str] = []

    def start(self) -> str:
        self.calls.append("start")
        if self.fail:
            raise RuntimeError("cannot")
        return f"{self.name} on"

    def stop(self) -> str:
        self.calls.append("stop")
        return f"{self.name} off"


def run(tmp_path: Path, nemeses: list[Any], *, workload: str = "register",
        system: RecordingSystem | None = None, time_limit_s: float = 4.0,
        **kwargs: Any) -> tuple[RunResult, RecordingSystem, RecordingNet]:  # fmt: skip
    system = system or RecordingSystem()
    net = RecordingNet(1)
    result = run_test(system, net, make_workload(workload, seed=3), nemeses, time_limit_s,
                      40, 3, 3, tmp_path / "run", nemesis_interval_s=0.7,
                      nemesis_duration_s=0.6, quiesce_s=0.2, **kwargs)  # fmt: skip
    return result, system, net


def test_a_clean_run_with_fake_nemeses_records_the_schedule_and_cleans_up(
        tmp_path: Path) -> None:  # fmt: skip
    a, b = FakeNemesis("alpha"), FakeNemesis("beta", fail=True)
    phases: list[str] = []
    result, system, net = run(tmp_path, [a, b],
                              progress=lambda phase, elapsed, ops: phases.append(phase))
    assert result.verdict == "valid", (result.error, [c.summary for c in result.checks])
    assert result.error == "" and result.cleanup_errors == []
    # the scheduler alternated the two; each start had its stop; a failing start is noted
    assert a.calls and a.calls.count("start") == a.calls.count("stop")
    assert b.calls.count("start") == b.calls.count("stop") >= 1
    names = [i.name for i in result.intervals]
    assert {"alpha", "beta"} <= set(names)
    assert all(i.end_ns is not None and i.end_ns > i.start_ns for i in result.intervals)
    assert any(i.start.startswith("failed: RuntimeError") for i in result.intervals)
    nem = [e for e in result.recorder.events if e.process == NEMESIS_PROCESS]
    assert [e.f for e in nem[:4]] == ["start", "start", "stop", "stop"]
    assert nem[-1].f == "heal" and nem[-1].type == "info"
    # healed, resumed, stopped, net closed; processes gone, data removed, logs kept
    assert net.calls == ["heal", "heal", "close"]  # at the end of the run and at clean-up
    assert "resume n1" in system.calls and system.calls[-1] == "stop"
    assert pids_gone(system.started_pids)
    assert not (result.directory / "nodes").exists()
    assert (result.directory / "logs" / "n1.log").stat().st_size > 0
    # phases in order, reported to the progress callback
    assert list(result.phases)[:6] == ["start", "setup", "workload", "heal", "quiesce",
                                       "final"]  # fmt: skip
    assert phases[0] == "start" and "workload" in phases and phases[-1] == "check"
    assert result.phases["workload"] < 4.0 + 3.0
    # the report
    for name in ("history.jsonl", "results.json", "index.html", "latency.png",
                 "throughput.png"):  # fmt: skip
        assert (result.directory / name).stat().st_size > 0, name
    results = json.loads((result.directory / "results.json").read_text())
    assert results["verdict"] == "valid" and results["nemesis"]
    lines = (result.directory / "history.jsonl").read_text().splitlines()
    assert len(lines) == len(result.recorder.events)
    ops = result.recorder.history().operations
    assert len(ops) > 40 and sum(o.outcome == "ok" for o in ops) > 40


def test_a_run_that_fails_still_cleans_up_and_reports(tmp_path: Path) -> None:
    nemesis = FakeNemesis("alpha")
    system = RecordingSystem(fail_endpoints=True)
    result, _, net = run(tmp_path, [nemesis], system=system)
    assert result.verdict == "unknown"
    assert "no endpoints today" in result.error
    assert (result.directory / "error.txt").exists()
    assert system.calls[0] == "start" and system.calls[-1] == "stop"
    assert net.calls[-1] == "close"
    assert pids_gone(system.started_pids)
    assert (result.directory / "index.html").exists()


def test_sigterm_during_a_run_stops_it_and_cleans_up(tmp_path: Path) -> None:
    nemesis = FakeNemesis("alpha")
    # the run turns SIGTERM into an interrupt only in the main thread: never signal otherwise
    assert threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(6.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    began = time.monotonic()
    try:
        result, system, net = run(tmp_path, [nemesis], time_limit_s=60.0)
    finally:
        timer.cancel()
    assert time.monotonic() - began < 40
    assert result.interrupted and result.verdict == "unknown"
    assert system.calls[-1] == "stop" and net.calls[-1] == "close"
    assert pids_gone(system.started_pids)
    assert nemesis.calls.count("start") == nemesis.calls.count("stop")
    assert signal.getsignal(signal.SIGTERM) == before  # the run's handler is gone again


def test_overall_verdict() -> None:
    ok = CheckResult("a", "valid", "")
    bad = CheckResult("b", "invalid", "")
    unknown = CheckResult("c", "unknown", "")
    assert overall([ok]) == "valid"
    assert overall([ok, unknown]) == "unknown"
    assert overall([unknown, bad]) == "invalid"
    assert overall([]) == "unknown"
    assert overall([ok], error="interrupted") == "unknown"


# -- real runs (CI-sized) ----------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "nemeses"), [
    ("pnyx", ["partition", "kill"]),
    ("etcd", ["pause"]),
])  # fmt: skip
def test_register_real_cluster_is_clean_and_leaves_nothing(tmp_path: Path, kind: str,
                                                          nemeses: list[str]) -> None:
    require_namespaces()
    run_id = "r" + new_run_id()[:7]
    net = NamespaceNet(3, run_id)
    system = PnyxSystem() if kind == "pnyx" else EtcdSystem()
    try:
        faults = [make_nemesis(n, net, system, 5) for n in nemeses]
        result = run_test(system, net, make_workload("register", seed=5), faults, 16.0, 40,
                          4, 5, tmp_path / "run", nemesis_interval_s=2.0,
                          nemesis_duration_s=4.0, quiesce_s=1.0)  # fmt: skip
    finally:
        net.close()
    assert result.verdict == "valid", (result.error, [c.summary for c in result.checks])
    assert result.cleanup_errors == []
    assert {i.name for i in result.intervals} == set(nemeses)
    assert all(not i.start.startswith("failed") for i in result.intervals), result.intervals
    ops = result.recorder.history().operations
    assert sum(o.outcome == "ok" for o in ops) > 100
    for name in ("history.jsonl", "results.json", "index.html", "latency.png",
                 "throughput.png", "logs/n1.log", "logs/n2.log", "logs/n3.log"):  # fmt: skip
        assert (result.directory / name).stat().st_size > 0, name
    assert leftovers(run_id) == []
    assert not any(system.running(h) for h in net.hosts)


class CrashingNemesis:
    """Kills the node and never restarts it: the heal at the end must."""

    name = "crash"

    def __init__(self, system: RecordingSystem, net: RecordingNet) -> None:
        self.system, self.net = system, net

    def start(self) -> str:
        self.system.kill(self.net.hosts[0])
        return "killed n1 for good"

    def stop(self) -> str:
        return "left it dead"


def test_the_heal_restarts_a_node_a_nemesis_left_dead(tmp_path: Path) -> None:
    system, net = RecordingSystem(), RecordingNet(1)
    result = run_test(system, net, make_workload("kv", seed=1), [CrashingNemesis(system, net)],
                      3.0, 30, 2, 1, tmp_path / "run", nemesis_interval_s=0.5,
                      nemesis_duration_s=10.0, quiesce_s=0.2)  # fmt: skip
    assert result.verdict == "valid", (result.error, [c.summary for c in result.checks])
    heal = [e for e in result.recorder.events if e.process == NEMESIS_PROCESS and e.f == "heal"]
    assert "restart n1: restarted" in heal[-1].value
    assert not system.running(net.hosts[0])


# -- the command line ------------------------------------------------------------------------


def test_cli_loopback_run_skips_partitions_and_prints_the_report(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from pnyx.cli.main import cli

    out = tmp_path / "cli"
    done = CliRunner().invoke(cli, [
        "test", "--system", "etcd", "--workload", "kv", "--nemesis", "partition,pause",
        "--time-limit", "3", "--nodes", "1", "--rate", "30", "--concurrency", "2",
        "--seed", "9", "--dir", str(out), "--loopback", "--nemesis-interval", "0.5",
        "--nemesis-duration", "1"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "skipping nemesis partition" in done.output
    assert "VERDICT: VALID" in done.output
    assert f"report: {out / 'index.html'}" in done.output.replace("\n", "")
    results = json.loads((out / "results.json").read_text())
    assert results["nemeses"] == ["pause"] and results["isolated"] is False


def test_cli_exit_status_for_a_violation_and_for_bad_usage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from click.testing import CliRunner

    from pnyx.cli.main import cli
    from pnyx.harness import workloads

    def violated(self: Any, history: Any) -> list[CheckResult]:
        return [CheckResult("linearizable", "invalid", "a made-up violation", "p0 read 3")]

    monkeypatch.setattr(workloads.RegisterWorkload, "check", violated)
    runner = CliRunner()
    done = runner.invoke(cli, ["test", "--system", "etcd", "--time-limit", "1", "--nodes", "1",
                               "--loopback", "--dir", str(tmp_path / "v")])  # fmt: skip
    assert done.exit_code == 1, done.output
    assert "VERDICT: INVALID" in done.output and "p0 read 3" in done.output
    for argv in (["--nemesis", "bogus"], ["--nodes", "0"], ["--workload", "queue"],
                 ["--time-limit", "abc"]):  # fmt: skip
        bad = runner.invoke(cli, ["test", *argv])
        assert bad.exit_code == 2, (argv, bad.output)


# -- soak: every workload under every nemesis, on both systems (make soak) ----------------------

SOAK_WORKLOADS = ["register", "kv", "list-append", "bank", "set", "lock", "lock-fenced",
                  "watch"]  # fmt: skip
SOAK_NEMESES = ["partition", "kill", "kill-all", "pause", "pause-holder", "loss", "delay",
                "skew", "member"]  # fmt: skip
"""One name per kind of fault: ``partition`` draws one of the six partitions at each start,
``kill`` and ``pause`` hit a random node (the ``-leader`` variants are the same faults on a
chosen target)."""
SOAK_EXPECTED_FINDINGS = {"lock"}
"""Workloads whose violation is an expected finding, recorded, not asserted: the unfenced
lease-based lock (two holders once a holder's lease expires under it)."""


@pytest.mark.soak
@pytest.mark.parametrize("nemesis", SOAK_NEMESES)
@pytest.mark.parametrize("workload", SOAK_WORKLOADS)
@pytest.mark.parametrize("kind", ["pnyx", "etcd"])
def test_soak_every_workload_under_every_nemesis(tmp_path: Path, kind: str, workload: str,
                                                nemesis: str) -> None:  # fmt: skip
    """``PNYX_SOAK_TIME_S`` (default 60) of one workload under one nemesis (interval 3 s,
    duration 5 s; under ``kill-all`` a crash also loses what was not fsynced: pnyx with the
    WAL's lose-unsynced test mode, etcd on lazyfs).  Every verdict is valid except the expected
    findings; a nemesis this machine or system cannot inject is recorded as unavailable.
    A line per run in pnyx-test/soak.txt."""
    require_namespaces()
    run_id = "s" + new_run_id()[:7]
    net = NamespaceNet(3, run_id)
    lose = nemesis == "kill-all"
    system = PnyxSystem(lose_unsynced=lose) if kind == "pnyx" else EtcdSystem(lazyfs=lose)
    Path("pnyx-test").mkdir(exist_ok=True)
    try:
        try:
            faults = [make_nemesis(nemesis, net, system, 11)]
        except NemesisUnavailable as exc:
            with open("pnyx-test/soak.txt", "a") as out:
                out.write(f"{kind:5} {workload:12} {nemesis:12} unavailable: {exc}\n")
            return
        result = run_test(system, net, make_workload(workload, seed=11), faults,
                          float(os.environ.get("PNYX_SOAK_TIME_S", "60")), 50, 5, 11,
                          tmp_path / "run", nemesis_interval_s=3.0,
                          nemesis_duration_s=5.0)  # fmt: skip
    finally:
        net.close()
    line = (f"{kind:5} {workload:12} {nemesis:12} {result.verdict:8} "
            + "; ".join(f"{c.name}: {c.summary}" for c in result.checks))
    with open("pnyx-test/soak.txt", "a") as out:
        out.write(line + "\n")
    assert leftovers(run_id) == []
    assert result.error == "", result.error
    if workload not in SOAK_EXPECTED_FINDINGS:
        assert result.verdict == "valid", line
