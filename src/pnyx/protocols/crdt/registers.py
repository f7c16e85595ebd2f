"""Registers: last-writer-wins and multi-value (Shapiro et al. 2011; Almeida et al. 2018).

LWW-Register: a value stamped ``(timestamp, writer)``; join keeps the greater stamp.
Timestamps come from the caller or, by default, a Lamport counter (one above the
highest stamp this replica has seen), never from a clock.  Ties on ``(timestamp,
writer)`` (a caller reusing a stamp) are broken by the value's msgpack encoding, so the
join stays a total order.

MV-Register: a dot fun ``dot -> value`` with a causal context; a write replaces every
value it has seen, concurrent writes survive side by side as siblings.
"""

from __future__ import annotations

from typing import Any, Self

from pnyx.core import encode
from pnyx.protocols.crdt.base import ReplicaId, WireError, check_counter
from pnyx.protocols.crdt.context import CausalContext
from pnyx.protocols.crdt.dotstore import CausalCRDT, DotFunKind, StoreKind
from pnyx.protocols.crdt.state import StateCRDT, expect_list


def _encoded(value: Any) -> bytes:
    try:
        return encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"register value {value!r} is not msgpack-encodable: {exc}") from None


class LWWRegister(StateCRDT):
    """Last-writer-wins register; ``value()`` is None before the first write."""

    type_name = "lww"

    def __init__(self, replica: ReplicaId) -> None:
        super().__init__(replica)
        self.timestamp = 0
        self.writer = ""
        self._value: Any = None
        self._encoded = _encoded(None)

    def set(self, value: Any, timestamp: int | None = None) -> Self:
        """Write ``value`` stamped ``timestamp`` (default: Lamport, one above the current).

        A caller-given stamp lower than the current one loses: the write has no effect.
        Returns the delta (a register holding the write).
        """
        if timestamp is None:
            timestamp = self.timestamp + 1
        if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 1:
            raise ValueError(f"LWW timestamp must be an int >= 1, got {timestamp!r}")
        delta = self.empty_like()
        delta.timestamp, delta.writer = timestamp, self.replica
        delta._value, delta._encoded = value, _encoded(value)
        self.absorb(delta)
        return delta

    def value(self) -> Any:
        """The winning value."""
        return self._value

    def stamp(self) -> tuple[int, str]:
        """``(timestamp, writer)`` of the winning write."""
        return (self.timestamp, self.writer)

    def _key(self) -> tuple[int, str, bytes]:
        return (self.timestamp, self.writer, self._encoded)

    def absorb(self, other: Self) -> bool:
        self._check_same(other)
        if other._key() <= self._key():
            return False
        self.timestamp, self.writer = other.timestamp, other.writer
        self._value, self._encoded = other._value, other._encoded
        return True

    def copy(self) -> Self:
        twin = self.empty_like()
        twin.absorb(self)
        return twin

    def empty_like(self) -> Self:
        return type(self)(self.replica)

    def to_wire(self) -> list[Any]:
        return [self.timestamp, self.writer, self._value]

    @classmethod
    def from_wire(cls, replica: ReplicaId, data: Any) -> Self:
        timestamp, writer, value = expect_list(data, f"{cls.type_name} state", 3)
        check_counter(timestamp, "LWW timestamp")
        if not isinstance(writer, str) or (timestamp > 0) != bool(writer):
            raise WireError(f"LWW writer {writer!r} does not fit timestamp {timestamp!r}")
        reg = cls(replica)
        reg.timestamp, reg.writer = timestamp, writer
        try:
            reg._value, reg._encoded = value, _encoded(value)
        except ValueError as exc:
            raise WireError(str(exc)) from None
        return reg

    def _state_key(self) -> Any:
        return self._key()


_MV_STORE = DotFunKind()


class MVRegister(CausalCRDT):
    """Multi-value register: ``value()`` lists the concurrent values (siblings), by dot."""

    type_name = "mvreg"

    def kind(self) -> StoreKind:
        return _MV_STORE

    def write(self, value: Any) -> Self:
        """Replace every value seen so far with ``value``; returns the delta."""
        _encoded(value)
        dot = self._ctx.next_dot(self.replica)
        delta_ctx = CausalContext([dot, *self._store])
        self._store = {dot: value}
        return self._delta({dot: value}, delta_ctx)

    def clear(self) -> Self:
        """Remove every value seen so far (the register reads empty unless a concurrent
        write survives); returns the delta."""
        delta_ctx = CausalContext(self._store)
        self._store = {}
        return self._delta({}, delta_ctx)

    def value(self) -> tuple[Any, ...]:
        """Concurrent values, ordered by their dots (empty before any write)."""
        return tuple(self._store[d] for d in sorted(self._store))

    def empty_like(self) -> Self:
        return type(self)(self.replica)

    @classmethod
    def from_wire(cls, replica: ReplicaId, data: Any) -> Self:
        return cls(replica)._load(data)
