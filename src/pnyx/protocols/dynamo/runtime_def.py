"""Dynamo-style replication on real processes (``pnyx cluster up --protocol dynamo``).

N equal nodes; each key has ``min(3, N)`` replicas and reads and writes each need a
majority of them (strict quorums); the timing is scaled for 10 ms ticks.
"""

from __future__ import annotations

from typing import Any

from pnyx.core import DurableState, Node, Rng
from pnyx.protocols.dynamo.config import DynamoConfig
from pnyx.protocols.dynamo.messages import CLIENT_MESSAGE_TYPES, PEER_MESSAGE_TYPES
from pnyx.protocols.dynamo.node import DynamoNode
from pnyx.sim.spec import RuntimeDef

DYNAMO_RUNTIME_FIELDS: dict[str, Any] = {
    "request_timeout_ticks": 50,
    "handoff_ticks": 50,
    "anti_entropy_ticks": 100,
}
"""Dynamo timing for real processes (10 ms ticks): replica writes wait for an fsync, so a
request gets 500 ms before the coordinator suspects the silent replicas."""


def dynamo_config(nodes: int) -> DynamoConfig:
    """The configuration of a real cluster of ``nodes``: N = min(3, nodes), R = W = a
    majority of N (strict quorums), runtime timing."""
    n = min(3, nodes)
    majority = n // 2 + 1
    return DynamoConfig(n=n, r=majority, w=majority, **DYNAMO_RUNTIME_FIELDS)


def make_runtime_node(
    node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState
) -> Node:
    """A node of a real Dynamo cluster of ``peers``."""
    return DynamoNode(node_id, peers, rng, durable, dynamo_config(len(peers)))


DYNAMO_RUNTIME = RuntimeDef(
    peer_message_types=PEER_MESSAGE_TYPES,
    client_message_types=CLIENT_MESSAGE_TYPES,
    make_node=make_runtime_node,
)
