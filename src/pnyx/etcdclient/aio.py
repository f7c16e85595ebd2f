"""An asyncio client for the etcd v3 API (pnyx's etcd service, or any etcd 3.4+).

A thin layer over the generated stubs the ``aetcd`` wheel ships (``aetcd.rpc``, grpc.aio):
``aetcd.Client`` itself talks to one endpoint and lacks range limits and revisions, the
lease keep-alive stream and etcd's lock and election recipes, so this module calls the
same stubs directly and adds what it lacks:

- several endpoints: a call goes to the first endpoint whose channel connects within
  ``connect_timeout_s`` (the preferred one first); an endpoint that fails is skipped for
  the next call.  Reads are retried once on another endpoint; a write is sent once (its
  error may mean it applied or not, as with any etcd client);
- every call bounded by ``timeout_s``;
- watches that survive a member going away: the stream is re-created on another endpoint
  from the revision after the last event seen, so the events come in order, exactly once;
- errors as :class:`EtcdError` (gRPC code and etcd's message) or :class:`EtcdUnavailable`.

Lock and election (etcd's ``concurrency`` package, client side) are in
:mod:`pnyx.etcdclient.recipes`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import grpc  # type: ignore[import-untyped]
from aetcd.rpc import rpc_pb2, rpc_pb2_grpc  # type: ignore[import-untyped]

DEFAULT_ENDPOINT = "127.0.0.1:2379"

Bytes = bytes | str


def to_bytes(value: Bytes) -> bytes:
    """``value`` as bytes (str is UTF-8 encoded)."""
    return value.encode() if isinstance(value, str) else value


def prefix_end(prefix: Bytes) -> bytes:
    """The range end that makes ``[prefix, end)`` every key starting with ``prefix``."""
    key = bytearray(to_bytes(prefix))
    while key:
        if key[-1] < 0xFF:
            key[-1] += 1
            return bytes(key)
        key.pop()
    return b"\0"  # every key


class EtcdError(Exception):
    """A request the cluster refused or could not answer: gRPC ``code`` name and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class EtcdUnavailable(EtcdError):
    """No endpoint could be reached, or the one used went away / timed out.

    For a write this means the outcome is unknown: it may or may not have applied."""


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyValue:
    """One key as etcd stores it."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0

    @classmethod
    def of(cls, kv: Any) -> KeyValue:
        return cls(bytes(kv.key), bytes(kv.value), int(kv.create_revision),
                   int(kv.mod_revision), int(kv.version), int(kv.lease))  # fmt: skip


@dataclass(frozen=True)
class RangeResult:
    """A Range: the keys, how many matched (``count``), whether ``more`` were cut by the
    limit, and the store's ``revision`` when it was read."""

    kvs: list[KeyValue]
    count: int
    more: bool
    revision: int


@dataclass(frozen=True)
class PutResult:
    revision: int
    prev_kv: KeyValue | None = None


@dataclass(frozen=True)
class DeleteResult:
    revision: int
    deleted: int
    prev_kvs: list[KeyValue] = field(default_factory=list)


@dataclass(frozen=True)
class TxnResult:
    """Whether every compare held, the revision after the txn, one result per request of
    the branch that ran."""

    succeeded: bool
    revision: int
    responses: list[RangeResult | PutResult | DeleteResult | TxnResult]


@dataclass(frozen=True)
class WatchEvent:
    """A put or delete seen by a watch (``kv.mod_revision`` is its revision)."""

    type: Literal["PUT", "DELETE"]
    kv: KeyValue
    prev_kv: KeyValue | None = None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@dataclass(frozen=True)
class Lease:
    """A granted lease: its id and TTL in seconds."""

    id: int
    ttl: int


@dataclass(frozen=True)
class MemberStatus:
    """A member's Maintenance.Status: its id, the leader it knows, Raft term and index."""

    endpoint: str
    member_id: int
    leader: int
    raft_term: int
    raft_index: int
    db_size: int
    version: str

    @property
    def is_leader(self) -> bool:
        return self.leader != 0 and self.leader == self.member_id


@dataclass(frozen=True)
class LeaseInfo:
    id: int
    ttl: int
    granted_ttl: int
    keys: list[bytes]


# -- transactions ----------------------------------------------------------------------------

CompareTarget = Literal["value", "version", "create", "mod", "lease"]
CompareOp = Literal["=", "!=", "<", ">"]
_TARGETS = {"value": "VALUE", "version": "VERSION", "create": "CREATE", "mod": "MOD",
            "lease": "LEASE"}  # fmt: skip
_RESULTS = {"=": "EQUAL", "==": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}
_FIELDS = {"value": "value", "version": "version", "create": "create_revision",
           "mod": "mod_revision", "lease": "lease"}  # fmt: skip


@dataclass(frozen=True)
class Compare:
    """``target(key) op operand``, e.g. ``Compare("k", "value", "=", "v1")`` or
    ``Compare("k", "create", "=", 0)`` (the key does not exist)."""

    key: Bytes
    target: CompareTarget
    op: CompareOp
    operand: Bytes | int
    range_end: Bytes | None = None

    def message(self) -> Any:
        if self.target not in _TARGETS or self.op not in _RESULTS:
            raise ValueError(f"bad compare {self.target!r} {self.op!r}")
        msg = rpc_pb2.Compare(
            key=to_bytes(self.key),
            target=getattr(rpc_pb2.Compare, _TARGETS[self.target]),
            result=getattr(rpc_pb2.Compare, _RESULTS[self.op]),
        )
        if self.range_end is not None:
            msg.range_end = to_bytes(self.range_end)
        if self.target == "value":
            if isinstance(self.operand, int):
                raise ValueError("a value compare takes a string")
            msg.value = to_bytes(self.operand)
        else:
            if not isinstance(self.operand, int):
                raise ValueError(f"a {self.target} compare takes an integer")
            setattr(msg, _FIELDS[self.target], self.operand)
        return msg


SortOrder = Literal["none", "ascend", "descend"]
SortTarget = Literal["key", "version", "create", "mod", "value"]


@dataclass(frozen=True)
class Get:
    key: Bytes
    range_end: Bytes | None = None
    prefix: bool = False
    limit: int = 0
    revision: int = 0
    sort_order: SortOrder = "none"
    sort_target: SortTarget = "key"
    keys_only: bool = False
    count_only: bool = False
    max_create_revision: int = 0


@dataclass(frozen=True)
class Put:
    key: Bytes
    value: Bytes
    lease: int = 0
    prev_kv: bool = False


@dataclass(frozen=True)
class Delete:
    key: Bytes
    range_end: Bytes | None = None
    prefix: bool = False
    prev_kv: bool = False


@dataclass(frozen=True)
class Txn:
    compare: Sequence[Compare]
    success: Sequence[Get | Put | Delete | Txn] = ()
    failure: Sequence[Get | Put | Delete | Txn] = ()


Op = Get | Put | Delete | Txn


def _range_end(key: Bytes, range_end: Bytes | None, prefix: bool) -> bytes:
    if prefix:
        return prefix_end(key)
    return b"" if range_end is None else to_bytes(range_end)


def _range_request(op: Get, serializable: bool = False) -> Any:
    return rpc_pb2.RangeRequest(
        key=to_bytes(op.key),
        range_end=_range_end(op.key, op.range_end, op.prefix),
        limit=op.limit,
        revision=op.revision,
        sort_order=getattr(rpc_pb2.RangeRequest, op.sort_order.upper()),
        sort_target=getattr(rpc_pb2.RangeRequest, op.sort_target.upper()),
        keys_only=op.keys_only,
        count_only=op.count_only,
        max_create_revision=op.max_create_revision,
        serializable=serializable,
    )


def _request_op(op: Op) -> Any:
    if isinstance(op, Get):
        return rpc_pb2.RequestOp(request_range=_range_request(op))
    if isinstance(op, Put):
        return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
            key=to_bytes(op.key), value=to_bytes(op.value), lease=op.lease, prev_kv=op.prev_kv))
    if isinstance(op, Delete):
        return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(
            key=to_bytes(op.key), range_end=_range_end(op.key, op.range_end, op.prefix),
            prev_kv=op.prev_kv))
    return rpc_pb2.RequestOp(request_txn=_txn_request(op))


def _txn_request(txn: Txn) -> Any:
    return rpc_pb2.TxnRequest(
        compare=[c.message() for c in txn.compare],
        success=[_request_op(o) for o in txn.success],
        failure=[_request_op(o) for o in txn.failure],
    )


def _range_result(resp: Any) -> RangeResult:
    return RangeResult([KeyValue.of(kv) for kv in resp.kvs], int(resp.count), bool(resp.more),
                       int(resp.header.revision))  # fmt: skip


def _put_result(resp: Any) -> PutResult:
    prev = KeyValue.of(resp.prev_kv) if resp.HasField("prev_kv") else None
    return PutResult(int(resp.header.revision), prev)


def _delete_result(resp: Any) -> DeleteResult:
    return DeleteResult(int(resp.header.revision), int(resp.deleted),
                        [KeyValue.of(kv) for kv in resp.prev_kvs])  # fmt: skip


def _txn_result(resp: Any) -> TxnResult:
    out: list[RangeResult | PutResult | DeleteResult | TxnResult] = []
    for r in resp.responses:
        kind = r.WhichOneof("response")
        if kind == "response_range":
            out.append(_range_result(r.response_range))
        elif kind == "response_put":
            out.append(_put_result(r.response_put))
        elif kind == "response_delete_range":
            out.append(_delete_result(r.response_delete_range))
        else:
            out.append(_txn_result(r.response_txn))
    return TxnResult(bool(resp.succeeded), int(resp.header.revision), out)


def _error(exc: Any) -> EtcdError:
    code = exc.code()
    name = getattr(code, "name", str(code))
    details = exc.details() or name
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return EtcdUnavailable(name, details)
    return EtcdError(name, details)


# -- the client ------------------------------------------------------------------------------


class AsyncEtcdClient:
    """etcd v3 KV, Watch and Lease over grpc.aio; use as ``async with``.

    ``endpoints``: ``HOST:PORT`` strings (or one comma-separated string), tried in order;
    ``timeout_s`` bounds each call, ``connect_timeout_s`` each connection attempt.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str = (DEFAULT_ENDPOINT,),
        *,
        timeout_s: float = 5.0,
        connect_timeout_s: float = 2.0,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        self.endpoints = [e.strip().removeprefix("http://") for e in endpoints]
        if not self.endpoints:
            raise ValueError("no endpoints")
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._channels: dict[int, Any] = {}
        self._current = 0

    async def __aenter__(self) -> AsyncEtcdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            with contextlib.suppress(Exception):
                await channel.close()

    # -- channels ------------------------------------------------------------------------

    async def _channel(self) -> tuple[int, Any]:
        """A connected channel: the current endpoint's, else the next that connects."""
        n = len(self.endpoints)
        for step in range(n):
            index = (self._current + step) % n
            channel = self._channels.get(index)
            if channel is None:
                channel = grpc.aio.insecure_channel(self.endpoints[index])
                self._channels[index] = channel
            try:
                await asyncio.wait_for(channel.channel_ready(), self.connect_timeout_s)
            except (TimeoutError, grpc.aio.AioRpcError):
                await self._drop(index)
                continue
            self._current = index
            return index, channel
        raise EtcdUnavailable(
            "UNAVAILABLE",
            f"cannot reach any endpoint ({', '.join(self.endpoints)}) within "
            f"{self.connect_timeout_s:g} s",
        )

    def _avoid(self, index: int) -> None:
        """A call through endpoint ``index`` failed: the next call tries the next endpoint
        first.  The channel stays open (other calls and streams may use it); it is closed
        when it fails to connect (:meth:`_drop`)."""
        if index == self._current:
            self._current = (index + 1) % len(self.endpoints)

    async def _drop(self, index: int) -> None:
        """Forget endpoint ``index``'s channel (a fresh one reconnects at once) and move on."""
        channel = self._channels.pop(index, None)
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close()
        if index == self._current:
            self._current = (index + 1) % len(self.endpoints)

    async def _unary(self, service: str, method: str, request: Any, *, retry: bool) -> Any:
        attempts = 2 if retry and len(self.endpoints) > 1 else 1
        for attempt in range(attempts):
            index, channel = await self._channel()
            stub = getattr(rpc_pb2_grpc, f"{service}Stub")(channel)
            try:
                return await getattr(stub, method)(request, timeout=self.timeout_s)
            except grpc.aio.AioRpcError as exc:
                error = _error(exc)
                if not isinstance(error, EtcdUnavailable):
                    raise error from None
                self._avoid(index)
                if attempt == attempts - 1:
                    raise error from None
        raise AssertionError("unreachable")

    # -- KV ------------------------------------------------------------------------------

    async def range(
        self,
        key: Bytes,
        range_end: Bytes | None = None,
        *,
        prefix: bool = False,
        limit: int = 0,
        revision: int = 0,
        sort_order: SortOrder = "none",
        sort_target: SortTarget = "key",
        keys_only: bool = False,
        count_only: bool = False,
        max_create_revision: int = 0,
        serializable: bool = False,
    ) -> RangeResult:
        """Keys in ``[key, range_end)`` (or with prefix ``key``; one key if neither)."""
        op = Get(key, range_end, prefix, limit, revision, sort_order, sort_target, keys_only,
                 count_only, max_create_revision)
        request = _range_request(op, serializable)
        return _range_result(await self._unary("KV", "Range", request, retry=True))

    async def get(self, key: Bytes, *, revision: int = 0,
                  serializable: bool = False) -> KeyValue | None:  # fmt: skip
        """One key, or None when it does not exist."""
        result = await self.range(key, revision=revision, serializable=serializable)
        return result.kvs[0] if result.kvs else None

    async def put(self, key: Bytes, value: Bytes, *, lease: int = 0,
                  prev_kv: bool = False) -> PutResult:  # fmt: skip
        request = rpc_pb2.PutRequest(key=to_bytes(key), value=to_bytes(value), lease=lease,
                                     prev_kv=prev_kv)  # fmt: skip
        return _put_result(await self._unary("KV", "Put", request, retry=False))

    async def delete(self, key: Bytes, range_end: Bytes | None = None, *,
                     prefix: bool = False, prev_kv: bool = False) -> DeleteResult:  # fmt: skip
        request = rpc_pb2.DeleteRangeRequest(
            key=to_bytes(key), range_end=_range_end(key, range_end, prefix), prev_kv=prev_kv)
        return _delete_result(await self._unary("KV", "DeleteRange", request, retry=False))

    async def txn(self, compare: Sequence[Compare], success: Sequence[Op] = (),
                  failure: Sequence[Op] = ()) -> TxnResult:  # fmt: skip
        """If every ``compare`` holds run ``success``, else ``failure`` (atomically)."""
        request = _txn_request(Txn(compare, success, failure))
        return _txn_result(await self._unary("KV", "Txn", request, retry=False))

    async def compact(self, revision: int, *, physical: bool = False) -> None:
        request = rpc_pb2.CompactionRequest(revision=revision, physical=physical)
        await self._unary("KV", "Compact", request, retry=False)

    async def status(self, endpoint: str | None = None) -> MemberStatus:
        """Maintenance.Status of ``endpoint`` (one of any member's; default: the one in use)."""
        if endpoint is None:
            index, _ = await self._channel()
            endpoint = self.endpoints[index]
        channel = grpc.aio.insecure_channel(endpoint.removeprefix("http://"))
        try:
            stub = rpc_pb2_grpc.MaintenanceStub(channel)
            resp = await stub.Status(rpc_pb2.StatusRequest(), timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc) from None
        finally:
            await channel.close()
        return MemberStatus(endpoint, int(resp.header.member_id), int(resp.leader),
                            int(resp.raftTerm), int(resp.raftIndex), int(resp.dbSize),
                            str(resp.version))  # fmt: skip

    # -- leases --------------------------------------------------------------------------

    async def lease_grant(self, ttl: int, lease_id: int = 0) -> Lease:
        request = rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=lease_id)
        resp = await self._unary("Lease", "LeaseGrant", request, retry=False)
        if resp.error:
            raise EtcdError("UNKNOWN", str(resp.error))
        return Lease(int(resp.ID), int(resp.TTL))

    async def lease_revoke(self, lease_id: int) -> None:
        await self._unary("Lease", "LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=lease_id),
                          retry=False)  # fmt: skip

    async def lease_time_to_live(self, lease_id: int, *, keys: bool = False) -> LeaseInfo:
        request = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=keys)
        resp = await self._unary("Lease", "LeaseTimeToLive", request, retry=True)
        return LeaseInfo(int(resp.ID), int(resp.TTL), int(resp.grantedTTL),
                         [bytes(k) for k in resp.keys])  # fmt: skip

    async def lease_keep_alive_once(self, lease_id: int) -> int:
        """Refresh the lease once; its new TTL (seconds). EtcdError NOT_FOUND if it expired."""
        index, channel = await self._channel()
        call = rpc_pb2_grpc.LeaseStub(channel).LeaseKeepAlive(timeout=self.timeout_s)
        try:
            await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
            resp = await call.read()
        except grpc.aio.AioRpcError as exc:
            error = _error(exc)
            if isinstance(error, EtcdUnavailable):
                self._avoid(index)
            raise error from None
        finally:
            call.cancel()
        if resp is grpc.aio.EOF:
            self._avoid(index)
            raise EtcdUnavailable("UNAVAILABLE", "the keep-alive stream ended")
        if int(resp.TTL) <= 0:
            raise EtcdError("NOT_FOUND", "etcdserver: requested lease not found")
        return int(resp.TTL)

    async def lease_keep_alive(self, lease_id: int,
                               interval_s: float | None = None) -> AsyncIterator[int]:  # fmt: skip
        """Refresh the lease every ``interval_s`` (default: a third of its TTL) on one
        keep-alive stream (re-opened on another endpoint if its member goes away), yielding
        each new TTL; ends with EtcdError NOT_FOUND once the lease is gone, or with
        EtcdUnavailable once no member could be reached for as long as the last TTL (the
        lease may have expired by then)."""
        loop = asyncio.get_running_loop()
        expires: float | None = None  # (loop time) after this the lease may be gone

        async def unreachable(error: EtcdUnavailable) -> None:
            if expires is None or loop.time() >= expires:
                raise error
            await asyncio.sleep(0.2)

        while True:
            try:
                index, channel = await self._channel()
            except EtcdUnavailable as exc:
                await unreachable(exc)
                continue
            call = rpc_pb2_grpc.LeaseStub(channel).LeaseKeepAlive()
            try:
                while True:
                    await asyncio.wait_for(
                        call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)), self.timeout_s)
                    resp = await asyncio.wait_for(call.read(), self.timeout_s)
                    if resp is grpc.aio.EOF:
                        raise EtcdUnavailable("UNAVAILABLE", "the keep-alive stream ended")
                    ttl = int(resp.TTL)
                    if ttl <= 0:
                        raise EtcdError("NOT_FOUND", "etcdserver: requested lease not found")
                    expires = loop.time() + ttl
                    yield ttl
                    await asyncio.sleep(interval_s if interval_s else max(0.5, ttl / 3))
            except grpc.aio.AioRpcError as exc:
                error = _error(exc)
                if not isinstance(error, EtcdUnavailable) and error.code != "CANCELLED":
                    raise error from None  # (CANCELLED: its channel was closed under it)
                self._avoid(index)
                await unreachable(EtcdUnavailable(error.code, error.message))
            except (TimeoutError, EtcdUnavailable):
                self._avoid(index)
                await unreachable(EtcdUnavailable("UNAVAILABLE", "keep-alive timed out"))
            finally:
                call.cancel()

    # -- watch ---------------------------------------------------------------------------

    def watch(
        self,
        key: Bytes,
        range_end: Bytes | None = None,
        *,
        prefix: bool = False,
        start_revision: int = 0,
        prev_kv: bool = False,
    ) -> Watch:
        """Events on ``key`` (or the range / prefix) from ``start_revision`` (0: from now),
        as an async iterator: ``async with client.watch(...) as w: async for ev in w``."""
        return Watch(self, to_bytes(key), _range_end(key, range_end, prefix), start_revision,
                     prev_kv)  # fmt: skip


class Watch:
    """One watch (see :meth:`AsyncEtcdClient.watch`); re-created on another endpoint, from
    the revision after the last event seen, when its member goes away."""

    def __init__(self, client: AsyncEtcdClient, key: bytes, range_end: bytes,
                 start_revision: int, prev_kv: bool) -> None:  # fmt: skip
        self._client = client
        self._key = key
        self._range_end = range_end
        self.next_revision = start_revision
        """The revision the watch resumes from (0: from now, until it was created)."""
        self._prev_kv = prev_kv
        self._call: Any = None
        self._index = 0
        self._pending: list[WatchEvent] = []
        self._closed = False
        self.reconnects = 0
        self.compact_revision = 0

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cancel()

    def __aiter__(self) -> Watch:
        return self

    async def cancel(self) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()
            self._call = None

    async def _open(self) -> None:
        failures = 0
        while True:
            if failures >= 3 * len(self._client.endpoints):
                raise EtcdUnavailable("UNAVAILABLE", f"cannot create the watch: {failures} "
                                      "attempts failed")  # fmt: skip
            if failures:
                await asyncio.sleep(0.2)
            failures += 1
            index, channel = await self._client._channel()
            call = rpc_pb2_grpc.WatchStub(channel).Watch()
            create = rpc_pb2.WatchCreateRequest(
                key=self._key, range_end=self._range_end, start_revision=self.next_revision,
                prev_kv=self._prev_kv)
            try:
                await asyncio.wait_for(
                    call.write(rpc_pb2.WatchRequest(create_request=create)),
                    self._client.timeout_s)
                resp = await asyncio.wait_for(call.read(), self._client.timeout_s)
            except (TimeoutError, grpc.aio.AioRpcError) as exc:
                call.cancel()
                if isinstance(exc, grpc.aio.AioRpcError):
                    error = _error(exc)
                    if not isinstance(error, EtcdUnavailable):
                        raise error from None
                self._client._avoid(index)
                self.reconnects += 1
                continue
            if resp is grpc.aio.EOF:
                call.cancel()
                self._client._avoid(index)
                self.reconnects += 1
                continue
            if resp.compact_revision:
                call.cancel()
                self.compact_revision = int(resp.compact_revision)
                raise EtcdError("OUT_OF_RANGE", f"etcdserver: mvcc: required revision has been "
                                f"compacted (compact revision {resp.compact_revision})")
            if resp.canceled:
                call.cancel()
                raise EtcdError("CANCELLED", resp.cancel_reason or "watch canceled")
            if self.next_revision == 0:
                self.next_revision = int(resp.header.revision) + 1
            self._call = call
            self._index = index
            self._pending.extend(self._events(resp))
            return

    def _events(self, resp: Any) -> list[WatchEvent]:
        out = []
        for ev in resp.events:
            kv = KeyValue.of(ev.kv)
            if kv.mod_revision < self.next_revision:
                continue  # already delivered before a reconnect
            prev = KeyValue.of(ev.prev_kv) if ev.HasField("prev_kv") else None
            kind: Literal["PUT", "DELETE"] = "DELETE" if ev.type == 1 else "PUT"
            out.append(WatchEvent(kind, kv, prev))
        return out

    async def __anext__(self) -> WatchEvent:
        while not self._pending:
            if self._closed:
                raise StopAsyncIteration
            if self._call is None:
                await self._open()
                continue
            try:
                resp = await self._call.read()
            except grpc.aio.AioRpcError as exc:
                if self._closed:
                    raise StopAsyncIteration from None
                error = _error(exc)
                if not isinstance(error, EtcdUnavailable) and error.code != "CANCELLED":
                    raise error from None
                resp = grpc.aio.EOF
            except asyncio.CancelledError:
                if self._closed:
                    raise StopAsyncIteration from None
                raise
            if resp is grpc.aio.EOF:
                self._call = None
                self._client._avoid(self._index)
                self.reconnects += 1
                continue
            if resp.compact_revision:
                self.compact_revision = int(resp.compact_revision)
                raise EtcdError("OUT_OF_RANGE", "etcdserver: mvcc: required revision has been "
                                "compacted")
            if resp.canceled:
                raise EtcdError("CANCELLED", resp.cancel_reason or "watch canceled")
            self._pending.extend(self._events(resp))
        event = self._pending.pop(0)
        self.next_revision = max(self.next_revision, event.revision + 1)
        return event
