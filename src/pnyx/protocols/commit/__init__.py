"""Atomic commitment: two-phase commit (presumed abort) and three-phase commit (Skeen)."""

from pnyx.protocols.commit.common import CommitConfig, CommitNode, Host
from pnyx.protocols.commit.messages import (
    CLIENT_TYPES,
    THREE_PC_PEER_TYPES,
    TWO_PC_PEER_TYPES,
    Decided,
    SubmitTxn,
    Voted,
)
from pnyx.protocols.commit.threepc import (
    ThreePcCoordinator,
    ThreePcNode,
    ThreePcParticipant,
)
from pnyx.protocols.commit.twopc import TwoPcCoordinator, TwoPcNode, TwoPcParticipant

__all__ = [
    "CLIENT_TYPES",
    "THREE_PC_PEER_TYPES",
    "TWO_PC_PEER_TYPES",
    "CommitConfig",
    "CommitNode",
    "Decided",
    "Host",
    "SubmitTxn",
    "ThreePcCoordinator",
    "ThreePcNode",
    "ThreePcParticipant",
    "TwoPcCoordinator",
    "TwoPcNode",
    "TwoPcParticipant",
    "Voted",
]
