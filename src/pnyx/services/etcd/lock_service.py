"""etcd's ``v3lockpb.Lock`` service (Lock, Unlock), and the server-side take on etcd's
``clientv3/concurrency`` package that it and :mod:`~pnyx.services.etcd.election_service`
are built on.

etcd's lock and election servers are clients of the server itself: a *session* is a lease
(the caller's, or one of etcd's default 60 s TTL granted for the call), and a candidate is
the key ``<name>/<lease id in hex>`` created with that lease in a txn (``create_revision ==
0``), so one lease holds at most one candidate per name.  The candidate with the lowest
create revision under the ``<name>/`` prefix holds the lock (leads the election); every
other one waits, each watching the deletion of the key created just before its own
(``waitDeletes``), so releasing a lock wakes exactly the next waiter.  The holder's key's
create revision grows with every new holder: it is a **fencing token** (see
``docs/ETCD-LOCKS.md``).

Here the same steps run inside the server: txns are proposed and ranges read through the
server's own write/read path (``EtcdServer.write`` / ``read``: the log, ReadIndex), and
the waits are watchers on this node's :class:`~pnyx.protocols.etcd.watch.WatchHub`
(:class:`LocalWatch`), woken after each applied batch like a client's watch stream.

Every inner request carries the caller's identity: while auth is enabled it is wrapped
with the user of the caller's token (``auth_service.authorize``), so the state machine
checks the caller's permissions on the lock and election keys, as etcd's servers hand the
caller's context (with its token) to their inner client.

Every wait ends when the caller goes away (its gRPC deadline or cancellation cancels the
handler; the candidate key is then deleted in the background and the cancellation
propagates) or when the caller's lease ends: the candidate key is watched too, and its
deletion (lease expired or revoked) ends a ``Lock`` with etcd's ``mutex: session is
expired`` (etcd 3.5's ``concurrency.ErrSessionExpired``; etcd 3.4 answers such a Lock with
a key that no longer exists).  Errors of the inner KV calls reach the caller as etcd's
lock server sends them: code ``UNKNOWN`` with etcd's message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import grpc  # type: ignore[import-untyped]

from pnyx.protocols.etcd import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    EtcdError,
    EventType,
    KeyValue,
    LeaseGrantRequest,
    PutRequest,
    RangeRequest,
    RangeResponse,
    RequestOp,
    ResponseHeader,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
    validate,
)
from pnyx.protocols.etcd.requests import WatchCreateRequest, WatchRequest, WatchResponse
from pnyx.services.etcd.auth_service import authorize
from pnyx.services.etcd.convert import to_proto
from pnyx.services.etcd.gateway import GatewayError
from pnyx.services.etcd.kv_service import txn_writes
from pnyx.services.etcd.proto import v3lock_pb2, v3lock_pb2_grpc
from pnyx.services.etcd.rpc import HANDLED, RpcFailure, failure_of, unary

if TYPE_CHECKING:
    from pnyx.services.etcd.server import EtcdServer

log = logging.getLogger("pnyx.etcd.lock")

DEFAULT_SESSION_TTL_S = 60
"""TTL of the lease granted for a request without one (etcd's ``defaultSessionTTL``)."""
MSG_SESSION_EXPIRED = "mutex: session is expired"
"""etcd's ``concurrency.ErrSessionExpired``: the candidate's lease ended while it waited."""
MSG_WATCH_STREAMS = "pnyx: too many watch streams on this member (max {})"
CLEANUP_TASKS_MAX = 1024
"""Background deletions of abandoned candidate keys at once; beyond, they are skipped
(the key goes with its lease)."""

T = TypeVar("T")


def prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with ``prefix`` (etcd's
    ``GetPrefixRangeEnd``; ``"\\0"``, every key, when ``prefix`` is all ``0xff``)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


def candidate_key(prefix: bytes, lease: int) -> bytes:
    """``<prefix><lease id in lower-case hex>``, as ``fmt.Sprintf("%s%x", pfx, lease)``."""
    return prefix + format(lease, "x").encode()


def first_created(prefix: bytes, **fields: Any) -> RangeRequest:
    """etcd's ``WithFirstCreate()`` over ``prefix``: the key created first, alone."""
    return RangeRequest(
        key=prefix,
        range_end=prefix_end(prefix),
        sort_target=SortTarget.CREATE,
        sort_order=SortOrder.ASCEND,
        limit=1,
        **fields,
    )


def created_before(prefix: bytes, revision: int) -> RangeRequest:
    """etcd's ``WithLastCreate()`` + ``WithMaxCreateRev(revision)`` over ``prefix``: the key
    created last at or before ``revision``."""
    return RangeRequest(
        key=prefix,
        range_end=prefix_end(prefix),
        sort_target=SortTarget.CREATE,
        sort_order=SortOrder.DESCEND,
        limit=1,
        max_create_revision=revision,
    )


def create_revision_is(key: bytes, revision: int) -> Compare:
    """The compare ``create_revision(key) == revision`` (0: the key does not exist)."""
    return Compare(
        result=CompareResult.EQUAL,
        target=CompareTarget.CREATE,
        key=key,
        create_revision=revision,
    )


def client_error(exc: Exception) -> RpcFailure:
    """``exc`` as etcd's lock/election servers send it: their inner etcd client's error
    reaches gRPC as a plain error, so the code is ``UNKNOWN`` and the message etcd's."""
    _, message = failure_of(exc)
    return RpcFailure(grpc.StatusCode.UNKNOWN, message)


class SessionExpired(Exception):
    """The candidate key is gone (its lease expired or was revoked) while it waited."""


class LocalWatch:
    """Watchers on this node's watch hub, as one server-side watch stream: ``create`` a
    watcher, then ``next()`` the responses in order.  Open it with :meth:`open` (counts
    against ``max_watch_streams``, as a client's Watch stream does)."""

    def __init__(self, server: EtcdServer) -> None:
        self.server = server
        self.streams = server.watch_streams
        self.stream_id, self._waker = self.streams.open()
        self._ready: list[WatchResponse] = []

    @classmethod
    @asynccontextmanager
    async def open(cls, server: EtcdServer) -> AsyncIterator[LocalWatch]:
        streams = server.watch_streams
        if len(streams) >= streams.max_streams:
            raise RpcFailure(
                grpc.StatusCode.RESOURCE_EXHAUSTED, MSG_WATCH_STREAMS.format(streams.max_streams)
            )
        watch = cls(server)
        try:
            yield watch
        finally:
            streams.close(watch.stream_id)

    def create(
        self, watch_id: int, key: bytes, start_revision: int, range_end: bytes = b""
    ) -> None:
        """Watch ``key`` (or ``[key, range_end)``) from ``start_revision`` (history first)."""
        request = WatchCreateRequest(
            key=key, range_end=range_end, start_revision=start_revision, watch_id=watch_id
        )
        self.streams.hub.request(self.stream_id, WatchRequest(create_request=request))
        self._waker.set()

    def cancel_all(self) -> None:
        """Drop every watcher of this stream (a new stream id, same waker)."""
        self.streams.close(self.stream_id)
        self.stream_id, self._waker = self.streams.open()
        self._ready.clear()

    async def next(self) -> WatchResponse:
        """The stream's next response (waits for the node to apply more revisions)."""
        while not self._ready:
            await self._waker.wait()
            self._waker.clear()
            self._ready = self.streams.hub.take(self.stream_id)
            if self.streams.hub.has_output(self.stream_id):
                self._waker.set()
        return self._ready.pop(0)


class Concurrency:
    """etcd's ``concurrency`` sessions, mutexes and elections run by one member."""

    def __init__(self, server: EtcdServer) -> None:
        self.server = server
        self._cleanups: set[asyncio.Task[None]] = set()

    # -- the server's own KV path --------------------------------------------------------

    async def txn(self, context: Any, txn: TxnRequest) -> TxnResponse:
        """Propose ``txn`` for the caller of ``context`` through the log (as the KV
        service does)."""
        validate(txn, self.server.options.max_txn_ops)
        size = to_proto(txn).ByteSize()
        authed = await self.authorized(context, txn)
        result: TxnResponse = await self.server.write(authed, size, needs_space=txn_writes(txn))
        return result

    async def get(self, context: Any, request: RangeRequest) -> RangeResponse:
        """A linearizable Range for the caller of ``context``."""
        validate(request, self.server.options.max_txn_ops)
        result: RangeResponse = await self.server.read(await self.authorized(context, request))
        return result

    async def authorized(self, context: Any, request: Any) -> Any:
        """``request`` as the caller of ``context`` sends it (with its user while auth is
        enabled: ``auth_service.authorize``)."""
        return await authorize(self.server, context, request)

    async def write(self, authorized: Any) -> Any:
        """Propose a request :meth:`authorized` returned (also after the call ended)."""
        inner = getattr(authorized, "request", authorized)
        return await self.server.write(authorized, to_proto(inner).ByteSize())

    async def delete(self, context: Any, key: bytes) -> DeleteRangeResponse:
        request = DeleteRangeRequest(key=key)
        validate(request)
        result: DeleteRangeResponse = await self.write(await self.authorized(context, request))
        return result

    async def session_lease(self, lease: int) -> int:
        """The lease of a session: ``lease``, or a new one of etcd's default TTL when 0."""
        if lease != 0:
            return lease
        request = LeaseGrantRequest(TTL=DEFAULT_SESSION_TTL_S)
        granted = await self.server.write(request, to_proto(request).ByteSize())
        return int(granted.ID)

    def header(self, header: ResponseHeader) -> Any:
        """``header`` as this member fills it, as its protobuf message."""
        return to_proto(self.server.header(header.revision))

    # -- candidates ------------------------------------------------------------------------

    async def wait_turn(
        self, context: Any, prefix: bytes, key: bytes, rev: int, seen: int
    ) -> ResponseHeader:
        """etcd's ``waitDeletes(prefix, rev - 1)``: until no key under ``prefix`` was created
        before ``rev`` (the candidate ``key``'s create revision), then until this is
        confirmed with ``key`` still there (etcd 3.5's ``Mutex.Lock``); the header of that
        read.  ``seen`` is a revision at which ``key`` was known to exist: its deletion
        after it (lease expiry) raises :class:`SessionExpired`."""
        async with LocalWatch.open(self.server) as watch:
            while True:
                before = await self.get(context, created_before(prefix, rev - 1))
                if not before.kvs:
                    mine = await self.get(context, RangeRequest(key=key))
                    if not mine.kvs or mine.kvs[0].create_revision != rev:
                        raise SessionExpired(key)
                    return mine.header
                predecessor = before.kvs[0].key
                seen = await self._wait_delete(
                    context, watch, predecessor, before.header.revision, key, rev, seen
                )

    async def _wait_delete(
        self,
        context: Any,
        watch: LocalWatch,
        key: bytes,
        start: int,
        mine: bytes,
        rev: int,
        seen: int,
    ) -> int:
        """Until ``key`` is deleted at or after ``start`` (etcd's ``waitDelete``), watching
        ``mine`` from ``seen + 1`` too; returns a revision at which ``mine`` still existed."""
        watch.cancel_all()
        watch.create(1, key, start)
        watch.create(2, mine, seen + 1)
        try:
            while True:
                response = await watch.next()
                if response.canceled:
                    # a compacted start revision: look again from the present
                    current = await self.get(context, RangeRequest(key=mine))
                    if not current.kvs or current.kvs[0].create_revision != rev:
                        raise SessionExpired(mine)
                    return current.header.revision
                deleted = any(e.type == EventType.DELETE for e in response.events)
                if deleted and response.watch_id == 2:
                    raise SessionExpired(mine)
                if deleted and response.watch_id == 1:
                    return seen
        finally:
            watch.cancel_all()

    def abandon(self, what: str, cleanup: Callable[[], Awaitable[Any]]) -> None:
        """Run ``cleanup`` (delete a candidate whose caller went away) in the background,
        tracked and logged; the caller's cancellation goes on propagating."""
        if len(self._cleanups) >= CLEANUP_TASKS_MAX:
            log.warning("candidate_cleanup_skipped %s (its lease removes it)", what)
            return
        task = asyncio.ensure_future(_logged(cleanup(), what))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    # -- the mutex ---------------------------------------------------------------------------

    async def lock(self, context: Any, name: bytes, lease_id: int) -> tuple[ResponseHeader, bytes]:
        """etcd's ``Mutex.Lock`` for the caller of ``context``: the header at acquisition
        and the lock key."""
        lease = await self.session_lease(lease_id)
        prefix = name + b"/"
        key = candidate_key(prefix, lease)
        owner = RequestOp(request_range=first_created(prefix))
        resp = await self.txn(
            context,
            TxnRequest(
                compare=[create_revision_is(key, 0)],
                success=[RequestOp(request_put=PutRequest(key=key, lease=lease)), owner],
                failure=[RequestOp(request_range=RangeRequest(key=key)), owner],
            ),
        )
        rev = resp.header.revision
        if not resp.succeeded:
            rev = _range_kvs(resp, 0)[0].create_revision
        holder = _range_kvs(resp, 1)
        if not holder or holder[0].create_revision == rev:
            return resp.header, key
        unlock = await self.authorized(context, DeleteRangeRequest(key=key))
        try:
            header = await self.wait_turn(context, prefix, key, rev, resp.header.revision)
        except SessionExpired:
            raise RpcFailure(grpc.StatusCode.UNKNOWN, MSG_SESSION_EXPIRED) from None
        except BaseException:
            self.abandon(f"lock key {key!r}", lambda: self.write(unlock))
            raise
        return header, key


async def _logged(coro: Awaitable[Any], what: str) -> None:
    try:
        await coro
    except (*HANDLED, EtcdError) as exc:
        log.info("candidate_cleanup_failed %s error=%s", what, exc)


def _range_kvs(resp: TxnResponse, index: int) -> list[KeyValue]:
    response = resp.responses[index].response_range
    return list(response.kvs) if response is not None else []


def as_client_errors(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Decorate a handler (under :func:`~pnyx.services.etcd.rpc.unary`): etcd failures of
    its inner KV calls become ``UNKNOWN`` with etcd's message (:func:`client_error`)."""

    async def wrapper(self: Any, request: Any, context: Any) -> T:
        try:
            return await method(self, request, context)
        except (EtcdError, GatewayError) as exc:
            raise client_error(exc) from exc
        except RpcFailure as exc:
            if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED and exc.message.startswith("pnyx"):
                raise
            raise client_error(exc) from exc

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


class LockService(v3lock_pb2_grpc.LockServicer):
    """The ``v3lockpb.Lock`` service of one member."""

    def __init__(self, server: EtcdServer, concurrency: Concurrency | None = None) -> None:
        self.server = server
        self.on_status = server.on_status
        self.concurrency = concurrency or Concurrency(server)

    @unary
    @as_client_errors
    async def Lock(self, request: Any, context: Any) -> Any:
        name, lease = bytes(request.name), int(request.lease)
        header, key = await self.concurrency.lock(context, name, lease)
        return v3lock_pb2.LockResponse(header=self.concurrency.header(header), key=key)

    @unary
    @as_client_errors
    async def Unlock(self, request: Any, context: Any) -> Any:
        deleted = await self.concurrency.delete(context, bytes(request.key))
        return v3lock_pb2.UnlockResponse(header=self.concurrency.header(deleted.header))


__all__ = [
    "DEFAULT_SESSION_TTL_S",
    "MSG_SESSION_EXPIRED",
    "Concurrency",
    "LocalWatch",
    "LockService",
    "SessionExpired",
    "as_client_errors",
    "candidate_key",
    "client_error",
    "create_revision_is",
    "first_created",
    "prefix_end",
]
