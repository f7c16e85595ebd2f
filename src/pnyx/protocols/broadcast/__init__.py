"""Reliable broadcast: every node delivers every broadcast message exactly once."""

from pnyx.core import Message
from pnyx.protocols.broadcast.causal import (
    CausalBroadcast,
    CausalBroadcastNode,
    UncheckedCausalBroadcast,
    make_causal_node,
    make_unchecked_causal_node,
)
from pnyx.protocols.broadcast.causal_messages import (
    CAUSAL_WIRE_TYPES,
    CausalAck,
    CausalEntry,
    CausalGossip,
)
from pnyx.protocols.broadcast.messages import WIRE_TYPES, Broadcast, Delivery, Gossip, GossipAck
from pnyx.protocols.broadcast.node import BroadcastNode, make_broken_node, make_node

PEER_MESSAGE_TYPES: tuple[type[Message], ...] = (Gossip, GossipAck)
"""Messages a node accepts on a peer connection (node to node)."""

CLIENT_MESSAGE_TYPES: tuple[type[Message], ...] = (Broadcast,)
"""Messages a node accepts on a client connection (answered with ``ClientReply``)."""

__all__ = [
    "CAUSAL_WIRE_TYPES",
    "CLIENT_MESSAGE_TYPES",
    "PEER_MESSAGE_TYPES",
    "WIRE_TYPES",
    "Broadcast",
    "BroadcastNode",
    "CausalAck",
    "CausalBroadcast",
    "CausalBroadcastNode",
    "CausalEntry",
    "CausalGossip",
    "Delivery",
    "Gossip",
    "GossipAck",
    "UncheckedCausalBroadcast",
    "make_broken_node",
    "make_causal_node",
    "make_node",
    "make_unchecked_causal_node",
]
