"""Op-based counter: increments and decrements commute, so delivery order does not matter."""

from __future__ import annotations

from typing import Any

import msgspec

from pnyx.protocols.crdt.base import ReplicaId, WireError, check_replica, convert_wire

MAX_AMOUNT = 2**62
"""Largest magnitude of one increment."""


class CounterOp(msgspec.Struct, frozen=True, array_like=True):
    """Add ``amount`` (negative: decrement) to the counter."""

    amount: int


class OpCounter:
    """A PN-counter as a CmRDT: the value is the sum of every delivered op's amount.

    Needs exactly-once delivery (a duplicate would count twice); any order works.
    """

    def __init__(self, replica: ReplicaId) -> None:
        self.replica = check_replica(replica)
        self._value = 0
        self.ops = 0
        """Ops applied so far."""

    def prepare_increment(self, amount: int = 1) -> CounterOp:
        """The op adding ``amount`` (state unchanged until :meth:`effect`)."""
        return CounterOp(_check_amount(amount))

    def prepare_decrement(self, amount: int = 1) -> CounterOp:
        """The op subtracting ``amount``."""
        return CounterOp(-_check_amount(amount))

    def effect(self, op: CounterOp) -> None:
        """Apply a delivered op."""
        self._value += op.amount
        self.ops += 1

    def value(self) -> int:
        """The counter's value."""
        return self._value

    @staticmethod
    def decode_op(data: Any) -> CounterOp:
        """An op from its wire form; raises :class:`WireError` on malformed data."""
        op: CounterOp = (
            data if isinstance(data, CounterOp) else convert_wire(data, CounterOp, "counter op")
        )
        _check_amount(op.amount, wire=True)
        return op


def _check_amount(amount: object, *, wire: bool = False) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int) or abs(amount) > MAX_AMOUNT:
        error = WireError if wire else ValueError
        raise error(f"counter amount must be an int within ±2**62, got {amount!r}")
    return amount
