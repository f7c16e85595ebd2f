"""Runtime services a Raft node asks for in ``Ready.services`` (shared by every runtime)."""

from __future__ import annotations

from typing import Any

from pnyx.core import Node, StateMachine
from pnyx.protocols.raft.messages import TakeSnapshot
from pnyx.protocols.raft.node import RaftNode


def serve(node: Node, sm: StateMachine | None, request: Any) -> None:
    """Carry out one service request: snapshot the state machine when the node asks."""
    assert isinstance(request, TakeSnapshot), f"unknown raft service request {request!r}"
    assert isinstance(node, RaftNode) and sm is not None, "raft snapshots need a state machine"
    node.snapshot_taken(request.index, sm.snapshot())
