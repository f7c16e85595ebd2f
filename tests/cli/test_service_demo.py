"""``pnyx service-demo`` (what ``make run`` runs), a preset of the harness: end to end with
a short workload (exit 0, the report directory, the leader kill in the history), stopped
midway by SIGTERM (exit 3), and either way no process of its cluster is left running;
and its checks are not vacuous (each part of its workload catches its violation)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pnyx.core import HistoryEvent
from tests.cli.cli_helpers import PNYX
from tests.services.conftest import processes_under

PIDS = re.compile(r"\bpid (\d+)")
UP = re.compile(r"^\s+up: (.*)$", re.MULTILINE)


@contextlib.contextmanager
def _reaped(tmp_path: Path) -> Iterator[None]:
    """If the test fails midway (a time-out kills the demo), its nodes (their command lines
    name their data directory under ``tmp_path``) are killed by pid."""
    try:
        yield
    finally:
        for pid in processes_under(tmp_path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _history(directory: Path) -> list[dict[str, Any]]:
    lines = (directory / "history.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_service_demo_end_to_end(tmp_path: Path) -> None:
    with _reaped(tmp_path):
        began = time.monotonic()
        result = subprocess.run(
            [*PNYX, "service-demo", "--duration", "6", "--report", "report.html"],
            capture_output=True, text=True, timeout=150, check=False, cwd=tmp_path,
        )  # fmt: skip
        wall_s = time.monotonic() - began
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "VERDICT: VALID" in output and "SIGKILL: killed n" in output, output
    for check in ("kv: linearizable", "watch: watch", "lock-fenced: fencing"):
        assert re.search(rf"valid\s+{check}:", output), output
    report = tmp_path / "report"
    page = (report / "index.html").read_text()
    assert page.startswith("<!doctype html>") and "VALID" in page and "kill-leader" in page
    assert (report / "latency.png").read_bytes().startswith(b"\x89PNG")
    assert (report / "throughput.png").stat().st_size > 0
    assert "report/index.html" in (tmp_path / "report.html").read_text()
    nemesis = [e for e in _history(report) if e["process"] == -1 and e["type"] == "info"]
    assert [e["f"] for e in nemesis] == ["start", "stop", "heal"], nemesis
    assert re.fullmatch(r"kill-leader: killed n\d \(leader\), pid \d+", nemesis[0]["value"])
    assert re.fullmatch(r"kill-leader: restarted n\d, pid \d+", nemesis[1]["value"])
    pids = [int(p) for p in PIDS.findall(output)]
    assert len(pids) >= 5, output  # 3 started, the killed one, the restarted one
    assert not [p for p in pids if _alive(p)] and processes_under(tmp_path) == [], output
    assert not (report / "nodes").exists()  # the nodes' data went with them, logs kept
    assert sorted(p.name for p in (report / "logs").iterdir()) == ["n1.log", "n2.log", "n3.log"]
    assert wall_s < 120, f"{wall_s:.0f} s"


def test_service_demo_stops_everything_on_sigterm(tmp_path: Path) -> None:
    with _reaped(tmp_path):
        proc = subprocess.Popen(
            [*PNYX, "service-demo", "--duration", "60", "--report", "r.html"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, cwd=tmp_path,
        )  # fmt: skip
        try:
            _interrupt_midway(proc, tmp_path)
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _interrupt_midway(proc: subprocess.Popen[str], tmp_path: Path) -> None:
    """SIGTERM the demo once its cluster runs: it stops everything and says so."""
    output = ""
    assert proc.stdout is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not UP.search(output):
        line = proc.stdout.readline()
        if not line:
            break
        output += line
    up = UP.search(output)
    assert up, output
    pids = [int(p) for p in PIDS.findall(up[1])]
    assert len(pids) == 3 and all(_alive(p) for p in pids), output
    time.sleep(1.0)  # mid-workload (any moment will do: not a correctness wait)
    os.kill(proc.pid, signal.SIGTERM)
    # generous: on a loaded machine the clients' calls (2 s each) wind down, the nodes get
    # SIGTERM (SIGKILL after 10 s), then the checks and the report
    rest, _ = proc.communicate(timeout=120)
    output += rest
    assert proc.returncode == 3, output
    assert "interrupted: every process was stopped" in output, output
    assert "VERDICT: UNKNOWN" in output, output
    assert not [p for p in pids if _alive(p)] and processes_under(tmp_path) == [], output
    assert (tmp_path / "r" / "index.html").exists()


def test_the_demo_checks_catch_a_stale_read_a_watch_gap_and_a_stale_fenced_write() -> None:
    """The demo's verdict is not vacuous: a violation in each part fails that part's check
    (and only it), and the run's verdict is a violation."""
    from pnyx.check.history import History
    from pnyx.cli.service_demo_cmd import demo_workload
    from pnyx.harness.run import overall
    from pnyx.harness.workloads import WatchWorkload

    workload = demo_workload(workers=2, seed=1)  # clients: kv 0-1, watch 2-3, lock 4-5
    assert workload.concurrency == 6
    k0 = "pnyx-test/kv/k0"
    events = [HistoryEvent(*e) for e in (
        (0, "invoke", "put", "a", k0, 1), (0, "ok", "put", "a", k0, 2),
        (7, "invoke", "get", None, k0, 3),  # client 1, after an info
        (7, "ok", "get", None, k0, 4),  # stale: the put had returned
        (4, "invoke", "write", 12, None, 5), (4, "ok", "write", [12, 20], None, 6),
        (11, "invoke", "write", 10, None, 7), (11, "ok", "write", [10, 21], None, 8),
    )]  # fmt: skip
    watch = workload.parts[1]
    assert isinstance(watch, WatchWorkload)
    reference = [(20, "PUT", "pnyx-test/watch/k0", "v1"), (21, "PUT", "pnyx-test/watch/k1", "v2")]
    watch.reference, watch.final_revision = reference, 21
    watch.watched = {0: list(reference), 1: reference[1:], 2: list(reference)}
    checks = {c.name: c for c in workload.check(History.from_events(events))}
    assert {n: c.verdict for n, c in checks.items()} == {
        "kv: linearizable": "invalid", "watch: watch": "invalid",
        "lock-fenced: fencing": "invalid"}, checks  # fmt: skip
    assert "watcher 2" in checks["watch: watch"].counterexample
    assert overall(list(checks.values())) == "invalid"
