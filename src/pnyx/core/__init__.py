"""pnyx.core: ids, ticks, messages, effects, the node contract and the storage interface.

Nothing here performs I/O, reads a clock or draws global randomness (import-linter enforced).
"""

from pnyx.core.client import OneAtATimeClient
from pnyx.core.effects import Apply, ClientReply, Ready, Record, Restore, Send
from pnyx.core.errors import InvalidMessage
from pnyx.core.history import EventType, HistoryEvent
from pnyx.core.ids import CLIENT_ID_BASE, NodeId, Ticks, is_client
from pnyx.core.messages import Codec, Message, Quiesce, encode
from pnyx.core.node import Node, NodeFactory, Outbox, StateMachine
from pnyx.core.rng import Rng, SplitMix64
from pnyx.core.storage import (
    DurableState,
    LogAppend,
    LogCompact,
    PersistOp,
    PutRecord,
    SnapshotSave,
)

__all__ = [
    "CLIENT_ID_BASE",
    "Apply",
    "ClientReply",
    "Codec",
    "DurableState",
    "EventType",
    "HistoryEvent",
    "InvalidMessage",
    "LogAppend",
    "LogCompact",
    "Message",
    "Node",
    "NodeFactory",
    "NodeId",
    "OneAtATimeClient",
    "Outbox",
    "PersistOp",
    "PutRecord",
    "Quiesce",
    "Ready",
    "Record",
    "Restore",
    "Rng",
    "Send",
    "SnapshotSave",
    "SplitMix64",
    "StateMachine",
    "Ticks",
    "encode",
    "is_client",
]
