"""Consistent hashing with virtual nodes and preference lists (Dynamo, section 4.2-4.3).

The ring has ``2**32`` positions.  Each physical node owns ``vnodes`` tokens placed by a
hash of its id.  Range ``i`` is the arc ``(token[i-1], token[i]]``; its key's preference
list is the walk clockwise from ``token[i]`` collecting distinct physical nodes.  The first
``n`` of them are the range's replicas; the rest are the fallbacks a sloppy quorum uses.
"""

from __future__ import annotations

import bisect
import hashlib

RING_BITS = 32
RING_SIZE = 1 << RING_BITS


def position(label: str) -> int:
    """The ring position of ``label`` (a stable hash, not Python's salted ``hash``)."""
    digest = hashlib.blake2b(label.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % RING_SIZE


class Ring:
    """The token ring of a fixed set of nodes."""

    def __init__(self, node_ids: tuple[int, ...], vnodes: int) -> None:
        if not node_ids or vnodes < 1:
            raise ValueError(f"a ring needs nodes and vnodes >= 1, got {node_ids!r}, {vnodes}")
        self.node_ids = tuple(sorted(node_ids))
        placed = sorted(
            (position(f"node-{n}-vnode-{i}"), n) for n in self.node_ids for i in range(vnodes)
        )
        self.tokens: tuple[int, ...] = tuple(t for t, _ in placed)
        self.owners: tuple[int, ...] = tuple(n for _, n in placed)
        self._walks = tuple(self._walk(i) for i in range(len(self.tokens)))

    @property
    def ranges(self) -> int:
        """Number of key ranges (one per token)."""
        return len(self.tokens)

    def range_of(self, key: str) -> int:
        """Index of the range holding ``key``."""
        index = bisect.bisect_left(self.tokens, position(key))
        return index % len(self.tokens)

    def walk(self, range_index: int) -> tuple[int, ...]:
        """Every physical node, in preference order for the range."""
        return self._walks[range_index]

    def replicas(self, range_index: int, n: int) -> tuple[int, ...]:
        """The range's ``n`` replicas (its preference list's top ``n``)."""
        return self._walks[range_index][:n]

    def preference_list(self, key: str) -> tuple[int, ...]:
        """Every physical node, in preference order for ``key``."""
        return self._walks[self.range_of(key)]

    def ranges_of(self, node_id: int, n: int) -> tuple[int, ...]:
        """The ranges ``node_id`` is a replica of."""
        return tuple(i for i in range(self.ranges) if node_id in self.replicas(i, n))

    def _walk(self, start: int) -> tuple[int, ...]:
        seen: list[int] = []
        for step in range(len(self.tokens)):
            node = self.owners[(start + step) % len(self.tokens)]
            if node not in seen:
                seen.append(node)
            if len(seen) == len(self.node_ids):
                break
        return tuple(seen)
