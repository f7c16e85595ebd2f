"""A simulated client of the broadcast protocol: submits messages and records a history."""

from __future__ import annotations

from pnyx.core import ClientReply, HistoryEvent, Message, Outbox, Quiesce, Record, Rng, Send
from pnyx.protocols.broadcast.messages import Broadcast

TIMEOUT_TICKS = 30
"""Ticks without a reply after which an operation is recorded as ``info``."""

MAX_THINK_TICKS = 8
"""Upper bound on idle ticks between two operations."""


class BroadcastClient(Outbox):
    """Sends one broadcast at a time to a random node (implements :class:`pnyx.core.Node`)."""

    def __init__(self, client_id: int, node_ids: tuple[int, ...], rng: Rng) -> None:
        assert node_ids, "a client needs at least one node"
        self.node_id = client_id
        self._nodes = node_ids
        self._rng = rng
        self._seq = 0
        self._in_flight: Broadcast | None = None
        self._waited_ticks = 0
        self._think_ticks = rng.randrange(0, MAX_THINK_TICKS)
        self._stopped = False
        super().__init__()

    def step(self, msg: Message, from_id: int) -> None:
        if isinstance(msg, Quiesce):
            self._stopped = True
        elif isinstance(msg, ClientReply):
            op = self._in_flight
            if op is not None and msg.request_id == op.request_id:
                self._complete("ok" if msg.ok else "fail", op)

    def tick(self) -> None:
        op = self._in_flight
        if op is not None:
            self._waited_ticks += 1
            if self._waited_ticks >= TIMEOUT_TICKS:
                self._complete("info", op)
            return
        if self._stopped:
            return
        if self._think_ticks > 0:
            self._think_ticks -= 1
            return
        self._start()

    def _start(self) -> None:
        self._seq += 1
        msg_id = f"{self.node_id}-{self._seq}"
        op = Broadcast(self._seq, msg_id, self._seq)
        target = self._nodes[self._rng.randrange(0, len(self._nodes))]
        self._in_flight = op
        self._waited_ticks = 0
        self._ready.record.append(Record(HistoryEvent(self.node_id, "invoke", "broadcast", msg_id)))
        self._ready.send.append(Send(target, op))

    def _complete(self, outcome: str, op: Broadcast) -> None:
        assert outcome in ("ok", "fail", "info")
        event = HistoryEvent(self.node_id, outcome, "broadcast", op.msg_id)  # type: ignore[arg-type]
        self._ready.record.append(Record(event))
        self._in_flight = None
        self._think_ticks = self._rng.randrange(0, MAX_THINK_TICKS)


def make_client(client_id: int, node_ids: tuple[int, ...], rng: Rng) -> BroadcastClient:
    """Factory used by the simulator."""
    return BroadcastClient(client_id, node_ids, rng)
