"""Real 3-process Multi-Paxos KV clusters under kill -9: no acknowledged write is lost and
the recorded history is linearizable (the workload and checker of the Raft test)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pnyx.check import History, KVModel, check_linearizable
from pnyx.cli.cluster_cmd import KillRestartNemesis, members_of
from pnyx.services.workload import run_kv_workload

SOAK = bool(os.environ.get("PNYX_SOAK"))
KILLS = 200 if SOAK else 5
INTERVAL_S = 0.7


def test_kill9_loses_no_acknowledged_write_and_history_is_linearizable(
    paxos_cluster: Path,
) -> None:
    state = json.loads((paxos_cluster / "cluster.json").read_text())
    assert state["protocol"] == "paxos" and len(members_of(paxos_cluster)) == 3
    nemesis = KillRestartNemesis(paxos_cluster)
    result = run_kv_workload(
        members_of(paxos_cluster),
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
