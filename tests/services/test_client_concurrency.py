"""Many concurrent calls on one AsyncClient survive a leader being killed mid-flight."""

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


def test_concurrent_calls_follow_one_failover(raft_cluster: Path) -> None:
    state = json.loads((raft_cluster / "cluster.json").read_text())
    replies, client = asyncio.run(_read_storm(raft_cluster, state))
    assert len(replies) == CALLS and all(r.ok and r.result == "" for r in replies)
    # one failover moves every call: far fewer switches than calls
    assert client.redirects + client.retries < CALLS


async def _read_storm(
    data_dir: Path, state: dict[str, object]
) -> tuple[list[ClientReply], AsyncClient]:
    client = AsyncClient(members_of(data_dir), KV_MESSAGES, request_timeout_s=1.0)
    first = await client.call(lambda rid: ReadRequest(rid, KvOp("get", "k")))
    assert first.ok
    nodes: list[dict[str, int]] = state["nodes"]  # type: ignore[assignment]
    leader = next(n for n in nodes if n["id"] == client.target)
    calls = [
        asyncio.ensure_future(client.call(lambda rid: ReadRequest(rid, KvOp("get", "k"))))
        for _ in range(CALLS)
    ]
    await asyncio.sleep(0.01)
    os.kill(leader["pid"], signal.SIGKILL)
    replies = await asyncio.gather(*calls)
    await client.close()
    return list(replies), client
