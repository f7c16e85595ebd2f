"""The counted B+ tree under Fugue's piece list (text/index.py): model test and step counts."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pnyx.protocols.crdt.text import FugueText
from pnyx.protocols.crdt.text.index import Chunk, CountedTree, add_vis


class _Item:
    """A stand-in piece: a weight, a leaf pointer, and a name to compare orders by."""

    __slots__ = ("chunk", "name", "vis")

    def __init__(self, name: int, vis: int) -> None:
        self.name = name
        self.vis = vis
        self.chunk: Chunk[_Item] = Chunk([], 0)


def _place(tree: CountedTree[_Item], index: int) -> tuple[Chunk[_Item], int]:
    """(leaf, index in leaf) of global item ``index`` (may be one past the end)."""
    last = tree.first
    for chunk in tree.chunks():
        if index <= len(chunk.items):
            return chunk, index
        index -= len(chunk.items)
        last = chunk
    raise AssertionError(f"index {index} past the end of leaf {last}")


def _expected(model: list[_Item], p: int) -> tuple[_Item, int]:
    """Linear scan: the item holding unit ``p`` and the offset in it."""
    for item in model:
        if p < item.vis:
            return item, p
        p -= item.vis
    raise AssertionError(f"position {p} past the end")


def _compare(tree: CountedTree[_Item], model: list[_Item]) -> None:
    tree.check()
    assert [i.name for i in tree.items()] == [i.name for i in model]
    assert tree.total == sum(i.vis for i in model)
    for p in range(tree.total):
        chunk, index, offset = tree.locate(p)
        assert (chunk.items[index], offset) == _expected(model, p)


_OPS = st.lists(  # inserts and splits weighted up so that trees grow several levels
    st.tuples(st.sampled_from(["insert", "burst", "split", "split", "tombstone", "grow", "fix"]),
              st.integers(0, 10_000), st.integers(0, 5)),
    min_size=1, max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(ops=_OPS, leaf_max=st.integers(2, 5), fanout=st.integers(3, 5))
def test_tree_matches_a_plain_list(ops: list[tuple[str, int, int]], leaf_max: int,
                                   fanout: int) -> None:
    """Insert / tombstone / grow / split items at random places: same order and lookups.

    ``fix`` (splitting over-full nodes) runs only now and then, as FugueText defers it.
    """
    tree: CountedTree[_Item] = CountedTree(leaf_max, fanout)
    model: list[_Item] = []
    for name, (kind, where, size) in enumerate(ops):
        if kind in ("insert", "burst") or not model:
            i = where % (len(model) + 1)
            for k in range(8 if kind == "burst" else 1):  # a burst: 8 items, one place, no fix
                item = _Item(name * 8 + k, size)
                tree.insert(*_place(tree, i), item)
                model.insert(i, item)
            continue
        i = where % len(model)
        item = model[i]
        if kind == "tombstone":
            add_vis(item.chunk, -item.vis)
            item.vis = 0
        elif kind == "grow":
            item.vis += size
            add_vis(item.chunk, size)
        elif kind == "split" and item.vis >= 2:
            keep = 1 + size % (item.vis - 1)
            rest = _Item(name * 8, item.vis - keep)
            item.vis = keep
            chunk = item.chunk
            tree.insert_split(chunk, chunk.items.index(item) + 1, rest)
            model.insert(i + 1, rest)
        else:
            tree.fix()
            _compare(tree, model)
    tree.fix()
    _compare(tree, model)


def test_check_catches_a_wrong_weight_and_a_wrong_leaf_pointer() -> None:
    """The invariant check (used by the model test) fails on a corrupted tree."""
    tree: CountedTree[_Item] = CountedTree(2, 3)
    items = [_Item(n, 1) for n in range(20)]
    for n, item in enumerate(items):
        tree.insert(*_place(tree, n), item)
        tree.fix()
    tree.check()
    assert tree.height() >= 3
    items[7].vis += 1  # weight changed without add_vis
    with pytest.raises(AssertionError, match="weight"):
        tree.check()
    items[7].vis -= 1
    tree.check()
    items[3].chunk = items[15].chunk
    with pytest.raises(AssertionError, match="chunk pointer"):
        tree.check()


def test_locate_rejects_a_position_outside() -> None:
    tree: CountedTree[_Item] = CountedTree()
    tree.insert(tree.first, 0, _Item(0, 3))
    with pytest.raises(IndexError, match="position 3 is outside the tree"):
        tree.locate(3)
    with pytest.raises(ValueError, match="leaf_max >= 2"):
        CountedTree(1, 8)


def _steps_per_lookup(n_items: int, rng: random.Random) -> float:
    """Build ``n_items`` by random inserts (small nodes: many levels); mean nodes per lookup."""
    tree: CountedTree[_Item] = CountedTree(4, 4)
    for name in range(n_items):
        tree.insert(*tree_place_random(tree, rng), _Item(name, 1))
        tree.fix()
    tree.check()
    tree.steps = 0
    lookups = 500
    for _ in range(lookups):
        tree.locate(rng.randrange(tree.total))
    return tree.steps / lookups


def tree_place_random(tree: CountedTree[_Item], rng: random.Random) -> tuple[Chunk[_Item], int]:
    """A uniformly random insert place (found through the tree itself, O(log n))."""
    if tree.total == 0:
        return tree.first, 0
    chunk, index, _ = tree.locate(rng.randrange(tree.total))
    return chunk, index


def test_nodes_touched_per_lookup_grow_like_log_n() -> None:
    """Step counts, not time: 256x more items cost a few more nodes per lookup, not 256x.

    Leaves of <= 4 items and inner nodes of 2..4 children: the height is at most
    log2(n) + 1; a linear structure would touch O(n) nodes.
    """
    rng = random.Random(12)
    sizes = [64, 1024, 16384]
    steps = [_steps_per_lookup(n, rng) for n in sizes]
    for n, s in zip(sizes, steps, strict=True):
        assert s <= math.log2(n) + 1, (n, s)
    assert steps[0] < steps[1] < steps[2]
    assert steps[2] - steps[0] <= math.log2(sizes[2] / sizes[0]) + 1  # 256x items: <= 9 more
    assert steps[2] / steps[0] < 3


def test_fugue_text_keeps_the_tree_valid_and_shallow() -> None:
    """Local and remote edits on FugueText leave a valid tree of logarithmic height."""
    rng = random.Random(3)
    a, b = FugueText("a"), FugueText("b")
    model = ""
    for _ in range(4000):
        if model and rng.random() < 0.3:
            pos = rng.randrange(len(model))
            count = min(rng.randint(1, 4), len(model) - pos)
            b.apply_update(a.delete(pos, count))
            model = model[:pos] + model[pos + count :]
        else:
            pos = rng.randint(0, len(model))
            text = "xyz"[: rng.randint(1, 3)]
            b.apply_update(a.insert(pos, text))
            model = model[:pos] + text + model[pos:]
    assert a.text() == b.text() == model
    for doc in (a, b):
        tree = doc._tree
        tree.check()
        pieces = sum(1 for _ in tree.items())
        assert pieces > 2000
        # leaves hold >= 32 pieces, inner nodes >= 16 children (but the root)
        assert tree.height() <= 2 + math.log(pieces / 32, 16)
