"""Op-based counter and OR-Set: any causal delivery order gives the same state (hypothesis),
and the state means what the type promises (sum of increments; add wins)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pnyx.protocols.crdt.base import WireError
from pnyx.protocols.crdt.oplog import AddOp, CounterOp, OpCounter, OpORSet, RemoveOp

ELEMENTS = ("a", "b", "c")


@dataclass
class Op:
    """One generated op with its causal past (ids delivered at its source before it)."""

    ident: int
    op: Any
    past: frozenset[int]


@dataclass
class Replica:
    crdt: Any
    delivered: list[int] = field(default_factory=list)


def _deliverable(replica: Replica, ops: list[Op]) -> list[Op]:
    done = set(replica.delivered)
    return [o for o in ops if o.ident not in done and o.past <= done]


def _run(
    data: st.DataObject, make: Any, prepare: Any, n_replicas: int
) -> tuple[list[Replica], list[Op]]:
    """Random ops at random replicas, interleaved with random causal deliveries, then
    everything delivered everywhere in a random causal order."""
    replicas = [Replica(make(str(i))) for i in range(n_replicas)]
    ops: list[Op] = []
    steps = data.draw(st.integers(1, 25), label="steps")
    for _ in range(steps):
        r = replicas[data.draw(st.integers(0, n_replicas - 1), label="replica")]
        ready = _deliverable(r, ops)
        if ready and data.draw(st.booleans(), label="deliver?"):
            chosen = ready[data.draw(st.integers(0, len(ready) - 1), label="which")]
            r.crdt.effect(chosen.op)
            r.delivered.append(chosen.ident)
            continue
        op = Op(len(ops), prepare(r.crdt, data), frozenset(r.delivered))
        ops.append(op)
        r.crdt.effect(op.op)  # the source delivers its own op at once
        r.delivered.append(op.ident)
    for r in replicas:
        while ready := _deliverable(r, ops):
            chosen = ready[data.draw(st.integers(0, len(ready) - 1), label="final order")]
            r.crdt.effect(chosen.op)
            r.delivered.append(chosen.ident)
    return replicas, ops


def _prepare_counter(crdt: OpCounter, data: st.DataObject) -> CounterOp:
    amount = data.draw(st.integers(-5, 5), label="amount")
    if amount < 0:
        return crdt.prepare_decrement(-amount)
    return crdt.prepare_increment(amount)


def _prepare_set(crdt: OpORSet, data: st.DataObject) -> AddOp | RemoveOp:
    element = data.draw(st.sampled_from(ELEMENTS), label="element")
    if data.draw(st.booleans(), label="add?"):
        return crdt.prepare_add(element)
    return crdt.prepare_remove(element)


def _add_wins(ops: list[Op]) -> frozenset[str]:
    """The OR-Set spec from causal pasts: an add survives unless a remove of the same
    element had it in its causal past."""
    present = set()
    for add in ops:
        if not isinstance(add.op, AddOp):
            continue
        removed = any(
            isinstance(rm.op, RemoveOp) and rm.op.element == add.op.element and add.ident in rm.past
            for rm in ops
        )
        if not removed:
            present.add(add.op.element)
    return frozenset(present)


@settings(max_examples=150, deadline=None)
@given(st.data(), st.integers(2, 4))
def test_counter_any_causal_order_converges_to_the_sum(data: st.DataObject, n: int) -> None:
    replicas, ops = _run(data, OpCounter, _prepare_counter, n)
    total = sum(o.op.amount for o in ops)
    assert [r.crdt.value() for r in replicas] == [total] * n


@settings(max_examples=200, deadline=None)
@given(st.data(), st.integers(2, 4))
def test_orset_any_causal_order_converges_and_add_wins(data: st.DataObject, n: int) -> None:
    replicas, ops = _run(data, OpORSet, _prepare_set, n)
    expected = _add_wins(ops)
    assert [r.crdt.value() for r in replicas] == [expected] * n
    # Tags too, not only the observable value.
    for element in ELEMENTS:
        assert len({r.crdt.tags(element) for r in replicas}) == 1


def test_add_concurrent_with_remove_survives() -> None:
    a, b = OpORSet("a"), OpORSet("b")
    add1 = a.prepare_add("x")
    a.effect(add1)
    b.effect(add1)
    rm = b.prepare_remove("x")  # b observed add1 only
    b.effect(rm)
    add2 = a.prepare_add("x")  # concurrent with rm
    a.effect(add2)
    a.effect(rm)
    b.effect(add2)
    assert a.value() == b.value() == frozenset({"x"})
    assert a.tags("x") == b.tags("x") == frozenset({("a", 2)})


def test_remove_of_observed_adds_removes() -> None:
    a = OpORSet("a")
    a.effect(a.prepare_add("x"))
    a.effect(a.prepare_add("x"))
    rm = a.prepare_remove("x")
    assert set(rm.tags) == {("a", 1), ("a", 2)}
    a.effect(rm)
    assert "x" not in a and a.value() == frozenset()


def test_replaying_own_adds_keeps_tags_unique() -> None:
    a = OpORSet("a")
    ops = [a.prepare_add("x"), a.prepare_add("y")]
    again = OpORSet("a")  # restarted: rebuilt from its delivered ops
    for op in ops:
        again.effect(op)
    assert again.prepare_add("z").tag == ("a", 3)


def test_prepare_changes_nothing_observable() -> None:
    c, s = OpCounter("c"), OpORSet("s")
    c.prepare_increment(5)
    s.prepare_add("x")
    assert c.value() == 0 and s.value() == frozenset()


@pytest.mark.parametrize("data", [[], ["1"], [2**63], "x", [True], {"amount": 1}])
def test_malformed_counter_op_is_refused(data: Any) -> None:
    with pytest.raises(WireError):
        OpCounter.decode_op(data)


@pytest.mark.parametrize(
    "data",
    [
        ["add", "x"],
        ["add", "x", ["", 1]],
        ["add", "x", ["a", 0]],
        ["rm", "x", [["a"]]],
        ["del", "x", []],
        ["add", "x" * 2000, ["a", 1]],
    ],
)
def test_malformed_set_op_is_refused(data: Any) -> None:
    with pytest.raises(WireError):
        OpORSet.decode_op(data)


def test_set_ops_round_trip_the_wire() -> None:
    import msgspec

    s = OpORSet("r")
    for op in (s.prepare_add("x"), RemoveOp("x", (("r", 1), ("q", 4)))):
        wire = msgspec.msgpack.decode(msgspec.msgpack.encode(op))
        assert OpORSet.decode_op(wire) == op
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(CounterOp(-3)))
    assert OpCounter.decode_op(wire) == CounterOp(-3)


def test_bad_local_arguments_say_what_was_wrong() -> None:
    with pytest.raises(ValueError, match=r"1\.5"):
        OpCounter("c").prepare_increment(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="str"):
        OpORSet("s").prepare_add(3)  # type: ignore[arg-type]
