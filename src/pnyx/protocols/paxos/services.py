"""Runtime services a Paxos node asks for in ``Ready.services`` (shared by every runtime)."""

from __future__ import annotations

from typing import Any

from pnyx.core import Node, StateMachine
from pnyx.protocols.paxos.messages import TakeSnapshot
from pnyx.protocols.paxos.node import PaxosNode


def serve(node: Node, sm: StateMachine | None, request: Any) -> None:
    """Carry out one service request: snapshot the state machine when the node asks."""
    if not isinstance(request, TakeSnapshot):
        raise TypeError(f"unknown paxos service request {request!r}")
    if not isinstance(node, PaxosNode) or sm is None:
        raise TypeError(f"paxos snapshots need a PaxosNode and a state machine, not {node!r}")
    node.snapshot_taken(request.index, sm.snapshot())
