"""Reliable broadcast: every node delivers every broadcast message exactly once.

Eager relay with acknowledged retransmission.  A node that first sees a message makes
the delivery durable (one log entry), then relays it to every peer and keeps
retransmitting to each peer until that peer acknowledges.  Acknowledgements and client
replies leave in the same batch as the log write, so they are only sent once it is
durable.  A restarted node knows what it delivered from its log and conservatively
retransmits all of it, because which peers had acknowledged was not persisted.
"""

from __future__ import annotations

from typing import Any

from pnyx.core import (
    Apply,
    ClientReply,
    DurableState,
    LogAppend,
    Message,
    Outbox,
    Rng,
    is_client,
)
from pnyx.protocols.broadcast.messages import Broadcast, Delivery, Gossip, GossipAck

RETRANSMIT_TICKS = 4
"""Ticks between two retransmission rounds of unacknowledged messages."""

MAX_RETRANSMIT_PER_ROUND = 256
"""Bound on messages re-sent per retransmission round (oldest first)."""


class BroadcastNode(Outbox):
    """One member of a reliable-broadcast group (implements :class:`pnyx.core.Node`).

    ``retransmit=False`` gives the deliberately broken variant that relays only once.
    """

    def __init__(
        self,
        node_id: int,
        peers: tuple[int, ...],
        rng: Rng,
        durable: DurableState,
        *,
        retransmit: bool = True,
    ) -> None:
        assert node_id in peers, f"node {node_id} missing from its own group {peers}"
        self.node_id = node_id
        self.peers = tuple(p for p in peers if p != node_id)
        self.retransmit = retransmit
        self._rng = rng
        self._ticks = rng.randrange(0, RETRANSMIT_TICKS)
        self.delivered: dict[str, Any] = {}
        self._unacked: dict[str, set[int]] = {}
        self._next_index = durable.last_index + 1
        super().__init__()
        self._recover(durable)

    # -- node contract -------------------------------------------------------------------

    def step(self, msg: Message, from_id: int) -> None:
        """Handle a client broadcast, a relayed message or an acknowledgement."""
        if isinstance(msg, Gossip):
            self._receive(msg.msg_id, msg.payload, from_id)
            self._send(from_id, GossipAck(msg.msg_id))
        elif isinstance(msg, GossipAck):
            waiting = self._unacked.get(msg.msg_id)
            if waiting is not None:
                waiting.discard(from_id)
                if not waiting:
                    del self._unacked[msg.msg_id]
        elif isinstance(msg, Broadcast):
            assert is_client(from_id), f"broadcast request from non-client {from_id}"
            self._receive(msg.msg_id, msg.payload, from_id)
            self._send(from_id, ClientReply(msg.request_id, ok=True, result=msg.msg_id))
        else:
            raise TypeError(f"broadcast node got unexpected message {msg!r}")

    def tick(self) -> None:
        """Count time; every ``RETRANSMIT_TICKS`` re-send what peers have not acknowledged."""
        self._ticks += 1
        if self.retransmit and self._ticks % RETRANSMIT_TICKS == 0:
            self._retransmit()

    # -- internals -----------------------------------------------------------------------

    def _recover(self, durable: DurableState) -> None:
        for offset, entry in enumerate(durable.log):
            assert isinstance(entry, Delivery), f"unexpected log entry {entry!r}"
            assert entry.msg_id not in self.delivered, f"{entry.msg_id} logged twice"
            self.delivered[entry.msg_id] = entry.payload
            self._ready.apply.append(Apply(durable.log_start + offset, entry))
            if self.retransmit:
                self._unacked[entry.msg_id] = set(self.peers)

    def _receive(self, msg_id: str, payload: Any, from_id: int) -> None:
        if msg_id in self.delivered:
            return
        self.delivered[msg_id] = payload
        entry = Delivery(msg_id, payload)
        self._ready.persist.append(LogAppend(self._next_index, (entry,)))
        self._ready.apply.append(Apply(self._next_index, entry))
        self._next_index += 1
        relay_to = {p for p in self.peers if p != from_id}
        for peer in relay_to:
            self._send(peer, Gossip(msg_id, payload))
        if self.retransmit and relay_to:
            self._unacked[msg_id] = relay_to

    def _retransmit(self) -> None:
        for sent, (msg_id, waiting) in enumerate(self._unacked.items()):
            if sent >= MAX_RETRANSMIT_PER_ROUND:
                break
            payload = self.delivered[msg_id]
            for peer in sorted(waiting):
                self._send(peer, Gossip(msg_id, payload))


def make_node(
    node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState
) -> BroadcastNode:
    """Factory for the correct protocol."""
    return BroadcastNode(node_id, peers, rng, durable)


def make_broken_node(
    node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState
) -> BroadcastNode:
    """Factory for the deliberately broken variant: relays once, never retransmits."""
    return BroadcastNode(node_id, peers, rng, durable, retransmit=False)
