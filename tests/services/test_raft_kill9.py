"""Real 3-process Raft KV clusters under kill -9: no acknowledged write is lost, and the
recorded history is linearizable (checked with pnyx.check)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pnyx.check import History, KVModel, check_linearizable
from pnyx.cli.cluster_cmd import KillRestartNemesis, members_of
from pnyx.services.workload import run_kv_workload

PNYX = [sys.executable, "-m", "pnyx"]
SOAK = bool(os.environ.get("PNYX_SOAK"))
KILLS = 200 if SOAK else 5
INTERVAL_S = 0.7


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
