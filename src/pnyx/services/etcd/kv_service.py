"""etcd's ``KV`` service: Range, Put, DeleteRange, Txn, Compact.

Each request is converted to its struct, checked as etcd checks it before consensus
(``validate``), then proposed (writes) or read (Range and read-only Txn: linearizable by
ReadIndex unless every range asks ``serializable``), and the response's header is filled
by this member.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from aetcd.rpc import rpc_pb2_grpc  # type: ignore[import-untyped]

from pnyx.protocols.etcd import (
    CompactionRequest,
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    TxnRequest,
    validate,
)
from pnyx.services.etcd.auth_service import authorize
from pnyx.services.etcd.convert import from_proto, to_proto
from pnyx.services.etcd.rpc import unary

if TYPE_CHECKING:
    from pnyx.services.etcd.server import EtcdServer


def respond(server: EtcdServer, response: msgspec.Struct) -> Any:
    """``response`` with this member's header, as its protobuf message."""
    revision = response.header.revision  # type: ignore[attr-defined]
    filled = msgspec.structs.replace(response, header=server.header(revision))
    return to_proto(filled)


def txn_read_only(txn: TxnRequest) -> bool:
    """etcd's ``isTxnReadonly``: every op of both branches is a Range (no nested txn)."""
    return all(op.request_range is not None for op in (*txn.success, *txn.failure))


def txn_serializable(txn: TxnRequest) -> bool:
    """etcd's ``isTxnSerializable``: every op is a Range that asks ``serializable``."""
    return all(
        op.request_range is not None and op.request_range.serializable
        for op in (*txn.success, *txn.failure)
    )


def txn_writes(txn: TxnRequest) -> bool:
    """Whether any branch (nested txns included) puts: such a txn needs backend space."""
    for op in (*txn.success, *txn.failure):
        if op.request_put is not None:
            return True
        if op.request_txn is not None and txn_writes(op.request_txn):
            return True
    return False


class KvService(rpc_pb2_grpc.KVServicer):  # type: ignore[misc]
    """The ``etcdserverpb.KV`` service of one member."""

    def __init__(self, server: EtcdServer) -> None:
        self.server = server
        self.on_status = server.on_status

    @unary
    async def Range(self, request: Any, context: Any) -> Any:
        r = from_proto(request, RangeRequest)
        validate(r, self.server.options.max_txn_ops)
        q = await authorize(self.server, context, r)
        return respond(self.server, await self.server.read(q, serializable=r.serializable))

    @unary
    async def Put(self, request: Any, context: Any) -> Any:
        r = from_proto(request, PutRequest)
        validate(r)
        q = await authorize(self.server, context, r)
        result = await self.server.write(q, request.ByteSize(), needs_space=True)
        return respond(self.server, result)

    @unary
    async def DeleteRange(self, request: Any, context: Any) -> Any:
        r = from_proto(request, DeleteRangeRequest)
        validate(r)
        q = await authorize(self.server, context, r)
        return respond(self.server, await self.server.write(q, request.ByteSize()))

    @unary
    async def Txn(self, request: Any, context: Any) -> Any:
        r = from_proto(request, TxnRequest)
        validate(r, self.server.options.max_txn_ops)
        q = await authorize(self.server, context, r)
        if txn_read_only(r):
            result = await self.server.read(q, serializable=txn_serializable(r))
        else:
            result = await self.server.write(q, request.ByteSize(), needs_space=txn_writes(r))
        return respond(self.server, result)

    @unary
    async def Compact(self, request: Any, context: Any) -> Any:
        r = from_proto(request, CompactionRequest)
        return respond(self.server, await self.server.write(r, request.ByteSize()))


__all__ = ["KvService", "respond", "txn_read_only", "txn_serializable", "txn_writes"]
