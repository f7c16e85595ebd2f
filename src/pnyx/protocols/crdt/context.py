"""Causal contexts: the set of dots a replica has seen, as a version vector plus a dot cloud.

Dots seen contiguously from 1 are summarised by the version vector; the few seen out of
order (typical of delta states) sit in the cloud until the gap before them fills
(Almeida et al., section 6).  The representation is canonical: two contexts with the same
set of dots are equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pnyx.protocols.crdt.base import Dot, VersionVector, check_dot
from pnyx.protocols.crdt.state import expect_list


class CausalContext:
    """A set of dots, compactly: ``{(r, c) | c <= vv[r]} | cloud`` (cloud disjoint from vv)."""

    __slots__ = ("_cloud", "_vv")

    def __init__(self, dots: Iterable[Dot] = ()) -> None:
        self._vv: dict[str, int] = {}
        self._cloud: set[Dot] = set()
        for dot in dots:
            self.add(dot)

    def contains(self, dot: Dot) -> bool:
        """Whether ``dot`` is in the context."""
        return dot[1] <= self._vv.get(dot[0], 0) or dot in self._cloud

    __contains__ = contains

    def add(self, dot: Dot) -> None:
        """Insert one dot."""
        replica, counter = dot
        known = self._vv.get(replica, 0)
        if counter <= known:
            return
        if counter == known + 1:
            self._vv[replica] = counter
            self._absorb_cloud(replica)
        else:
            self._cloud.add(dot)

    def max_counter(self, replica: str) -> int:
        """The highest counter of ``replica`` in the context (0 if none)."""
        best = self._vv.get(replica, 0)
        for r, c in self._cloud:
            if r == replica and c > best:
                best = c
        return best

    def next_dot(self, replica: str) -> Dot:
        """A fresh dot of ``replica`` (one above its highest), inserted and returned."""
        dot = (replica, self.max_counter(replica) + 1)
        self.add(dot)
        return dot

    def merge(self, other: CausalContext) -> None:
        """Union, in place."""
        touched: set[str] = set()
        for replica, counter in other._vv.items():
            if counter > self._vv.get(replica, 0):
                self._vv[replica] = counter
                touched.add(replica)
        for dot in other._cloud:
            if not self.contains(dot):
                self._cloud.add(dot)
                touched.add(dot[0])
        for replica in touched:
            self._absorb_cloud(replica)

    def covers(self, other: CausalContext) -> bool:
        """Whether every dot of ``other`` is in this context."""
        if any(
            counter > self._vv.get(r, 0) and not self._covers_run(r, counter)
            for r, counter in other._vv.items()
        ):
            return False
        return all(self.contains(dot) for dot in other._cloud)

    def _covers_run(self, replica: str, counter: int) -> bool:
        start = self._vv.get(replica, 0) + 1
        return all((replica, c) in self._cloud for c in range(start, counter + 1))

    def vv(self) -> VersionVector:
        """The contiguous part as a :class:`VersionVector`."""
        return VersionVector(self._vv)

    def dots(self) -> Iterator[Dot]:
        """Every dot, in (replica, counter) order (expands the version vector)."""
        expanded = [(r, c) for r, top in self._vv.items() for c in range(1, top + 1)]
        return iter(sorted([*expanded, *self._cloud]))

    def size(self) -> int:
        """Entries stored (vector entries + cloud dots): the context's wire footprint."""
        return len(self._vv) + len(self._cloud)

    def is_empty(self) -> bool:
        """True when the context holds no dot."""
        return not self._vv and not self._cloud

    def copy(self) -> CausalContext:
        """An independent copy."""
        twin = CausalContext()
        twin._vv = dict(self._vv)
        twin._cloud = set(self._cloud)
        return twin

    def to_wire(self) -> list[Any]:
        """``[{replica: counter}, [[replica, counter], ...]]`` with sorted entries."""
        return [dict(sorted(self._vv.items())), [list(d) for d in sorted(self._cloud)]]

    @classmethod
    def from_wire(cls, data: Any) -> CausalContext:
        """Decode :meth:`to_wire` output; :class:`WireError` on malformed data."""
        vv_data, cloud_data = expect_list(data, "causal context", 2)
        vv = VersionVector.from_wire(vv_data)
        ctx = cls()
        ctx._vv = vv.to_dict()
        for item in expect_list(cloud_data, "causal context cloud"):
            ctx.add(check_dot(item))
        return ctx

    def _absorb_cloud(self, replica: str) -> None:
        """Move cloud dots of ``replica`` that now extend its vector entry into the entry."""
        if not self._cloud:
            return
        top = self._vv.get(replica, 0)
        mine = sorted(c for r, c in self._cloud if r == replica)
        for counter in mine:
            if counter <= top:
                self._cloud.discard((replica, counter))
            elif counter == top + 1:
                top = counter
                self._cloud.discard((replica, counter))
            else:
                break
        if top:
            self._vv[replica] = top

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CausalContext):
            return NotImplemented
        return self._vv == other._vv and self._cloud == other._cloud

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CausalContext({self.to_wire()!r})"
