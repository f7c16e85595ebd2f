"""Wire messages and log entries of the state-based CRDT replica (:mod:`.replica`)."""

from __future__ import annotations

from typing import Any

import msgspec

from pnyx.core import Message


class ClientOp(Message, frozen=True):
    """Client → replica: apply ``op`` (a family-specific plain list) locally."""

    request_id: int
    op: Any


class DeltaShip(Message, frozen=True):
    """Replica → replica: a delta-interval (or the full state when ``full``) to join.

    ``seq`` is the sender's delta counter; the receiver acknowledges it."""

    seq: int
    full: bool
    payload: Any


class DeltaAck(Message, frozen=True):
    """Replica → replica: the sender holds every delta of the receiver numbered below ``seq``."""

    seq: int


class LocalOp(msgspec.Struct, frozen=True, array_like=True):
    """Log entry and applied command: one operation applied at its origin replica.

    ``op_id`` is ``[replica, n]``; ``past`` the wire form of the op ids the replica had
    seen when applying it (its causal past); ``result`` what the op returned (e.g. an LWW
    timestamp); ``delta`` the wire form of the delta it produced.
    """

    op_id: tuple[str, int]
    op: Any
    past: Any
    result: Any
    delta: Any


class Received(msgspec.Struct, frozen=True, array_like=True):
    """Log entry: a received delta-interval or state that changed the replica's state."""

    payload: Any


SNAPSHOT_KEY = "crdt-snapshot"
"""Durable record ``[through_index, state wire]``: the state after log entries ≤ index."""

WIRE_TYPES: tuple[type[Message], ...] = (ClientOp, DeltaShip, DeltaAck)
