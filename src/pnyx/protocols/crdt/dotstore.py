"""Dot stores and the causal CRDT base: the machinery behind OR-Sets, MV-Register and OR-Map.

A causal CRDT is a pair (store, context): the store maps live dots to payload, the
context holds every dot the replica has seen, live or not.  A dot in the context but not
in the store was removed; that is how removals travel without tombstones (Almeida,
Shoker, Baquero 2018, section 6).  Three stores compose:

- dot set: ``set[Dot]``;
- dot fun: ``dict[Dot, V]`` (each dot carries an immutable value);
- dot map: ``dict[K, Store]`` of a nested store kind, empty nested stores dropped.

Join of (s1, c1) and (s2, c2) keeps what both stores hold, plus what one holds and the
other's context has not seen; contexts join by union.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, Self

from pnyx.protocols.crdt.base import ReplicaId, WireError, check_dot
from pnyx.protocols.crdt.context import CausalContext
from pnyx.protocols.crdt.state import (
    StateCRDT,
    decode_element,
    element_order,
    expect_list,
)


class StoreKind:
    """How one shape of dot store is joined, enumerated, copied and encoded."""

    def empty(self) -> Any:
        """A new empty store."""
        raise NotImplementedError

    def join(self, s1: Any, c1: CausalContext, s2: Any, c2: CausalContext) -> Any:
        """The joined store (a new object; inputs unchanged)."""
        raise NotImplementedError

    def dots(self, store: Any) -> Iterator[Any]:
        """Every dot in ``store``."""
        raise NotImplementedError

    def copy(self, store: Any) -> Any:
        """An independent copy."""
        raise NotImplementedError

    def to_wire(self, store: Any) -> Any:
        """Plain data, deterministic order."""
        raise NotImplementedError

    def from_wire(self, data: Any) -> Any:
        """Decode :meth:`to_wire` output (:class:`WireError` when malformed)."""
        raise NotImplementedError


class DotSetKind(StoreKind):
    """``set[Dot]``."""

    def empty(self) -> set[Any]:
        return set()

    def join(self, s1: Any, c1: CausalContext, s2: Any, c2: CausalContext) -> set[Any]:
        kept = {d for d in s1 if d in s2 or not c2.contains(d)}
        kept.update(d for d in s2 if not c1.contains(d))
        return kept

    def dots(self, store: Any) -> Iterator[Any]:
        return iter(store)

    def copy(self, store: Any) -> set[Any]:
        return set(store)

    def to_wire(self, store: Any) -> list[Any]:
        return [list(d) for d in sorted(store)]

    def from_wire(self, data: Any) -> set[Any]:
        return {check_dot(d) for d in expect_list(data, "dot set")}


class DotFunKind(StoreKind):
    """``dict[Dot, V]``; ``check_value`` validates decoded payloads."""

    def __init__(self, check_value: Callable[[Any], Any] = lambda v: v) -> None:
        self._check_value = check_value

    def empty(self) -> dict[Any, Any]:
        return {}

    def join(self, s1: Any, c1: CausalContext, s2: Any, c2: CausalContext) -> dict[Any, Any]:
        kept = {d: v for d, v in s1.items() if d in s2 or not c2.contains(d)}
        for d, v in s2.items():
            if d not in kept and not c1.contains(d):
                kept[d] = v
        return kept

    def dots(self, store: Any) -> Iterator[Any]:
        return iter(store)

    def copy(self, store: Any) -> dict[Any, Any]:
        return dict(store)

    def to_wire(self, store: Any) -> list[Any]:
        return [[d[0], d[1], store[d]] for d in sorted(store)]

    def from_wire(self, data: Any) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for item in expect_list(data, "dot fun"):
            replica, counter, value = expect_list(item, "dot fun entry", 3)
            out[check_dot([replica, counter])] = self._check_value(value)
        return out


class DotMapKind(StoreKind):
    """``dict[K, Store]`` over a nested ``child`` kind; keys are elements (str/int/bytes)."""

    def __init__(self, child: StoreKind) -> None:
        self.child = child

    def empty(self) -> dict[Any, Any]:
        return {}

    def join(self, s1: Any, c1: CausalContext, s2: Any, c2: CausalContext) -> dict[Any, Any]:
        child = self.child
        out: dict[Any, Any] = {}
        for key, v1 in s1.items():
            v2 = s2.get(key)
            joined = child.join(v1, c1, v2 if v2 is not None else child.empty(), c2)
            if joined:
                out[key] = joined
        for key, v2 in s2.items():
            if key not in s1:
                joined = child.join(child.empty(), c1, v2, c2)
                if joined:
                    out[key] = joined
        return out

    def dots(self, store: Any) -> Iterator[Any]:
        for nested in store.values():
            yield from self.child.dots(nested)

    def copy(self, store: Any) -> dict[Any, Any]:
        return {k: self.child.copy(v) for k, v in store.items()}

    def to_wire(self, store: Any) -> list[Any]:
        keys = sorted(store, key=element_order)
        return [[k, self.child.to_wire(store[k])] for k in keys]

    def from_wire(self, data: Any) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for item in expect_list(data, "dot map"):
            key, nested = expect_list(item, "dot map entry", 2)
            decoded = self.child.from_wire(nested)
            if decoded:  # empty nested stores are never kept
                out[decode_element(key, "key")] = decoded
        return out


DOT_SET = DotSetKind()


class CausalCRDT(StateCRDT):
    """A (store, causal context) pair; subclasses supply the store kind and the value."""

    def __init__(self, replica: ReplicaId) -> None:
        super().__init__(replica)
        self._store: Any = self.kind().empty()
        self._ctx = CausalContext()

    @abstractmethod
    def kind(self) -> StoreKind:
        """The shape of this type's dot store."""

    @property
    def context(self) -> CausalContext:
        """The causal context (read-only by convention)."""
        return self._ctx

    def _delta(self, store: Any, ctx: CausalContext) -> Self:
        """A delta of this type built from its parts."""
        delta = self.empty_like()
        delta._store = store
        delta._ctx = ctx
        return delta

    def absorb(self, other: Self) -> bool:
        self._check_same(other)
        kind = self.kind()
        joined = kind.join(self._store, self._ctx, other._store, other._ctx)
        changed = joined != self._store or not self._ctx.covers(other._ctx)
        self._store = joined
        if changed:
            self._ctx.merge(other._ctx)
        return changed

    def copy(self) -> Self:
        twin = self.empty_like()
        twin._store = self.kind().copy(self._store)
        twin._ctx = self._ctx.copy()
        return twin

    def to_wire(self) -> Any:
        return [self.kind().to_wire(self._store), self._ctx.to_wire()]

    def _load(self, data: Any) -> Self:
        store_data, ctx_data = expect_list(data, f"{self.type_name} state", 2)
        self._store = self.kind().from_wire(store_data)
        self._ctx = CausalContext.from_wire(ctx_data)
        for dot in self.kind().dots(self._store):
            if not self._ctx.contains(dot):
                raise WireError(f"{self.type_name}: live dot {dot} missing from its context")
        return self

    def _state_key(self) -> Any:
        return (self._store, self._ctx)
