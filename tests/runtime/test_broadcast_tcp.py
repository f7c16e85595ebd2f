"""The lead's reliable broadcast, unchanged, over real TCP with a durable WAL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pnyx.core import ClientReply
from pnyx.protocols.broadcast import (
    CLIENT_MESSAGE_TYPES,
    PEER_MESSAGE_TYPES,
    WIRE_TYPES,
    Broadcast,
    BroadcastNode,
    Delivery,
    make_node,
)
from pnyx.runtime import PersistCodec
from tests.runtime.runtime_helpers import run_async, wait_until
from tests.runtime.runtime_toy import Cluster


class Deliveries:
    """State machine: the message ids delivered, in order."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def apply(self, command: Any) -> Any:
        assert isinstance(command, Delivery)
        self.ids.append(command.msg_id)
        return len(self.ids)

    def snapshot(self) -> bytes:
        return "\n".join(self.ids).encode()

    def restore(self, data: bytes) -> None:
        self.ids = data.decode().split("\n") if data else []


def test_broadcast_delivers_everywhere_and_survives_a_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = Cluster(
            tmp_path,
            3,
            factory=make_node,
            wire_types=WIRE_TYPES,
            peer_types=PEER_MESSAGE_TYPES,
            client_types=CLIENT_MESSAGE_TYPES,
            op_codec=PersistCodec(entry_type=Delivery),
            machine=Deliveries,
        )
        try:
            await cluster.start_all()
            sent = [f"m{i}" for i in range(12)]
            for i, msg_id in enumerate(sent):
                client = await cluster.client(1 + i % 3)
                try:
                    reply = await client.request(Broadcast(i, msg_id, {"i": i}), i, 5.0)
                finally:
                    await client.close()
                assert isinstance(reply, ClientReply) and reply.ok and reply.result == msg_id
            await wait_until(
                lambda: all(sorted(m.ids) == sorted(sent) for m in cluster.machines.values()),
                what="every node delivered every message",
            )
            await cluster.stop(2)
            runner = await cluster.start(2)
            node = runner.node
            assert isinstance(node, BroadcastNode)
            assert sorted(node.delivered) == sorted(sent)  # typed Delivery entries recovered
            await wait_until(
                lambda: sorted(cluster.machines[2].ids) == sorted(sent),
                what="restarted node re-applied its log",
            )
            assert len(cluster.machines[2].ids) == len(sent), "exactly once per incarnation"
        finally:
            await cluster.close()

    run_async(scenario())
