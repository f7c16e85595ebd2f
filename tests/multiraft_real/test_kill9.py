"""A real 3-process multi-Raft cluster with 8 ranges under kill -9: concurrent clients append
unique tokens to keys spread over every range while random processes are killed and
restarted; then no acknowledged write is lost, every key's history is linearizable and
every range still has a leader and answers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pnyx.check import History, KVModel, check_linearizable
from pnyx.cli.cluster_cmd import KillRestartNemesis, members_of
from pnyx.cli.kv_cmd import kv
from tests.multiraft_real.conftest import RANGES
from tests.multiraft_real.workload import run_workload

INTERVAL_S = 0.8


def _run(data_dir: Path, kills: int) -> None:
    state = json.loads((data_dir / "cluster.json").read_text())
    assert state["protocol"] == "multiraft"
    members = members_of(data_dir)
    assert len(members) == 3
    nemesis = KillRestartNemesis(data_dir)
    result = asyncio.run(
        run_workload(
            members,
            key_count=24,
            workers=4,
            nemesis=nemesis,
            rounds=kills,
            interval_s=INTERVAL_S,
            seed=11,
        )
    )
    assert nemesis.kills == kills
    assert len(result.ranges) >= RANGES
    leaderless = [r.desc.range_id for r in result.ranges if r.leader is None]
    assert not leaderless, f"ranges without a leader at the end: {leaderless}"
    served = {
        r.desc.range_id for r in result.ranges if any(r.desc.contains(k) for k in result.keys)
    }
    assert len(served) >= RANGES, f"keys reach only ranges {sorted(served)}"
    assert len(result.acked) > 20, f"too little progress under kills: {len(result.acked)}"
    print(f"acked {len(result.acked)} indeterminate {result.indeterminate} kills {kills}")
    assert result.lost_writes() == []
    verdict = check_linearizable(History.from_events(result.history), KVModel(), timeout_s=120)
    assert verdict.verdict == "linearizable", verdict.explain()


def test_kill9_loses_no_acknowledged_write_and_every_range_stays_served(
    multiraft_cluster: Path,
) -> None:
    _run(multiraft_cluster, 4)
    # pnyx kv against the cluster after the kills.
    runner = CliRunner()
    target = ["--data-dir", str(multiraft_cluster)]
    assert runner.invoke(kv, [*target, "put", "cli-key", "v1"]).output.strip() == "OK"
    assert json.loads(runner.invoke(kv, [*target, "get", "cli-key"]).output) == "v1"
    shown = runner.invoke(kv, [*target, "ranges"])
    assert shown.exit_code == 0, shown.output
    assert f"{RANGES} ranges" in shown.output
    for line in ("│ 1  │ ''    │ '4i'", "│ 8  │ 'vi'  │ (end)"):
        assert line in shown.output, shown.output


@pytest.mark.soak
def test_kill9_200_times(multiraft_cluster: Path) -> None:
    _run(multiraft_cluster, 200)
