"""Wire messages of the reliable broadcast protocol."""

from __future__ import annotations

from typing import Any

import msgspec

from pnyx.core import Message


class Broadcast(Message, frozen=True):
    """Client → node: broadcast ``payload`` under the unique ``msg_id``."""

    request_id: int
    msg_id: str
    payload: Any = None


class Gossip(Message, frozen=True):
    """Node → node: a message the sender has delivered and is relaying."""

    msg_id: str
    payload: Any = None


class GossipAck(Message, frozen=True):
    """Node → node: the sender has durably delivered ``msg_id``; stop retransmitting it."""

    msg_id: str


class Delivery(msgspec.Struct, frozen=True, array_like=True):
    """Log entry and applied command: one delivered message."""

    msg_id: str
    payload: Any = None


WIRE_TYPES: tuple[type[Message], ...] = (Broadcast, Gossip, GossipAck)
