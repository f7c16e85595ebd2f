"""``pnyx cluster up/status/down`` and ``pnyx serve``: real processes on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pnyx.cli.cluster_cmd import pid_alive

PNYX = [sys.executable, "-m", "pnyx"]


def _run(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PNYX, *args], capture_output=True, text=True, timeout=timeout_s)


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "cluster"
    yield data_dir
    # Whatever happened, leave no process behind: kill what the state file names.
    state_file = data_dir / "cluster.json"
    if state_file.exists():
        for node in json.loads(state_file.read_text())["nodes"]:
            if pid_alive(node["pid"]):
                os.kill(node["pid"], signal.SIGKILL)


def test_up_status_down_leaves_no_process(cluster_dir: Path) -> None:
    up = _run("cluster", "up", "--nodes", "3", "--data-dir", str(cluster_dir), "--detach")
    assert up.returncode == 0, up.stderr
    state = json.loads((cluster_dir / "cluster.json").read_text())
    pids = [n["pid"] for n in state["nodes"]]
    assert len(pids) == 3 and all(pid_alive(p) for p in pids)

    status = _run("cluster", "status", "--data-dir", str(cluster_dir), "--json")
    rows = [json.loads(line) for line in status.stdout.splitlines()]
    assert status.returncode == 0
    assert [r["id"] for r in rows] == [1, 2, 3] and {r["state"] for r in rows} == {"up"}

    again = _run("cluster", "up", "--nodes", "3", "--data-dir", str(cluster_dir), "--detach")
    assert again.returncode == 2 and "already runs" in again.stderr

    down = _run("cluster", "down", "--data-dir", str(cluster_dir))
    assert down.returncode == 0 and "stopped 3" in down.stdout
    assert not any(pid_alive(p) for p in pids)
    assert not (cluster_dir / "cluster.json").exists()


def test_status_and_down_without_cluster_are_clear_errors(tmp_path: Path) -> None:
    for command in ("status", "down"):
        result = _run("cluster", command, "--data-dir", str(tmp_path))
        assert result.returncode == 2
        assert "no cluster in" in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--id", "1", "--peers", "1=127.0.0.1:x"], "bad peer '1=127.0.0.1:x'"),
        (["--id", "4", "--peers", "1=127.0.0.1:7001"], "--id 4 is not listed"),
        (["--id", "1", "--peers", "1=127.0.0.1:7001", "--protocol", "zab"], "unknown protocol"),
    ],
)
def test_serve_rejects_bad_arguments(tmp_path: Path, args: list[str], needle: str) -> None:
    result = _run("serve", *args, "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    assert needle in result.stderr


def test_client_broadcast_reaches_every_process(cluster_dir: Path) -> None:
    import time

    from pnyx.cli.cluster_cmd import fetch_health
    from pnyx.protocols.broadcast import WIRE_TYPES, Broadcast
    from pnyx.services.client import Client

    up = _run(
        "cluster", "up", "--nodes", "3", "--protocol", "broadcast", "--data-dir",
        str(cluster_dir), "--detach",
    )
    assert up.returncode == 0, up.stderr
    state = json.loads((cluster_dir / "cluster.json").read_text())
    members = {}
    for node in state["nodes"]:
        host, port = node["address"].split(":")
        members[node["id"]] = (host, int(port))
    with Client(members, WIRE_TYPES) as client:
        replies = [client.call(lambda rid, i=i: Broadcast(rid, f"m{i}", i)) for i in range(5)]
    assert all(r.ok for r in replies)
    assert [r.result for r in replies] == [f"m{i}" for i in range(5)]
    deadline = time.monotonic() + 20
    applied: list[object] = []
    while time.monotonic() < deadline:
        applied = [
            (fetch_health(n["metrics_port"]) or {}).get("last_applied") for n in state["nodes"]
        ]
        if applied == [5, 5, 5]:
            break
        time.sleep(0.1)
    assert applied == [5, 5, 5]
    assert _run("cluster", "down", "--data-dir", str(cluster_dir)).returncode == 0
