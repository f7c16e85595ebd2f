"""FugueText: local edits, convergence under any delivery, Fugue's non-interleaving, wire."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pnyx.protocols.crdt.text import FugueText, TextOp, decode_ops

ALPHABET = "abcxyz\U0001f600\u00e9"  # includes a non-BMP code point


def reference_text(ops: list[TextOp]) -> str:
    """Fugue by the book: a tree of single characters, traversed recursively (no runs)."""
    kids: dict[tuple[object, bool], list[tuple[str, int]]] = {}
    chars: dict[tuple[str, int], str] = {}
    deleted: set[tuple[str, int]] = set()
    for op in ops:
        if op.text:
            parent: object = (op.parent_replica, op.parent_counter) if op.parent_counter else None
            right = op.right
            for i, ch in enumerate(op.text):
                cid = (op.replica, op.counter + i)
                chars[cid] = ch
                kids.setdefault((parent, right), []).append(cid)
                parent, right = cid, True
        for name, ctr, length in op.targets:
            step = 1 if length > 0 else -1
            deleted.update((name, ctr + k * step) for k in range(abs(length)))
    out: list[str] = []
    stack: list[tuple[object, bool]] = [(None, False)]  # (node, children already pushed)
    while stack:
        node, expanded = stack.pop()
        if expanded:
            assert isinstance(node, tuple)
            if node not in deleted:
                out.append(chars[node])
            continue
        right = sorted(kids.get((node, True), []))
        left = sorted(kids.get((node, False), []))
        stack.extend((k, False) for k in reversed(right))
        if node is not None:
            stack.append((node, True))
        stack.extend((k, False) for k in reversed(left))
    return "".join(out)


def random_edit(rng: random.Random, doc: FugueText) -> bytes:
    """One random local edit; checks it did exactly what a Python string edit does."""
    before = doc.text()
    if before and rng.random() < 0.35:
        pos = rng.randrange(len(before))
        count = rng.randint(1, min(5, len(before) - pos))
        update = doc.delete(pos, count)
        assert doc.text() == before[:pos] + before[pos + count :]
    else:
        pos = rng.randint(0, len(before))
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 4)))
        update = doc.insert(pos, text)
        assert doc.text() == before[:pos] + text + before[pos:]
    assert len(doc) == len(doc.text())
    return update


def concurrent_session(seed: int, replicas: int, steps: int, sync_p: float) -> list[bytes]:
    """Replicas edit with occasional partial syncs; returns every local update in order."""
    rng = random.Random(seed)
    docs = [FugueText(f"r{i}") for i in range(replicas)]
    updates: list[bytes] = []
    for _ in range(steps):
        doc = rng.choice(docs)
        updates.append(random_edit(rng, doc))
        if rng.random() < sync_p:
            dst = rng.choice(docs)
            dst.apply_update(rng.choice(docs).encode_since(dst.version()))
    return updates


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    replicas=st.integers(2, 4),
    steps=st.integers(1, 60),
    sync_p=st.sampled_from([0.0, 0.1, 0.5]),
    data=st.data(),
)
def test_any_delivery_order_with_duplicates_gives_the_same_text(
    seed: int, replicas: int, steps: int, sync_p: float, data: st.DataObject
) -> None:
    updates = concurrent_session(seed, replicas, steps, sync_p)
    texts = set()
    for _ in range(2):
        order = data.draw(st.permutations(updates))
        dups = data.draw(st.lists(st.sampled_from(updates), max_size=5))
        doc = FugueText("reader")
        for update in [*order, *dups]:
            doc.apply_update(update)
        assert doc.pending_ops == 0
        texts.add(doc.text())
    assert len(texts) == 1
    reader = FugueText("reader")
    for update in updates:
        reader.apply_update(update)
    assert reader.text() == reference_text(reader.ops_since({}))
    assert reader.text() in texts


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_op_level_delivery_in_any_order_matches_the_reference(
    seed: int, data: st.DataObject
) -> None:
    updates = concurrent_session(seed, 3, 40, 0.1)
    source = FugueText("src")
    for update in updates:
        source.apply_update(update)
    ops = source.ops_since({})
    shuffled = data.draw(st.permutations(ops))
    doc = FugueText("op-reader")
    for op in shuffled:
        doc.apply_op(op)
    assert doc.pending_ops == 0
    assert doc.text() == source.text() == reference_text(ops)
    assert doc.version() == source.version()


@pytest.mark.parametrize("seed", range(12))
def test_replicas_syncing_by_version_vectors_converge(seed: int) -> None:
    rng = random.Random(seed)
    docs = [FugueText(f"n{i}") for i in range(3)]
    for _ in range(80):
        random_edit(rng, rng.choice(docs))
        if rng.random() < 0.2:
            a, b = rng.sample(docs, 2)
            b.apply_update(a.encode_since(b.version()))
    for _ in range(2):
        for a in docs:
            for b in docs:
                b.apply_update(a.encode_since(b.version()))
    assert len({d.text() for d in docs}) == 1
    assert len({tuple(d.version().items()) for d in docs}) == 1
    assert docs[0].text() == reference_text(docs[0].ops_since({}))


def test_encode_since_sends_only_what_the_peer_lacks() -> None:
    a, b = FugueText("a"), FugueText("b")
    a.insert(0, "hello world " * 50)
    b.apply_update(a.encode())
    full = len(a.encode())
    a.insert(5, "!")
    delta = a.encode_since(b.version())
    assert len(delta) < 40 < full
    assert decode_ops(delta) == a.ops_since(b.version())
    b.apply_update(delta)
    assert b.text() == a.text()
    assert decode_ops(a.encode_since(b.version())) == []


@pytest.mark.parametrize("first", ["a", "b"])
def test_concurrent_inserts_at_one_position_do_not_interleave(first: str) -> None:
    """Fugue: two runs typed at the same place end up one after the other, whole."""
    base = FugueText("base")
    base.insert(0, "[]")
    docs = {n: FugueText.decode(n, base.encode()) for n in ("a", "b")}
    for ch in "alpha":  # typed forwards, one keystroke at a time
        docs["a"].insert(len(docs["a"]) - 1, ch)
    for ch in "omega":
        docs["b"].insert(len(docs["b"]) - 1, ch)
    merged = FugueText.decode("m", docs[first].encode())
    merged.apply_update(docs["b" if first == "a" else "a"].encode())
    assert merged.text() in ("[alphaomega]", "[omegaalpha]")


def test_backwards_typing_does_not_interleave_either() -> None:
    base = FugueText("base")
    base.insert(0, "<>")
    a, b = FugueText.decode("a", base.encode()), FugueText.decode("b", base.encode())
    for ch in reversed("left"):  # typed backwards: each keystroke before the previous one
        a.insert(1, ch)
    for ch in reversed("RIGHT"):
        b.insert(1, ch)
    a.apply_update(b.encode())
    b.apply_update(a.encode())
    assert a.text() == b.text()
    assert a.text() in ("<leftRIGHT>", "<RIGHTleft>")


def test_positions_are_code_points() -> None:
    doc = FugueText("a")
    doc.insert(0, "a\U0001f600b")
    doc.insert(2, "\u00e9")
    assert doc.text() == "a\U0001f600\u00e9b"
    doc.delete(1, 1)
    assert doc.text() == "a\u00e9b" and len(doc) == 3


def test_deletes_spanning_runs_and_replicas() -> None:
    a, b = FugueText("a"), FugueText("b")
    b.apply_update(a.insert(0, "aaaa"))
    a.apply_update(b.insert(2, "BBBB"))
    a.apply_update(b.insert(0, "CC"))
    assert a.text() == b.text() == "CCaaBBBBaa"
    b.apply_update(a.delete(1, 8))
    assert a.text() == b.text() == "Ca"


def test_round_trip_keeps_text_version_and_ops() -> None:
    updates = concurrent_session(7, 3, 120, 0.2)
    doc = FugueText("x")
    for update in updates:
        doc.apply_update(update)
    copy = FugueText.decode("y", doc.encode())
    assert copy.text() == doc.text()
    assert copy.version() == doc.version()
    assert FugueText.decode("z", copy.encode()).text() == doc.text()
    copy.insert(0, "more")  # a decoded doc edits on under its own name
    doc.apply_update(copy.encode_since(doc.version()))
    assert doc.text() == copy.text()


def test_doc_encoding_leaves_out_deleted_text() -> None:
    doc = FugueText("a")
    doc.insert(0, "x" * 1000)
    size_before = len(doc.encode())
    doc.delete(0, 1000)
    assert len(doc.encode()) < size_before - 900
    assert FugueText.decode("b", doc.encode()).text() == ""


def test_ops_missing_predecessors_wait_then_apply() -> None:
    a = FugueText("a")
    first = a.insert(0, "ab")
    second = a.insert(2, "cd")
    third = a.delete(0, 1)
    b = FugueText("b")
    b.apply_update(third)
    b.apply_update(second)
    assert b.text() == "" and b.pending_ops == 2 and b.version() == {}
    b.apply_update(first)
    assert b.text() == "bcd" and b.pending_ops == 0 and b.version() == {"a": 5}


def test_buffer_is_bounded() -> None:
    a = FugueText("a")
    a.insert(0, "x")
    later = [a.insert(i + 1, "y") for i in range(5)]
    b = FugueText("b", max_pending_ops=2)
    for update in later:
        b.apply_update(update)
    assert b.pending_ops == 2 and b.dropped_ops == 3
    b.apply_update(a.encode_since(b.version()))  # anti-entropy resends what was dropped
    assert b.text() == a.text()


def _wire(*fields: object) -> bytes:
    return msgspec.msgpack.encode(list(fields))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "malformed"),
        (b"\x93\x01\x02", "malformed"),
        (_wire(9, [], [], [], [], [], [], ""), "format"),
        (_wire(1, ["a"], [1], [0], [1], [1, 0], [], ""), "text too short"),
        (_wire(1, ["a"], [1], [0], [1], [1, 0], [], "xy"), "beyond"),
        (_wire(1, ["a"], [1], [4], [1], [1, 0], [], "x"), "out of range"),
        (_wire(1, ["a"], [1], [0], [0], [1, 0], [], ""), "bad op row"),
        (_wire(1, ["a", "a"], [1, 1], [0], [1], [1, 0], [], "x"), "unique"),
        (_wire(1, ["a"], [1], [0], [1], [0, 0], [], "x"), "root has no left"),
        (_wire(1, ["a"], [1], [0], [1], [3, 0], [], "x"), "later parent"),
        (_wire(1, ["a"], [1], [1], [2], [], [1, 0, 1, 1], ""), "add up"),
        (_wire(1, ["a"], [1], [0], [1], [1, 0], [7], "x"), "trailing"),
    ],
)
def test_malformed_updates_are_rejected_and_change_nothing(data: bytes, message: str) -> None:
    doc = FugueText("a")
    doc.insert(0, "keep")
    before = (doc.text(), doc.version(), doc.encode())
    with pytest.raises(ValueError, match=message):
        doc.apply_update(data)
    assert (doc.text(), doc.version(), doc.encode()) == before


def test_op_naming_a_delete_as_parent_is_rejected() -> None:
    a = FugueText("a")
    a.insert(0, "ab")
    a.delete(0, 1)  # id ("a", 3) is a delete
    bad = TextOp("b", 1, "z", "a", 3, True)
    before = a.encode()
    with pytest.raises(ValueError, match="is a delete"):
        a.apply_op(bad)
    assert a.encode() == before


def test_bad_positions_raise_index_error() -> None:
    doc = FugueText("a")
    doc.insert(0, "abc")
    for pos, count in [(-1, 0), (4, 0), (2, 2)]:
        with pytest.raises(IndexError, match="outside the text"):
            doc.splice(pos, count, "")
    assert doc.text() == "abc"
