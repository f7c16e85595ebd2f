"""``pnyx service-demo`` (what ``make run`` runs), end to end with a short workload, and
stopped midway by SIGTERM: either way no process of its cluster is left running."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.cli.cli_helpers import PNYX
from tests.services.conftest import processes_under

CLUSTER_DIR = re.compile(r"processes in (\S+/cluster)")


@contextlib.contextmanager
def _demo_tmp(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The demo's environment with its temporary cluster directory under ``tmp_path``; if
    the test fails midway (a time-out kills the demo), its nodes are killed by pid."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    try:
        yield env
    finally:
        for pid in processes_under(tmp_path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _cluster_dir(output: str) -> Path:
    match = CLUSTER_DIR.search(output)
    assert match, output
    return Path(match[1])


def test_service_demo_end_to_end(tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    with _demo_tmp(tmp_path) as env:
        result = subprocess.run(
            [*PNYX, "service-demo", "--duration", "4", "--report", str(report)],
            capture_output=True, text=True, timeout=150, check=False, cwd=tmp_path, env=env,
        )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "VERDICT: OK" in output and "SIGKILL the leader" in output, output
    for check in ("linearizability", "watcher 1", "watcher 2", "watcher 3", "lock"):
        assert f"ok   {check}:" in output, output
    page = report.read_text()
    assert page.startswith("<!doctype html>") and "Verdict: OK" in page
    assert "SIGKILL the leader" in page and "linearizable" in page
    data_dir = _cluster_dir(output)
    assert not data_dir.exists()  # the temporary directory is gone ...
    assert processes_under(data_dir.parent) == []  # ... and so is every process


def test_service_demo_stops_everything_on_sigterm(tmp_path: Path) -> None:
    with _demo_tmp(tmp_path) as env:
        proc = subprocess.Popen(
            [*PNYX, "service-demo", "--duration", "60", "--report", str(tmp_path / "r.html")],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, cwd=tmp_path, env=env,
        )  # fmt: skip
        try:
            _interrupt_midway(proc)
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _interrupt_midway(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the demo once its cluster runs: it stops everything and says so."""
    output = ""
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "ETCDCTL_ENDPOINTS" not in output:
        line = proc.stdout.readline()
        if not line:
            break
        output += line
    assert "ETCDCTL_ENDPOINTS" in output, output
    data_dir = _cluster_dir(output)
    assert processes_under(data_dir), "the cluster should run now"
    time.sleep(1.0)  # mid-workload (any moment will do: not a correctness wait)
    os.kill(proc.pid, signal.SIGTERM)
    # generous: on a loaded machine the workers' calls (3 s each) wind down, then a
    # `pnyx cluster down` child starts and stops three nodes
    rest, _ = proc.communicate(timeout=180)
    output += rest
    assert proc.returncode == 1, output
    assert "interrupted: stopping the cluster" in output and "VERDICT: FAILED" in output
    assert processes_under(data_dir.parent) == [], output


def test_the_checks_catch_a_stale_read_a_watch_gap_and_overlapping_holders(
    tmp_path: Path,
) -> None:
    """The demo's verdict is not vacuous: corrupted recordings fail each check."""
    from rich.console import Console

    from pnyx.cli.service_demo_cmd import Run, _verdict

    run = Run(start_revision=2, final_revision=4, final_counter=2, duration_s=1.0)
    for kind, f, value in (("invoke", "put", "a"), ("ok", "put", "a"),
                           ("invoke", "get", None), ("ok", "get", None)):  # stale read
        run.record(1, kind, f, value, "demo/k0")  # type: ignore[arg-type]
    run.acked = [("demo/k0", "a", 2), ("demo/k1", "b", 3), ("demo/end", "end", 4)]
    run.reference = [(2, "PUT", "demo/k0", "a"), (3, "PUT", "demo/k1", "b"),
                     (4, "PUT", "demo/end", "end")]  # fmt: skip
    run.watched = {0: list(run.reference), 1: [run.reference[0], run.reference[2]],
                   2: [run.reference[0], *run.reference]}  # fmt: skip
    run.sections = [(0.0, 2.0, 10), (1.0, 3.0, 11)]  # overlapping holders
    console = Console(record=True, width=200)
    report = tmp_path / "r.html"
    assert _verdict(run, console, report) is False
    text = console.export_text()
    assert "FAIL linearizability" in text and "not-linearizable" in text
    assert "ok   watcher 1" in text
    assert "FAIL watcher 2" in text and "FAIL watcher 3" in text and "1 duplicates" in text
    assert "FAIL lock: 2 critical sections, 1 overlapping" in text
    assert "Verdict: FAILED" in report.read_text()
