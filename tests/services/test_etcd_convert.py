"""protobuf <-> msgspec conversion of etcd requests and responses (pnyx.services.etcd.convert)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from aetcd.rpc import rpc_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from pnyx.protocols.etcd import requests as etcd
from pnyx.services.etcd.convert import from_proto, proto_class, to_proto

STRUCTS: list[type[msgspec.Struct]] = sorted(
    (
        value
        for value in vars(etcd).values()
        if isinstance(value, type)
        and issubclass(value, msgspec.Struct)
        and value.__module__ == etcd.__name__
        and value not in etcd.LOG_ONLY_STRUCTS
    ),
    key=lambda t: t.__name__,
)
"""Every etcd request/response struct (KV, txn, lease, watch, ...) of the gRPC API."""

_INTS = {
    "TYPE_INT64": (-(2**63), 2**63 - 1),
    "TYPE_UINT64": (0, 2**64 - 1),
    "TYPE_INT32": (-(2**31), 2**31 - 1),
    "TYPE_UINT32": (0, 2**32 - 1),
}


def _scalar(field: Any) -> st.SearchStrategy[Any]:
    kind = next(k for k in (*_INTS, "TYPE_ENUM", "TYPE_BOOL", "TYPE_BYTES", "TYPE_STRING")
                if field.type == getattr(field, k))  # fmt: skip
    if kind in _INTS:
        low, high = _INTS[kind]
        return st.integers(low, high)
    if kind == "TYPE_ENUM":
        return st.sampled_from([v.number for v in field.enum_type.values])
    if kind == "TYPE_BOOL":
        return st.booleans()
    if kind == "TYPE_BYTES":
        return st.binary(max_size=6)
    return st.text(max_size=6)


def _field_struct(struct_type: type[msgspec.Struct], name: str) -> type[msgspec.Struct]:
    from pnyx.services.etcd.convert import _field_types

    return _field_types(struct_type)[name]


def _optional(struct_type: type[msgspec.Struct], name: str) -> bool:
    info = next(f for f in msgspec.inspect.type_info(struct_type).fields if f.name == name)  # type: ignore[attr-defined]
    return isinstance(info.type, msgspec.inspect.UnionType)


def _value(struct_type: type[msgspec.Struct], field: Any, depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is None:
        element = _scalar(field)
        return st.lists(element, max_size=3) if field.is_repeated else element
    inner = _field_struct(struct_type, field.name)
    if field.is_repeated:
        if depth <= 0:
            return st.just([])
        return st.lists(structs(inner, depth - 1), max_size=3)
    if depth <= 0:
        return st.none() if _optional(struct_type, field.name) else st.just(inner())
    sub = structs(inner, depth - 1)
    return st.none() | sub if _optional(struct_type, field.name) else sub


@st.composite
def _struct(draw: st.DrawFn, struct_type: type[msgspec.Struct], depth: int) -> msgspec.Struct:
    descriptor = proto_class(struct_type).DESCRIPTOR
    chosen = {o.name: draw(st.sampled_from([None, *(f.name for f in o.fields)]))
              for o in descriptor.oneofs}  # fmt: skip
    values: dict[str, Any] = {}
    for name in struct_type.__struct_fields__:
        field = descriptor.fields_by_name[name]
        union = field.containing_oneof
        if union is not None and chosen[union.name] != name:
            continue
        values[name] = draw(_value(struct_type, field, depth))
    return struct_type(**values)


def structs(struct_type: type[msgspec.Struct], depth: int = 2) -> st.SearchStrategy[Any]:
    """Any struct of ``struct_type`` that a protobuf message can carry."""
    return _struct(struct_type, depth)


def _canonical(value: msgspec.Struct) -> msgspec.Struct:
    """What a struct reads back as: a scalar oneof member set to its default is unset."""
    return from_proto(to_proto(value), type(value))


@pytest.mark.parametrize("struct_type", STRUCTS, ids=lambda t: t.__name__)
def test_struct_fields_are_proto_fields(struct_type: type[msgspec.Struct]) -> None:
    names = [f.name for f in proto_class(struct_type).DESCRIPTOR.fields]
    assert list(struct_type.__struct_fields__) == names


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(STRUCTS).flatmap(structs))
def test_struct_proto_struct_round_trip(value: msgspec.Struct) -> None:
    message = to_proto(value)
    wire = message.SerializeToString()
    again = type(message).FromString(wire)
    assert from_proto(again, type(value)) == _canonical(value)
    # and back: the message a struct read from the wire makes is the same message
    assert to_proto(from_proto(again, type(value))) == again


@settings(max_examples=60, deadline=None)
@given(structs(etcd.TxnRequest, depth=3))
def test_nested_txn_round_trip(value: etcd.TxnRequest) -> None:
    assert from_proto(rpc_pb2.TxnRequest.FromString(to_proto(value).SerializeToString()),
                      etcd.TxnRequest) == _canonical(value)  # fmt: skip


def test_scalar_oneof_member_and_unset_message() -> None:
    compare = etcd.Compare(key=b"k", target=etcd.CompareTarget.MOD, mod_revision=7)
    message = to_proto(compare)
    assert message.WhichOneof("target_union") == "mod_revision"
    assert from_proto(message, etcd.Compare) == compare
    put = from_proto(rpc_pb2.PutResponse(), etcd.PutResponse)
    assert put.prev_kv is None and put.header == etcd.ResponseHeader()
    op = from_proto(rpc_pb2.RequestOp(), etcd.RequestOp)
    assert op == etcd.RequestOp()


def test_two_oneof_members_are_refused() -> None:
    op = etcd.RequestOp(request_put=etcd.PutRequest(key=b"a"), request_range=etcd.RangeRequest())
    with pytest.raises(ValueError, match="oneof"):
        to_proto(op)


def test_empty_message_field_is_present() -> None:
    op = etcd.RequestOp(request_txn=etcd.TxnRequest())
    assert to_proto(op).WhichOneof("request") == "request_txn"
    assert from_proto(to_proto(op), etcd.RequestOp) == op


@pytest.mark.parametrize("struct_type", sorted(etcd.LOG_ONLY_STRUCTS, key=lambda t: t.__name__))
def test_log_only_structs_have_no_proto_counterpart(struct_type: type[msgspec.Struct]) -> None:
    with pytest.raises(KeyError, match="no etcd protobuf message"):
        proto_class(struct_type)
