"""A simulated KV client of a chain: one operation at a time, retried until answered.

Records the same history format as the Raft KV client (``f`` get/put/append/cas, ``key``,
value), so :class:`pnyx.check.models.KVModel` checks it.  Writes go to the head, reads to
the tail (chain) or to a random replica (CRAQ); replicas and the master redirect.
"""

from __future__ import annotations

from typing import Any

from pnyx.core import ClientReply, HistoryEvent, Message, Outbox, Quiesce, Record, Rng, Send
from pnyx.protocols.chain.messages import KvRequest

KEYS = ("a", "b", "c")
KINDS = ("get", "get", "get", "put", "put", "append", "cas")
RETRY_TICKS = 6
GIVE_UP_TICKS = 120
MAX_THINK_TICKS = 3


class ChainClient(Outbox):
    """Implements :class:`pnyx.core.Node` as a client process."""

    def __init__(
        self, client_id: int, replicas: tuple[int, ...], rng: Rng, *, reads_anywhere: bool
    ) -> None:
        if not replicas:
            raise ValueError("a client needs at least one replica")
        self.node_id = client_id
        self._replicas = replicas
        self._rng = rng
        self._reads_anywhere = reads_anywhere
        self._head = replicas[0]
        self._tail = replicas[-1]
        self._request_id = 0
        self._op: KvRequest | None = None
        self._target = 0
        self._age_ticks = 0
        self._silent_ticks = 0
        self._think_ticks = rng.randrange(0, MAX_THINK_TICKS + 1)
        self._stopped = False
        super().__init__()

    def step(self, msg: Message, from_id: int) -> None:
        """Replies and redirects; :class:`Quiesce` stops new operations."""
        if isinstance(msg, Quiesce):
            self._stopped = True
        elif isinstance(msg, ClientReply) and self._op is not None:
            self._on_client_reply(self._op, msg)

    def tick(self) -> None:
        """Retry, give up, or start the next operation."""
        op = self._op
        if op is not None:
            self._age_ticks += 1
            self._silent_ticks += 1
            if self._age_ticks >= GIVE_UP_TICKS:
                self._finish(op, "info", op.value)
            elif self._silent_ticks >= RETRY_TICKS:
                self._send_op(op, self._pick_any())
            return
        if self._stopped:
            return
        if self._think_ticks > 0:
            self._think_ticks -= 1
            return
        self._start()

    def _start(self) -> None:
        rng = self._rng
        self._request_id += 1
        kind = KINDS[rng.randrange(0, len(KINDS))]
        key = KEYS[rng.randrange(0, len(KEYS))]
        token = f"{self.node_id % 1000}.{self._request_id}"
        value: Any = None
        if kind in ("put", "append"):
            value = token
        elif kind == "cas":
            value = ["", token] if rng.random() < 0.5 else [f"{self.node_id % 1000}.1", token]
        op = KvRequest(self._request_id, kind, key, value)
        self._op = op
        self._age_ticks = 0
        self._ready.record.append(Record(HistoryEvent(self.node_id, "invoke", kind, value, key)))
        if kind != "get":
            target = self._head
        elif self._reads_anywhere:
            target = self._pick_any()
        else:
            target = self._tail
        self._send_op(op, target)

    def _send_op(self, op: KvRequest, target: int) -> None:
        self._target = target
        self._silent_ticks = 0
        self._ready.send.append(Send(target, op))

    def _pick_any(self) -> int:
        return self._replicas[self._rng.randrange(0, len(self._replicas))]

    def _on_client_reply(self, op: KvRequest, reply: ClientReply) -> None:
        if reply.request_id == op.request_id:
            self._on_reply(op, reply)

    def _on_reply(self, op: KvRequest, reply: ClientReply) -> None:
        if reply.ok:
            self._finish(op, "ok", reply.result if op.f in ("get", "cas") else op.value)
            return
        hint = reply.leader_hint
        if hint is not None and hint != self._target:
            if op.f == "get":
                self._tail = hint
            else:
                self._head = hint
            self._send_op(op, hint)
        else:
            self._silent_ticks = RETRY_TICKS - 1  # another replica on the next tick

    def _finish(self, op: KvRequest, outcome: str, value: Any) -> None:
        event = HistoryEvent(self.node_id, outcome, op.f, value, op.key)  # type: ignore[arg-type]
        self._ready.record.append(Record(event))
        self._op = None
        self._think_ticks = self._rng.randrange(0, MAX_THINK_TICKS + 1)
