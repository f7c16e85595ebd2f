"""Grow-only set and two-phase set (Shapiro et al. 2011), with delta mutators.

G-Set: join is union; the delta of ``add(e)`` is ``{e}``.  2P-Set: an added set and a
removed set (tombstones); an element is in the set when added and never removed, and
once removed it can never come back (remove wins for ever).
"""

from __future__ import annotations

from typing import Any, Self

from pnyx.protocols.crdt.base import ReplicaId
from pnyx.protocols.crdt.state import (
    Element,
    StateCRDT,
    check_element,
    decode_element,
    element_order,
    expect_list,
)


def _sorted(items: set[Element]) -> list[Element]:
    return sorted(items, key=element_order)


def _decode_set(data: Any, what: str) -> set[Element]:
    return {decode_element(e) for e in expect_list(data, what)}


class GSet(StateCRDT):
    """Grow-only set."""

    type_name = "gset"

    def __init__(self, replica: ReplicaId) -> None:
        super().__init__(replica)
        self.items: set[Element] = set()

    def add(self, element: Element) -> Self:
        """Insert ``element``; returns the delta ``{element}``."""
        check_element(element)
        self.items.add(element)
        delta = self.empty_like()
        delta.items.add(element)
        return delta

    def value(self) -> frozenset[Element]:
        """The elements."""
        return frozenset(self.items)

    def absorb(self, other: Self) -> bool:
        self._check_same(other)
        before = len(self.items)
        self.items |= other.items
        return len(self.items) != before

    def copy(self) -> Self:
        twin = self.empty_like()
        twin.items = set(self.items)
        return twin

    def empty_like(self) -> Self:
        return type(self)(self.replica)

    def to_wire(self) -> list[Element]:
        return _sorted(self.items)

    @classmethod
    def from_wire(cls, replica: ReplicaId, data: Any) -> Self:
        gset = cls(replica)
        gset.items = _decode_set(data, f"{cls.type_name} state")
        return gset

    def _state_key(self) -> Any:
        return self.items


class TwoPSet(StateCRDT):
    """Two-phase set: add, then remove once for good (a removed element cannot be re-added).

    ``remove`` of an element that is not currently in the set raises ``KeyError`` (the
    usual precondition: only observed elements are removed).
    """

    type_name = "2pset"

    def __init__(self, replica: ReplicaId) -> None:
        super().__init__(replica)
        self.added: set[Element] = set()
        self.removed: set[Element] = set()

    def add(self, element: Element) -> Self:
        """Insert ``element`` (no effect if it was ever removed); returns the delta."""
        check_element(element)
        self.added.add(element)
        delta = self.empty_like()
        delta.added.add(element)
        return delta

    def remove(self, element: Element) -> Self:
        """Remove ``element`` for good; it must be in the set.  Returns the delta."""
        check_element(element)
        if element not in self.added or element in self.removed:
            raise KeyError(f"2P-Set remove of {element!r}, which is not in the set")
        self.removed.add(element)
        delta = self.empty_like()
        delta.removed.add(element)
        return delta

    def value(self) -> frozenset[Element]:
        """Added and not removed."""
        return frozenset(self.added - self.removed)

    def absorb(self, other: Self) -> bool:
        self._check_same(other)
        before = len(self.added) + len(self.removed)
        self.added |= other.added
        self.removed |= other.removed
        return len(self.added) + len(self.removed) != before

    def copy(self) -> Self:
        twin = self.empty_like()
        twin.added = set(self.added)
        twin.removed = set(self.removed)
        return twin

    def empty_like(self) -> Self:
        return type(self)(self.replica)

    def to_wire(self) -> list[Any]:
        return [_sorted(self.added), _sorted(self.removed)]

    @classmethod
    def from_wire(cls, replica: ReplicaId, data: Any) -> Self:
        added, removed = expect_list(data, f"{cls.type_name} state", 2)
        tpset = cls(replica)
        tpset.added = _decode_set(added, "2pset added")
        tpset.removed = _decode_set(removed, "2pset removed")
        return tpset

    def _state_key(self) -> Any:
        return (self.added, self.removed)
