"""Reliable broadcast: every node delivers every broadcast message exactly once."""

from pnyx.protocols.broadcast.messages import WIRE_TYPES, Broadcast, Delivery, Gossip, GossipAck
from pnyx.protocols.broadcast.node import BroadcastNode, make_broken_node, make_node

__all__ = [
    "WIRE_TYPES",
    "Broadcast",
    "BroadcastNode",
    "Delivery",
    "Gossip",
    "GossipAck",
    "make_broken_node",
    "make_node",
]
