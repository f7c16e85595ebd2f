"""A simulated client of 2PC / 3PC: submits transactions over random participant sets."""

from __future__ import annotations

from typing import Any

from pnyx.core import EventType, HistoryEvent, OneAtATimeClient, Rng
from pnyx.protocols.commit.messages import SubmitTxn

TIMEOUT_TICKS = 30
"""Ticks without an answer after which a transaction is recorded as ``info``."""

MAX_THINK_TICKS = 4
"""Upper bound on idle ticks between two transactions."""

TXN_ID_STRIDE = 1 << 32
"""Transaction ids are ``client_id * TXN_ID_STRIDE + request_id`` (unique per run)."""


class CommitClient(OneAtATimeClient[SubmitTxn]):
    """One transaction at a time, sent to the coordinator (the lowest node id), over 2 to
    all participants drawn at random."""

    def __init__(self, client_id: int, node_ids: tuple[int, ...], rng: Rng) -> None:
        super().__init__(
            client_id, node_ids, rng, timeout_ticks=TIMEOUT_TICKS, max_think_ticks=MAX_THINK_TICKS
        )
        self.coordinator = min(node_ids)
        self.participants = tuple(sorted(n for n in node_ids if n != self.coordinator))
        if not self.participants:
            raise ValueError(f"2PC/3PC needs at least two nodes, got {node_ids!r}")

    def _begin_op(self, request_id: int) -> tuple[int, SubmitTxn, HistoryEvent]:
        pool = list(self.participants)
        low = min(2, len(pool))
        size = self._rng.randrange(low, len(pool) + 1)
        chosen: list[int] = []
        for _ in range(size):
            chosen.append(pool.pop(self._rng.randrange(0, len(pool))))
        txn = self.node_id * TXN_ID_STRIDE + request_id
        op = SubmitTxn(request_id, txn, tuple(sorted(chosen)))
        invoke = HistoryEvent(self.node_id, "invoke", "txn", txn, op.participants)
        return self.coordinator, op, invoke

    def _completion(self, outcome: EventType, op: SubmitTxn, result: Any) -> HistoryEvent:
        return HistoryEvent(self.node_id, outcome, "txn", (op.txn, result), op.participants)


def make_client(client_id: int, node_ids: tuple[int, ...], rng: Rng) -> CommitClient:
    """Factory used by the simulator."""
    return CommitClient(client_id, node_ids, rng)
