"""``pnyx sim --jobs N``: worker processes give the per-seed results of a serial run.

Workers are started with ``spawn`` and import the specs below by ``module:attribute``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pnyx.catalog import get_protocol
from pnyx.cli.main import cli
from pnyx.protocols.raft.config import LEADER_APPLY_BEFORE_QUORUM
from pnyx.protocols.raft.spec import raft_spec
from pnyx.sim.parallel import SeedError, SeedPool, WorkerCrashed, run_seeds
from pnyx.sim.runner import SimConfig, SimResult, run_sim
from pnyx.sim.schedule import parse_faults

HERE = "tests.sim.test_parallel"
ALL = parse_faults("all")
BOUND_S = 60.0
"""Generous bound for anything a test waits on (two busy cores)."""

MUTANT = raft_spec(frozenset({LEADER_APPLY_BEFORE_QUORUM}), name="raft-apply-before-quorum")


def _exit_in_monitor(node_ids: tuple[int, ...]) -> Any:
    os._exit(7)  # a worker process dying mid-seed (e.g. killed by the OOM killer)


def _raise_in_monitor(node_ids: tuple[int, ...]) -> Any:
    raise RuntimeError("monitor exploded")


DIES = dataclasses.replace(get_protocol("broadcast"), name="dies", make_monitor=_exit_in_monitor)
RAISES = dataclasses.replace(
    get_protocol("broadcast"), name="raises", make_monitor=_raise_in_monitor
)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); it has exited and holds no resources but its entry.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True


def _key(result: SimResult) -> tuple[Any, ...]:
    stats = dataclasses.replace(result.stats, wall_s=0.0)
    return (result.seed, result.violation, result.trace_hash, stats, result.unknown)


def _invoke(cwd: Path, *args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = runner.invoke(cli, ["sim", *args])
    finally:
        os.chdir(old)
    return result.exit_code, result.stdout, result.stderr


def _without_wall_time(stdout: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in stdout.splitlines()]
    for record in records:
        record.pop("wall_s", None)
    return records


@pytest.mark.parametrize(("protocol", "status"), [("raft", 0), ("broadcast-broken", 1)])
def test_cli_jobs_2_prints_what_a_serial_run_prints(
    tmp_path: Path, protocol: str, status: int
) -> None:
    args = [protocol, "--seeds", "0..19", "--json", "--trace-hash"]
    serial_dir, parallel_dir = tmp_path / "serial", tmp_path / "parallel"
    serial_dir.mkdir()
    parallel_dir.mkdir()
    serial = _invoke(serial_dir, *args)
    parallel = _invoke(parallel_dir, *args, "--jobs", "2")
    assert serial[0] == parallel[0] == status, (serial[2], parallel[2])
    serial_records = _without_wall_time(serial[1])
    assert serial_records == _without_wall_time(parallel[1])
    seeds = [r["seed"] for r in serial_records if "seed" in r]
    assert seeds == list(range(20))
    assert all(len(r["trace_hash"]) == 32 for r in serial_records if "seed" in r)
    shrunk = [r for r in serial_records if r.get("shrunk")]
    if status == 1:
        # The failing seed's replay command and shrunk schedule: once, as in a serial run.
        assert len(shrunk) == 1
        first_failure = next(r for r in serial_records if r.get("ok") is False)
        assert f"--seed {first_failure['seed']} " in shrunk[0]["replay"]
        assert (serial_dir / shrunk[0]["schedule_file"]).read_bytes() == (
            parallel_dir / shrunk[0]["schedule_file"]
        ).read_bytes()
    else:
        assert shrunk == []


def _without_rate(text: str) -> list[str]:
    """The rich table's last column (deliveries per wall second) depends on timing, and
    so do the table's column widths."""
    lines = [re.sub(r"[\d,]+(\s*│)$", r"#\1", line) for line in text.splitlines()]
    return [re.sub(r"([─━ ])\1+", r"\1", line) for line in lines]


def test_cli_rich_output_names_the_same_failing_seeds(tmp_path: Path) -> None:
    args = ["broadcast-broken", "--seeds", "0..9", "--no-shrink", "--trace-hash"]
    serial = _invoke(tmp_path, *args)
    parallel = _invoke(tmp_path, *args, "--jobs", "3")
    assert serial[0] == parallel[0] == 1
    assert _without_rate(serial[1]) == _without_rate(parallel[1])
    assert "failing seeds:" in serial[1] and "seed 9 trace hash " in serial[1]


def test_pool_gives_a_mutant_the_serial_verdicts_and_trace_hashes() -> None:
    base = SimConfig(seed=0, faults=ALL, hash_trace=True)
    serial = [_key(run_sim(MUTANT, dataclasses.replace(base, seed=s))) for s in range(20)]
    parallel = [_key(r) for r in run_seeds(f"{HERE}:MUTANT", base, range(20), 2)]
    assert parallel == serial
    assert any(key[1] is not None for key in serial), "the mutant must fail some seed"


def test_results_come_in_the_order_seeds_were_given() -> None:
    base = SimConfig(seed=0, faults=ALL)
    order = [7, 2, 11, 3, 5]
    assert [r.seed for r in run_seeds("broadcast", base, order, 3)] == order


def test_a_dying_worker_is_reported_and_no_worker_is_left() -> None:
    pool = SeedPool(f"{HERE}:DIES", SimConfig(seed=0), 2)
    started = time.monotonic()
    with pytest.raises(WorkerCrashed) as caught:
        list(pool.results(range(5)))
    assert time.monotonic() - started < BOUND_S
    assert caught.value.exitcode == 7 and caught.value.seed in range(5)
    assert f"pid {caught.value.pid} died (exit code 7) while running seed" in str(caught.value)
    assert pool.pids and all(_gone(pid) for pid in pool.pids)


def test_a_worker_killed_by_pid_is_reported() -> None:
    pool = SeedPool("raft", SimConfig(seed=0, faults=ALL), 2)
    results = pool.results(range(500))
    next(results)
    victim = pool.pids[0]
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(WorkerCrashed) as caught:
        for _ in results:
            pass
    assert caught.value.pid == victim and caught.value.exitcode == -signal.SIGKILL
    assert all(_gone(pid) for pid in pool.pids)


def test_an_exception_in_a_seed_stops_the_pool_with_its_traceback() -> None:
    pool = SeedPool(f"{HERE}:RAISES", SimConfig(seed=0), 2)
    with pytest.raises(SeedError) as caught:
        list(pool.results(range(10)))
    assert "RuntimeError: monitor exploded" in caught.value.worker_traceback
    assert "monitor exploded" in str(caught.value)
    assert all(_gone(pid) for pid in pool.pids)


def test_closing_the_results_early_stops_every_worker() -> None:
    pool = SeedPool("raft", SimConfig(seed=0, faults=ALL), 2)
    results = pool.results(range(500))
    first = next(results)
    assert first.seed == 0
    results.close()
    assert len(pool.pids) == 2 and all(_gone(pid) for pid in pool.pids)


def test_cli_exit_status_on_a_worker_error_is_1_with_one_message(tmp_path: Path) -> None:
    # The CLI resolves catalogue names only; drive its seed loop through the same pool API.
    from pnyx.cli import sim_cmd

    with pytest.raises(SystemExit) as caught:
        list(sim_cmd._seed_results(RAISES, SimConfig(seed=0), range(4), 2))
    assert caught.value.code == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["raft", "--seeds", "0..3", "--jobs", "0"], "--jobs must be between 1 and 64, got 0"),
        (["raft", "--seeds", "0..3", "--jobs", "65"], "--jobs must be between 1 and 64, got 65"),
        (["raft", "--seed", "3", "--jobs", "2"], "--jobs runs the seeds of --seeds"),
    ],
)
def test_bad_jobs_is_one_line_and_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    code, _out, err = _invoke(tmp_path, *args)
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(p) for p in (task / "children").read_text().split()}
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def test_ctrl_c_stops_the_cli_and_its_workers(tmp_path: Path) -> None:
    pnyx = Path(sys.executable).with_name("pnyx")
    proc = subprocess.Popen(
        [str(pnyx), "sim", "raft", "--seeds", "0..99999", "--jobs", "2", "--json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    workers: set[int] = set()
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # a seed result: the workers are running
        assert json.loads(first)["seed"] == 0
        workers = _children(proc.pid)
        assert len(workers) >= 2  # the two workers (and multiprocessing's resource tracker)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=BOUND_S)
        assert proc.returncode != 0
        deadline = time.monotonic() + BOUND_S
        while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(_gone(pid) for pid in workers)
    finally:
        for pid in [proc.pid, *workers]:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=BOUND_S)
