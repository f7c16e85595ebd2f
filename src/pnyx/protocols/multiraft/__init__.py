"""Multi-Raft: a keyspace split into ranges, each range a Raft group, many groups per process.

See README.md beside this file for the design, what TiKV and CockroachDB do and which parts
this follows.  One :class:`MultiRaftNode` per process implements :class:`pnyx.core.Node`;
it needs no runtime state machine or services (it applies its groups' commands itself).
Real processes: ``runtime_def`` (``pnyx cluster up --protocol multiraft --ranges N``); the
routing client is :class:`pnyx.services.multiraft.RangeClient`.
"""

from pnyx.protocols.multiraft.client import KEYS, RoutingKvClient
from pnyx.protocols.multiraft.machines import (
    KEY_NOT_IN_RANGE,
    MUTANT_PROPERTIES,
    MUTANTS,
    SPLIT_LOSES_INFLIGHT,
    MetaStateMachine,
    RangeStateMachine,
    check_range_map,
)
from pnyx.protocols.multiraft.messages import (
    CLIENT_MESSAGES,
    FIRST_RANGE,
    META_GROUP,
    PEER_MESSAGES,
    Batch,
    GroupMsg,
    GroupRequest,
    LeadersQuery,
    MetaPropose,
    MetaQuery,
    MoveReplica,
    RangeBounds,
    RangeDesc,
)
from pnyx.protocols.multiraft.node import MultiRaftConfig, MultiRaftNode

__all__ = [
    "CLIENT_MESSAGES",
    "FIRST_RANGE",
    "KEYS",
    "KEY_NOT_IN_RANGE",
    "META_GROUP",
    "MUTANTS",
    "MUTANT_PROPERTIES",
    "PEER_MESSAGES",
    "SPLIT_LOSES_INFLIGHT",
    "Batch",
    "GroupMsg",
    "GroupRequest",
    "LeadersQuery",
    "MetaPropose",
    "MetaQuery",
    "MetaStateMachine",
    "MoveReplica",
    "MultiRaftConfig",
    "MultiRaftNode",
    "RangeBounds",
    "RangeDesc",
    "RangeStateMachine",
    "RoutingKvClient",
    "check_range_map",
]
