"""The runtime side of VR checkpoints: answer a replica's :class:`TakeCheckpoint`.

A replica configured with ``VrConfig.checkpoint_interval_ops`` asks, in ``Ready.services``,
for a snapshot of its state machine after the ops of that batch; the runtime calls
:func:`serve_checkpoint` once the batch's applies are done.  The simulator's VR spec uses
it; a real runtime's ``serve`` hook must do the same before checkpoints are enabled there.
"""

from __future__ import annotations

from typing import Any

from pnyx.core import Node, StateMachine
from pnyx.protocols.vr.messages import TakeCheckpoint
from pnyx.protocols.vr.node import VrNode


def serve_checkpoint(node: Node, sm: StateMachine | None, request: Any) -> None:
    """Snapshot ``sm`` for ``node`` (a VrNode) when it asks; TypeError for anything else."""
    if not isinstance(request, TakeCheckpoint):
        raise TypeError(f"unknown VR service request {request!r}")
    if not isinstance(node, VrNode) or sm is None:
        raise TypeError(f"VR checkpoints need a VrNode and a state machine, not {node!r}")
    node.checkpoint_taken(request.op, sm.snapshot())
