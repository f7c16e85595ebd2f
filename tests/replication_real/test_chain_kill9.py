"""Real 3-replica chain and CRAQ clusters under a KV workload: kill -9 the head, then the
middle, then the tail (each restarted, and re-added at the tail by the master once it
removed it); no acknowledged write is lost and the recorded history is linearizable."""

from __future__ import annotations

import asyncio
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

REPAIR_BOUND_S = 60.0
"""How long the chain may take to be whole again after a kill (a loaded machine)."""
POLL_S = 0.05
POSITIONS = {"head": 0, "middle": 1, "tail": -1}


class ChainNemesis:
    """Kills the chain's head, middle and tail in turn, restarting each after the master
    removed it, and waits for the master to repair the chain before the next kill."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        state = load_state(data_dir)
        assert state is not None
        self.ports = {int(n["id"]): int(n["metrics_port"]) for n in state["nodes"]}
        self.master = int(state["config_node"])
        self.replicas = sorted(n for n in self.ports if n != self.master)
        self.victims: list[int] = []

    async def __call__(self) -> list[str]:
        done = []
        for position, index in POSITIONS.items():
            chain = await self._whole_chain()
            victim = chain[index]
            pid = await asyncio.to_thread(signal_node, self.data_dir, victim, "KILL")
            await self._until_gone(pid, victim)
            await self._until_removed(victim)
            await asyncio.to_thread(start_node, self.data_dir, victim)
            self.victims.append(victim)
            done.append(f"kill -9 {position} (node {victim}) of chain {chain}, restarted")
        await self._whole_chain()
        return done

    async def _health(self, node: int) -> dict[str, Any]:
        return await asyncio.to_thread(fetch_health, self.ports[node]) or {}

    async def _whole_chain(self) -> list[int]:
        """The chain once every replica is in it with the state at the master's epoch."""
        deadline = time.monotonic() + REPAIR_BOUND_S
        while time.monotonic() < deadline:
            master = await self._health(self.master)
            chain = list(master.get("members") or [])
            if sorted(chain) == self.replicas and await self._all_hold_state(master["epoch"]):
                return chain
            await asyncio.sleep(POLL_S)
        raise AssertionError(f"chain not repaired within {REPAIR_BOUND_S} s")

    async def _all_hold_state(self, epoch: int) -> bool:
        for node in self.replicas:
            health = await self._health(node)
            if not health.get("has_state") or health.get("epoch") != epoch:
                return False
        return True

    async def _until_removed(self, victim: int) -> None:
        deadline = time.monotonic() + REPAIR_BOUND_S
        while time.monotonic() < deadline:
            if victim not in ((await self._health(self.master)).get("members") or [victim]):
                return
            await asyncio.sleep(POLL_S)
        raise AssertionError(f"the master did not remove node {victim}")

    async def _until_gone(self, pid: int, victim: int) -> None:
        deadline = time.monotonic() + REPAIR_BOUND_S
        while pid_alive(pid):
            if time.monotonic() > deadline:
                raise AssertionError(f"node {victim} (pid {pid}) still runs after SIGKILL")
            await asyncio.sleep(POLL_S)


@pytest.mark.parametrize("protocol", ["chain", "craq"])
def test_kill9_head_middle_tail_loses_no_acknowledged_write(tmp_path: Path, protocol: str) -> None:
    data_dir = tmp_path / protocol
    local_cluster_up(data_dir, nodes=3, protocol=protocol)
    try:
        nemesis = ChainNemesis(data_dir)
        plan = WorkloadPlan(protocol, members_of(data_dir), workers=3, duration_s=240.0, seed=7)
        run = asyncio.run(run_scheme_workload(plan, nemesis))
    finally:
        down = cluster_command("down", "--data-dir", str(data_dir))
    assert down.returncode == 0, down.stderr
    assert len(run.faults) == 3, run.faults
    chain_positions = {fault.split(" (")[0] for fault in run.faults}
    assert chain_positions == {"kill -9 head", "kill -9 middle", "kill -9 tail"}
    assert len(run.acked) > 20, f"too little progress under kills: {len(run.acked)}"
    assert run.lost_writes() == []
    verdict = check_linearizable(History.from_events(run.history), KVModel(), timeout_s=120)
    assert verdict.verdict == "linearizable", verdict.explain()
