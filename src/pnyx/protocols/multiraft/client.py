"""A simulated KV client of a multi-Raft cluster: routes each key by a cached range map.

One operation at a time (``get`` or ``put`` of a unique value) on keys :data:`KEYS`.  The
client looks the key up in its cached range map and sends the request to the range's
leader (as far as it knows) or a replica.  A definite refusal — ``not_leader`` (go to the
hint; a write the leader had already appended is answered ``leadership_lost`` instead,
indeterminate), ``key_not_in_range`` / ``range_not_found`` (the route is stale: refresh the map from
the meta range of some process, then retry), ``busy`` — is retried.  A write whose attempt
times out may or may not have happened: it is recorded ``info`` and never retried (no
duplicate can apply after the client moved on).  A read is retried after a time-out.
The admin client (``admin=True``) now and then asks a range's leader to move one replica.
"""

from __future__ import annotations

from typing import Any

from pnyx.core import ClientReply, HistoryEvent, Message, Outbox, Quiesce, Record, Rng, Send
from pnyx.core.history import EventType
from pnyx.protocols.multiraft.messages import (
    META_GROUP,
    GroupRequest,
    MetaQuery,
    MoveReplica,
    RangeBounds,
    RangeDesc,
    RangeWrite,
)
from pnyx.protocols.multiraft.node import LEADERSHIP_LOST
from pnyx.protocols.raft.kv import GET, PUT, KvOp
from pnyx.protocols.raft.messages import (
    READ_LINEARIZABLE,
    READ_SERIALIZABLE,
    ClientRequest,
    ReadRequest,
)


def find_range(ranges: list[RangeDesc], key: str) -> RangeDesc | None:
    """The range of a cached map holding ``key`` (one with replicas), or None."""
    for desc in ranges:
        if desc.contains(key) and desc.replicas:
            return desc
    return None


def range_map_request(request_id: int) -> GroupRequest:
    """A serializable read of the range map from a meta replica."""
    return GroupRequest(META_GROUP, ReadRequest(request_id, MetaQuery(), READ_SERIALIZABLE))


def range_map_of(reply: ClientReply, cached: list[RangeDesc]) -> list[RangeDesc]:
    """The range map a meta replica answered, or ``cached`` when the answer holds none."""
    if reply.ok and isinstance(reply.result, tuple | list):
        return [d for d in reply.result if isinstance(d, RangeDesc)]
    return cached


KEYS: tuple[str, ...] = tuple(f"k{i:02d}" for i in range(24))
RETRIED_ERRORS = frozenset({"not_leader", "busy", "transferring"})
STALE_ROUTE_ERRORS = frozenset({"key_not_in_range", "range_not_found"})


class _Op:
    __slots__ = ("deadline_tick", "f", "key", "op_seq", "request_id", "sent_tick", "value")

    def __init__(self, op_seq: int, f: str, key: str, value: Any, deadline_tick: int) -> None:
        self.op_seq = op_seq
        self.f = f
        self.key = key
        self.value = value
        self.deadline_tick = deadline_tick
        self.request_id = 0
        self.sent_tick = 0


class RoutingKvClient(Outbox):
    """Implements :class:`pnyx.core.Node` as a client process (id >= CLIENT_ID_BASE)."""

    def __init__(
        self,
        client_id: int,
        node_ids: tuple[int, ...],
        rng: Rng,
        *,
        admin: bool = False,
        attempt_ticks: int = 25,
        give_up_ticks: int = 200,
        max_think_ticks: int = 3,
        move_probability: float = 0.05,
        keys: tuple[str, ...] = KEYS,
    ) -> None:
        if not node_ids:
            raise ValueError(f"client {client_id} needs at least one node")
        super().__init__()
        self.node_id = client_id
        self._nodes = node_ids
        self._rng = rng
        self._admin = admin
        self._attempt_ticks = attempt_ticks
        self._give_up_ticks = give_up_ticks
        self._max_think_ticks = max_think_ticks
        self._move_probability = move_probability
        self._keys = keys
        self.ranges: list[RangeDesc] = []
        """The cached range map."""
        self._leaders: dict[int, int] = {}
        self._now = 0
        self._request_id = 0
        self._counter = 0
        self._op: _Op | None = None
        self._refreshing = 0
        """Request id of the range-map query in flight (0: none)."""
        self._newer: tuple[int, int] | None = None
        """(range, version) a refusal reported: a map older than that is stale."""
        self._refresh_sent = 0
        self._move_request = 0
        self._move_sent = 0
        self._think_ticks = rng.randrange(0, max_think_ticks + 1)
        self._stopped = False
        self.refreshes = 0
        self.moves_started = 0

    # -- node contract --------------------------------------------------------------------

    def step(self, msg: Message, from_id: int) -> None:
        if isinstance(msg, Quiesce):
            self._stopped = True
        elif isinstance(msg, ClientReply):
            self._on_reply(msg, from_id)

    def tick(self) -> None:
        self._now += 1
        if self._move_request and self._now - self._move_sent >= self._attempt_ticks:
            self._move_request = 0
        if self._refreshing and self._now - self._refresh_sent >= self._attempt_ticks // 2:
            self._refresh()
        op = self._op
        if op is not None:
            self._tick_op(op)
            return
        if self._stopped or self._move_request:
            return
        if self._think_ticks > 0:
            self._think_ticks -= 1
            return
        if self._admin and self.ranges and self._rng.random() < self._move_probability:
            self._start_move()
            return
        self._start_op()

    # -- operations ---------------------------------------------------------------------------

    def _start_op(self) -> None:
        key = self._keys[self._rng.randrange(0, len(self._keys))]
        self._counter += 1
        deadline = self._now + self._give_up_ticks
        if self._rng.random() < 0.5:
            op = _Op(self._counter, GET, key, None, deadline)
        else:
            value = f"{self.node_id}-{self._counter}"
            op = _Op(self._counter, PUT, key, value, deadline)
        self._op = op
        self._record("invoke", op, op.value)
        self._attempt(op)

    def _tick_op(self, op: _Op) -> None:
        if op.request_id and self._now - op.sent_tick >= self._attempt_ticks:
            if op.f == PUT:
                self._finish(op, "info", op.value)  # may have happened: never retried
                return
            op.request_id = 0  # a read may be retried
        if op.request_id == 0 and not self._refreshing:
            if self._now >= op.deadline_tick:
                self._finish(op, "fail", None)
            else:
                self._attempt(op)

    def _attempt(self, op: _Op) -> None:
        desc = self._lookup(op.key)
        if desc is None:
            op.request_id = 0
            self._refresh()
            return
        target = self._leaders.get(desc.range_id)
        if target is None or target not in desc.replicas:
            target = desc.replicas[self._rng.randrange(0, len(desc.replicas))]
        self._request_id += 1
        op.request_id = self._request_id
        op.sent_tick = self._now
        request: ClientRequest | ReadRequest
        if op.f == GET:
            request = ReadRequest(op.request_id, KvOp(GET, op.key), READ_LINEARIZABLE)
        else:
            write = RangeWrite(self.node_id, op.op_seq, KvOp(PUT, op.key, op.value))
            request = ClientRequest(op.request_id, write)
        self._send(target, GroupRequest(desc.range_id, request))

    def _on_reply(self, reply: ClientReply, from_id: int) -> None:
        if reply.request_id == self._refreshing:
            self._on_map(reply)
            return
        if reply.request_id == self._move_request:
            self._move_request = 0
            if reply.ok:
                self.moves_started += 1
            return
        op = self._op
        if op is None or reply.request_id != op.request_id:
            return
        op.request_id = 0
        if reply.ok:
            self._finish(op, "ok", reply.result if op.f == GET else op.value)
            return
        if reply.error == LEADERSHIP_LOST and op.f == PUT:
            self._finish(op, "info", op.value)  # appended, may still commit: never retried
            return
        desc = self._lookup(op.key)
        if reply.error in ("not_leader", LEADERSHIP_LOST) and desc is not None:
            hint = reply.leader_hint
            if hint is not None and hint in desc.replicas:
                self._leaders[desc.range_id] = hint
            else:
                self._leaders.pop(desc.range_id, None)
        elif reply.error in STALE_ROUTE_ERRORS:
            if isinstance(reply.result, RangeBounds):
                self._newer = (reply.result.range_id, reply.result.version)
            self._refresh()
            return
        elif reply.error not in RETRIED_ERRORS:
            self._finish(op, "fail", None)  # refused outright (e.g. malformed): not applied
            return
        if self._now < op.deadline_tick:
            self._attempt(op)
        else:
            self._finish(op, "fail", None)

    def _finish(self, op: _Op, outcome: EventType, value: Any) -> None:
        self._record(outcome, op, value)
        self._op = None
        self._think_ticks = self._rng.randrange(0, self._max_think_ticks + 1)

    def _record(self, outcome: EventType, op: _Op, value: Any) -> None:
        event = HistoryEvent(self.node_id, outcome, op.f, value, op.key)
        self._ready.record.append(Record(event))

    # -- the range map ------------------------------------------------------------------------

    def _lookup(self, key: str) -> RangeDesc | None:
        return find_range(self.ranges, key)

    def _refresh(self) -> None:
        """Ask some process's meta replica for the range map (a serializable read)."""
        self.refreshes += 1
        self._request_id += 1
        self._refreshing = self._request_id
        self._refresh_sent = self._now
        node = self._nodes[self._rng.randrange(0, len(self._nodes))]
        self._ready.send.append(Send(node, range_map_request(self._request_id)))

    def _on_map(self, reply: ClientReply) -> None:
        self._refreshing = 0
        self.ranges = range_map_of(reply, self.ranges)
        op = self._op
        if op is not None and self._newer is not None and self._now < op.deadline_tick:
            # The refused request named a range version this map does not know yet: the
            # meta replica asked lags; ask another (the next refresh picks a node anew).
            rid, version = self._newer
            if any(d.range_id == rid and d.version < version for d in self.ranges):
                self._refresh()
                return
        self._newer = None
        if op is not None and op.request_id == 0:
            if self._now >= op.deadline_tick:
                self._finish(op, "fail", None)  # every attempt was refused: not applied
            else:
                self._attempt(op)

    # -- moves (admin client) ---------------------------------------------------------------

    def _start_move(self) -> None:
        desc = self.ranges[self._rng.randrange(0, len(self.ranges))]
        spare = [n for n in self._nodes if n not in desc.replicas]
        if not spare or not desc.replicas:
            return
        source = desc.replicas[self._rng.randrange(0, len(desc.replicas))]
        target = spare[self._rng.randrange(0, len(spare))]
        leader = self._leaders.get(desc.range_id, source)
        self._request_id += 1
        self._move_request = self._request_id
        self._move_sent = self._now
        self._send(leader, MoveReplica(self._request_id, desc.range_id, source, target))
