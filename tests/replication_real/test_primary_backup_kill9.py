"""Soak: a real primary-backup cluster (view manager + 3 servers) under a KV workload while
the primary is killed with SIGKILL and restarted, round after round; no acknowledged write
is lost and the history is linearizable.  Marked ``soak`` (not in the default suite)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from pnyx.check import History, KVModel, check_linearizable
from pnyx.cli.cluster_cmd import (
    cluster_command,
    fetch_health,
    load_state,
    local_cluster_up,
    members_of,
    pid_alive,
    signal_node,
    start_node,
)
from pnyx.services.schemes_workload import WorkloadPlan, run_scheme_workload

ROUNDS = 20 if os.environ.get("PNYX_SOAK") else 3
VIEW_BOUND_S = 60.0
POLL_S = 0.05


class PrimaryKiller:
    """Each round: wait for an acknowledged view with a serving primary and a backup, kill
    the primary, wait for the manager's next serving view, restart the old primary."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        state = load_state(data_dir)
        assert state is not None
        self.ports = {int(n["id"]): int(n["metrics_port"]) for n in state["nodes"]}
        self.manager = int(state["config_node"])

    async def __call__(self) -> list[str]:
        done = []
        for _ in range(ROUNDS):
            view, primary = await self._serving_view(exclude=None)
            pid = await asyncio.to_thread(signal_node, self.data_dir, primary, "KILL")
            deadline = time.monotonic() + VIEW_BOUND_S
            while pid_alive(pid) and time.monotonic() < deadline:
                await asyncio.sleep(POLL_S)
            next_view, next_primary = await self._serving_view(exclude=primary)
            await asyncio.to_thread(start_node, self.data_dir, primary)
            done.append(f"kill -9 primary {primary} of view {view}; view {next_view} has "
                        f"primary {next_primary}")  # fmt: skip
        return done

    async def _health(self, node: int) -> dict[str, Any]:
        return await asyncio.to_thread(fetch_health, self.ports[node]) or {}

    async def _serving_view(self, exclude: int | None) -> tuple[int, int]:
        """(view, primary) once the manager's view is acknowledged, has a backup holding
        the state, and its primary (not ``exclude``) serves."""
        deadline = time.monotonic() + VIEW_BOUND_S
        while time.monotonic() < deadline:
            manager = await self._health(self.manager)
            primary, view = manager.get("leader"), manager.get("term")
            if manager.get("acked") and primary and primary != exclude:
                roles = {n: (await self._health(n)).get("role") for n in self.ports}
                if roles.get(primary) == "primary" and "backup" in roles.values():
                    return int(view or 0), int(primary)
            await asyncio.sleep(POLL_S)
        raise AssertionError(f"no serving view without node {exclude} in {VIEW_BOUND_S} s")


@pytest.mark.soak
def test_kill9_of_the_primary_loses_no_acknowledged_write(tmp_path: Path) -> None:
    data_dir = tmp_path / "pb"
    local_cluster_up(data_dir, nodes=3, protocol="primary-backup")
    try:
        plan = WorkloadPlan("primary-backup", members_of(data_dir), workers=3,
                            duration_s=60.0 * ROUNDS, seed=11)  # fmt: skip
        run = asyncio.run(run_scheme_workload(plan, PrimaryKiller(data_dir)))
    finally:
        down = cluster_command("down", "--data-dir", str(data_dir))
    assert down.returncode == 0, down.stderr
    assert len(run.faults) == ROUNDS, run.faults
    assert len(run.acked) > 20, f"too little progress under kills: {len(run.acked)}"
    assert run.lost_writes() == []
    verdict = check_linearizable(History.from_events(run.history), KVModel(), timeout_s=120)
    assert verdict.verdict == "linearizable", verdict.explain()
