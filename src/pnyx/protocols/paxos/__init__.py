"""Multi-Paxos (Lamport 1998; van Renesse & Altinbuken 2015) as a pure state machine.

See README.md beside this file.  It serves Raft's KV state machine and client messages
(``pnyx.protocols.raft``): the same clients, sessions and checker work unchanged.
Runtime hook beyond the node contract: answer ``TakeSnapshot(index)`` found in
``Ready.services`` with ``node.snapshot_taken(index, state_machine.snapshot())``
(:func:`serve` does).
"""

from __future__ import annotations

from pnyx.core import DurableState, Message, NodeFactory, Rng
from pnyx.protocols.paxos.config import (
    MUTANT_ALSO_CAUGHT_AS,
    MUTANT_PROPERTIES,
    MUTANTS,
    PaxosConfig,
    quorum_sizes,
)
from pnyx.protocols.paxos.messages import (
    HARD_STATE_KEY,
    PEER_MESSAGES,
    Accept,
    Accepted,
    Commit,
    CommitAck,
    HardState,
    Learn,
    Nack,
    Prepare,
    Promise,
    ReadAck,
    ReadProbe,
    Slot,
    Snapshot,
    TakeSnapshot,
)
from pnyx.protocols.paxos.node import CANDIDATE, FOLLOWER, LEADER, PaxosNode
from pnyx.protocols.paxos.services import serve
from pnyx.protocols.raft import CLIENT_MESSAGE_TYPES, KvStateMachine

PEER_MESSAGE_TYPES: tuple[type[Message], ...] = PEER_MESSAGES
"""Messages a node accepts on a peer connection (node to node)."""

STATE_MACHINE = KvStateMachine
"""The replicated state machine: Raft's KV store with client sessions (exactly-once)."""

ENTRY_TYPE = Slot
"""Type of the stored log entries (for the WAL codec)."""

RECORD_TYPES = {HARD_STATE_KEY: HardState}
"""Named durable records and their types (for the WAL codec)."""


def make_node_factory(config: PaxosConfig | None = None) -> NodeFactory:
    """A factory of Paxos nodes with ``config`` (quorum sizes are checked per node)."""
    cfg = config or PaxosConfig()

    def make_node(
        node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState
    ) -> PaxosNode:
        return PaxosNode(node_id, peers, rng, durable, cfg)

    return make_node


__all__ = [
    "CANDIDATE",
    "CLIENT_MESSAGE_TYPES",
    "ENTRY_TYPE",
    "FOLLOWER",
    "HARD_STATE_KEY",
    "LEADER",
    "MUTANTS",
    "MUTANT_ALSO_CAUGHT_AS",
    "MUTANT_PROPERTIES",
    "PEER_MESSAGE_TYPES",
    "RECORD_TYPES",
    "STATE_MACHINE",
    "Accept",
    "Accepted",
    "Commit",
    "CommitAck",
    "HardState",
    "Learn",
    "Nack",
    "PaxosConfig",
    "PaxosNode",
    "Prepare",
    "Promise",
    "ReadAck",
    "ReadProbe",
    "Slot",
    "Snapshot",
    "TakeSnapshot",
    "make_node_factory",
    "quorum_sizes",
    "serve",
]
