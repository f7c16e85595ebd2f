"""Wire messages and the log entry of causal broadcast (:mod:`pnyx.protocols.broadcast.causal`)."""

from __future__ import annotations

from typing import Any

import msgspec

from pnyx.core import Message

Deps = tuple[tuple[int, int], ...]
"""The sender's vector clock without its own entry: ``((node, delivered_count), ...)``,
sorted by node, zero counts left out."""


class CausalGossip(Message, frozen=True):
    """Node → node: message ``seq`` of ``origin`` (its ``seq``-th broadcast), with the
    origin's vector clock ``deps`` when it broadcast it, relayed by a node that delivered it."""

    origin: int
    seq: int
    deps: Deps
    payload: Any = None


class CausalAck(Message, frozen=True):
    """Node → node: the sender has durably delivered ``(origin, seq)``; stop retransmitting."""

    origin: int
    seq: int


class CausalEntry(msgspec.Struct, frozen=True, array_like=True):
    """Log entry and applied command: one delivered message, in delivery order."""

    origin: int
    seq: int
    deps: Deps
    payload: Any = None

    @property
    def key(self) -> tuple[int, int]:
        """The message's identity ``(origin, seq)``."""
        return (self.origin, self.seq)


CAUSAL_WIRE_TYPES: tuple[type[Message], ...] = (CausalGossip, CausalAck)
"""Messages causal-broadcast nodes exchange."""
