"""Merkle trees over one key range, for anti-entropy (Dynamo, section 4.7).

Keys of a range hash into ``LEAVES`` buckets; a leaf's hash covers the bucket's keys and
their siblings, an inner node hashes its two children.  Two replicas compare trees from
the root down, only into children whose hashes differ, and exchange the keys of the
differing leaves only.  The tree is a complete binary tree in heap order: index 0 is the
root, ``2i+1`` and ``2i+2`` are the children of ``i``, leaves are the last ``LEAVES``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from pnyx.core.messages import encode
from pnyx.protocols.dynamo.ring import position
from pnyx.protocols.dynamo.versions import Version

DEPTH = 3
LEAVES = 1 << DEPTH
FIRST_LEAF = LEAVES - 1
TREE_SIZE = 2 * LEAVES - 1


def leaf_of(key: str) -> int:
    """The leaf bucket of ``key``."""
    return position(f"leaf:{key}") % LEAVES


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def build(items: Mapping[str, tuple[Version, ...]]) -> tuple[bytes, ...]:
    """The tree of a range's ``{key: siblings}`` (keys without siblings count as absent)."""
    buckets: list[list[tuple[str, tuple[Version, ...]]]] = [[] for _ in range(LEAVES)]
    for key in sorted(items):
        if items[key]:
            buckets[leaf_of(key)].append((key, items[key]))
    tree: list[bytes] = [b""] * TREE_SIZE
    for leaf, bucket in enumerate(buckets):
        tree[FIRST_LEAF + leaf] = _digest(encode(bucket))
    for index in range(FIRST_LEAF - 1, -1, -1):
        tree[index] = _digest(tree[2 * index + 1] + tree[2 * index + 2])
    return tuple(tree)


def differing_leaves(mine: tuple[bytes, ...], theirs: tuple[bytes, ...]) -> tuple[int, ...]:
    """Leaves whose hashes differ, found by descending only into differing subtrees."""
    if len(mine) != TREE_SIZE or len(theirs) != TREE_SIZE:
        raise ValueError(f"merkle trees must have {TREE_SIZE} hashes, got {len(theirs)}")
    found: list[int] = []
    stack = [0]
    while stack:
        index = stack.pop()
        if mine[index] == theirs[index]:
            continue
        if index >= FIRST_LEAF:
            found.append(index - FIRST_LEAF)
        else:
            stack.extend((2 * index + 2, 2 * index + 1))
    return tuple(sorted(found))
