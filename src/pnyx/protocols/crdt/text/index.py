"""Counted B+ tree: a sequence of weighted items, found by position in O(log n).

The text's list of pieces is stored here.  Items (pieces) carry a weight ``vis`` (their
visible length) and a back-pointer ``chunk`` to the leaf holding them.  Leaves
(:class:`Chunk`) hold at most ``leaf_max`` items in order and are linked left to right;
inner nodes (:class:`Node`) hold at most ``fanout`` children; every node keeps the total
weight below it.  All leaves are at the same depth and every node but the root holds at
least half its maximum (nodes only split, items are never removed), so the height is
O(log n) for n items.

* :meth:`CountedTree.locate` (position -> leaf, index, offset): one root-to-leaf descent,
  at each node a C-level prefix sum over at most ``fanout`` (``leaf_max`` at the leaf)
  weights and a bisect -- O(log n) nodes.
* :func:`add_vis` (an item's weight changed by ``delta``): walks the leaf's ancestors --
  O(log n).
* :meth:`CountedTree.insert` puts an item into a leaf (ancestors' weights updated,
  O(log n)); a leaf over ``leaf_max`` is only *noted*, so callers may keep using
  ``(leaf, index)`` pairs until they call :meth:`CountedTree.fix`, which splits each noted
  leaf into parts of at least ``leaf_max / 2`` items and inserts the new leaves after it in
  its parent, splitting inner nodes upwards as needed: O(leaf_max + fanout * height) per
  new leaf, at most one per ``leaf_max / 2`` inserts -- amortised O(log n) per insert.

Pure data structure: no I/O, deterministic.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from itertools import accumulate
from operator import attrgetter
from typing import Any, Final, Generic, Protocol, TypeVar

LEAF_MAX_ITEMS: Final = 64
"""Default: a leaf holding more items than this is split in two."""

FANOUT_MAX: Final = 64
"""Default: an inner node holding more children than this is split in two."""

_vis_of = attrgetter("vis")


class Item(Protocol):
    """What the tree stores: a weight and the leaf holding the item (kept by the tree)."""

    vis: int
    chunk: Chunk[Any]


T = TypeVar("T", bound=Item)


class Node:
    """Inner node: children (all nodes or all chunks) and their total weight."""

    __slots__ = ("kids", "parent", "vis")

    def __init__(self, kids: list[Node | Chunk[Any]], vis: int) -> None:
        self.kids = kids
        self.vis = vis
        self.parent: Node | None = None


class Chunk(Generic[T]):
    """Leaf: items in order, their total weight, and the next leaf to the right."""

    __slots__ = ("items", "next", "parent", "vis")

    def __init__(self, items: list[T], vis: int) -> None:
        self.items = items
        self.vis = vis
        self.parent: Node | None = None
        self.next: Chunk[T] | None = None


def add_vis(node: Chunk[Any] | Node, delta: int) -> None:
    """Add ``delta`` to the weight of ``node`` and all its ancestors (an item changed)."""
    cur: Chunk[Any] | Node | None = node
    while cur is not None:
        cur.vis += delta
        cur = cur.parent


class CountedTree(Generic[T]):
    """Items in order with weights; see the module docstring for the costs."""

    def __init__(self, leaf_max: int = LEAF_MAX_ITEMS, fanout: int = FANOUT_MAX) -> None:
        if leaf_max < 2 or fanout < 3:
            raise ValueError(f"need leaf_max >= 2 and fanout >= 3, got {leaf_max}, {fanout}")
        self.leaf_max = leaf_max
        self.fanout = fanout
        first: Chunk[T] = Chunk([], 0)
        self.first = first
        """The leftmost leaf (never changes: splits move the upper half to a new leaf)."""
        self.root: Chunk[T] | Node = first
        self.overfull: list[Chunk[T]] = []
        """Leaves noted by :meth:`insert` as over ``leaf_max`` (split by :meth:`fix`)."""
        self.steps = 0
        """Nodes visited by :meth:`locate` so far (leaf included): for complexity tests."""

    @property
    def total(self) -> int:
        """Sum of all weights."""
        return self.root.vis

    def height(self) -> int:
        """Nodes on a root-to-leaf path (1 while the root is a leaf)."""
        h = 1
        node = self.root
        while isinstance(node, Node):
            node = node.kids[0]
            h += 1
        return h

    def chunks(self) -> Iterator[Chunk[T]]:
        """The leaves, left to right."""
        chunk: Chunk[T] | None = self.first
        while chunk is not None:
            yield chunk
            chunk = chunk.next

    def items(self) -> Iterator[T]:
        """All items, in order."""
        for chunk in self.chunks():
            yield from chunk.items

    def locate(self, p: int) -> tuple[Chunk[T], int, int]:
        """``(leaf, index, offset)`` of the item holding weight unit ``p`` (``0 <= p < total``).

        The item is ``leaf.items[index]`` and ``p`` is its ``offset``-th unit.
        """
        node = self.root
        if not 0 <= p < node.vis:
            raise IndexError(f"position {p} is outside the tree (total {node.vis})")
        steps = 1
        while isinstance(node, Node):
            kids = node.kids
            ends = list(accumulate(map(_vis_of, kids)))
            i = bisect_right(ends, p)
            child = kids[i]
            p -= ends[i] - child.vis
            node = child
            steps += 1
        items = node.items
        ends = list(accumulate(map(_vis_of, items)))
        i = bisect_right(ends, p)
        self.steps += steps
        return node, i, p - ends[i] + items[i].vis

    def insert(self, chunk: Chunk[T], index: int, item: T) -> None:
        """Put ``item`` at ``chunk.items[index]`` (an over-full leaf is noted for :meth:`fix`)."""
        items = chunk.items
        items.insert(index, item)
        item.chunk = chunk
        if len(items) > self.leaf_max:
            self.overfull.append(chunk)
        if item.vis:
            add_vis(chunk, item.vis)

    def insert_split(self, chunk: Chunk[T], index: int, item: T) -> None:
        """Like :meth:`insert` for an item whose weight was taken from its leaf's items.

        (A split item: the totals do not change, so no ancestor is touched.)
        """
        items = chunk.items
        items.insert(index, item)
        item.chunk = chunk
        if len(items) > self.leaf_max:
            self.overfull.append(chunk)

    def fix(self) -> None:
        """Split every over-full leaf (and inner nodes upwards); invalidates item indices.

        A leaf of L > leaf_max items becomes m = ceil(L / leaf_max) leaves of L // m or
        L // m + 1 items each: at least half of ``leaf_max`` (leaves never shrink after).
        """
        work = self.overfull
        limit = self.leaf_max
        while work:
            chunk = work.pop()
            size = len(chunk.items)
            while size > limit:
                parts = -(-size // limit)
                self._split_chunk(chunk, size - size // parts)  # the last part moves out
                size = len(chunk.items)

    def _split_chunk(self, chunk: Chunk[T], at: int) -> Chunk[T]:
        """Move ``chunk.items[at:]`` to a new leaf right after ``chunk``."""
        moved = chunk.items[at:]
        del chunk.items[at:]
        vis = 0
        new: Chunk[T] = Chunk(moved, 0)
        for item in moved:
            item.chunk = new
            vis += item.vis
        new.vis = vis
        chunk.vis -= vis
        new.next = chunk.next
        chunk.next = new
        self._insert_after(chunk, new)
        return new

    def _insert_after(self, old: Chunk[T] | Node, new: Chunk[T] | Node) -> None:
        """Make ``new`` (weight counted in ``old`` so far) the next sibling of ``old``."""
        for _ in range(self.height() + 1):
            parent = old.parent
            if parent is None:  # old was the root: grow a level
                root = Node([old, new], old.vis + new.vis)
                old.parent = new.parent = root
                self.root = root
                return
            kids = parent.kids
            kids.insert(kids.index(old) + 1, new)
            new.parent = parent
            if len(kids) <= self.fanout:
                return
            old, new = parent, self._split_node(parent)
        raise AssertionError("B-tree split did not reach the root")

    def _split_node(self, node: Node) -> Node:
        half = len(node.kids) // 2
        moved = node.kids[half:]
        del node.kids[half:]
        new = Node(moved, sum(map(_vis_of, moved)))
        for kid in moved:
            kid.parent = new
        node.vis -= new.vis
        return new

    def check(self) -> None:
        """Raise ``AssertionError`` naming the first broken invariant (for tests)."""
        depths: set[int] = set()
        self._check_node(self.root, None, 1, depths)
        if len(depths) != 1:
            raise AssertionError(f"leaves at different depths: {sorted(depths)}")
        leaves = list(self._leaves_under(self.root))
        linked = list(self.chunks())
        if leaves != linked:
            raise AssertionError("leaf links do not follow the tree order")

    def _check_node(
        self, node: Chunk[T] | Node, parent: Node | None, depth: int, depths: set[int]
    ) -> None:
        if node.parent is not parent:
            raise AssertionError("wrong parent pointer")
        is_root = parent is None
        if isinstance(node, Chunk):
            depths.add(depth)
            low = 0 if is_root else self.leaf_max // 2
            if not low <= len(node.items) <= self.leaf_max:
                raise AssertionError(f"leaf holds {len(node.items)} items")
            if any(item.chunk is not node for item in node.items):
                raise AssertionError("item's chunk pointer is not its leaf")
            if node.vis != sum(map(_vis_of, node.items)):
                raise AssertionError("leaf weight is not the sum of its items")
            return
        low = 2 if is_root else self.fanout // 2
        if not low <= len(node.kids) <= self.fanout:
            raise AssertionError(f"inner node holds {len(node.kids)} children")
        if node.vis != sum(map(_vis_of, node.kids)):
            raise AssertionError("node weight is not the sum of its children")
        for kid in node.kids:
            self._check_node(kid, node, depth + 1, depths)

    def _leaves_under(self, node: Chunk[T] | Node) -> Iterator[Chunk[T]]:
        if isinstance(node, Chunk):
            yield node
            return
        for kid in node.kids:
            yield from self._leaves_under(kid)
