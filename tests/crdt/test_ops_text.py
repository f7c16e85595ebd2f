"""Op-based text (Fugue ops over causal delivery): any causal delivery order of the same ops
gives the same text, concurrent typing at one position does not interleave, and a replica
rebuilt from its delivered ops continues where it was."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pnyx.protocols.crdt.base import WireError
from pnyx.protocols.crdt.oplog.text import OpText, TextOps


@dataclass
class Edit:
    ident: int
    ops: TextOps
    past: frozenset[int]


@dataclass
class Replica:
    doc: OpText
    delivered: list[int] = field(default_factory=list)


def _deliverable(r: Replica, edits: list[Edit]) -> list[Edit]:
    done = set(r.delivered)
    return [e for e in edits if e.ident not in done and e.past <= done]


@settings(max_examples=120, deadline=None)
@given(st.data(), st.integers(2, 4))
def test_any_causal_delivery_order_gives_the_same_text(data: st.DataObject, n: int) -> None:
    replicas = [Replica(OpText(str(i))) for i in range(n)]
    edits: list[Edit] = []
    fresh = map(chr, range(0x4E00, 0x9FFF))  # unique characters (CJK code points)
    for _ in range(data.draw(st.integers(1, 30), label="steps")):
        r = replicas[data.draw(st.integers(0, n - 1), label="replica")]
        ready = _deliverable(r, edits)
        if ready and data.draw(st.booleans(), label="deliver?"):
            e = ready[data.draw(st.integers(0, len(ready) - 1), label="which")]
            r.doc.effect(e.ops)
            r.delivered.append(e.ident)
            continue
        size = len(r.doc)
        if size and data.draw(st.booleans(), label="delete?"):
            pos = data.draw(st.integers(0, size - 1), label="pos")
            ops = r.doc.delete(pos, data.draw(st.integers(1, size - pos), label="count"))
        else:
            pos = data.draw(st.integers(0, size), label="pos")
            text = "".join(next(fresh) for _ in range(data.draw(st.integers(1, 4))))
            ops = r.doc.insert(pos, text)
        edits.append(Edit(len(edits), ops, frozenset(r.delivered)))
        r.delivered.append(edits[-1].ident)
    for r in replicas:
        while ready := _deliverable(r, edits):
            e = ready[data.draw(st.integers(0, len(ready) - 1), label="final order")]
            r.doc.effect(e.ops)
            r.delivered.append(e.ident)
    texts = {r.doc.text() for r in replicas}
    assert len(texts) == 1, texts
    # A replica rebuilt from all ops (a restart replaying its log) has the same text.
    again = OpText("0")
    for ident in replicas[0].delivered:
        again.effect(edits[ident].ops)
    assert again.text() == replicas[0].doc.text()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 3), st.booleans())
def test_concurrent_typing_at_one_position_does_not_interleave(
    len_a: int, len_b: int, prefix: int, keys_per_op: bool
) -> None:
    a, b = OpText("a"), OpText("b")
    base = a.insert(0, "xyz"[:prefix]) if prefix else ()
    b.effect(base)
    typed_a, typed_b = "ABCDEF"[:len_a], "abcdef"[:len_b]
    ops_a: list[TextOps] = []
    ops_b: list[TextOps] = []
    pos = min(1, prefix)
    if keys_per_op:  # one op per keystroke, each after the previous one
        ops_a = [a.insert(pos + i, ch) for i, ch in enumerate(typed_a)]
        ops_b = [b.insert(pos + i, ch) for i, ch in enumerate(typed_b)]
    else:
        ops_a, ops_b = [a.insert(pos, typed_a)], [b.insert(pos, typed_b)]
    for ops in ops_b:
        a.effect(ops)
    for ops in ops_a:
        b.effect(ops)
    assert a.text() == b.text()
    assert typed_a in a.text() and typed_b in a.text(), a.text()


def test_own_ops_are_skipped_when_already_integrated_and_replayed_after_restart() -> None:
    a = OpText("a")
    first = a.insert(0, "hello")
    again_ops = a.delete(1, 2)
    a.effect(first)  # idempotent: already integrated
    assert a.text() == "hlo"
    restarted = OpText("a")
    restarted.effect(first)
    restarted.effect(again_ops)
    assert restarted.text() == "hlo"
    more = restarted.insert(3, "!")
    assert more[0].counter > max(op.counter for op in first + again_ops)


def test_ops_round_trip_the_wire_and_malformed_ops_are_refused() -> None:
    a = OpText("a")
    ops = a.insert(0, "ab") + a.delete(0, 1)
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(ops))
    assert OpText.decode_ops(wire) == ops
    for bad in (["x"], [["a", 0, "t"]], [["", 1, "t"]], [["a", 1, "", "", 0, True, []]]):
        with pytest.raises(WireError):
            OpText.decode_ops(bad)
