"""Many concurrent calls on one AsyncClient survive a leader being killed mid-flight.

The leader is paused (SIGSTOP) before the calls go out and killed (SIGKILL) once all of
them wait for its reply, so every call really is in flight at the failover, however busy
the machine is (an unpaused leader often answered all of them before the kill landed).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from pnyx.cli.cluster_cmd import members_of
from pnyx.core import ClientReply
from pnyx.protocols.raft import KvOp, ReadRequest
from pnyx.services.client import AsyncClient
from pnyx.services.kv import KV_MESSAGES

PNYX = [sys.executable, "-m", "pnyx"]
CALLS = 200
STORM_BOUND_S = 120.0
"""The whole storm, failover included; each call's own deadline is 30 s."""
MAX_SWITCHES = CALLS // 4
"""One failover, then a few moves while no leader is known yet: far fewer than calls."""


def test_concurrent_calls_follow_one_failover(raft_cluster: Path) -> None:
    state = json.loads((raft_cluster / "cluster.json").read_text())
    replies, client, switches = asyncio.run(_read_storm(raft_cluster, state))
    assert len(replies) == CALLS and all(r.ok and r.result == "" for r in replies)
    # every call lost its reply path when the leader died, and was retried
    assert client.retries >= CALLS
    # one failover moves every call at once: far fewer switches than calls
    assert 1 <= switches < MAX_SWITCHES, f"{switches} switches for one failover"


async def _read_storm(
    data_dir: Path, state: dict[str, object]
) -> tuple[list[ClientReply], AsyncClient, int]:
    """The replies, the client, and how often it switched member after the kill."""
    client = AsyncClient(members_of(data_dir), KV_MESSAGES, request_timeout_s=2.0)
    try:
        async with asyncio.timeout(STORM_BOUND_S):
            first = await client.call(lambda rid: ReadRequest(rid, KvOp("get", "k")))
            assert first.ok
            nodes: list[dict[str, int]] = state["nodes"]  # type: ignore[assignment]
            leader = next(n for n in nodes if n["id"] == client.target)
            os.kill(leader["pid"], signal.SIGSTOP)
            switches_before = client.switches
            calls = [
                asyncio.ensure_future(client.call(lambda rid: ReadRequest(rid, KvOp("get", "k"))))
                for _ in range(CALLS)
            ]
            while client.in_flight < CALLS and client.switches == switches_before:
                await asyncio.sleep(0.001)
            assert client.in_flight == CALLS, "the calls did not all reach the paused leader"
            os.kill(leader["pid"], signal.SIGKILL)
            replies = await asyncio.gather(*calls)
    finally:
        await client.close()
    return list(replies), client, client.switches - switches_before
