"""Dotted version vectors (Preguiça et al., 2012) for Dynamo-style siblings.

A stored version carries a *dot* ``(node, counter)`` — the coordinator that created it
and that coordinator's per-key counter, unique across restarts — and the *context*: what
the writing client had read, kept exactly (a version vector plus the dots beyond it, so a
gap is never mistaken for seen).  ``a`` obsoletes ``b`` when ``a``'s
context covers ``b``'s dot.  Unlike a plain vector clock bumped at the coordinator, two
writes with the same (empty) context through the same coordinator stay siblings instead
of one silently replacing the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

VersionVector = tuple[tuple[int, int], ...]
"""Sorted ``(node, counter)`` pairs, one per node, counters > 0."""

Dot = tuple[int, int]

Context = tuple[VersionVector, tuple[Dot, ...]]
"""An exact causal context: a version vector (every dot ``(n, c)`` with ``c <= vv[n]``) plus
the sorted dots seen beyond it (a "dot cloud", for gaps)."""

EMPTY: Context = ((), ())


class Version(msgspec.Struct, frozen=True, array_like=True):
    """One sibling of a key: its dot, the causal context it was written in, its value."""

    node: int
    counter: int
    context: Context
    value: Any


def covers(context: Context, node: int, counter: int) -> bool:
    """True when ``context`` has seen the dot ``(node, counter)``."""
    vv, cloud = context
    for n, c in vv:
        if n == node and c >= counter:
            return True
    return (node, counter) in cloud


def add_dots(context: Context, dots: Iterable[Dot]) -> Context:
    """``context`` with ``dots`` added, normalised (contiguous dots folded into the vv)."""
    top = dict(context[0])
    cloud = set(context[1]) | set(dots)
    changed = True
    while changed:
        changed = False
        for n, c in sorted(cloud):
            if c <= top.get(n, 0):
                cloud.discard((n, c))
                changed = True
            elif c == top.get(n, 0) + 1:
                top[n] = c
                cloud.discard((n, c))
                changed = True
    return tuple(sorted(top.items())), tuple(sorted(cloud))


def union(a: Context, b: Context) -> Context:
    """The context that has seen what ``a`` or ``b`` has seen."""
    top = dict(a[0])
    for n, c in b[0]:
        top[n] = max(top.get(n, 0), c)
    return add_dots((tuple(sorted(top.items())), a[1]), b[1])


def obsoletes(newer: Version, older: Version) -> bool:
    """True when ``newer`` was written by a client that had seen ``older``."""
    return covers(newer.context, older.node, older.counter)


def _same_dot(a: Version, b: Version) -> bool:
    return a.node == b.node and a.counter == b.counter


def merge(siblings: Iterable[Version], incoming: Iterable[Version]) -> tuple[Version, ...]:
    """The maximal versions of both sets (none obsoletes another), sorted by dot."""
    result = list(siblings)
    for version in incoming:
        if any(_same_dot(s, version) or obsoletes(s, version) for s in result):
            continue
        result = [s for s in result if not obsoletes(version, s)]
        result.append(version)
    return tuple(sorted(result, key=lambda v: (v.node, v.counter)))


def context_of(siblings: Iterable[Version]) -> Context:
    """The context a reader of ``siblings`` passes back with its next write: their dots
    and everything their writers had seen."""
    context = EMPTY
    for version in siblings:
        context = add_dots(union(context, version.context), ((version.node, version.counter),))
    return context


def dominated(siblings: Iterable[Version], node: int, counter: int) -> bool:
    """True when the dot is one of ``siblings`` or covered by one of their contexts."""
    return any(
        (v.node == node and v.counter == counter) or covers(v.context, node, counter)
        for v in siblings
    )


def _pairs(value: Any) -> bool:
    return isinstance(value, tuple) and all(
        isinstance(p, tuple) and len(p) == 2 and all(type(x) is int and x >= 0 for x in p)
        for p in value
    )


def valid_context(value: Any) -> bool:
    """True when ``value`` is a well-formed :data:`Context` (as a client may send it)."""
    return isinstance(value, tuple) and len(value) == 2 and _pairs(value[0]) and _pairs(value[1])
