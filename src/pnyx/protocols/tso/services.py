"""Runtime services a TSO node asks for in ``Ready.services`` (Raft's snapshots)."""

from __future__ import annotations

from typing import Any

from pnyx.core import Node, StateMachine
from pnyx.protocols.raft import TakeSnapshot
from pnyx.protocols.tso.machine import TsoStateMachine
from pnyx.protocols.tso.node import TsoNode


def serve(node: Node, sm: StateMachine | None, request: Any) -> None:
    """Snapshot the state machine when the node's Raft asks."""
    if not isinstance(request, TakeSnapshot):
        raise TypeError(f"unknown TSO service request {request!r}")
    if not isinstance(node, TsoNode) or not isinstance(sm, TsoStateMachine):
        raise TypeError(f"TSO snapshots need a TsoNode and a TsoStateMachine, got {node!r}")
    node.snapshot_taken(request.index, sm.snapshot())
