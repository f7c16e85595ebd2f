"""Primary-backup replication with a view manager (see ``README.md``)."""

from pnyx.protocols.primary_backup.messages import (
    NO_SERVER,
    WIRE_TYPES,
    Forward,
    ForwardAck,
    Ping,
    StateTransfer,
    TransferAck,
    View,
    ViewReply,
)
from pnyx.protocols.primary_backup.node import VIEW_MANAGER, Server, ViewManager, make_node

__all__ = [
    "NO_SERVER",
    "VIEW_MANAGER",
    "WIRE_TYPES",
    "Forward",
    "ForwardAck",
    "Ping",
    "Server",
    "StateTransfer",
    "TransferAck",
    "View",
    "ViewManager",
    "ViewReply",
    "make_node",
]
