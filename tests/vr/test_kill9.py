"""A real 3-process VR KV cluster (``pnyx cluster up --protocol vr``) under kill -9: no
acknowledged write is lost and the history is linearizable.

Disk-less VR tolerates f = 1 member down *or recovering* at a time, so the nemesis kills a
member only once every member reports normal status in one view (the restarted one has
recovered with the nonce protocol); ``pnyx.services.workload`` drives the clients."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pnyx.check import History, KVModel, check_linearizable
from pnyx.cli.cluster_cmd import (
    KillRestartNemesis,
    fetch_health,
    load_state,
    local_cluster_up,
    members_of,
)
from pnyx.services.workload import run_kv_workload
from tests.services.conftest import processes_under

SOAK = bool(os.environ.get("PNYX_SOAK"))
KILLS = 200 if SOAK else 4
INTERVAL_S = 0.7
KEYS = tuple(f"k{i:02d}" for i in range(24))
THINK_S = 0.005
"""Disk-less VR answers several times faster than the fsyncing protocols: with 3 keys and no
think time, 200 kills gave a history of ~1 M events whose appended values grew to ~100 KB
and the test process ran out of memory.  24 keys and 5 ms between operations keep the
values, the history and its per-key check small."""
SETTLE_S = 60.0
"""Bound on waiting for every member to be normal again before the next kill (a loaded
machine starts a Python process slowly)."""


@pytest.fixture
def vr_cluster(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "vr"
    try:
        local_cluster_up(data_dir, protocol="vr")
        yield data_dir
    finally:
        for pid in processes_under(tmp_path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class SettledKills:
    """kill -9 a random member once all members are normal in one view, then restart it."""

    def __init__(self, data_dir: Path) -> None:
        self.kill = KillRestartNemesis(data_dir)
        self.data_dir = data_dir
        self.waits_s: list[float] = []

    def settled(self) -> bool:
        state = load_state(self.data_dir)
        assert state is not None
        views = set()
        for node in state["nodes"]:
            health = fetch_health(node["metrics_port"])
            if not health or health.get("vr_state") != "normal":
                return False
            views.add(health.get("view"))
        return len(views) == 1

    def __call__(self, rng: random.Random) -> str:
        started = time.monotonic()
        while not self.settled():
            if time.monotonic() - started > SETTLE_S:
                raise AssertionError(f"members not all normal within {SETTLE_S} s")
            time.sleep(0.05)
        self.waits_s.append(time.monotonic() - started)
        return self.kill(rng)


def test_kill9_loses_no_acknowledged_write_and_history_is_linearizable(vr_cluster: Path) -> None:
    nemesis = SettledKills(vr_cluster)
    result = run_kv_workload(
        members_of(vr_cluster),
        workers=3,
        nemesis=nemesis,
        nemesis_interval_s=INTERVAL_S,
        nemesis_rounds=KILLS,
        seed=7,
        keys=KEYS,
        think_s=THINK_S,
    )
    assert nemesis.kill.kills == KILLS
    assert len(result.acked) > 10, f"too little progress under kills: {len(result.acked)}"
    assert result.lost_writes() == []
    verdict = check_linearizable(History.from_events(result.history), KVModel(), timeout_s=120)
    assert verdict.verdict == "linearizable", verdict.explain()
    if SOAK:  # 200 kills run past the runtime's checkpoint interval: kills hit compacted logs
        assert max(checkpoint_ops(vr_cluster)) > 0, "no member took a checkpoint"


def checkpoint_ops(data_dir: Path) -> list[int]:
    """Each member's checkpoint op-number (0: none yet), from its health report."""
    state = load_state(data_dir)
    assert state is not None
    healths = [fetch_health(node["metrics_port"]) or {} for node in state["nodes"]]
    return [int(health.get("checkpoint_op", 0)) for health in healths]
