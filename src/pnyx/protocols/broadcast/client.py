"""A simulated client of the broadcast protocol: submits messages and records a history."""

from __future__ import annotations

from typing import Any

from pnyx.core import EventType, HistoryEvent, OneAtATimeClient, Rng
from pnyx.protocols.broadcast.messages import Broadcast

TIMEOUT_TICKS = 30
"""Ticks without a reply after which an operation is recorded as ``info``."""

MAX_THINK_TICKS = 8
"""Upper bound on idle ticks between two operations."""


class BroadcastClient(OneAtATimeClient[Broadcast]):
    """Sends one broadcast at a time to a random node (implements :class:`pnyx.core.Node`)."""

    def __init__(self, client_id: int, node_ids: tuple[int, ...], rng: Rng) -> None:
        super().__init__(
            client_id, node_ids, rng, timeout_ticks=TIMEOUT_TICKS, max_think_ticks=MAX_THINK_TICKS
        )

    def _begin_op(self, request_id: int) -> tuple[int, Broadcast, HistoryEvent]:
        msg_id = f"{self.node_id}-{request_id}"
        op = Broadcast(request_id, msg_id, request_id)
        invoke = HistoryEvent(self.node_id, "invoke", "broadcast", msg_id)
        return self.pick_node(), op, invoke

    def _completion(self, outcome: EventType, op: Broadcast, result: Any) -> HistoryEvent:
        return HistoryEvent(self.node_id, outcome, "broadcast", op.msg_id)


def make_client(client_id: int, node_ids: tuple[int, ...], rng: Rng) -> BroadcastClient:
    """Factory used by the simulator."""
    return BroadcastClient(client_id, node_ids, rng)
