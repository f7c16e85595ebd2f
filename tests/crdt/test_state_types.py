"""Directed scenarios for the state-based types: the semantics each one promises."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pnyx.protocols.crdt import (
    TYPES,
    AWORSet,
    CausalContext,
    GCounter,
    GSet,
    LWWRegister,
    MVRegister,
    ORMap,
    PNCounter,
    RWORSet,
    TwoPSet,
    VersionVector,
    WireError,
)


def _sync(*replicas):  # type: ignore[no-untyped-def]
    """Full-mesh merge until every replica holds the join of all."""
    for a in replicas:
        for b in replicas:
            if a is not b:
                a.merge(b)
    for a in replicas:
        for b in replicas:
            a.merge(b)


def test_version_vector_order_and_merge() -> None:
    a = VersionVector({"x": 2})
    b = VersionVector({"y": 1})
    assert a.concurrent(b) and not a.dominates(b)
    a.merge(b)
    assert a.dominates(b) and a >= b and b <= a
    assert a.get("x") == 2 and a.get("zz") == 0 and a.next_dot("y") == ("y", 2)
    assert VersionVector({"x": 0}) == VersionVector()
    with pytest.raises(WireError):
        VersionVector.from_wire({"x": -1})


def test_causal_context_compacts_the_cloud() -> None:
    ctx = CausalContext([("a", 1), ("a", 3), ("b", 2)])
    assert ctx.size() == 3 and ("a", 2) not in ctx
    ctx.add(("a", 2))
    assert ctx.vv().to_dict() == {"a": 3} and ctx.size() == 2
    other = CausalContext([("b", 1)])
    other.merge(ctx)
    assert other.vv().to_dict() == {"a": 3, "b": 2} and other.size() == 2
    assert other.covers(ctx) and not ctx.covers(other)
    assert other == CausalContext(other.dots())
    assert ctx.next_dot("a") == ("a", 4)


def test_counters_count_every_replica_once() -> None:
    a, b = PNCounter("a"), PNCounter("b")
    da = a.increment(5)
    b.decrement(2)
    b.merge(da)
    b.merge(da)  # idempotent: a re-delivered delta counts once
    a.merge(b)
    assert a.value() == b.value() == 3
    g = GCounter("g")
    assert g.increment(0).counts == {} and g.value() == 0
    with pytest.raises(ValueError, match="-1"):
        g.increment(-1)


def test_gset_and_2pset() -> None:
    g = GSet("a")
    assert g.add("x").value() == frozenset({"x"})
    a, b = TwoPSet("a"), TwoPSet("b")
    b.merge(a.add("x"))
    b.merge(b.remove("x"))
    a.merge(b)
    a.add("x")  # re-adding a removed element has no effect
    assert a.value() == frozenset() == b.value()
    with pytest.raises(KeyError, match="'y'"):
        a.remove("y")


def test_or_set_concurrent_add_survives_remove() -> None:
    a, b = AWORSet("a"), AWORSet("b")
    b.merge(a.add("x"))
    remove = b.remove("x")  # b saw a's add only
    readd = a.add("x")  # concurrent with the remove
    a.merge(remove)
    b.merge(readd)
    assert a.value() == b.value() == frozenset({"x"})
    # A remove that has seen every add removes the element everywhere.
    final = b.remove("x")
    a.merge(final)
    assert a.value() == b.value() == frozenset() and a == b


def test_or_set_keeps_no_tombstones() -> None:
    s = AWORSet("a")
    for i in range(100):
        s.add(i)
        s.remove(i)
    assert s.value() == frozenset()
    assert s.context.size() == 1  # the whole history compacts into one vector entry
    assert s.to_wire() == [[], [{"a": 100}, []]]


def test_remove_wins_set() -> None:
    a, b = RWORSet("a"), RWORSet("b")
    b.merge(a.add(1))
    remove = b.remove(1)
    readd = a.add(1)
    a.merge(remove)
    b.merge(readd)
    assert a.value() == b.value() == frozenset()  # the concurrent remove wins
    b.merge(b.add(1))  # an add that has seen the remove brings it back
    a.merge(b)
    assert a.value() == b.value() == frozenset({1})


def test_mv_register_siblings() -> None:
    a, b = MVRegister("a"), MVRegister("b")
    da, db = a.write("left"), b.write("right")
    a.merge(db)
    b.merge(da)
    assert a.value() == b.value() == ("left", "right")  # ordered by dot: a < b
    a.merge(b)
    b.merge(a.write("both"))
    assert b.value() == ("both",)
    assert b.clear() is not None and b.value() == ()


def test_lww_register_stamps_and_tiebreak() -> None:
    a, b = LWWRegister("a"), LWWRegister("b")
    assert a.value() is None
    b.merge(a.set("first"))  # Lamport stamp 1
    b.set("second")  # stamp 2, after seeing stamp 1
    a.merge(b)
    assert a.value() == "second" and a.stamp() == (2, "b")
    x, y = LWWRegister("x"), LWWRegister("y")
    dx, dy = x.set("from x", timestamp=7), y.set("from y", timestamp=7)
    x.merge(dy)
    y.merge(dx)
    assert x.value() == y.value() == "from y"  # same stamp: the greater replica id wins
    assert x.set("late", timestamp=3) is not None and x.value() == "from y"
    with pytest.raises(ValueError, match="0"):
        x.set("bad", timestamp=0)


def test_or_map_remove_resets_observed_state_only() -> None:
    a, b = ORMap("a", "orset"), ORMap("b", "orset")
    b.merge(a.update("k", lambda s: s.add("old")))
    removal = b.remove("k")
    concurrent = a.update("k", lambda s: s.add("new"))
    a.merge(removal)
    b.merge(concurrent)
    # The concurrent update survives, the state the remover saw does not.
    assert a.value() == b.value() == {"k": frozenset({"new"})}
    assert a == b
    a.merge(a.remove("k"))
    b.merge(a)
    assert a.value() == b.value() == {} and "k" not in a


def test_or_map_nested_maps_and_registers() -> None:
    a, b = ORMap("a", "ormap/mvreg"), ORMap("b", "ormap/mvreg")
    b.merge(a.update("doc", lambda m: m.update("title", lambda r: r.write("A"))))
    b.merge(b.update("doc", lambda m: m.update("body", lambda r: r.write("B"))))
    a.merge(a.update("doc", lambda m: m.update("title", lambda r: r.write("A2"))))
    _sync(a, b)
    assert a.value() == {"doc": {"body": ("B",), "title": ("A2",)}} == b.value()
    nested = a.get("doc")
    assert isinstance(nested, ORMap) and nested.keys() == ["body", "title"]
    with pytest.raises(ValueError, match="gcounter"):
        ORMap("a", "gcounter")
    with pytest.raises(TypeError, match="ORMap delta, got None"):
        a.update("x", lambda _r: None)
    with pytest.raises(TypeError, match="ORMap"):
        a.merge(ORMap("c", "orset"))  # type: ignore[arg-type]


def test_merging_another_type_is_refused() -> None:
    with pytest.raises(TypeError, match="GSet"):
        AWORSet("a").merge(GSet("b"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cls", "data", "needle"),
    [
        (AWORSet, [[["x", [["a", 1]]]], [{}, []]], "missing from its context"),
        (AWORSet, [[[1.5, [["a", 1]]]], [{"a": 1}, []]], "1.5"),
        (AWORSet, "nope", "'nope'"),
        (RWORSet, [[["x", [["a", 1, "yes"]]]], [{"a": 1}, []]], "'yes'"),
        (GCounter, {"a": -3}, "-3"),
        (PNCounter, [{}], "2 items"),
        (LWWRegister, [1, "", "v"], "writer"),
        (MVRegister, [[["a", 0, "v"]], [{}, []]], "counter must be >= 1"),
        (ORMap, ["gcounter", [], [{}, []]], "gcounter"),
        (TwoPSet, [[None], []], "None"),
    ],
)
def test_malformed_wire_data_is_refused_clearly(cls: type, data: object, needle: str) -> None:
    with pytest.raises(WireError, match=needle):
        cls.from_wire("r", data)


def test_bad_input_names_the_value() -> None:
    with pytest.raises(ValueError, match=r"\[1\]"):
        AWORSet("a").add([1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="replica"):
        GSet("")
    with pytest.raises(ValueError, match="encodable"):
        MVRegister("a").write(object())


_plain = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["", "a", "ormap", "orset"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["a", "b"]), inner),
    max_leaves=12,
)


@pytest.mark.parametrize("name", sorted(TYPES))
@settings(max_examples=150, deadline=None)
@given(data=_plain)
def test_garbage_wire_data_raises_only_wire_error(name: str, data: object) -> None:
    try:
        state = TYPES[name].from_wire("r", data)
    except WireError:
        return
    assert TYPES[name].from_wire("r", state.to_wire()) == state  # accepted: well-formed
