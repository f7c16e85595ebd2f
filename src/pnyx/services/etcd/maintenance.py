"""etcd's ``Maintenance`` service: Status, HashKV, Hash, Alarm, Defragment, MoveLeader,
Snapshot.

``Status`` and ``HashKV`` describe this member (as etcd: each member answers for itself).
``dbSize`` is the estimated size of the replicated state (pnyx has no bbolt file).  Alarms
are this member's: NOSPACE is raised when a write would take the state past
``--quota-backend-bytes`` (see :meth:`EtcdServer.write`).  ``Defragment`` has nothing to
do.  ``MoveLeader`` is a Raft leadership transfer; it returns once this member has heard
from the new leader (over Multi-Paxos or VR: ``UNIMPLEMENTED``, they have no transfer).
``Snapshot`` streams this member's state in pnyx's format.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc  # type: ignore[import-untyped]
from aetcd.rpc import rpc_pb2, rpc_pb2_grpc  # type: ignore[import-untyped]

from pnyx.protocols.etcd import HashKVRequest
from pnyx.protocols.raft.messages import TRANSFER
from pnyx.services.etcd.auth_service import abort_unless_admin, authorize_admin
from pnyx.services.etcd.convert import to_proto
from pnyx.services.etcd.gateway import RefusedError
from pnyx.services.etcd.kv_service import respond
from pnyx.services.etcd.rpc import (
    MSG_BAD_TRANSFEREE,
    MSG_LEADER_TRANSFER_TIMEOUT,
    MSG_NOT_CAPABLE,
    RpcFailure,
    unary,
)

if TYPE_CHECKING:
    from pnyx.services.etcd.server import EtcdServer

SNAPSHOT_CHUNK_BYTES = 32 * 1024
"""Bytes per ``SnapshotResponse`` (etcd sends 32 KiB chunks)."""
TRANSFER_WAIT_S = 5.0
"""How long ``MoveLeader`` waits for the new leader to be known here."""
POLL_S = 0.01


class MaintenanceService(rpc_pb2_grpc.MaintenanceServicer):  # type: ignore[misc]
    """The ``etcdserverpb.Maintenance`` service of one member."""

    def __init__(self, server: EtcdServer) -> None:
        self.server = server
        self.on_status = server.on_status

    def _header(self) -> Any:
        revision = self.server.machine.inner.store.current_revision
        return to_proto(self.server.header(revision))

    @unary
    async def Status(self, request: Any, context: Any) -> Any:
        server = self.server
        status = server.status()
        members = status.get("members") or {}
        leader = status.get("leader") or 0
        db_size = server.db_size()
        return rpc_pb2.StatusResponse(
            header=self._header(),
            version=_version(),
            dbSize=db_size,
            leader=server.directory.member_id(int(leader)),
            raftIndex=int(status.get("commit_index", 0)),
            raftTerm=int(status.get("term", 0)),
            raftAppliedIndex=int(status.get("applied_index", 0)),
            errors=[_alarm_text(member, alarm) for member, alarm in sorted(server.alarms)],
            dbSizeInUse=db_size,
            isLearner=server.config.node_id in members.get("learners", ()),
        )

    @unary
    async def HashKV(self, request: Any, context: Any) -> Any:
        await authorize_admin(self.server, context, raw=True)
        return respond(
            self.server, self.server.read_local(HashKVRequest(revision=request.revision))
        )

    @unary
    async def Hash(self, request: Any, context: Any) -> Any:
        await authorize_admin(self.server, context, raw=True)
        result = self.server.read_local(HashKVRequest())
        return rpc_pb2.HashResponse(header=self._header(), hash=result.hash)

    @unary
    async def Alarm(self, request: Any, context: Any) -> Any:
        alarms = self.server.alarms
        if request.action == rpc_pb2.AlarmRequest.ACTIVATE:
            if request.alarm != rpc_pb2.NONE:
                alarms.add((request.memberID, request.alarm))
        elif request.action == rpc_pb2.AlarmRequest.DEACTIVATE:
            alarms.discard((request.memberID, request.alarm))
        return rpc_pb2.AlarmResponse(
            header=self._header(),
            alarms=[rpc_pb2.AlarmMember(memberID=m, alarm=a) for m, a in sorted(alarms)],
        )

    @unary
    async def Defragment(self, request: Any, context: Any) -> Any:
        await authorize_admin(self.server, context, raw=True)
        return rpc_pb2.DefragmentResponse(header=self._header())

    @unary
    async def MoveLeader(self, request: Any, context: Any) -> Any:
        server = self.server
        if not server.consensus.move_leader:
            message = server.consensus.refusal("MoveLeader (a leadership transfer)")
            raise RpcFailure(grpc.StatusCode.UNIMPLEMENTED, message)
        node = server.directory.node_of(request.targetID)
        if node is None:
            raise RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, MSG_BAD_TRANSFEREE)
        try:
            await server.gateway.admin(TRANSFER, node)
        except RefusedError as exc:
            raise RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, MSG_BAD_TRANSFEREE) from exc
        await _wait_leader(server, node)
        return rpc_pb2.MoveLeaderResponse(header=self._header())

    async def Snapshot(self, request: Any, context: Any) -> AsyncIterator[Any]:
        """This member's state as one consistent image (the replicated store's snapshot,
        taken at once between two applies), zero-padded to a multiple of 512 bytes and
        followed by its SHA-256, as etcd appends one to its page-aligned database
        (``etcdctl snapshot save`` accepts a stream whose size is 32 past a multiple of
        512); streamed in chunks.  It is pnyx's format, not a bbolt file: ``etcdctl
        snapshot save`` stores and verifies it, ``snapshot status/restore`` cannot read it."""
        await abort_unless_admin(self.server, context)
        data = _page_aligned(self.server.machine.inner.store.snapshot())
        header = self._header()
        blob = data + hashlib.sha256(data).digest()
        self.on_status("Snapshot", grpc.StatusCode.OK)
        for start in range(0, len(blob), SNAPSHOT_CHUNK_BYTES):
            chunk = blob[start : start + SNAPSHOT_CHUNK_BYTES]
            remaining = len(blob) - start - len(chunk)
            yield rpc_pb2.SnapshotResponse(header=header, remaining_bytes=remaining, blob=chunk)

    async def Downgrade(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, MSG_NOT_CAPABLE)


SNAPSHOT_PAGE_BYTES = 512
"""etcdctl recognises the SHA-256 trailer by the stream's size: 32 past a multiple of 512."""


def _page_aligned(data: bytes) -> bytes:
    """``data`` zero-padded to a multiple of :data:`SNAPSHOT_PAGE_BYTES`."""
    return data + bytes(-len(data) % SNAPSHOT_PAGE_BYTES)


async def _wait_leader(server: EtcdServer, node: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TRANSFER_WAIT_S
    while server.status().get("leader") != node:
        if loop.time() > deadline:
            raise RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED, MSG_LEADER_TRANSFER_TIMEOUT)
        await asyncio.sleep(POLL_S)


def _version() -> str:
    from pnyx.services.etcd.server import ETCD_VERSION

    return ETCD_VERSION


def _alarm_text(member_id: int, alarm: int) -> str:
    """etcd's ``Status.errors`` entry for an alarm (the text form of its ``AlarmMember``)."""
    return f"memberID:{member_id} alarm:{rpc_pb2.AlarmType.Name(alarm)} "


__all__ = ["MaintenanceService"]
