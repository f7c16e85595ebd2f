"""A simulated client that keeps one operation in flight and records a history.

The loop shared by the simple workload clients: wait a random number of think ticks,
start an operation (record ``invoke``, send the request to a node), then record ``ok`` /
``fail`` when the :class:`~pnyx.core.effects.ClientReply` with its ``request_id`` comes, or
``info`` after ``timeout_ticks`` without one; a :class:`~pnyx.core.messages.Quiesce` stops
new operations (the one in flight still completes).  Subclasses say what an operation is
(:meth:`OneAtATimeClient._begin_op`) and how its completion is recorded
(:meth:`OneAtATimeClient._completion`).

Randomness comes only from the given :class:`~pnyx.core.rng.Rng`, in a fixed order: one
think draw at construction and after each completion, plus whatever the subclass draws
in :meth:`OneAtATimeClient._begin_op`.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pnyx.core.effects import ClientReply, Record, Send
from pnyx.core.history import EventType, HistoryEvent
from pnyx.core.messages import Message, Quiesce
from pnyx.core.node import Outbox
from pnyx.core.rng import Rng

RequestT = TypeVar("RequestT", bound=Message)
"""The client's request message."""


class OneAtATimeClient(Outbox, Generic[RequestT]):
    """Base of clients with at most one operation in flight (implements :class:`pnyx.core.Node`).

    Think ticks between two operations are drawn uniformly from ``[0, max_think_ticks)``.
    """

    def __init__(
        self,
        client_id: int,
        node_ids: tuple[int, ...],
        rng: Rng,
        *,
        timeout_ticks: int,
        max_think_ticks: int,
    ) -> None:
        if not node_ids:
            raise ValueError(f"client {client_id} needs at least one node, got {node_ids!r}")
        if timeout_ticks < 1 or max_think_ticks < 1:
            raise ValueError(
                f"timeout_ticks and max_think_ticks must be >= 1, "
                f"got {timeout_ticks} and {max_think_ticks}"
            )
        super().__init__()
        self.node_id = client_id
        self._nodes = node_ids
        self._rng = rng
        self._timeout_ticks = timeout_ticks
        self._max_think_ticks = max_think_ticks
        self._seq = 0
        self._in_flight: RequestT | None = None
        self._waited_ticks = 0
        self._think_ticks = rng.randrange(0, max_think_ticks)
        self._stopped = False

    # -- hooks ------------------------------------------------------------------------------

    def _begin_op(self, request_id: int) -> tuple[int, RequestT, HistoryEvent]:
        """The next operation: the node to send it to, the request (carrying
        ``request_id``, which counts the client's operations from 1, for the node to
        repeat in its reply), and the ``invoke`` event to record."""
        raise NotImplementedError

    def _completion(self, outcome: EventType, op: RequestT, result: Any) -> HistoryEvent:
        """The event recording that ``op`` completed with ``outcome`` (``ok``, ``fail`` or
        ``info``); ``result`` is the reply's result (None for ``info``)."""
        raise NotImplementedError

    # -- node contract ----------------------------------------------------------------------

    def step(self, msg: Message, from_id: int) -> None:
        """Stop on :class:`Quiesce`; complete the operation its reply names."""
        if isinstance(msg, Quiesce):
            self._stopped = True
        elif isinstance(msg, ClientReply):
            op = self._in_flight
            if op is not None and msg.request_id == self._seq:
                self._complete("ok" if msg.ok else "fail", op, msg.result)

    def tick(self) -> None:
        """Time out the operation in flight, or think, or start the next one."""
        op = self._in_flight
        if op is not None:
            self._waited_ticks += 1
            if self._waited_ticks >= self._timeout_ticks:
                self._complete("info", op, None)
            return
        if self._stopped:
            return
        if self._think_ticks > 0:
            self._think_ticks -= 1
            return
        self._start()

    def pick_node(self) -> int:
        """A node drawn uniformly from the client's nodes."""
        return self._nodes[self._rng.randrange(0, len(self._nodes))]

    def _start(self) -> None:
        self._seq += 1
        target, op, invoke = self._begin_op(self._seq)
        self._in_flight = op
        self._waited_ticks = 0
        self._ready.record.append(Record(invoke))
        self._ready.send.append(Send(target, op))

    def _complete(self, outcome: EventType, op: RequestT, result: Any) -> None:
        self._ready.record.append(Record(self._completion(outcome, op, result)))
        self._in_flight = None
        self._think_ticks = self._rng.randrange(0, self._max_think_ticks)
