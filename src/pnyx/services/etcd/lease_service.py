"""etcd's ``Lease`` service: Grant, Revoke, KeepAlive (stream), TimeToLive, Leases.

Grant and Revoke go through the log (a revoke deletes the lease's keys in one revision);
Leases is a linearizable read.  KeepAlive and TimeToLive are answered by the leader's
lessor: they travel as read queries to the leader (see :mod:`pnyx.services.etcd.machine`),
so any member serves them.  The leader's server revokes expired leases
(:meth:`EtcdServer._lease_clock`).

A keep-alive stream handles one request at a time (a client that sends faster than it
reads is slowed down by gRPC flow control, never buffered here).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec
from aetcd.rpc import rpc_pb2_grpc  # type: ignore[import-untyped]

from pnyx.protocols.etcd import ErrorResult
from pnyx.protocols.etcd.requests import (
    LeaseGrantRequest,
    LeaseKeepAliveRequest,
    LeaseKeepAliveResponse,
    LeaseLeasesRequest,
    LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
)
from pnyx.services.etcd.auth_service import authorize
from pnyx.services.etcd.convert import from_proto
from pnyx.services.etcd.kv_service import respond
from pnyx.services.etcd.rpc import HANDLED, failure_of, raise_error, unary

if TYPE_CHECKING:
    from pnyx.services.etcd.server import EtcdServer

log = logging.getLogger("pnyx.etcd.lease")


def lease_answer(raw: Any, response_type: type[msgspec.Struct]) -> Any:
    """The lessor's answer typed again (it crossed the wire untyped); errors are raised."""
    if isinstance(raw, list | tuple):
        raise_error(msgspec.convert(raw, ErrorResult))
    if isinstance(raw, ErrorResult):
        raise_error(raw)
    return msgspec.convert(raw, response_type)


class LeaseService(rpc_pb2_grpc.LeaseServicer):  # type: ignore[misc]
    """The ``etcdserverpb.Lease`` service of one member."""

    def __init__(self, server: EtcdServer) -> None:
        self.server = server
        self.on_status = server.on_status

    @unary
    async def LeaseGrant(self, request: Any, context: Any) -> Any:
        r = from_proto(request, LeaseGrantRequest)
        return respond(self.server, await self.server.write(r, request.ByteSize()))

    @unary
    async def LeaseRevoke(self, request: Any, context: Any) -> Any:
        r = await authorize(self.server, context, from_proto(request, LeaseRevokeRequest))
        return respond(self.server, await self.server.write(r, request.ByteSize()))

    @unary
    async def LeaseTimeToLive(self, request: Any, context: Any) -> Any:
        r = from_proto(request, LeaseTimeToLiveRequest)
        raw = await self.server.gateway.read(r)
        return respond(self.server, lease_answer(raw, LeaseTimeToLiveResponse))

    @unary
    async def LeaseLeases(self, request: Any, context: Any) -> Any:
        return respond(self.server, await self.server.read(LeaseLeasesRequest()))

    async def LeaseKeepAlive(self, requests: AsyncIterator[Any], context: Any) -> Any:
        """One response per request, in order; an etcd failure ends the stream with its
        status."""
        try:
            async for request in requests:
                r = from_proto(request, LeaseKeepAliveRequest)
                raw = await self.server.gateway.read(r)
                yield respond(self.server, lease_answer(raw, LeaseKeepAliveResponse))
        except HANDLED as exc:
            code, message = failure_of(exc)
            self.on_status("LeaseKeepAlive", code)
            await context.abort(code, message)


__all__ = ["LeaseService", "lease_answer"]
