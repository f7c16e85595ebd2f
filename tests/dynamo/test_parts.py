"""Versions (dotted contexts), the ring and Merkle trees."""

from __future__ import annotations

import itertools

from pnyx.protocols.dynamo import merkle
from pnyx.protocols.dynamo.ring import Ring
from pnyx.protocols.dynamo.versions import (
    EMPTY,
    Version,
    add_dots,
    context_of,
    covers,
    dominated,
    merge,
)


def test_concurrent_versions_are_siblings_and_a_covering_one_replaces_them() -> None:
    x = Version(1, 1, EMPTY, "x")
    y = Version(2, 1, EMPTY, "y")
    assert merge((x,), (y,)) == (x, y)
    z = Version(1, 2, context_of((x, y)), "z")
    assert merge((x, y), (z,)) == (z,)
    assert merge((z,), (x,)) == (z,)  # an old version arriving late is dropped


def test_merge_is_order_independent() -> None:
    a = Version(1, 1, EMPTY, "a")
    b = Version(2, 1, EMPTY, "b")
    c = Version(1, 2, add_dots(EMPTY, [(1, 1)]), "c")
    d = Version(3, 1, context_of((b, c)), "d")
    results = {merge((), order) for order in itertools.permutations((a, b, c, d))}
    assert results == {(d,)}


def test_context_keeps_gaps_exact() -> None:
    """Having seen dots 2 and 5 of node 5 is not having seen 3 and 4."""
    seen = add_dots(EMPTY, [(5, 1), (5, 2), (5, 5)])
    assert seen == (((5, 2),), ((5, 5),))
    assert covers(seen, 5, 2) and covers(seen, 5, 5)
    assert not covers(seen, 5, 3) and not covers(seen, 5, 4)
    later = Version(3, 1, seen, "w")
    gap = Version(5, 3, EMPTY, "concurrent")
    assert merge((gap,), (later,)) == (later, gap)
    assert dominated((later,), 5, 2) and not dominated((later,), 5, 3)


def test_preference_lists_name_distinct_nodes_and_ranges_cover_the_ring() -> None:
    ring = Ring((1, 2, 3, 4, 5), vnodes=8)
    assert ring.ranges == 40
    for key in ("a", "b", "user:17"):
        walk = ring.preference_list(key)
        assert sorted(walk) == [1, 2, 3, 4, 5]
        assert walk[:3] == ring.replicas(ring.range_of(key), 3)
    for node in (1, 2, 3, 4, 5):
        mine = ring.ranges_of(node, 3)
        assert all(node in ring.replicas(r, 3) for r in mine)
    assert sum(len(ring.ranges_of(n, 3)) for n in (1, 2, 3, 4, 5)) == 40 * 3


def test_merkle_descends_only_into_differing_subtrees() -> None:
    items = {f"k{i}": (Version(1, i + 1, EMPTY, i),) for i in range(40)}
    base = merkle.build(items)
    assert merkle.differing_leaves(base, merkle.build(dict(items))) == ()
    changed = dict(items)
    changed["k7"] = (Version(2, 1, EMPTY, "new"),)
    assert merkle.differing_leaves(base, merkle.build(changed)) == (merkle.leaf_of("k7"),)
    removed = {k: v for k, v in items.items() if k not in ("k3", "k11")}
    expected = tuple(sorted({merkle.leaf_of("k3"), merkle.leaf_of("k11")}))
    assert merkle.differing_leaves(base, merkle.build(removed)) == expected
