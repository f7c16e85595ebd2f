"""Causal broadcast: the reliable broadcast with vector-clock causal delivery.

Birman, Schiper and Stephenson (1991): every message carries its sender's vector clock
``VC(m)`` (how many messages of each origin the sender had delivered when it broadcast
``m``).  A node delivers ``m`` from ``j`` once ``VC(m)[j] == local[j] + 1`` and
``VC(m)[k] <= local[k]`` for every ``k != j``; until then ``m`` waits in a bounded pending
buffer.  So if a node delivered ``m1`` before it broadcast ``m2``, every node delivers
``m1`` before ``m2``.

Reliability is that of :mod:`pnyx.protocols.broadcast.node`: a node makes a delivery
durable (one log entry), then relays the message to every peer and retransmits it to each
peer until that peer acknowledges.  A node acknowledges only what it has durably
delivered, never what it merely holds, so a held message lost in a crash is sent again.
When the pending buffer is full (``pending_max`` messages) a node refuses further held
messages (drops them unacknowledged) and relies on retransmission; the oldest message a
peer retransmits is always deliverable, so a full buffer delays but never blocks delivery.

:class:`CausalBroadcast` is the pure component a node embeds (it writes its effects into
the host's :class:`~pnyx.core.Ready` and calls ``deliver(origin, payload)`` in causal
order); :class:`CausalBroadcastNode` is a whole node around it for the simulator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from pnyx.core import (
    Apply,
    ClientReply,
    DurableState,
    InvalidMessage,
    LogAppend,
    Message,
    Outbox,
    Ready,
    Rng,
    Send,
    is_client,
)
from pnyx.protocols.broadcast.causal_messages import CausalAck, CausalEntry, CausalGossip, Deps
from pnyx.protocols.broadcast.messages import Broadcast

PENDING_MAX = 512
"""Default bound on messages held for missing causal predecessors (per node)."""

RETRANSMIT_TICKS = 4
"""Ticks between two retransmission rounds of unacknowledged messages."""

MAX_RETRANSMIT_PER_PEER = 64
"""Bound on messages re-sent to one peer per round (its oldest unacknowledged first)."""

MAX_WIRE_INT = 2**62
"""Largest sequence number or clock entry accepted from the wire."""

MsgKey = tuple[int, int]
"""A message's identity: ``(origin, seq)``."""

DeliverFn = Callable[[int, Any], None]
"""``deliver(origin, payload)``: called once per delivered message, in causal order."""

CheckFn = Callable[[Any], None]
"""``check(payload)``: raises ``ValueError`` for a payload the host could not deliver."""


class _Held:
    """A message waiting in the pending buffer, and the peers that sent it (to acknowledge)."""

    __slots__ = ("entry", "senders")

    def __init__(self, entry: CausalEntry, sender: int) -> None:
        self.entry = entry
        self.senders = [sender]


class CausalBroadcast:
    """The embeddable causal-broadcast engine of one node.

    The host calls :meth:`recover` once with its durable state (the engine owns the host's
    log: every log entry is a :class:`CausalEntry`), :meth:`broadcast` to send,
    :meth:`step` for each peer message and :meth:`tick` each tick.  Effects go to the
    ``Ready`` passed in: a ``LogAppend`` and an ``Apply(index, entry)`` per delivery,
    relays and acknowledgements as sends.  ``deliver(origin, payload)`` is called for every
    delivery, including the host's own broadcasts (delivered at once, inside
    :meth:`broadcast`) and the replay of the log on recovery.  ``check_payload`` vets a
    peer's payload before it is accepted (a ``ValueError`` refuses the message as invalid).
    """

    def __init__(
        self,
        node_id: int,
        group: tuple[int, ...],
        *,
        deliver: DeliverFn | None = None,
        check_payload: CheckFn | None = None,
        pending_max: int = PENDING_MAX,
        tick_phase: int = 0,
    ) -> None:
        if node_id not in group:
            raise ValueError(f"node {node_id} missing from its own group {group}")
        if pending_max < 0:
            raise ValueError(f"pending_max must be >= 0, got {pending_max}")
        self.node_id = node_id
        self.group = frozenset(group)
        self.peers = tuple(sorted(p for p in group if p != node_id))
        self.pending_max = pending_max
        self._deliver_fn = deliver
        self._check_payload = check_payload
        self._ticks = tick_phase
        self.clock: dict[int, int] = {}
        """origin -> messages of that origin delivered here (the local vector clock)."""
        self.entries: dict[MsgKey, CausalEntry] = {}
        """Every delivered message, in delivery order."""
        self._unacked: dict[int, dict[MsgKey, None]] = {p: {} for p in self.peers}
        self._pending: dict[int, dict[int, _Held]] = {}
        self._pending_count = 0
        self._next_index = 1
        self.refused = 0
        """Messages dropped because the pending buffer was full (retransmission resends)."""

    # -- host API ------------------------------------------------------------------------

    def recover(self, durable: DurableState, ready: Ready) -> None:
        """Replay the durable log: deliveries are re-applied and retransmitted to everyone."""
        if self.entries:
            raise RuntimeError("recover() must be called once, before anything else")
        self._next_index = durable.log_start
        for raw in durable.log:
            entry = raw if isinstance(raw, CausalEntry) else msgspec.convert(raw, CausalEntry)
            if entry.key in self.entries or not self._deliverable(entry):
                raise RuntimeError(f"log entry {entry.key} out of causal order at {self.clock}")
            self._record(entry, ready, persist=False)
            for peer in self.peers:
                self._unacked[peer][entry.key] = None
            self._notify(entry)

    def broadcast(self, payload: Any, ready: Ready) -> CausalEntry:
        """Broadcast ``payload``: delivered here at once, then sent to every peer."""
        clock = self.clock
        deps: Deps = tuple((n, clock[n]) for n in sorted(clock) if n != self.node_id)
        entry = CausalEntry(self.node_id, clock.get(self.node_id, 0) + 1, deps, payload)
        self._deliver(entry, ready, ())
        return entry

    def step(self, msg: Message, from_id: int, ready: Ready) -> bool:
        """Handle a peer message; False when ``msg`` is not a causal-broadcast message.

        Raises :class:`~pnyx.core.InvalidMessage` (before any change) for a malformed one.
        """
        if isinstance(msg, CausalGossip):
            self._check_gossip(msg, from_id)
            self._on_gossip(msg, from_id, ready)
        elif isinstance(msg, CausalAck):
            if from_id not in self._unacked:
                raise InvalidMessage(f"CausalAck from {from_id}, not a peer of {self.node_id}")
            self._unacked[from_id].pop((msg.origin, msg.seq), None)
        else:
            return False
        return True

    def tick(self, ready: Ready) -> None:
        """Count time; every ``RETRANSMIT_TICKS`` re-send what peers have not acknowledged."""
        self._ticks += 1
        if self._ticks % RETRANSMIT_TICKS == 0:
            self._retransmit(ready)

    @property
    def pending_count(self) -> int:
        """Messages currently held for missing causal predecessors."""
        return self._pending_count

    def unacked_count(self) -> int:
        """(message, peer) pairs still waiting for an acknowledgement."""
        return sum(len(keys) for keys in self._unacked.values())

    def invariants(self) -> list[str]:
        """Broken local invariants (empty when all hold)."""
        problems: list[str] = []
        held = sum(len(queue) for queue in self._pending.values())
        if held != self._pending_count or held > self.pending_max:
            problems.append(f"pending count {self._pending_count} / {held} > {self.pending_max}")
        for origin, queue in self._pending.items():
            nxt = queue.get(self.clock.get(origin, 0) + 1)
            if nxt is not None and self._deliverable(nxt.entry):
                problems.append(f"held message {nxt.entry.key} is deliverable")
        return problems

    # -- receiving ---------------------------------------------------------------------

    def _check_gossip(self, msg: CausalGossip, from_id: int) -> None:
        if from_id not in self._unacked:
            raise InvalidMessage(f"CausalGossip from {from_id}, not a peer of {self.node_id}")
        if msg.origin not in self.group:
            raise InvalidMessage(f"CausalGossip origin {msg.origin} not in group")
        if not 1 <= msg.seq <= MAX_WIRE_INT:
            raise InvalidMessage(f"CausalGossip seq {msg.seq} outside [1, 2**62]")
        last = None
        for node, count in msg.deps:
            if node not in self.group or node == msg.origin or (last is not None and node <= last):
                raise InvalidMessage(f"CausalGossip deps {msg.deps!r}: bad or unsorted node {node}")
            if not 1 <= count <= MAX_WIRE_INT:
                raise InvalidMessage(f"CausalGossip deps {msg.deps!r}: count {count} out of range")
            last = node
        if self._check_payload is not None:
            try:
                self._check_payload(msg.payload)
            except ValueError as exc:
                raise InvalidMessage(f"CausalGossip {msg.origin}/{msg.seq}: {exc}") from exc

    def _on_gossip(self, msg: CausalGossip, from_id: int, ready: Ready) -> None:
        key = (msg.origin, msg.seq)
        if key in self.entries:
            ready.send.append(Send(from_id, CausalAck(msg.origin, msg.seq)))
            return
        entry = CausalEntry(msg.origin, msg.seq, msg.deps, msg.payload)
        if self._deliverable(entry):
            self._deliver(entry, ready, (from_id,))
            self._deliver_held(ready)
            return
        queue = self._pending.get(msg.origin)
        held = queue.get(msg.seq) if queue is not None else None
        if held is not None:
            if from_id not in held.senders:
                held.senders.append(from_id)
            return
        behind = msg.seq - self.clock.get(msg.origin, 0)
        if self._pending_count >= self.pending_max or behind > self.pending_max:
            self.refused += 1  # not acknowledged: the sender retransmits it later
            return
        self._pending.setdefault(msg.origin, {})[msg.seq] = _Held(entry, from_id)
        self._pending_count += 1

    def _deliverable(self, entry: CausalEntry) -> bool:
        """The causal delivery condition of Birman, Schiper and Stephenson."""
        clock = self.clock
        if entry.seq != clock.get(entry.origin, 0) + 1:
            return False
        return all(clock.get(node, 0) >= count for node, count in entry.deps)

    def _deliver_held(self, ready: Ready) -> None:
        """Deliver held messages that became deliverable (each pass delivers one or ends)."""
        progress = True
        while progress and self._pending_count:
            progress = False
            for origin in sorted(self._pending):
                queue = self._pending[origin]
                held = queue.get(self.clock.get(origin, 0) + 1)
                if held is None or not self._deliverable(held.entry):
                    continue
                del queue[held.entry.seq]
                if not queue:
                    del self._pending[origin]
                self._pending_count -= 1
                self._deliver(held.entry, ready, held.senders)
                progress = True

    # -- delivering --------------------------------------------------------------------

    def _deliver(self, entry: CausalEntry, ready: Ready, senders: Iterable[int]) -> None:
        """Deliver durably, acknowledge to ``senders``, relay to everyone else."""
        self._record(entry, ready)
        told = set(senders)
        for peer in sorted(told):
            ready.send.append(Send(peer, CausalAck(entry.origin, entry.seq)))
        gossip = CausalGossip(entry.origin, entry.seq, entry.deps, entry.payload)
        for peer in self.peers:
            if peer not in told:
                ready.send.append(Send(peer, gossip))
                self._unacked[peer][entry.key] = None
        self._notify(entry)

    def _record(self, entry: CausalEntry, ready: Ready, *, persist: bool = True) -> None:
        """The delivery itself: log entry (durable before the batch's sends) and apply."""
        self.entries[entry.key] = entry
        if entry.seq > self.clock.get(entry.origin, 0):
            self.clock[entry.origin] = entry.seq
        index = self._next_index
        self._next_index += 1
        if persist:
            ready.persist.append(LogAppend(index, (entry,)))
        ready.apply.append(Apply(index, entry))

    def _notify(self, entry: CausalEntry) -> None:
        if self._deliver_fn is not None:
            self._deliver_fn(entry.origin, entry.payload)

    def _retransmit(self, ready: Ready) -> None:
        for peer in self.peers:
            for sent, key in enumerate(self._unacked[peer]):
                if sent >= MAX_RETRANSMIT_PER_PEER:
                    break
                entry = self.entries[key]
                gossip = CausalGossip(entry.origin, entry.seq, entry.deps, entry.payload)
                ready.send.append(Send(peer, gossip))


class UncheckedCausalBroadcast(CausalBroadcast):
    """Deliberately broken: delivers every new message on arrival, without the causal check
    (still exactly once).  The simulator must catch it by the causal-order property."""

    def _deliverable(self, entry: CausalEntry) -> bool:
        return True


# -- a whole node for the simulator ------------------------------------------------------


class CausalBroadcastNode(Outbox):
    """One member of a causal-broadcast group (implements :class:`pnyx.core.Node`).

    Clients send :class:`~pnyx.protocols.broadcast.messages.Broadcast`; the payload
    broadcast is ``[msg_id, payload]``.  A client request seen again (a network duplicate)
    is acknowledged without broadcasting twice.
    """

    engine_class: type[CausalBroadcast] = CausalBroadcast

    def __init__(
        self,
        node_id: int,
        peers: tuple[int, ...],
        rng: Rng,
        durable: DurableState,
        *,
        pending_max: int = PENDING_MAX,
    ) -> None:
        super().__init__()
        self.node_id = node_id
        self.client_msgs: set[str] = set()
        """Client message ids broadcast by this node (to ignore duplicate requests)."""
        self.engine = self.engine_class(
            node_id,
            peers,
            deliver=self._on_deliver,
            pending_max=pending_max,
            tick_phase=rng.randrange(0, RETRANSMIT_TICKS),
        )
        self.engine.recover(durable, self._ready)

    def step(self, msg: Message, from_id: int) -> None:
        """Handle a client broadcast, a relayed message or an acknowledgement."""
        if isinstance(msg, Broadcast):
            if not is_client(from_id):
                raise InvalidMessage(f"Broadcast from non-client {from_id}")
            if msg.msg_id not in self.client_msgs:
                self.engine.broadcast([msg.msg_id, msg.payload], self._ready)
            self._send(from_id, ClientReply(msg.request_id, ok=True, result=msg.msg_id))
        elif not self.engine.step(msg, from_id, self._ready):
            raise InvalidMessage(f"causal broadcast node got unexpected {type(msg).__name__}")

    def tick(self) -> None:
        """Retransmission rounds."""
        self.engine.tick(self._ready)

    def invariants(self) -> list[str]:
        """The engine's local invariants."""
        return self.engine.invariants()

    def status(self) -> dict[str, Any]:
        """Health figures."""
        return {
            "delivered": len(self.engine.entries),
            "pending": self.engine.pending_count,
            "refused": self.engine.refused,
        }

    def _on_deliver(self, origin: int, payload: Any) -> None:
        if origin == self.node_id:
            self.client_msgs.add(str(payload[0]))


class UncheckedCausalBroadcastNode(CausalBroadcastNode):
    """The broken variant: its engine delivers without the causal check."""

    engine_class = UncheckedCausalBroadcast


def make_causal_node(
    node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState
) -> CausalBroadcastNode:
    """Factory for the correct protocol."""
    return CausalBroadcastNode(node_id, peers, rng, durable)


def make_unchecked_causal_node(
    node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState
) -> CausalBroadcastNode:
    """Factory for the deliberately broken variant (no causal check)."""
    return UncheckedCausalBroadcastNode(node_id, peers, rng, durable)
