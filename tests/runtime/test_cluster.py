"""Three real nodes on loopback TCP: replication end to end, restart from the WAL, metrics."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

from pnyx.core import ClientReply
from tests.runtime.runtime_helpers import run_async, wait_until
from tests.runtime.runtime_toy import Add, Cluster, Ping


async def add_all(cluster: Cluster, values: range, first_request: int = 1) -> list[ClientReply]:
    client = await cluster.client(1)
    try:
        replies = []
        for offset, value in enumerate(values):
            request_id = first_request + offset
            replies.append(await client.request(Add(request_id, value), request_id, 5.0))
        return replies
    finally:
        await client.close()


def test_three_nodes_replicate_and_a_restarted_node_recovers_from_its_wal(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = Cluster(tmp_path, 3)
        try:
            await cluster.start_all()
            replies = await add_all(cluster, range(1, 21))
            assert [r.result for r in replies] == [sum(range(1, n + 1)) for n in range(1, 21)]
            assert all(r.ok for r in replies)
            want = sum(range(1, 21))
            await wait_until(
                lambda: all(m.total == want for m in cluster.machines.values()),
                what="every node applied all 20 adds",
            )
            # Node 3 goes away; the primary and node 2 still form a majority.
            await cluster.stop(3)
            more = await add_all(cluster, range(21, 31), first_request=21)
            want = sum(range(1, 31))
            assert more[-1].result == want
            # Node 3 comes back: its WAL still holds the first 20 entries ...
            runner = await cluster.start(3)
            assert runner.wal.state.last_index == 20
            assert len(cluster.node(3).log) == 20
            # ... and it catches up with the rest from the primary.
            await wait_until(lambda: cluster.machines[3].total == want, what="node 3 caught up")
            assert cluster.machines[3].applied == 30
            # The primary restarts too: nothing acknowledged is lost.
            await cluster.stop(1)
            await cluster.start(1)
            assert len(cluster.node(1).log) == 30
            await wait_until(lambda: cluster.machines[1].total == want, what="primary re-applied")
            last = await add_all(cluster, range(31, 32), first_request=31)
            assert last[0].result == want + 31
        finally:
            await cluster.close()

    run_async(scenario(), 30.0)


def test_backup_redirects_and_peers_ping(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = Cluster(tmp_path, 3)
        try:
            await cluster.start_all()
            client = await cluster.client(2)
            try:
                assert client.client_id >= 1000 and client.node_id == 2
                reply = await client.request(Add(7, 1), 7, 5.0)
                assert not reply.ok and reply.leader_hint == 1
            finally:
                await client.close()
            # A message a node sends to a peer arrives over the transport.
            cluster.runners[2].transport.send(3, Ping(42))
            await wait_until(lambda: (3, 42) in cluster.node(2).pongs, what="pong from node 3")
        finally:
            await cluster.close()

    run_async(scenario())


def test_metrics_and_health_endpoints(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = Cluster(tmp_path, 1)
        try:
            runner = await cluster.start(1, metrics_port=0)
            await add_all(cluster, range(1, 6))
            address = runner.metrics_address
            assert address is not None
            base = f"http://{address[0]}:{address[1]}"
            metrics = await asyncio.to_thread(fetch, base + "/metrics")
            assert "pnyx_proposals_total 5.0" in metrics
            assert "pnyx_applies_total 5.0" in metrics
            assert "pnyx_fsync_seconds_count" in metrics
            assert runner.metrics.sample("pnyx_fsync_seconds_count") >= 5
            assert "pnyx_leader 1.0" in metrics
            health = await asyncio.to_thread(fetch, base + "/health")
            assert '"status": "ok"' in health and '"last_applied": 5' in health
        finally:
            await cluster.close()

    run_async(scenario())


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body.decode()
