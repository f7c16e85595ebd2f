"""etcd's ``v3electionpb.Election`` service: Campaign, Proclaim, Leader, Observe, Resign.

Built as etcd's election server builds it on ``clientv3/concurrency``'s ``Election``, run
inside the server (see :mod:`~pnyx.services.etcd.lock_service` for the shared steps):

- **Campaign** creates ``<name>/<lease hex>`` with the value and the lease in a txn
  (``create_revision == 0``; a second campaign on the same lease finds its key and
  proclaims the new value), waits until no key under ``<name>/`` is older, and returns the
  ``LeaderKey`` (name, key, create revision ``rev``, lease) with the txn's header.  If the
  lease ends while it waits, it fails with ``election: not leader`` (etcd 3.4 would
  answer with a key that no longer exists); if the caller goes away, the candidate is
  resigned in the background.
- **Proclaim** puts the new value if ``create_revision(key) == rev`` still holds, else
  ``election: not leader``.  **Resign** deletes the key under the same compare (no error
  when it fails, as etcd).  Both need the ``leader`` field.
- **Leader**: the key created first under ``<name>/`` (``election: no leader`` if none).
- **Observe** streams the leader's value: the current leader (or the first one put, when
  there is none), then each new value it proclaims, and when its key is deleted, the next
  leader; until the caller goes away.  Headers are those of the read or of the watch
  response the value came from, as etcd sends them.

Failures reach the caller as etcd's election server sends them: ``UNKNOWN`` with etcd's
message.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc  # type: ignore[import-untyped]
import msgspec

from pnyx.protocols.etcd import (
    DeleteRangeRequest,
    EventType,
    KeyValue,
    PutRequest,
    RangeRequest,
    RequestOp,
    ResponseHeader,
    TxnRequest,
)
from pnyx.services.etcd.convert import to_proto
from pnyx.services.etcd.lock_service import (
    Concurrency,
    LocalWatch,
    SessionExpired,
    as_client_errors,
    candidate_key,
    client_error,
    create_revision_is,
    first_created,
    prefix_end,
)
from pnyx.services.etcd.proto import v3election_pb2, v3election_pb2_grpc
from pnyx.services.etcd.rpc import HANDLED, RpcFailure, failure_of, unary

if TYPE_CHECKING:
    from pnyx.services.etcd.server import EtcdServer

log = logging.getLogger("pnyx.etcd.election")

MSG_NO_LEADER = "election: no leader"
"""etcd's ``concurrency.ErrElectionNoLeader``."""
MSG_NOT_LEADER = "election: not leader"
"""etcd's ``concurrency.ErrElectionNotLeader``."""
MSG_MISSING_LEADER_KEY = '"leader" field must be provided'
"""etcd's ``v3election.ErrMissingLeaderKey``."""


def _unknown(message: str) -> RpcFailure:
    return RpcFailure(grpc.StatusCode.UNKNOWN, message)


class ElectionService(v3election_pb2_grpc.ElectionServicer):
    """The ``v3electionpb.Election`` service of one member."""

    def __init__(self, server: EtcdServer, concurrency: Concurrency | None = None) -> None:
        self.server = server
        self.on_status = server.on_status
        self.concurrency = concurrency or Concurrency(server)

    # -- unary calls ---------------------------------------------------------------------

    @unary
    @as_client_errors
    async def Campaign(self, request: Any, context: Any) -> Any:
        c = self.concurrency
        name, value = bytes(request.name), bytes(request.value)
        lease = await c.session_lease(int(request.lease))
        prefix = name + b"/"
        key = candidate_key(prefix, lease)
        resp = await c.txn(
            context,
            TxnRequest(
                compare=[create_revision_is(key, 0)],
                success=[RequestOp(request_put=PutRequest(key=key, value=value, lease=lease))],
                failure=[RequestOp(request_range=RangeRequest(key=key))],
            ),
        )
        rev = resp.header.revision
        if not resp.succeeded:
            found = resp.responses[0].response_range
            kv = found.kvs[0] if found is not None and found.kvs else KeyValue()
            rev = kv.create_revision
            if kv.value != value and not await self._proclaim(context, key, rev, lease, value):
                await self._resign(context, key, rev)
                raise _unknown(MSG_NOT_LEADER)
        resign = await c.authorized(context, self._resignation(key, rev))
        try:
            await c.wait_turn(context, prefix, key, rev, resp.header.revision)
        except SessionExpired:
            raise _unknown(MSG_NOT_LEADER) from None
        except BaseException:
            c.abandon(f"election key {key!r}", lambda: c.write(resign))
            raise
        leader = v3election_pb2.LeaderKey(name=name, key=key, rev=rev, lease=lease)
        return v3election_pb2.CampaignResponse(header=c.header(resp.header), leader=leader)

    @unary
    @as_client_errors
    async def Proclaim(self, request: Any, context: Any) -> Any:
        if not request.HasField("leader"):
            raise _unknown(MSG_MISSING_LEADER_KEY)
        leader = request.leader
        lease = await self.concurrency.session_lease(int(leader.lease))
        header = await self._proclaim(
            context, bytes(leader.key), int(leader.rev), lease, bytes(request.value)
        )
        if header is None:
            raise _unknown(MSG_NOT_LEADER)
        return v3election_pb2.ProclaimResponse(header=self.concurrency.header(header))

    @unary
    @as_client_errors
    async def Leader(self, request: Any, context: Any) -> Any:
        found = await self.concurrency.get(context, first_created(bytes(request.name) + b"/"))
        if not found.kvs:
            raise _unknown(MSG_NO_LEADER)
        return self._leader_response(found.header, found.kvs[0])

    @unary
    @as_client_errors
    async def Resign(self, request: Any, context: Any) -> Any:
        if not request.HasField("leader"):
            raise _unknown(MSG_MISSING_LEADER_KEY)
        header = await self._resign(context, bytes(request.leader.key), int(request.leader.rev))
        return v3election_pb2.ResignResponse(header=self.concurrency.header(header))

    async def _proclaim(
        self, context: Any, key: bytes, rev: int, lease: int, value: bytes
    ) -> ResponseHeader | None:
        """Put ``value`` if ``key`` is still the one created at ``rev``; its header, or None."""
        resp = await self.concurrency.txn(
            context,
            TxnRequest(
                compare=[create_revision_is(key, rev)],
                success=[RequestOp(request_put=PutRequest(key=key, value=value, lease=lease))],
            ),
        )
        return resp.header if resp.succeeded else None

    async def _resign(self, context: Any, key: bytes, rev: int) -> ResponseHeader:
        """Delete ``key`` if it is still the one created at ``rev``; the txn's header."""
        resp = await self.concurrency.txn(context, self._resignation(key, rev))
        return resp.header

    @staticmethod
    def _resignation(key: bytes, rev: int) -> TxnRequest:
        return TxnRequest(
            compare=[create_revision_is(key, rev)],
            success=[RequestOp(request_delete_range=DeleteRangeRequest(key=key))],
        )

    def _leader_response(self, header: ResponseHeader, kv: KeyValue) -> Any:
        return v3election_pb2.LeaderResponse(
            header=self.concurrency.header(header), kv=to_proto(kv)
        )

    # -- Observe ---------------------------------------------------------------------------

    async def Observe(self, request: Any, context: Any) -> AsyncIterator[Any]:
        """The leader's values in order, until the caller goes away (etcd's
        ``Election.Observe``)."""
        try:
            async with LocalWatch.open(self.server) as watch:
                prefix = bytes(request.name) + b"/"
                async for header, kv in self._observe(context, watch, prefix):
                    yield self._leader_response(header, kv)
        except HANDLED as exc:
            failure = (
                exc
                if isinstance(exc, RpcFailure) and exc.message.startswith("pnyx")
                else (client_error(exc))
            )
            code, message = failure_of(failure)
            self.on_status("Observe", code)
            await context.abort(code, message)

    async def _observe(
        self, context: Any, watch: LocalWatch, prefix: bytes
    ) -> AsyncIterator[tuple[ResponseHeader, KeyValue]]:
        c = self.concurrency
        while True:
            found = await c.get(context, first_created(prefix))
            if found.kvs:
                header, kv = found.header, found.kvs[0]
            else:
                # no leader: the first key put under the prefix from now on
                watch.cancel_all()
                watch.create(1, prefix, found.header.revision, prefix_end(prefix))
                put = None
                while put is None:
                    response = await watch.next()
                    if response.canceled:
                        return  # compacted: etcd's observer ends the stream
                    put = next((e.kv for e in response.events if e.type == EventType.PUT), None)
                kv = put
                header = msgspec.structs.replace(response.header, revision=kv.mod_revision)
            yield header, kv
            # the leader's new values, until its key is deleted
            watch.cancel_all()
            watch.create(1, kv.key, header.revision + 1)
            deleted = False
            while not deleted:
                response = await watch.next()
                if response.canceled:
                    return
                for event in response.events:
                    if event.type == EventType.DELETE:
                        deleted = True
                        break
                    if event.kv is not None:
                        yield response.header, event.kv
            watch.cancel_all()


__all__ = [
    "MSG_MISSING_LEADER_KEY",
    "MSG_NOT_LEADER",
    "MSG_NO_LEADER",
    "ElectionService",
]
