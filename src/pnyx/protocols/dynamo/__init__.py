"""Dynamo-style quorum replication (DeCandia et al., SOSP 2007): consistent hashing with
virtual nodes, N/R/W quorums, dotted version vectors with siblings, sloppy quorum with
hinted handoff, read repair and Merkle-tree anti-entropy."""

from pnyx.protocols.dynamo.client import DynamoClient, make_client
from pnyx.protocols.dynamo.config import DynamoConfig
from pnyx.protocols.dynamo.messages import (
    CLIENT_MESSAGE_TYPES,
    PEER_MESSAGE_TYPES,
    WIRE_TYPES,
    Get,
    Put,
    ReadResult,
    WriteResult,
)
from pnyx.protocols.dynamo.node import DynamoNode, make_node
from pnyx.protocols.dynamo.ring import Ring
from pnyx.protocols.dynamo.versions import Version

__all__ = [
    "CLIENT_MESSAGE_TYPES",
    "PEER_MESSAGE_TYPES",
    "WIRE_TYPES",
    "DynamoClient",
    "DynamoConfig",
    "DynamoNode",
    "Get",
    "Put",
    "ReadResult",
    "Ring",
    "Version",
    "WriteResult",
    "make_client",
    "make_node",
]
