"""Op-based add-wins observed-remove set (Shapiro et al. 2011, op-based OR-Set).

An add carries a fresh unique tag; a remove carries the tags of the element its source
had observed.  An add concurrent with a remove is not among the observed tags, so it
survives (add wins).  Causal delivery guarantees a remove arrives after the adds it
observed, so removing a tag never precedes adding it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pnyx.protocols.crdt.base import (
    Dot,
    ReplicaId,
    WireError,
    check_dot,
    check_replica,
    convert_wire,
)

MAX_ELEMENT_CHARS = 1024
"""Longest element accepted (elements are strings)."""


class AddOp(msgspec.Struct, frozen=True, array_like=True, tag="add"):
    """Add ``element`` under the unique ``tag`` (a dot of the source replica)."""

    element: str
    tag: Dot


class RemoveOp(msgspec.Struct, frozen=True, array_like=True, tag="rm"):
    """Remove the instances of ``element`` tagged ``tags`` (those the source had observed)."""

    element: str
    tags: tuple[Dot, ...]


SetOp = AddOp | RemoveOp
"""An OR-Set op."""


class OpORSet:
    """Add-wins OR-Set of strings as a CmRDT (needs causal, exactly-once delivery)."""

    def __init__(self, replica: ReplicaId) -> None:
        self.replica = check_replica(replica)
        self._tags: dict[str, set[Dot]] = {}
        self._counter = 0

    def prepare_add(self, element: str) -> AddOp:
        """The op adding ``element`` under a fresh tag."""
        _check_element(element)
        self._counter += 1  # tags stay unique even if this op is never delivered
        return AddOp(element, (self.replica, self._counter))

    def prepare_remove(self, element: str) -> RemoveOp:
        """The op removing every instance of ``element`` observed here (none: a no-op)."""
        _check_element(element)
        return RemoveOp(element, tuple(sorted(self._tags.get(element, ()))))

    def effect(self, op: SetOp) -> None:
        """Apply a delivered op."""
        if isinstance(op, AddOp):
            self._tags.setdefault(op.element, set()).add(op.tag)
            if op.tag[0] == self.replica and op.tag[1] > self._counter:
                self._counter = op.tag[1]  # replaying our own ops after a restart
            return
        tags = self._tags.get(op.element)
        if tags is not None:
            tags.difference_update(op.tags)
            if not tags:
                del self._tags[op.element]

    def value(self) -> frozenset[str]:
        """The elements present."""
        return frozenset(self._tags)

    def __contains__(self, element: object) -> bool:
        return element in self._tags

    def tags(self, element: str) -> frozenset[Dot]:
        """The live tags of ``element``."""
        return frozenset(self._tags.get(element, ()))

    @staticmethod
    def decode_op(data: Any) -> SetOp:
        """An op from its wire form; raises :class:`WireError` on malformed data."""
        op: SetOp = (
            data if isinstance(data, AddOp | RemoveOp) else convert_wire(data, SetOp, "OR-Set op")
        )
        try:
            _check_element(op.element)
        except ValueError as exc:
            raise WireError(str(exc)) from exc
        for tag in (op.tag,) if isinstance(op, AddOp) else op.tags:
            check_dot(tag)
        return op


def _check_element(element: object) -> str:
    if not isinstance(element, str) or len(element) > MAX_ELEMENT_CHARS:
        raise ValueError(f"OR-Set element must be a str of <= 1024 chars, got {element!r:.80}")
    return element
