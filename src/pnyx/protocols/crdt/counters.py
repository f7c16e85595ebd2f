"""Grow-only and positive-negative counters (Shapiro et al. 2011), with delta mutators.

A G-Counter keeps one entry per replica (that replica's increments); join is the
pointwise max, the value the sum.  A delta is the single updated entry.  A PN-Counter is
two G-Counters, increments and decrements.
"""

from __future__ import annotations

from typing import Any, Self

from pnyx.protocols.crdt.base import ReplicaId, WireError, check_counter, check_replica
from pnyx.protocols.crdt.state import StateCRDT, expect_list


def _check_amount(amount: object) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise ValueError(f"counter amount must be a non-negative int, got {amount!r}")
    return amount


class GCounter(StateCRDT):
    """Grow-only counter.  ``increment(n)`` returns the delta ``{replica: new entry}``."""

    type_name = "gcounter"

    def __init__(self, replica: ReplicaId) -> None:
        super().__init__(replica)
        self.counts: dict[str, int] = {}

    def increment(self, amount: int = 1) -> Self:
        """Add ``amount`` (≥ 0) to this replica's entry; returns the delta."""
        _check_amount(amount)
        entry = self.counts.get(self.replica, 0) + amount
        delta = self.empty_like()
        if amount:
            self.counts[self.replica] = entry
            delta.counts[self.replica] = entry
        return delta

    def value(self) -> int:
        """Sum of all entries."""
        return sum(self.counts.values())

    def absorb(self, other: Self) -> bool:
        self._check_same(other)
        changed = False
        for replica, count in other.counts.items():
            if count > self.counts.get(replica, 0):
                self.counts[replica] = count
                changed = True
        return changed

    def copy(self) -> Self:
        twin = self.empty_like()
        twin.counts = dict(self.counts)
        return twin

    def empty_like(self) -> Self:
        return type(self)(self.replica)

    def to_wire(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))

    @classmethod
    def from_wire(cls, replica: ReplicaId, data: Any) -> Self:
        if not isinstance(data, dict):
            raise WireError(f"{cls.type_name} state must be a dict, got {data!r}")
        counter = cls(replica)
        for key, count in data.items():
            try:
                check_replica(key)
            except ValueError as exc:
                raise WireError(str(exc)) from None
            if check_counter(count, f"{cls.type_name} entry {key!r}"):
                counter.counts[key] = count
        return counter

    def _state_key(self) -> Any:
        return self.counts


class PNCounter(StateCRDT):
    """Counter with increments and decrements: a pair of G-Counters."""

    type_name = "pncounter"

    def __init__(self, replica: ReplicaId) -> None:
        super().__init__(replica)
        self.pos = GCounter(replica)
        self.neg = GCounter(replica)

    def increment(self, amount: int = 1) -> Self:
        """Add ``amount`` (≥ 0); returns the delta."""
        delta = self.empty_like()
        delta.pos = self.pos.increment(amount)
        return delta

    def decrement(self, amount: int = 1) -> Self:
        """Subtract ``amount`` (≥ 0); returns the delta."""
        delta = self.empty_like()
        delta.neg = self.neg.increment(amount)
        return delta

    def value(self) -> int:
        """Increments minus decrements."""
        return self.pos.value() - self.neg.value()

    def absorb(self, other: Self) -> bool:
        self._check_same(other)
        grew = self.pos.absorb(other.pos)
        return self.neg.absorb(other.neg) or grew

    def copy(self) -> Self:
        twin = self.empty_like()
        twin.pos = self.pos.copy()
        twin.neg = self.neg.copy()
        return twin

    def empty_like(self) -> Self:
        return type(self)(self.replica)

    def to_wire(self) -> list[Any]:
        return [self.pos.to_wire(), self.neg.to_wire()]

    @classmethod
    def from_wire(cls, replica: ReplicaId, data: Any) -> Self:
        pos, neg = expect_list(data, f"{cls.type_name} state", 2)
        counter = cls(replica)
        counter.pos = GCounter.from_wire(replica, pos)
        counter.neg = GCounter.from_wire(replica, neg)
        return counter

    def _state_key(self) -> Any:
        return (self.pos.counts, self.neg.counts)
