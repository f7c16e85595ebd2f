"""A Raft-backed timestamp oracle that hands out batches (TiDB PD / Percolator style)."""

from pnyx.protocols.tso.machine import TsoStateMachine, as_command, decode_mark
from pnyx.protocols.tso.messages import MAX_BATCH, Barrier, SetHighWater, TsoRequest
from pnyx.protocols.tso.node import (
    INTERNAL_CLIENT,
    WINDOW_SIZE,
    Allocator,
    TsoNode,
    tso_node_factory,
)

__all__ = [
    "INTERNAL_CLIENT",
    "MAX_BATCH",
    "WINDOW_SIZE",
    "Allocator",
    "Barrier",
    "SetHighWater",
    "TsoNode",
    "TsoRequest",
    "TsoStateMachine",
    "as_command",
    "decode_mark",
    "tso_node_factory",
]
