"""Observed-remove sets with dots and causal contexts (Almeida, Shoker, Baquero 2018).

No tombstones: a removal is the removed dots' presence in the causal context.

- :class:`AWORSet` (add-wins): element → dot set.  ``add`` mints a dot (and supersedes
  the element's dots it has seen), ``remove`` drops the dots it has seen; an add
  concurrent with a remove survives because the remover never saw its dot.
- :class:`RWORSet` (remove-wins): element → dot fun ``dot -> bool`` (True: add token,
  False: remove token).  Every operation supersedes the tokens it has seen; the element
  is present when tokens remain and none is a remove token, so a remove concurrent with
  an add wins.
"""

from __future__ import annotations

from typing import Any, Self

from pnyx.protocols.crdt.base import ReplicaId, WireError
from pnyx.protocols.crdt.context import CausalContext
from pnyx.protocols.crdt.dotstore import DOT_SET, CausalCRDT, DotFunKind, DotMapKind, StoreKind
from pnyx.protocols.crdt.state import Element, check_element

_AW_STORE = DotMapKind(DOT_SET)


def _check_token(value: Any) -> bool:
    if not isinstance(value, bool):
        raise WireError(f"remove-wins token must be a bool, got {value!r}")
    return value


_RW_STORE = DotMapKind(DotFunKind(_check_token))


class AWORSet(CausalCRDT):
    """Add-wins observed-remove set."""

    type_name = "orset"

    def kind(self) -> StoreKind:
        return _AW_STORE

    def add(self, element: Element) -> Self:
        """Insert ``element``; returns the delta (one new dot, the element's old dots)."""
        check_element(element)
        dot = self._ctx.next_dot(self.replica)
        seen = self._store.get(element, ())
        delta_ctx = CausalContext([dot, *seen])
        self._store[element] = {dot}
        return self._delta({element: {dot}}, delta_ctx)

    def remove(self, element: Element) -> Self:
        """Remove ``element`` as observed here; returns the delta (its dots, as context only).

        Removing an absent element is allowed and has no effect (an empty delta).
        """
        check_element(element)
        seen = self._store.pop(element, ())
        return self._delta({}, CausalContext(seen))

    def clear(self) -> Self:
        """Remove every element observed here; returns the delta."""
        seen = list(_AW_STORE.dots(self._store))
        self._store = {}
        return self._delta({}, CausalContext(seen))

    def __contains__(self, element: object) -> bool:
        return element in self._store

    def value(self) -> frozenset[Element]:
        """The elements."""
        return frozenset(self._store)

    def empty_like(self) -> Self:
        return type(self)(self.replica)

    @classmethod
    def from_wire(cls, replica: ReplicaId, data: Any) -> Self:
        return cls(replica)._load(data)


class RWORSet(CausalCRDT):
    """Remove-wins observed-remove set."""

    type_name = "rwset"

    def kind(self) -> StoreKind:
        return _RW_STORE

    def add(self, element: Element) -> Self:
        """Insert ``element`` (an add token superseding the tokens seen); returns the delta."""
        return self._token(element, True)

    def remove(self, element: Element) -> Self:
        """Remove ``element`` (a remove token superseding the tokens seen); returns the delta."""
        return self._token(element, False)

    def _token(self, element: Element, is_add: bool) -> Self:
        check_element(element)
        dot = self._ctx.next_dot(self.replica)
        seen = self._store.get(element, {})
        delta_ctx = CausalContext([dot, *seen])
        self._store[element] = {dot: is_add}
        return self._delta({element: {dot: is_add}}, delta_ctx)

    def __contains__(self, element: object) -> bool:
        tokens = self._store.get(element)
        return bool(tokens) and all(tokens.values())

    def value(self) -> frozenset[Element]:
        """Elements whose surviving tokens are all adds."""
        return frozenset(e for e, tokens in self._store.items() if all(tokens.values()))

    def empty_like(self) -> Self:
        return type(self)(self.replica)

    @classmethod
    def from_wire(cls, replica: ReplicaId, data: Any) -> Self:
        return cls(replica)._load(data)
