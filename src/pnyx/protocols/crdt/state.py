"""The common shape of every state-based CRDT: join, value, copy and wire form.

A state-based CRDT is a join-semilattice.  Its mutators change the local state and
return a *delta*: a (usually small) state of the same type whose join into any replica
has the effect of the mutation (Almeida, Shoker, Baquero, "Delta state replicated data
types", 2018).  ``merge`` is the join, in place.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self

from pnyx.protocols.crdt.base import ReplicaId, WireError, check_replica

Element = str | int | bytes
"""What sets hold and maps are keyed by: hashable, msgpack-encodable, totally ordered per type."""

_TYPE_RANK = {int: 0, str: 1, bytes: 2}


def check_element(value: object, what: str = "element") -> Element:
    """Return ``value`` if it can be a set element or map key, else raise ``ValueError``."""
    if type(value) not in _TYPE_RANK:
        raise ValueError(f"{what} must be str, int or bytes, got {value!r}")
    return value  # type: ignore[return-value]


def element_order(value: Element) -> tuple[int, Any]:
    """Sort key giving a total, hash-independent order over mixed elements."""
    return (_TYPE_RANK[type(value)], value)


def decode_element(value: object, what: str = "element") -> Element:
    """Like :func:`check_element` for wire data: raises :class:`WireError`."""
    try:
        return check_element(value, what)
    except ValueError as exc:
        raise WireError(str(exc)) from None


def expect_list(data: object, what: str, length: int | None = None) -> list[Any]:
    """``data`` as a list (tuples accepted), optionally of exactly ``length`` items."""
    if not isinstance(data, list | tuple):
        raise WireError(f"{what} must be a list, got {data!r}")
    if length is not None and len(data) != length:
        raise WireError(f"{what} must have {length} items, got {len(data)}: {data!r}")
    return list(data)


class StateCRDT(ABC):
    """Base of the state-based types.  Subclasses set ``type_name`` (a key of ``TYPES``)."""

    type_name: ClassVar[str] = ""
    replica: ReplicaId

    def __init__(self, replica: ReplicaId) -> None:
        self.replica = check_replica(replica)

    def merge(self, other: Self) -> None:
        """Join ``other`` into this state (commutative, associative, idempotent)."""
        self.absorb(other)

    @abstractmethod
    def absorb(self, other: Self) -> bool:
        """Join ``other`` in place; True when this state changed (``other`` was not ⊑ self)."""

    @abstractmethod
    def value(self) -> Any:
        """The observable value."""

    @abstractmethod
    def copy(self) -> Self:
        """An independent copy (same replica id)."""

    @abstractmethod
    def empty_like(self) -> Self:
        """The bottom state of the same type (and parameters), for the same replica."""

    @abstractmethod
    def to_wire(self) -> Any:
        """The state as plain msgpack-encodable data (lists, dicts, str, int, bytes)."""

    @classmethod
    @abstractmethod
    def from_wire(cls, replica: ReplicaId, data: Any) -> Self:
        """Decode :meth:`to_wire` output as the state of ``replica``; :class:`WireError` if bad."""

    @abstractmethod
    def _state_key(self) -> Any:
        """A canonical, comparable form of the state (replica id excluded)."""

    def _check_same(self, other: object) -> None:
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, StateCRDT)
        return bool(self._state_key() == other._state_key())

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.replica!r}, {self.to_wire()!r})"
