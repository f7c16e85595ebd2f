"""A replica node for state-based CRDTs: local ops, delta-interval anti-entropy, a durable log.

The replicated state is a :class:`Bundle`: named CRDT parts plus the set of operation
ids applied (a causal context of ``(replica, n)`` ids, which lets a monitor tell which
updates a replica has received).  A client's :class:`ClientOp` is applied locally, logged
and acknowledged once durable; every ``sync_ticks`` the node ships each peer what it
lacks (:class:`~pnyx.protocols.crdt.anti_entropy.DeltaAntiEntropy`).  Every delta the
node joins (its own or a received one that changed its state) is one log entry, and its
log index is its anti-entropy sequence number, so the counter is as durable as the
state.  Every ``snapshot_every`` entries the state is written as a record and the log
compacted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Self

from pnyx.core import (
    Apply,
    ClientReply,
    DurableState,
    InvalidMessage,
    LogAppend,
    LogCompact,
    Message,
    Outbox,
    PutRecord,
    Ready,
    Rng,
    is_client,
)
from pnyx.protocols.crdt.anti_entropy import DeltaAntiEntropy
from pnyx.protocols.crdt.base import ReplicaId, WireError, check_dot
from pnyx.protocols.crdt.context import CausalContext
from pnyx.protocols.crdt.messages import (
    SNAPSHOT_KEY,
    ClientOp,
    DeltaAck,
    DeltaShip,
    LocalOp,
    Received,
)
from pnyx.protocols.crdt.state import StateCRDT, expect_list

SYNC_TICKS = 2
"""Ticks between two anti-entropy rounds."""
MAX_BUFFERED_DELTAS = 32
"""Delta buffer bound; a peer further behind gets the full state."""
RESEND_TICKS = 6
"""Ticks before an unacknowledged, unchanged shipment is sent again to the same peer."""
SNAPSHOT_EVERY = 32
"""Log entries between two state snapshots (then the log is compacted)."""


class Bundle(StateCRDT):
    """A product of named CRDTs (joined part by part) plus the ids of the ops applied.

    Delta bundles hold only the parts an op touched; full states hold every part.
    """

    type_name = "bundle"

    def __init__(self, replica: ReplicaId, parts: Mapping[str, StateCRDT] | None = None) -> None:
        super().__init__(replica)
        self.parts: dict[str, StateCRDT] = dict(sorted((parts or {}).items()))
        self.ops = CausalContext()

    def absorb(self, other: Self) -> bool:
        self._check_same(other)
        changed = False
        for name, part in other.parts.items():
            mine = self.parts.get(name)
            if mine is None:
                self.parts[name] = part.copy()
                changed = True
            elif mine.absorb(part):
                changed = True
        if not self.ops.covers(other.ops):
            self.ops.merge(other.ops)
            changed = True
        return changed

    def value(self) -> dict[str, Any]:
        """``{part name: part value}``."""
        return {name: part.value() for name, part in sorted(self.parts.items())}

    def copy(self) -> Self:
        twin = self.empty_like()
        twin.parts = {name: part.copy() for name, part in self.parts.items()}
        twin.ops = self.ops.copy()
        return twin

    def empty_like(self) -> Self:
        return type(self)(self.replica)

    def to_wire(self) -> list[Any]:
        parts = [[name, part.to_wire()] for name, part in sorted(self.parts.items())]
        return [parts, self.ops.to_wire()]

    def decode(self, data: Any) -> Bundle:
        """Decode wire data whose parts have the types of this bundle's parts."""
        parts_data, ops_data = expect_list(data, "bundle", 2)
        out = Bundle(self.replica)
        for item in expect_list(parts_data, "bundle parts"):
            name, part_data = expect_list(item, "bundle part", 2)
            template = self.parts.get(name) if isinstance(name, str) else None
            if template is None:
                raise WireError(f"bundle part {name!r} unknown; known: {sorted(self.parts)}")
            out.parts[name] = type(template).from_wire(self.replica, part_data)
        out.ops = CausalContext.from_wire(ops_data)
        return out

    @classmethod
    def from_wire(cls, replica: ReplicaId, data: Any) -> Self:
        raise TypeError("a Bundle is decoded against a template: use template.decode(data)")

    def _state_key(self) -> Any:
        return (self.parts, self.ops)


OpHandler = Callable[[Bundle, Any], tuple[dict[str, StateCRDT], Any]]
"""Applies a client op to a bundle's parts (through their mutators) and returns
``(delta parts, result)``; raises ``ValueError``/``KeyError``/``TypeError`` for an op
that cannot apply (the bundle must then be unchanged)."""


class CrdtReplica(Outbox):
    """One replica (implements :class:`pnyx.core.Node`)."""

    def __init__(
        self,
        node_id: int,
        peers: tuple[int, ...],
        rng: Rng,
        durable: DurableState,
        *,
        template: Callable[[ReplicaId], Bundle],
        apply_op: OpHandler,
        sync_ticks: int = SYNC_TICKS,
        max_buffered: int = MAX_BUFFERED_DELTAS,
        snapshot_every: int = SNAPSHOT_EVERY,
    ) -> None:
        if node_id not in peers:
            raise ValueError(f"node {node_id} missing from its own group {peers}")
        super().__init__()
        self.node_id = node_id
        self.replica = str(node_id)
        self.peers = tuple(p for p in peers if p != node_id)
        self._apply_op = apply_op
        self._sync_ticks = sync_ticks
        self._snapshot_every = snapshot_every
        self._ticks = rng.randrange(0, sync_ticks)
        state = template(self.replica)
        self._template = state.copy()
        self._since_snapshot = 0
        self._announced_through = 0
        """Highest log index whose batch was carried out (its op announced by ``Apply``)."""
        self._snapshot_through = 0
        self._last_shipped: dict[int, tuple[tuple[int, int], int]] = {}
        """peer -> ((acked, next_seq) of the last shipment, tick it was sent)."""
        next_seq = self._recover(state, durable)
        self.ae = DeltaAntiEntropy(state, self.peers, next_seq=next_seq, max_buffered=max_buffered)

    @property
    def state(self) -> Bundle:
        """The replicated state (read-only by convention)."""
        return self.ae.state

    # -- node contract -------------------------------------------------------------------

    def step(self, msg: Message, from_id: int) -> None:
        """Handle a client op, a shipment or an acknowledgement."""
        if isinstance(msg, DeltaShip):
            self._on_ship(msg, from_id)
        elif isinstance(msg, DeltaAck):
            if from_id not in self.peers:
                raise InvalidMessage(f"ack from {from_id}, not a peer of {self.node_id}")
            self.ae.on_ack(from_id, msg.seq)
        elif isinstance(msg, ClientOp):
            if not is_client(from_id):
                raise InvalidMessage(f"client op from non-client {from_id}")
            self._on_client_op(msg, from_id)
        else:
            raise InvalidMessage(f"crdt replica got unexpected message {type(msg).__name__}")

    def tick(self) -> None:
        """Every ``sync_ticks``, ship each peer what it has not acknowledged."""
        self._ticks += 1
        if self._ticks % self._sync_ticks:
            return
        for peer in self.peers:
            interval = (self.ae.acked(peer), self.ae.next_seq)
            last = self._last_shipped.get(peer)
            if last is not None and last[0] == interval and self._ticks - last[1] < RESEND_TICKS:
                continue  # the same shipment is still on its way (or lost: resent later)
            shipment = self.ae.shipment_for(peer)
            if shipment is not None:
                self._last_shipped[peer] = (interval, self._ticks)
                payload = shipment.payload.to_wire()
                self._send(peer, DeltaShip(shipment.seq, shipment.full, payload))

    def advance(self, ready: Ready) -> None:
        """The batch is carried out: its log entries are durable and its ops announced."""
        for item in ready.apply:
            self._announced_through = max(self._announced_through, item.index)
        for op in ready.persist:
            if isinstance(op, LogAppend):
                last = op.first_index + len(op.entries) - 1
                self._announced_through = max(self._announced_through, last)

    def invariants(self) -> list[str]:
        """The anti-entropy buffer's invariants."""
        return self.ae.invariants()

    # -- internals -----------------------------------------------------------------------

    def _on_client_op(self, msg: ClientOp, client: int) -> None:
        state = self.ae.state
        past = state.ops.to_wire()
        try:
            parts, result = self._apply_op(state, msg.op)
        except (ValueError, KeyError, TypeError) as exc:
            self._send(client, ClientReply(msg.request_id, ok=False, error=str(exc)))
            return
        op_id = state.ops.next_dot(self.replica)
        delta = Bundle(self.replica, parts)
        delta.ops.add(op_id)
        seq = self.ae.record_local(delta)
        entry = LocalOp(op_id, msg.op, past, result, delta.to_wire())
        self._log(seq, entry)
        self._ready.apply.append(Apply(seq, entry))
        self._send(client, ClientReply(msg.request_id, ok=True, result=[list(op_id), result]))

    def _on_ship(self, msg: DeltaShip, sender: int) -> None:
        if sender not in self.peers:
            raise InvalidMessage(f"shipment from {sender}, not a peer of {self.node_id}")
        try:
            payload = self._template.decode(msg.payload)
        except (WireError, TypeError) as exc:
            raise InvalidMessage(f"bad shipment from {sender}: {exc}") from None
        if self.ae.apply_remote(payload, sender):
            self._log(self.ae.next_seq - 1, Received(msg.payload))
        self._send(sender, DeltaAck(msg.seq))

    def _log(self, index: int, entry: LocalOp | Received) -> None:
        self._ready.persist.append(LogAppend(index, (entry,)))
        self._since_snapshot += 1
        through = self._announced_through
        if self._since_snapshot >= self._snapshot_every and through > self._snapshot_through:
            # Compact only entries of batches already carried out: an op whose batch a
            # crash tears (kept on disk, never announced) must stay in the log, so that
            # recovery announces it.  The state written may hold more than ``through``;
            # recovery replays the entries after ``through`` on top (joins are idempotent).
            self._since_snapshot = 0
            self._snapshot_through = through
            state = [through, self.ae.state.to_wire()]
            self._ready.persist.append(PutRecord(SNAPSHOT_KEY, state))
            self._ready.persist.append(LogCompact(through))

    def _recover(self, state: Bundle, durable: DurableState) -> int:
        """Rebuild ``state`` from the snapshot and the log; returns the next sequence number."""
        through = 0
        snapshot = durable.records.get(SNAPSHOT_KEY)
        if snapshot is not None:
            through, data = snapshot
            self._snapshot_through = through
            state.absorb(self._template.decode(data))
        for offset, entry in enumerate(durable.log):
            index = durable.log_start + offset
            if index <= through:
                continue
            if isinstance(entry, LocalOp):
                state.absorb(self._template.decode(entry.delta))
                check_dot(entry.op_id)
                self._ready.apply.append(Apply(index, entry))
            elif isinstance(entry, Received):
                state.absorb(self._template.decode(entry.payload))
            else:
                raise TypeError(f"unexpected crdt log entry {entry!r}")
        return max(durable.last_index, through) + 1
