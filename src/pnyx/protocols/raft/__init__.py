"""Raft (Ongaro & Ousterhout 2014, Ongaro's thesis 2014) as a pure state machine.

See README.md beside this file for guarantees, assumptions and the bug catalogue.
Runtime hooks beyond the node contract: answer ``TakeSnapshot(index)`` found in
``Ready.services`` with ``node.snapshot_taken(index, state_machine.snapshot())``.
"""

from pnyx.core import Message
from pnyx.protocols.raft.config import MUTANTS, RaftConfig
from pnyx.protocols.raft.kv import Command, KvOp, KvStateMachine
from pnyx.protocols.raft.membership import Membership
from pnyx.protocols.raft.messages import (
    PEER_MESSAGES,
    AdminRequest,
    AppendEntries,
    AppendResponse,
    ClientRequest,
    ConfigData,
    Entry,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    ReadRequest,
    RequestVote,
    SnapshotMeta,
    SnapshotResponse,
    TakeSnapshot,
    TimeoutNow,
    VoteResponse,
)
from pnyx.protocols.raft.node import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE, RaftNode

PEER_MESSAGE_TYPES: tuple[type[Message], ...] = PEER_MESSAGES
"""Messages a node accepts on a peer connection (node to node)."""

CLIENT_MESSAGE_TYPES: tuple[type[Message], ...] = (ClientRequest, ReadRequest, AdminRequest)
"""Messages a node accepts on a client connection (answered with ``ClientReply``)."""

__all__ = [
    "CANDIDATE",
    "CLIENT_MESSAGE_TYPES",
    "FOLLOWER",
    "LEADER",
    "MUTANTS",
    "PEER_MESSAGES",
    "PEER_MESSAGE_TYPES",
    "PRE_CANDIDATE",
    "AdminRequest",
    "AppendEntries",
    "AppendResponse",
    "ClientRequest",
    "Command",
    "ConfigData",
    "Entry",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "KvOp",
    "KvStateMachine",
    "Membership",
    "RaftConfig",
    "RaftNode",
    "ReadRequest",
    "RequestVote",
    "SnapshotMeta",
    "SnapshotResponse",
    "TakeSnapshot",
    "TimeoutNow",
    "VoteResponse",
]
