"""A simulated TSO client: asks the leader it knows of for small batches of timestamps."""

from __future__ import annotations

from typing import Any

from pnyx.core import ClientReply, EventType, HistoryEvent, Message, OneAtATimeClient, Rng
from pnyx.protocols.tso.messages import TsoRequest

TIMEOUT_TICKS = 30
MAX_THINK_TICKS = 3
MAX_COUNT = 20
"""Batch sizes are drawn from 1..MAX_COUNT."""


class TsoSimClient(OneAtATimeClient[TsoRequest]):
    """One request at a time; follows the leader hints of refusals."""

    def __init__(self, client_id: int, node_ids: tuple[int, ...], rng: Rng) -> None:
        super().__init__(
            client_id, node_ids, rng, timeout_ticks=TIMEOUT_TICKS, max_think_ticks=MAX_THINK_TICKS
        )
        self._leader: int | None = None

    def step(self, msg: Message, from_id: int) -> None:
        """Remember leader hints; complete operations as the base class does."""
        if isinstance(msg, ClientReply):
            if msg.ok:
                self._leader = from_id
            elif msg.leader_hint:
                self._leader = msg.leader_hint
            else:
                self._leader = None
        super().step(msg, from_id)

    def _begin_op(self, request_id: int) -> tuple[int, TsoRequest, HistoryEvent]:
        count = self._rng.randrange(1, MAX_COUNT + 1)
        target = self._leader if self._leader is not None else self.pick_node()
        invoke = HistoryEvent(self.node_id, "invoke", "ts", count)
        return target, TsoRequest(request_id, count), invoke

    def _completion(self, outcome: EventType, op: TsoRequest, result: Any) -> HistoryEvent:
        if outcome == "info":
            self._leader = None  # maybe down: ask someone else next time
        value = tuple(result) if outcome == "ok" else op.count
        return HistoryEvent(self.node_id, outcome, "ts", value)


def make_client(client_id: int, node_ids: tuple[int, ...], rng: Rng) -> TsoSimClient:
    """Factory used by the simulator."""
    return TsoSimClient(client_id, node_ids, rng)
