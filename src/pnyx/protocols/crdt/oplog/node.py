"""A node replicating one op-based CRDT over causal broadcast (for the simulator).

Clients send :class:`CrdtEdit` requests; the node turns each into an op of its replica
(``prepare``), broadcasts it with :class:`~pnyx.protocols.broadcast.CausalBroadcast` and
applies every delivered op (``effect``) in causal order, its own at once.  The replica is
rebuilt on restart by replaying the broadcast log; nothing else is persisted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from pnyx.core import ClientReply, DurableState, InvalidMessage, Message, Outbox, Rng, is_client
from pnyx.protocols.broadcast.causal import PENDING_MAX, RETRANSMIT_TICKS, CausalBroadcast
from pnyx.protocols.crdt.base import convert_wire
from pnyx.protocols.crdt.oplog.counter import OpCounter
from pnyx.protocols.crdt.oplog.messages import CrdtEdit, OpPayload
from pnyx.protocols.crdt.oplog.orset import AddOp, OpORSet

MAX_EDIT_CHARS = 256
"""Longest text or element, and largest delete count, one edit may carry."""

MAX_WHERE = 2**62
"""Largest ``where``/``amount`` magnitude accepted from a client."""


class EditReplica(Protocol):
    """Adapts one CRDT type to client edits and delivered ops."""

    kinds: frozenset[str]
    """The ``CrdtEdit.kind`` values this replica accepts."""

    def prepare(self, edit: CrdtEdit) -> Any:
        """The op for a local edit (text types also integrate it locally here)."""
        ...

    def effect(self, op: Any, fresh: bool) -> None:
        """Apply a delivered op; ``fresh``: this replica prepared it just now."""
        ...

    def check_op(self, op: Any) -> Any:
        """The op decoded from its wire form; ``ValueError`` when malformed."""
        ...

    def value(self) -> Any:
        """The observable value."""
        ...


class CounterReplica:
    """:class:`OpCounter` behind the edit interface (``increment`` by ``amount``)."""

    kinds = frozenset({"increment"})

    def __init__(self, replica: str) -> None:
        self.crdt = OpCounter(replica)

    def prepare(self, edit: CrdtEdit) -> Any:
        return self.crdt.prepare_increment(edit.amount)

    def effect(self, op: Any, fresh: bool) -> None:
        self.crdt.effect(self.check_op(op))

    def check_op(self, op: Any) -> Any:
        return OpCounter.decode_op(op)

    def value(self) -> int:
        return self.crdt.value()


class SetReplica:
    """:class:`OpORSet` behind the edit interface (``add``/``remove`` of ``element``)."""

    kinds = frozenset({"add", "remove"})

    def __init__(self, replica: str) -> None:
        self.crdt = OpORSet(replica)

    def prepare(self, edit: CrdtEdit) -> Any:
        if edit.kind == "add":
            return self.crdt.prepare_add(edit.element)
        return self.crdt.prepare_remove(edit.element)

    def effect(self, op: Any, fresh: bool) -> None:
        self.crdt.effect(self.check_op(op))

    def check_op(self, op: Any) -> Any:
        return OpORSet.decode_op(op)

    def value(self) -> frozenset[str]:
        return self.crdt.value()


ReplicaFactory = Callable[[str], EditReplica]


class OpCrdtNode(Outbox):
    """One replica of an op-based CRDT (implements :class:`pnyx.core.Node`)."""

    def __init__(
        self,
        node_id: int,
        peers: tuple[int, ...],
        rng: Rng,
        durable: DurableState,
        *,
        make_replica: ReplicaFactory,
        pending_max: int = PENDING_MAX,
    ) -> None:
        super().__init__()
        self.node_id = node_id
        self.replica = make_replica(str(node_id))
        self.edits: set[str] = set()
        """Edits this node broadcast (a duplicated request is not applied twice)."""
        self._fresh = False
        self.engine = CausalBroadcast(
            node_id,
            peers,
            deliver=self._on_deliver,
            check_payload=self._check_payload,
            pending_max=pending_max,
            tick_phase=rng.randrange(0, RETRANSMIT_TICKS),
        )
        self.engine.recover(durable, self._ready)

    def step(self, msg: Message, from_id: int) -> None:
        """Handle a client edit or a causal-broadcast message."""
        if isinstance(msg, CrdtEdit):
            self._on_edit(msg, from_id)
        elif not self.engine.step(msg, from_id, self._ready):
            raise InvalidMessage(f"op-based CRDT node got unexpected {type(msg).__name__}")

    def tick(self) -> None:
        """Retransmission rounds of the broadcast."""
        self.engine.tick(self._ready)

    def invariants(self) -> list[str]:
        """The broadcast engine's local invariants."""
        return self.engine.invariants()

    def value(self) -> Any:
        """The replica's observable value."""
        return self.replica.value()

    def _on_edit(self, edit: CrdtEdit, from_id: int) -> None:
        if not is_client(from_id):
            raise InvalidMessage(f"CrdtEdit from non-client {from_id}")
        _check_edit(edit, self.replica.kinds)
        if edit.edit_id not in self.edits:
            op = self.replica.prepare(edit)
            self._fresh = True
            try:
                self.engine.broadcast(OpPayload(edit.edit_id, op), self._ready)
            finally:
                self._fresh = False
        self._send(from_id, ClientReply(edit.request_id, ok=True, result=edit.edit_id))

    def _check_payload(self, payload: Any) -> None:
        decoded = _payload(payload)
        self.replica.check_op(decoded.op)

    def _on_deliver(self, origin: int, payload: Any) -> None:
        decoded = _payload(payload)
        if origin == self.node_id:
            self.edits.add(decoded.edit_id)
        self.replica.effect(decoded.op, self._fresh)


def _payload(payload: Any) -> OpPayload:
    if isinstance(payload, OpPayload):
        return payload
    decoded: OpPayload = convert_wire(payload, OpPayload, "op payload")
    return decoded


def _check_edit(edit: CrdtEdit, kinds: frozenset[str]) -> None:
    """Refuse (InvalidMessage) an edit this replica cannot carry out, naming the value."""
    if edit.kind not in kinds:
        raise InvalidMessage(f"CrdtEdit kind {edit.kind!r} not one of {sorted(kinds)}")
    if not edit.edit_id or len(edit.edit_id) > MAX_EDIT_CHARS:
        raise InvalidMessage(f"CrdtEdit edit_id {edit.edit_id!r:.80} empty or too long")
    if abs(edit.amount) > MAX_WHERE or not 0 <= edit.where <= MAX_WHERE:
        raise InvalidMessage(f"CrdtEdit amount {edit.amount} or where {edit.where} out of range")
    too_long = max(len(edit.element), len(edit.text), edit.count) > MAX_EDIT_CHARS
    if too_long or edit.count < 0:
        raise InvalidMessage(
            f"CrdtEdit element/text/count over {MAX_EDIT_CHARS} or negative count {edit.count}"
        )


def make_counter_node(
    node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState
) -> OpCrdtNode:
    """Factory: an op-based counter replica."""
    return OpCrdtNode(node_id, peers, rng, durable, make_replica=CounterReplica)


def make_set_node(
    node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState
) -> OpCrdtNode:
    """Factory: an op-based add-wins OR-Set replica."""
    return OpCrdtNode(node_id, peers, rng, durable, make_replica=SetReplica)


__all__ = [
    "AddOp",
    "CounterReplica",
    "EditReplica",
    "OpCrdtNode",
    "SetReplica",
    "make_counter_node",
    "make_set_node",
]
