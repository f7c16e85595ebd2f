"""Shared vocabulary of the CRDT library: replica ids, dots and version vectors.

Every CRDT in :mod:`pnyx.protocols.crdt` (state-based, op-based and text) names replicas
with :data:`ReplicaId`, identifies single events with a :data:`Dot` and summarises what a
replica has seen with a :class:`VersionVector`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

ReplicaId = str
"""A replica's name (the simulator uses ``str(node_id)``)."""

Dot = tuple[str, int]
"""One event: ``(replica, counter)``, counters start at 1 and grow by one per event."""


class WireError(ValueError):
    """Wire data that cannot be decoded into a CRDT (says what was wrong and where)."""


def convert_wire(data: object, wire_type: Any, what: str) -> Any:
    """``data`` decoded (``msgspec.convert``) as ``wire_type``, a msgspec type or a union
    or tuple of them; raises :class:`WireError` naming ``what`` and the (shortened) data."""
    try:
        return msgspec.convert(data, wire_type)
    except msgspec.ValidationError as exc:
        raise WireError(f"bad {what} {data!r:.120}: {exc}") from exc


def check_replica(replica: object) -> ReplicaId:
    """Return ``replica`` if it is a non-empty string, else raise ``ValueError``."""
    if not isinstance(replica, str) or not replica:
        raise ValueError(f"replica id must be a non-empty str, got {replica!r}")
    return replica


def check_counter(value: object, what: str = "counter") -> int:
    """Return ``value`` if it is a non-negative int (not bool), else raise ``WireError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise WireError(f"{what} must be a non-negative int, got {value!r}")
    return value


def check_dot(data: object) -> Dot:
    """Decode a dot from wire form ``[replica, counter]`` (counter ≥ 1)."""
    if not isinstance(data, list | tuple) or len(data) != 2:
        raise WireError(f"dot must be [replica, counter], got {data!r}")
    replica, counter = data
    if not isinstance(replica, str) or not replica:
        raise WireError(f"dot replica must be a non-empty str, got {replica!r}")
    if check_counter(counter, "dot counter") < 1:
        raise WireError(f"dot counter must be >= 1, got {counter!r}")
    return (replica, counter)


class VersionVector:
    """A map replica → highest counter seen (missing entries are 0).

    Join-semilattice under pointwise max (:meth:`merge`); :meth:`dominates` is the
    partial order. Zero entries are never stored, so equal vectors compare equal.
    """

    __slots__ = ("_counts",)

    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        self._counts: dict[str, int] = {}
        for replica, counter in (counts or {}).items():
            check_replica(replica)
            if check_counter(counter) > 0:
                self._counts[replica] = counter

    def get(self, replica: str) -> int:
        """The highest counter seen from ``replica`` (0 if none)."""
        return self._counts.get(replica, 0)

    def advance(self, replica: str, counter: int) -> None:
        """Raise the entry of ``replica`` to at least ``counter``."""
        if counter > self._counts.get(replica, 0):
            self._counts[replica] = counter

    def next_dot(self, replica: str) -> Dot:
        """Advance ``replica``'s entry by one and return that new dot."""
        counter = self._counts.get(replica, 0) + 1
        self._counts[replica] = counter
        return (replica, counter)

    def contains(self, dot: Dot) -> bool:
        """Whether the event ``dot`` is covered by this vector."""
        return dot[1] <= self._counts.get(dot[0], 0)

    def merge(self, other: VersionVector) -> None:
        """Pointwise max, in place."""
        for replica, counter in other._counts.items():
            if counter > self._counts.get(replica, 0):
                self._counts[replica] = counter

    def dominates(self, other: VersionVector) -> bool:
        """Whether ``self >= other`` pointwise (every event ``other`` saw, ``self`` saw)."""
        return all(self.get(replica) >= counter for replica, counter in other._counts.items())

    def concurrent(self, other: VersionVector) -> bool:
        """Whether neither vector dominates the other."""
        return not self.dominates(other) and not other.dominates(self)

    def items(self) -> list[tuple[str, int]]:
        """Entries sorted by replica (deterministic order)."""
        return sorted(self._counts.items())

    def total(self) -> int:
        """Sum of all entries (number of events covered when counters are contiguous)."""
        return sum(self._counts.values())

    def copy(self) -> VersionVector:
        """An independent copy."""
        vv = VersionVector()
        vv._counts = dict(self._counts)
        return vv

    def to_dict(self) -> dict[str, int]:
        """A plain ``dict`` copy (sorted keys)."""
        return dict(self.items())

    def to_wire(self) -> dict[str, int]:
        """Plain msgpack-encodable form."""
        return self.to_dict()

    @classmethod
    def from_wire(cls, data: Any) -> VersionVector:
        """Decode :meth:`to_wire` output; raises :class:`WireError` on malformed data."""
        if not isinstance(data, dict):
            raise WireError(f"version vector must be a dict, got {data!r}")
        try:
            return cls(data)
        except ValueError as exc:
            raise WireError(f"bad version vector {data!r}: {exc}") from exc

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._counts))

    def __len__(self) -> int:
        return len(self._counts)

    def __contains__(self, replica: object) -> bool:
        return replica in self._counts

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VersionVector):
            return NotImplemented
        return self._counts == other._counts

    def __hash__(self) -> int:
        return hash(tuple(self.items()))

    def __le__(self, other: VersionVector) -> bool:
        return other.dominates(self)

    def __ge__(self, other: VersionVector) -> bool:
        return self.dominates(other)

    def __repr__(self) -> str:
        return f"VersionVector({self.to_dict()!r})"


__all__ = [
    "Dot",
    "ReplicaId",
    "VersionVector",
    "WireError",
    "check_counter",
    "check_dot",
    "check_replica",
    "convert_wire",
]
