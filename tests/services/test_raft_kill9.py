"""Real 3-process Raft KV clusters under kill -9: no acknowledged write is lost, and the
recorded history is linearizable (checked with pnyx.check)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pnyx.check import History, KVModel, check_linearizable
from pnyx.cli.cluster_cmd import KillRestartNemesis, members_of, pid_alive
from pnyx.services.workload import run_kv_workload

PNYX = [sys.executable, "-m", "pnyx"]
SOAK = bool(os.environ.get("PNYX_SOAK"))
KILLS = 200 if SOAK else 5
INTERVAL_S = 0.7


@pytest.fixture
def raft_cluster(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "raft"
    up = subprocess.run(
        [
            *PNYX,
            "cluster",
            "up",
            "--nodes",
            "3",
            "--protocol",
            "raft",
            "--data-dir",
            str(data_dir),
            "--detach",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert up.returncode == 0, up.stderr
    try:
        yield data_dir
    finally:
        state = json.loads((data_dir / "cluster.json").read_text())
        for node in state["nodes"]:
            if pid_alive(node["pid"]):
                os.kill(node["pid"], signal.SIGKILL)


def test_kill9_loses_no_acknowledged_write_and_history_is_linearizable(raft_cluster: Path) -> None:
    nemesis = KillRestartNemesis(raft_cluster)
    result = run_kv_workload(
        members_of(raft_cluster),
        workers=3,
        nemesis=nemesis,
        nemesis_interval_s=INTERVAL_S,
        nemesis_rounds=KILLS,
        seed=7,
    )
    assert nemesis.kills == KILLS
    assert len(result.acked) > 20, f"too little progress under kills: {len(result.acked)}"
    assert result.lost_writes() == []
    verdict = check_linearizable(History.from_events(result.history), KVModel(), timeout_s=120)
    assert verdict.verdict == "linearizable", verdict.explain()
