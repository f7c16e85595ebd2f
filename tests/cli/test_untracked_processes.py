"""Issue 16 item 7: ``cluster start``/``up`` on a full disk never leave an untracked process.

The record (``cluster.json``) is written before each launch and after it; when the second
write fails the new process is killed; ``cluster down`` stops recorded and unrecorded
``pnyx serve`` processes of the data directory alike; ``cluster start`` of a running node
(recorded or not) starts nothing.

The full disk is real: a 2 MiB tmpfs mounted inside the test's temp dir (the tests run as
root) and filled; it is unmounted in a ``finally`` even when the test fails.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pnyx.cli import cluster_state
from pnyx.cli.cluster_state import node_processes, pid_alive, serve_processes
from pnyx.cli.main import cli
from tests.cli.cli_helpers import assert_one_line_error, pnyx, read_state, wait_for
from tests.services.conftest import processes_under

TMPFS_SIZE = "2m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted at ``tmp_path/disk``; processes on it are killed, then unmounted."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(f"this test needs to mount a tmpfs (run as root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        for pid in processes_under(mount_point):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not processes_under(mount_point), 30, "processes on the tmpfs gone")
        subprocess.run(["umount", str(mount_point)], check=False)
        if os.path.ismount(mount_point):
            subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(disk: Path) -> Path:
    """Fill ``disk`` until writes fail with ENOSPC; returns the filler file."""
    filler = disk / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb") as handle:
        try:
            for _ in range(10_000):  # bounded: far more than 2 MiB
                handle.write(chunk)
                handle.flush()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        else:
            raise AssertionError(f"{disk} never filled up")
    with contextlib.suppress(OSError):
        for _ in range(1000):  # the last pages
            with open(disk / "filler-tail", "ab") as tail:
                tail.write(b"\0" * 512)
    return filler


def _up_one_node(data_dir: Path) -> dict[str, Any]:
    args = ["--nodes", "1", "--protocol", "broadcast", "--data-dir", str(data_dir)]
    up = pnyx("cluster", "up", *args, "--detach")
    assert up.returncode == 0, up.stderr
    return read_state(data_dir)


def _kill_node(data_dir: Path, node_id: int) -> None:
    pid = read_state(data_dir)["nodes"][node_id - 1]["pid"]
    killed = pnyx("cluster", "kill", "--data-dir", str(data_dir), "--id", str(node_id))
    assert killed.returncode == 0, killed.stderr
    wait_for(lambda: not pid_alive(pid), 30, f"pid {pid} gone")


def test_start_on_a_full_disk_starts_nothing_and_a_second_start_no_duplicate(
    small_disk: Path,
) -> None:
    data_dir = small_disk / "cluster"
    _up_one_node(data_dir)
    _kill_node(data_dir, 1)
    before = (data_dir / "cluster.json").read_text()
    filler = fill(small_disk)

    result = pnyx("cluster", "start", "--data-dir", str(data_dir), "--id", "1")
    assert_one_line_error(result, 1, "No space left on device")
    assert "node 1 was not started" in result.stderr
    assert serve_processes(data_dir) == {}, "a process was left running"
    assert (data_dir / "cluster.json").read_text() == before, "the record was damaged"

    filler.unlink()
    (small_disk / "filler-tail").unlink(missing_ok=True)
    started = pnyx("cluster", "start", "--data-dir", str(data_dir), "--id", "1")
    assert started.returncode == 0 and "started node 1" in started.stdout, started.stderr
    again = pnyx("cluster", "start", "--data-dir", str(data_dir), "--id", "1")
    assert again.returncode == 0 and "already runs" in again.stdout, again.stderr
    assert len(node_processes(data_dir, data_dir / "node-1")) == 1
    down = pnyx("cluster", "down", "--data-dir", str(data_dir))
    assert down.returncode == 0 and "stopped 1 process" in down.stdout
    assert serve_processes(data_dir) == {}


def test_up_on_a_full_disk_starts_nothing(small_disk: Path) -> None:
    data_dir = small_disk / "cluster"
    data_dir.mkdir()
    fill(small_disk)
    result = pnyx("cluster", "up", "--nodes", "3", "--data-dir", str(data_dir), "--detach")
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result, 1, "No space left on device")
    assert serve_processes(data_dir) == {}


def test_record_failing_after_the_launch_kills_the_new_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second record write (after the launch) fails: the launched node is killed."""
    data_dir = tmp_path / "cluster"
    _up_one_node(data_dir)
    _kill_node(data_dir, 1)
    real_save = cluster_state.save_state
    calls: list[int] = []

    def save_then_fail(directory: Path, state: dict[str, object]) -> None:
        calls.append(1)
        if len(calls) >= 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(directory, state)

    monkeypatch.setattr(cluster_state, "save_state", save_then_fail)
    result = CliRunner().invoke(cli, ["cluster", "start", "--data-dir", str(data_dir), "--id", "1"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], result.stderr
    assert "stopped node 1 again" in lines[0]
    assert len(calls) == 2
    assert serve_processes(data_dir) == {}, "the launched process was left running"


def test_unrecorded_node_is_found_by_start_and_stopped_by_down(tmp_path: Path) -> None:
    """The pid in the record is lost (as when writing it failed): nothing runs twice."""
    data_dir = tmp_path / "cluster"
    state = _up_one_node(data_dir)
    [node] = state["nodes"]
    running = node["pid"]
    node["pid"] = None
    (data_dir / "cluster.json").write_text(json.dumps(state))

    status = pnyx("cluster", "status", "--data-dir", str(data_dir), "--json")
    assert json.loads(status.stdout)["pid"] == running
    again = pnyx("cluster", "start", "--data-dir", str(data_dir), "--id", "1")
    assert again.returncode == 0, again.stderr
    assert f"already runs (pid {running})" in again.stdout
    assert node_processes(data_dir, data_dir / "node-1") == [running]
    assert read_state(data_dir)["nodes"][0]["pid"] == running, "the found pid is recorded"

    (data_dir / "cluster.json").unlink()  # even without any record
    up = pnyx("cluster", "up", "--nodes", "1", "--data-dir", str(data_dir), "--detach")
    assert_one_line_error(up, 2, f"a cluster already runs in {data_dir} (pids {running})")
    down = pnyx("cluster", "down", "--data-dir", str(data_dir))
    assert down.returncode == 0 and "stopped 1 process" in down.stdout, down.stderr
    wait_for(lambda: not pid_alive(running), 30, "the unrecorded node stopped")


def test_down_resumes_and_stops_a_paused_node(tmp_path: Path) -> None:
    data_dir = tmp_path / "cluster"
    state = _up_one_node(data_dir)
    pid = state["nodes"][0]["pid"]
    paused = pnyx("cluster", "kill", "--data-dir", str(data_dir), "--id", "1", "--signal", "STOP")
    assert paused.returncode == 0
    down = pnyx("cluster", "down", "--data-dir", str(data_dir))
    assert down.returncode == 0 and "stopped 1 process" in down.stdout
    assert not pid_alive(pid)
    log = (data_dir / "node-1" / "node.log").read_text()
    assert "node_stopped" in log, "the paused node was killed instead of stopping cleanly"
