"""Hypothesis strategies for any msgspec type, built from :mod:`msgspec.inspect` type info.

``hypothesis.strategies.from_type`` cannot draw ``typing.Any`` fields and draws integers
far outside what msgpack carries, so the wire tests build their own: every field of a
struct gets a value of its declared type (nested structs, optionals, unions, literals,
enums, bytes, collections, integers over msgpack's whole range within any declared
bounds).  An ``Any`` field gets plain msgpack data (what a real process decodes it as).
A type this builder does not know raises :class:`UnsupportedType` naming it, so a new
kind of field shows up as a clear test failure instead of being skipped.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec.inspect as mi
from hypothesis import strategies as st

MSGPACK_INT_MIN = -(2**63)
MSGPACK_INT_MAX = 2**64 - 1
"""Integers msgpack can carry (int64 and uint64)."""
MAX_ITEMS = 3
"""Items per drawn collection: enough for nesting and order, small enough to be cheap."""
EDGE_INTS = (0, 1, -1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, MSGPACK_INT_MAX, MSGPACK_INT_MIN)

PLAIN_DATA: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(MSGPACK_INT_MIN, MSGPACK_INT_MAX)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.binary(max_size=16),
    lambda inner: (
        st.lists(inner, max_size=MAX_ITEMS)
        | st.dictionaries(st.text(max_size=6), inner, max_size=MAX_ITEMS)
    ),
    max_leaves=8,
)
"""Values a ``typing.Any`` field may hold and that decode back equal (no tuples, no nan)."""


class UnsupportedType(TypeError):
    """A field type the strategy builder has no rule for."""


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    """Values of the msgspec-compatible type ``tp`` (a Struct class, a union, ``Any``...)."""
    return _Builder().build(mi.type_info(tp))


class _Builder:
    """One strategy tree; struct strategies are shared (and deferred, for recursive types)."""

    def __init__(self) -> None:
        self._structs: dict[type[Any], st.SearchStrategy[Any]] = {}

    def build(self, info: mi.Type) -> st.SearchStrategy[Any]:
        scalar = _scalar(info)
        if scalar is not None:
            return scalar
        if isinstance(info, mi.StructType):
            return self._struct(info)
        if isinstance(info, mi.UnionType):
            return st.one_of(*(self.build(member) for member in info.types))
        if isinstance(info, mi.VarTupleType):
            return st.lists(self.build(info.item_type), max_size=MAX_ITEMS).map(tuple)
        if isinstance(info, mi.TupleType):
            return st.tuples(*(self.build(item) for item in info.item_types))
        if isinstance(info, mi.ListType):
            return st.lists(self.build(info.item_type), max_size=MAX_ITEMS)
        if isinstance(info, mi.SetType | mi.FrozenSetType):
            kind = set if isinstance(info, mi.SetType) else frozenset
            return st.frozensets(self.build(info.item_type), max_size=MAX_ITEMS).map(kind)
        if isinstance(info, mi.DictType):
            keys, values = self.build(info.key_type), self.build(info.value_type)
            return st.dictionaries(keys, values, max_size=MAX_ITEMS)
        raise UnsupportedType(f"no strategy for the msgspec type {info!r}")

    def _struct(self, info: mi.StructType) -> st.SearchStrategy[Any]:
        cls = info.cls
        known = self._structs.get(cls)
        if known is not None:
            return known
        self._structs[cls] = st.deferred(lambda: built)
        fields = {f.name: self.build(f.type) for f in info.fields}
        built = st.fixed_dictionaries(fields).map(lambda kwargs: cls(**kwargs))
        self._structs[cls] = built
        return built


def _scalar(info: mi.Type) -> st.SearchStrategy[Any] | None:
    """The strategy of a leaf type, None for a container or struct."""
    if isinstance(info, mi.AnyType):
        return PLAIN_DATA
    if isinstance(info, mi.NoneType):
        return st.none()
    if isinstance(info, mi.BoolType):
        return st.booleans()
    if isinstance(info, mi.IntType):
        return _ints(info)
    if isinstance(info, mi.FloatType):
        return st.floats(allow_nan=False)
    if isinstance(info, mi.StrType):
        return st.text(min_size=info.min_length or 0, max_size=_bounded(info.max_length, 24))
    if isinstance(info, mi.BytesType | mi.ByteArrayType):
        kind = bytes if isinstance(info, mi.BytesType) else bytearray
        drawn = st.binary(min_size=info.min_length or 0, max_size=_bounded(info.max_length, 64))
        return drawn.map(kind)
    if isinstance(info, mi.LiteralType):
        return st.sampled_from(info.values)
    if isinstance(info, mi.EnumType):
        members: list[enum.Enum] = list(info.cls)
        return st.sampled_from(members)
    return None


def _ints(info: mi.IntType) -> st.SearchStrategy[int]:
    """Integers over msgpack's range, within the type's declared bounds."""
    low = MSGPACK_INT_MIN
    high = MSGPACK_INT_MAX
    if info.ge is not None:
        low = max(low, info.ge)
    if info.gt is not None:
        low = max(low, info.gt + 1)
    if info.le is not None:
        high = min(high, info.le)
    if info.lt is not None:
        high = min(high, info.lt - 1)
    if info.multiple_of is not None:
        raise UnsupportedType(f"integer field with multiple_of={info.multiple_of}")
    edges = [v for v in EDGE_INTS if low <= v <= high]
    small = st.integers(max(low, -3), min(high, 300)) if max(low, -3) <= min(high, 300) else None
    choices = [st.integers(low, high)]
    if edges:
        choices.append(st.sampled_from(edges))
    if small is not None:
        choices.append(small)
    return st.one_of(*choices)


def _bounded(limit: int | None, default: int) -> int:
    return default if limit is None else min(limit, default)


def is_fully_typed(tp: Any) -> bool:
    """True when no part of ``tp`` is ``typing.Any`` (a decoded value then equals the sent
    one; an ``Any`` part decodes as plain msgpack data, e.g. a struct as a list)."""
    return _fully_typed(mi.type_info(tp), set())


def _fully_typed(info: mi.Type, seen: set[type[Any]]) -> bool:
    if isinstance(info, mi.AnyType):
        return False
    if isinstance(info, mi.StructType):
        if info.cls in seen:
            return True
        seen.add(info.cls)
        return all(_fully_typed(f.type, seen) for f in info.fields)
    if isinstance(info, mi.UnionType):
        return all(_fully_typed(member, seen) for member in info.types)
    if isinstance(info, mi.TupleType):
        return all(_fully_typed(item, seen) for item in info.item_types)
    if isinstance(info, mi.DictType):
        return _fully_typed(info.key_type, seen) and _fully_typed(info.value_type, seen)
    item = getattr(info, "item_type", None)
    if isinstance(item, mi.Type):
        return _fully_typed(item, seen)
    return True
