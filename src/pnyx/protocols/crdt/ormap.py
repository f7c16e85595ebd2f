"""Observed-remove map with nested causal CRDT values (Almeida et al. 2018, section 7.2).

The map is a dot map ``key -> nested dot store`` under ONE causal context shared with
every nested value.  Semantics chosen (the "reset on remove, add/update wins" map):

- updating a key's value makes the key present (an update is an add);
- ``remove(key)`` removes exactly the nested state it has observed: every dot under the
  key joins the context only, so the nested value is reset to bottom everywhere;
- an update concurrent with a removal survives, but only its own effect does: the
  nested value after the merge is what the concurrent update(s) contributed, not the
  state the remover saw (e.g. a set keeps only the concurrently added elements);
- a key whose nested value becomes empty (bottom) is absent.

Nested values must themselves be causal (dot-store) types, so that a removal can reset
them without coordination: ``orset``, ``rwset``, ``mvreg`` and ``ormap/<type>``
(nested maps, e.g. ``"ormap/mvreg"``).  Counters, G-/2P-Sets and the LWW register are
not resettable by a removal and are offered at the top level only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

from pnyx.protocols.crdt.base import ReplicaId, WireError
from pnyx.protocols.crdt.context import CausalContext
from pnyx.protocols.crdt.dotstore import CausalCRDT, DotMapKind, StoreKind
from pnyx.protocols.crdt.orsets import AWORSet, RWORSet
from pnyx.protocols.crdt.registers import MVRegister
from pnyx.protocols.crdt.state import Element, check_element, element_order, expect_list

NESTABLE: dict[str, type[CausalCRDT]] = {"orset": AWORSet, "rwset": RWORSet, "mvreg": MVRegister}
"""Value types an :class:`ORMap` accepts (plus ``ormap/<value type>``)."""

MAP_PREFIX = "ormap/"
MAX_NESTING = 8
"""Bound on ``ormap/ormap/...`` depth."""

_KINDS: dict[str, StoreKind] = {}


def _check_value_type(value_type: object, depth: int = 0) -> str:
    if not isinstance(value_type, str):
        raise ValueError(f"ORMap value type must be a str, got {value_type!r}")
    if value_type.startswith(MAP_PREFIX) and depth < MAX_NESTING:
        _check_value_type(value_type[len(MAP_PREFIX) :], depth + 1)
    elif value_type not in NESTABLE:
        valid = ", ".join(sorted(NESTABLE))
        raise ValueError(
            f"ORMap value type {value_type!r} is not nestable; valid: {valid} or "
            f"{MAP_PREFIX}<one of those> (at most {MAX_NESTING} levels)"
        )
    return value_type


def _value_kind(value_type: str) -> StoreKind:
    kind = _KINDS.get(value_type)
    if kind is None:
        if value_type.startswith(MAP_PREFIX):
            kind = DotMapKind(_value_kind(value_type[len(MAP_PREFIX) :]))
        else:
            kind = NESTABLE[value_type]("-").kind()
        _KINDS[value_type] = kind
    return kind


def _new_value(value_type: str, replica: ReplicaId) -> CausalCRDT:
    if value_type.startswith(MAP_PREFIX):
        return ORMap(replica, value_type[len(MAP_PREFIX) :])
    return NESTABLE[value_type](replica)


class ORMap(CausalCRDT):
    """Map from keys (str/int/bytes) to nested causal CRDTs of one ``value_type``."""

    type_name = "ormap"

    def __init__(self, replica: ReplicaId, value_type: str = "orset") -> None:
        self.value_type = _check_value_type(value_type)
        self._kind = DotMapKind(_value_kind(value_type))
        super().__init__(replica)

    def kind(self) -> StoreKind:
        return self._kind

    def update(self, key: Element, mutate: Callable[[Any], Any]) -> Self:
        """Apply ``mutate`` to the value under ``key`` (created empty if absent).

        ``mutate`` receives the nested CRDT (sharing this map's causal context), calls
        one or more of its mutators and returns the nested delta; returns the map delta.
        """
        check_element(key, "map key")
        child = _new_value(self.value_type, self.replica)
        child._store = self._store.get(key) or child.kind().empty()
        child._ctx = self._ctx  # shared: nested dots are dots of the map
        child_delta = mutate(child)
        if type(child_delta) is not type(child):
            raise TypeError(
                f"ORMap[{self.value_type}] update must return a {type(child).__name__} delta, "
                f"got {child_delta!r}"
            )
        if child._store:
            self._store[key] = child._store
        else:
            self._store.pop(key, None)
        delta_store = {key: child_delta._store} if child_delta._store else {}
        return self._delta(delta_store, child_delta._ctx)

    def remove(self, key: Element) -> Self:
        """Remove ``key`` and reset its observed nested state; returns the delta."""
        check_element(key, "map key")
        nested = self._store.pop(key, None)
        seen = list(self._kind.child.dots(nested)) if nested is not None else []
        return self._delta({}, CausalContext(seen))

    def get(self, key: Element) -> Any:
        """A detached copy of the nested CRDT under ``key``, or None if absent."""
        nested = self._store.get(key)
        if nested is None:
            return None
        child = _new_value(self.value_type, self.replica)
        child._store = self._kind.child.copy(nested)
        child._ctx = self._ctx.copy()
        return child

    def keys(self) -> list[Element]:
        """Present keys, sorted."""
        return sorted(self._store, key=element_order)

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def value(self) -> dict[Element, Any]:
        """``{key: nested value}`` with keys in sorted order."""
        out: dict[Element, Any] = {}
        for key in self.keys():
            child = _new_value(self.value_type, self.replica)
            child._store = self._store[key]
            out[key] = child.value()
        return out

    def empty_like(self) -> Self:
        return type(self)(self.replica, self.value_type)

    def _check_same(self, other: object) -> None:
        super()._check_same(other)
        assert isinstance(other, ORMap)
        if other.value_type != self.value_type:
            raise TypeError(f"cannot merge ORMap[{other.value_type}] into ORMap[{self.value_type}]")

    def to_wire(self) -> list[Any]:
        return [self.value_type, *super().to_wire()]

    @classmethod
    def from_wire(cls, replica: ReplicaId, data: Any) -> Self:
        value_type, store, ctx = expect_list(data, "ormap state", 3)
        try:
            ormap = cls(replica, value_type)
        except ValueError as exc:
            raise WireError(str(exc)) from None
        return ormap._load([store, ctx])

    def _state_key(self) -> Any:
        return (self.value_type, self._store, self._ctx)
