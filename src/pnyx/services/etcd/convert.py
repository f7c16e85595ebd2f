"""etcd's protobuf messages <-> pnyx's msgspec request/response structs, field for field.

The structs of :mod:`pnyx.protocols.etcd` carry etcd's proto field names, so one generic,
descriptor-driven walk converts both ways (protobuf does all the encoding):

- :func:`to_proto` builds the ``rpc_pb2`` (or ``kv_pb2`` for ``KeyValue``) message of the
  same name from a struct; a struct field that is None leaves a proto message field unset.
- :func:`from_proto` reads a message into the struct type given: scalars as they are,
  an unset message field as None (or the struct's default when the field is not
  optional), repeated fields as lists.

A proto ``oneof`` is one field per member in the structs.  Message members that are not
None, and scalar members (``Compare.target_union``) that differ from their default, are
set; more than one set member of one ``oneof`` cannot be represented and is a
``ValueError``.  A scalar member read from the wire that was set to its default value
comes back as the default (protobuf's accessor gives the same value either way).
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from aetcd.rpc import kv_pb2, rpc_pb2  # type: ignore[import-untyped]

S = TypeVar("S", bound=msgspec.Struct)

_PROTO_MODULES = (rpc_pb2, kv_pb2)


def proto_class(struct_type: type[msgspec.Struct]) -> Any:
    """The protobuf message class named like ``struct_type`` (``rpc_pb2`` first)."""
    name = struct_type.__name__
    for module in _PROTO_MODULES:
        cls = getattr(module, name, None)
        if cls is not None:
            return cls
    raise KeyError(f"no etcd protobuf message named {name}")


def to_proto(value: msgspec.Struct, message: Any = None) -> Any:
    """``value`` as its protobuf message (filled into ``message`` when given)."""
    if message is None:
        message = proto_class(type(value))()
    descriptor = message.DESCRIPTOR
    chosen: dict[str, str] = {}
    for name in value.__struct_fields__:
        field = descriptor.fields_by_name.get(name)
        if field is None:
            raise ValueError(f"{descriptor.full_name} has no field {name!r}")
        item = getattr(value, name)
        if not _is_set(field, item):
            continue
        _claim_oneof(field, chosen)
        _fill_field(message, field, item)
    return message


def _is_set(field: Any, item: Any) -> bool:
    """Whether ``item`` must be written: not None, and for a scalar ``oneof`` member not
    its default (so that unset members of the union stay unset)."""
    if item is None:
        return False
    if field.containing_oneof is not None and field.message_type is None:
        return bool(item != field.default_value)
    return True


def _claim_oneof(field: Any, chosen: dict[str, str]) -> None:
    union = field.containing_oneof
    if union is None:
        return
    if union.name in chosen:
        raise ValueError(
            f"{field.containing_type.full_name}.{union.name}: both {chosen[union.name]!r} "
            f"and {field.name!r} are set; a oneof holds one"
        )
    chosen[union.name] = field.name


def _fill_field(message: Any, field: Any, item: Any) -> None:
    name = field.name
    if field.message_type is None:
        if _is_repeated(field):
            getattr(message, name).extend(item)
        else:
            setattr(message, name, item)
    elif _is_repeated(field):
        container = getattr(message, name)
        for element in item:
            to_proto(element, container.add())
    else:
        sub = getattr(message, name)
        sub.SetInParent()  # present even when every field of the struct is a default
        to_proto(item, sub)


def _is_repeated(field: Any) -> bool:
    return bool(field.is_repeated)


def from_proto(message: Any, struct_type: type[S]) -> S:
    """The struct of type ``struct_type`` that ``message`` encodes."""
    return msgspec.convert(_plain(message, struct_type), struct_type)


def _plain(message: Any, struct_type: type[msgspec.Struct]) -> dict[str, Any]:
    """``message`` as a dict msgspec can convert (struct field names only)."""
    descriptor = message.DESCRIPTOR
    out: dict[str, Any] = {}
    hints = _field_types(struct_type)
    for name in struct_type.__struct_fields__:
        field = descriptor.fields_by_name[name]
        union = field.containing_oneof
        if union is not None and message.WhichOneof(union.name) != name:
            continue  # leave the struct's default (None or 0 / b"")
        if field.message_type is None:
            value = getattr(message, name)
            out[name] = list(value) if _is_repeated(field) else value
        elif _is_repeated(field):
            element_type = hints[name]
            out[name] = [_plain(m, element_type) for m in getattr(message, name)]
        elif message.HasField(name):
            out[name] = _plain(getattr(message, name), hints[name])
    return out


_FIELD_TYPES: dict[type[msgspec.Struct], dict[str, type[msgspec.Struct]]] = {}


def _field_types(struct_type: type[msgspec.Struct]) -> dict[str, type[msgspec.Struct]]:
    """Struct-typed fields of ``struct_type``: name -> the struct type (inside a list or an
    ``X | None`` too), cached."""
    cached = _FIELD_TYPES.get(struct_type)
    if cached is not None:
        return cached
    found: dict[str, type[msgspec.Struct]] = {}
    for info in msgspec.inspect.type_info(struct_type).fields:  # type: ignore[attr-defined]
        inner = _struct_of(info.type)
        if inner is not None:
            found[info.name] = inner
    _FIELD_TYPES[struct_type] = found
    return found


def _struct_of(info: msgspec.inspect.Type) -> type[msgspec.Struct] | None:
    if isinstance(info, msgspec.inspect.StructType):
        return info.cls
    if isinstance(info, msgspec.inspect.ListType):
        return _struct_of(info.item_type)
    if isinstance(info, msgspec.inspect.UnionType):
        for member in info.types:
            found = _struct_of(member)
            if found is not None:
                return found
    return None


__all__ = ["from_proto", "proto_class", "to_proto"]
