"""Viewstamped Replication Revisited (Liskov & Cowling 2012) as a pure state machine.

See README.md beside this file.  VR serves Raft's KV state machine and client vocabulary
(:data:`CLIENT_MESSAGE_TYPES`), so Raft's KV clients talk to it unchanged.
"""

from pnyx.core import DurableState, Message, NodeFactory, Rng
from pnyx.protocols.raft import CLIENT_MESSAGE_TYPES, KvStateMachine
from pnyx.protocols.vr.config import MUTANT_PROPERTIES, MUTANTS, VrConfig
from pnyx.protocols.vr.messages import (
    BOOT_KEY,
    HARD_KEY,
    PEER_MESSAGES,
    Commit,
    DoViewChange,
    EpochStarted,
    GetState,
    NewState,
    Prepare,
    PrepareOK,
    Recovery,
    RecoveryResponse,
    StartEpoch,
    StartView,
    StartViewChange,
    VrEntry,
    VrHard,
)
from pnyx.protocols.vr.node import (
    NORMAL,
    RECOVERING,
    RETIRED,
    SHUT_DOWN,
    STANDBY,
    TRANSITIONING,
    VIEW_CHANGE,
    VrNode,
    primary_of,
)
from pnyx.protocols.vr.services import serve

PEER_MESSAGE_TYPES: tuple[type[Message], ...] = PEER_MESSAGES
"""Messages a replica accepts on a peer connection."""

RECORD_TYPES = {BOOT_KEY: int, HARD_KEY: VrHard}
"""Types of the durable records, for a WAL to decode them."""


def make_node_factory(config: VrConfig | None = None) -> NodeFactory:
    """A node factory ``(node_id, peers, rng, durable) -> VrNode`` with ``config``."""
    cfg = config or VrConfig()

    def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> VrNode:
        return VrNode(node_id, peers, rng, durable, cfg)

    return make_node


def make_state_machine() -> KvStateMachine:
    """The state machine a VR KV replica applies (Raft's, sessions included)."""
    return KvStateMachine()


__all__ = [
    "BOOT_KEY",
    "CLIENT_MESSAGE_TYPES",
    "HARD_KEY",
    "MUTANTS",
    "MUTANT_PROPERTIES",
    "NORMAL",
    "PEER_MESSAGE_TYPES",
    "RECORD_TYPES",
    "RECOVERING",
    "RETIRED",
    "SHUT_DOWN",
    "STANDBY",
    "TRANSITIONING",
    "VIEW_CHANGE",
    "Commit",
    "DoViewChange",
    "EpochStarted",
    "GetState",
    "NewState",
    "Prepare",
    "PrepareOK",
    "Recovery",
    "RecoveryResponse",
    "StartEpoch",
    "StartView",
    "StartViewChange",
    "VrConfig",
    "VrEntry",
    "VrHard",
    "VrNode",
    "make_node_factory",
    "make_state_machine",
    "primary_of",
    "serve",
]
