"""Lattice laws of every state-based CRDT, on states reached by random ops and merges.

For each type: merge is commutative, associative and idempotent; a mutator's delta
joined into the state before the mutation gives the state after it; ``absorb`` reports
change exactly; ``to_wire``/``from_wire`` round-trips through msgpack.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pnyx.core import encode
from pnyx.protocols.crdt import TYPES, ORMap, StateCRDT, new_crdt

Mutator = Callable[[Any, int, int], StateCRDT | None]
"""``(crdt, a, b) -> delta`` (None when the op does not apply to that state)."""


def _remove_present(s: Any, a: int, _b: int) -> StateCRDT | None:
    return s.remove(a) if a in s.value() else None


MUTATORS: dict[str, list[Mutator]] = {
    "gcounter": [lambda s, a, _b: s.increment(a)],
    "pncounter": [lambda s, a, _b: s.increment(a), lambda s, a, _b: s.decrement(a)],
    "gset": [lambda s, a, _b: s.add(a)],
    "2pset": [lambda s, a, _b: s.add(a), _remove_present],
    "lww": [lambda s, a, _b: s.set(a), lambda s, a, b: s.set([a, b], timestamp=1 + b % 2)],
    "mvreg": [lambda s, a, _b: s.write(a), lambda s, _a, _b: s.clear()],
    "orset": [
        lambda s, a, _b: s.add(a),
        lambda s, a, _b: s.remove(a),
        lambda s, _a, _b: s.clear(),
    ],
    "rwset": [lambda s, a, _b: s.add(a), lambda s, a, _b: s.remove(a)],
    "ormap": [
        lambda s, a, b: s.update(a, lambda v: v.add(b)),
        lambda s, a, b: s.update(a, lambda v: v.remove(b)),
        lambda s, a, _b: s.remove(a),
    ],
    "ormap/mvreg": [
        lambda s, a, b: s.update(a, lambda v: v.write(b)),
        lambda s, a, _b: s.remove(a),
    ],
    "ormap/ormap/rwset": [
        lambda s, a, b: s.update(a, lambda m: m.update(b, lambda v: v.add(a + b))),
        lambda s, a, b: s.update(a, lambda m: m.update(b, lambda v: v.remove(a + b))),
        lambda s, a, b: s.update(a, lambda m: m.remove(b)),
        lambda s, a, _b: s.remove(a),
    ],
}
REPLICAS = 3

steps = st.lists(
    st.tuples(
        st.integers(0, REPLICAS - 1),
        st.integers(0, 9),
        st.integers(0, 3),
        st.integers(0, 3),
    ),
    min_size=1,
    max_size=25,
)


def _run(type_name: str, program: list[tuple[int, int, int, int]]) -> list[StateCRDT]:
    """Replay ``program`` on three replicas; check the delta law at every mutation.

    Returns every state reached (snapshots), for the merge laws.
    """
    replicas = [new_crdt(type_name, f"r{i}") for i in range(REPLICAS)]
    mutators = MUTATORS[type_name]
    seen: list[StateCRDT] = [replicas[0].copy()]
    for who, action, a, b in program:
        state = replicas[who]
        if action >= len(mutators) + 2:  # merge another replica's state
            other = replicas[a % REPLICAS]
            before = state.copy()
            changed = state.absorb(other)
            assert changed == (before != state), "absorb misreports change"
        else:
            before = state.copy()
            delta = mutators[action % len(mutators)](state, a, b)
            if delta is None:
                continue
            assert type(delta) is type(state)
            joined = before.copy()
            joined.merge(delta)
            assert joined == state, f"delta {delta!r} into {before!r} != {state!r}"
            assert joined.value() == state.value()
        seen.append(state.copy())
    return seen


def _join(a: StateCRDT, b: StateCRDT) -> StateCRDT:
    out = a.copy()
    out.merge(b)
    return out


LAW_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.parametrize("type_name", sorted(MUTATORS))
@LAW_SETTINGS
@given(program=steps, picks=st.tuples(st.integers(0), st.integers(0), st.integers(0)))
def test_merge_is_a_join(type_name: str, program: Any, picks: tuple[int, int, int]) -> None:
    states = _run(type_name, program)
    a, b, c = (states[p % len(states)] for p in picks)
    assert _join(a, b) == _join(b, a)
    assert _join(a, b).value() == _join(b, a).value()
    assert _join(_join(a, b), c) == _join(a, _join(b, c))
    assert _join(a, a) == a
    ab = _join(a, b)
    assert _join(ab, a) == ab and _join(ab, b) == ab  # upper bound


@pytest.mark.parametrize("type_name", sorted(MUTATORS))
@LAW_SETTINGS
@given(program=steps)
def test_wire_round_trip(type_name: str, program: Any) -> None:
    for state in _run(type_name, program):
        data = msgspec.msgpack.decode(encode(state.to_wire()))
        back = type(state).from_wire("elsewhere", data)
        assert back == state and back.value() == state.value()
        assert back.replica == "elsewhere"


def test_every_registered_type_has_laws_tested() -> None:
    assert set(TYPES) <= set(MUTATORS)
    assert all(new_crdt(name, "x").type_name == name for name in TYPES)
    assert isinstance(new_crdt("ormap/mvreg", "x"), ORMap)
