"""KV clients of the replication schemes on real processes: chain, CRAQ and Dynamo.

(Primary-backup speaks the Raft KV protocol: :class:`pnyx.services.kv.AsyncKvClient`.)

They follow the simulator clients (``pnyx.protocols.chain.client``,
``pnyx.protocols.dynamo.client``) over real TCP connections: a client keeps one connection
to **every** member under one client id, because in chain replication the tail answers a
write sent to the head, and a retried write must carry the same client id and request id to
be applied once.  Replies are matched to requests by request id, whichever member sends
them.  Every wait is bounded (``request_timeout_s`` per attempt, ``deadline_s`` per
operation); a caller's cancellation propagates.

:func:`open_kv` picks the client of a protocol; every client has ``get``, ``put``,
``append``, ``cas`` and ``delete`` coroutines and raises :class:`UnsupportedOperation` (a
:class:`~pnyx.services.kv.KvError`) for an operation its scheme does not offer.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import ssl as ssl_module
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import msgspec

from pnyx.core import CLIENT_ID_BASE, ClientReply, HistoryEvent, Message
from pnyx.runtime.client import FramedClient
from pnyx.runtime.framing import RemoteProtocolError
from pnyx.runtime.transport import Address
from pnyx.services.client import TASK_END_BOUND_S, ClientError, wait_cancelled
from pnyx.services.kv import AsyncKvClient, KvError
from pnyx.services.schemes import CHAIN_LIKE, RAFT_KV_LIKE, config_node, data_nodes

log = logging.getLogger("pnyx.schemes.client")

RECONNECT_AFTER_S = 0.5
"""A member whose connection failed is dialled again at most this often."""
RETRY_BACKOFF_S = 0.02
"""Pause before retrying an operation a member refused without naming where to go."""
READ_IDLE_S = 1.0
CHAIN_READ_RETRY_S = 0.5
"""A chain/CRAQ read unanswered this long is retried (reads are idempotent).  A replica
whose lease lapsed for a moment drops a CRAQ read waiting for the tail without answering;
the retry bounds what that costs the client."""


class UnsupportedOperation(KvError):
    """The scheme does not offer this operation (e.g. ``delete`` on a chain)."""


class KvApi(Protocol):
    """What every scheme's asyncio KV client offers."""

    @property
    def history(self) -> list[HistoryEvent] | None: ...
    @property
    def process(self) -> int: ...

    async def get(self, key: str) -> Any: ...
    async def put(self, key: str, value: str) -> None: ...
    async def append(self, key: str, suffix: str) -> None: ...
    async def cas(self, key: str, expected: str, new: str) -> bool: ...
    async def delete(self, key: str) -> bool: ...
    async def close(self) -> None: ...


class Connections:
    """One framed connection per member, all under ``client_id``; replies by request id."""

    def __init__(
        self,
        members: Mapping[int, Address],
        message_types: Iterable[type[Message]],
        *,
        client_id: int,
        connect_timeout_s: float,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        if client_id < CLIENT_ID_BASE:
            raise ValueError(f"client id {client_id} is a node id (< {CLIENT_ID_BASE})")
        self.members = dict(members)
        self.client_id = client_id
        self._types = tuple(message_types)
        self._timeout_s = connect_timeout_s
        self._ssl = ssl
        self._conns: dict[int, FramedClient] = {}
        self._readers: dict[int, asyncio.Task[None]] = {}
        self._dialling: dict[int, asyncio.Task[None]] = {}
        self._last_dial: dict[int, float] = {}
        self._waiting: dict[int, asyncio.Future[ClientReply]] = {}
        self._closed = False

    def dial_all(self) -> None:
        """Start connecting (in the background) to every member not connected and not
        dialled in the last ``RECONNECT_AFTER_S``."""
        now = time.monotonic()
        for member in sorted(self.members):
            if member in self._conns or member in self._dialling or self._closed:
                continue
            if now - self._last_dial.get(member, -1e9) < RECONNECT_AFTER_S:
                continue
            self._last_dial[member] = now
            self._dialling[member] = asyncio.ensure_future(self._dial(member))

    async def wait_dialled(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) for the dials in progress."""
        tasks = list(self._dialling.values())
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    async def _dial(self, member: int) -> None:
        try:
            conn = await FramedClient.connect(
                self.members[member], self._types, client_id=self.client_id,
                timeout_s=self._timeout_s, ssl=self._ssl,
            )  # fmt: skip
        except (OSError, TimeoutError, RemoteProtocolError, ConnectionError) as exc:
            log.debug("dial_failed client=%d member=%d error=%r", self.client_id, member, exc)
            return
        finally:
            self._dialling.pop(member, None)
        if self._closed:
            await conn.close()
            return
        self._conns[member] = conn
        self._readers[member] = asyncio.ensure_future(self._read(member, conn))

    def connected(self, member: int) -> bool:
        """Whether a connection to ``member`` is open now."""
        return member in self._conns

    async def send(self, member: int, msg: Message) -> bool:
        """Send ``msg`` to ``member``; False when not connected (a dial is started)."""
        conn = self._conns.get(member)
        if conn is None:
            self.dial_all()
            return False
        try:
            await conn.send(msg)
        except (OSError, ConnectionError):
            await self._drop(member, conn)
            return False
        return True

    def expect(self, request_id: int) -> asyncio.Future[ClientReply]:
        """The future the next reply carrying ``request_id`` resolves (replaces an older one)."""
        future: asyncio.Future[ClientReply] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        return future

    def forget(self, request_id: int) -> None:
        """Stop waiting for replies to ``request_id``."""
        self._waiting.pop(request_id, None)

    async def _read(self, member: int, conn: FramedClient) -> None:
        try:
            while self._conns.get(member) is conn:
                try:
                    msg = await conn.recv(READ_IDLE_S)
                except TimeoutError:
                    continue
                if isinstance(msg, ClientReply):
                    future = self._waiting.get(msg.request_id)
                    if future is not None and not future.done():
                        future.set_result(msg)
        except (OSError, RemoteProtocolError, ValueError, ConnectionError) as exc:
            log.debug("reply_stream_closed client=%d member=%d %r", self.client_id, member, exc)
            if self._conns.get(member) is conn:
                del self._conns[member]
                self._readers.pop(member, None)
                await conn.close()

    async def _drop(self, member: int, conn: FramedClient) -> None:
        if self._conns.get(member) is conn:
            del self._conns[member]
        task = self._readers.pop(member, None)
        if task is not None:
            task.cancel()
        await conn.close()

    async def close(self) -> None:
        """Close every connection; bounded by ``TASK_END_BOUND_S`` per group of tasks."""
        self._closed = True
        await wait_cancelled(list(self._dialling.values()), TASK_END_BOUND_S, "dial")
        readers = list(self._readers.values())
        conns = list(self._conns.values())
        self._conns.clear()
        self._readers.clear()
        for conn in conns:
            await conn.close()
        await wait_cancelled(readers, TASK_END_BOUND_S, "reply reader")
        for future in self._waiting.values():
            if not future.done():
                future.cancel()


class _Recorder:
    """Invoke/complete history events of one process (as :class:`AsyncKvClient` records)."""

    history: list[HistoryEvent] | None
    process: int

    def _note(self, kind: str, f: str, key: str, value: Any) -> None:
        if self.history is not None:
            event = HistoryEvent(self.process, kind, f, value, key, time.monotonic_ns())  # type: ignore[arg-type]
            self.history.append(event)

    async def _recorded(self, f: str, key: str, value: Any, action: Any) -> Any:
        self._note("invoke", f, key, value)
        try:
            result = await action
        except UnsupportedOperation:
            self._note("fail", f, key, value)
            raise
        except (ClientError, KvError, asyncio.CancelledError):
            self._note("info", f, key, value)  # it may or may not have happened
            raise
        self._note("ok", f, key, result if f in ("get", "cas", "delete") else value)
        return result


class _SchemeClient(_Recorder):
    """What the chain and Dynamo clients share: the recorded history, the bounds, a
    connection to every member, request ids and one-operation-at-a-time lock."""

    def _connect(
        self,
        members: Mapping[int, Address],
        wire_types: Iterable[type[Message]],
        *,
        history: list[HistoryEvent] | None,
        process: int,
        client_id: int | None,
        request_timeout_s: float,
        deadline_s: float,
        seed: int | None,
        ssl: ssl_module.SSLContext | None,
    ) -> None:
        self.history = history
        self.process = process
        self.request_timeout_s = request_timeout_s
        self.deadline_s = deadline_s
        self._rng = random.Random(seed)
        cid = client_id if client_id is not None else _random_client_id()
        self._conns = Connections(
            members, wire_types, client_id=cid, connect_timeout_s=request_timeout_s, ssl=ssl
        )
        self._conns.dial_all()
        self._request_ids = itertools.count(1)
        self._lock = asyncio.Lock()

    @property
    def client_id(self) -> int:
        """The id every member knows this client by."""
        return self._conns.client_id

    async def close(self) -> None:
        """Close every connection."""
        await self._conns.close()

    async def _send_and_wait(
        self, target: int, msg: Any, timeout_s: float, *, dial_wait_s: float, pause_s: float
    ) -> ClientReply | str:
        """One attempt: the reply to ``msg`` from ``target``, or why there is none.  Not
        connected: wait up to ``dial_wait_s`` for the dials, then (still not) pause
        ``pause_s`` before giving up."""
        future = self._conns.expect(msg.request_id)
        if not await self._conns.send(target, msg):
            await self._conns.wait_dialled(dial_wait_s)
            if not await self._conns.send(target, msg):
                if pause_s > 0:
                    await asyncio.sleep(pause_s)
                return "not connected"
        done, _ = await asyncio.wait({future}, timeout=timeout_s)
        return future.result() if done else "no reply"


class AsyncChainKv(_SchemeClient):
    """KV client of a chain (``craq=False``: reads at the tail) or of CRAQ (reads at a random
    replica).  Writes go to the head; refusals name the head or tail to try instead; a
    member that does not answer is replaced by a random one (the master redirects too).

    One operation at a time (its lock); for concurrency use one client per worker.
    """

    def __init__(
        self,
        members: Mapping[int, Address],
        *,
        craq: bool,
        master: int | None = None,
        history: list[HistoryEvent] | None = None,
        process: int = 0,
        client_id: int | None = None,
        request_timeout_s: float = 1.0,
        deadline_s: float = 10.0,
        seed: int | None = None,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        from pnyx.protocols.chain.messages import WIRE_TYPES

        ids = tuple(sorted(members))
        self.master = master if master is not None else config_node("chain", ids)
        self.replicas = tuple(i for i in ids if i != self.master)
        if not self.replicas:
            raise ValueError(f"a chain client needs replicas besides the master in {ids}")
        self.craq = craq
        self._connect(
            members, WIRE_TYPES, history=history, process=process, client_id=client_id,
            request_timeout_s=request_timeout_s, deadline_s=deadline_s, seed=seed, ssl=ssl,
        )  # fmt: skip
        self._head = self.replicas[0]
        self._tail = self.replicas[-1]

    async def get(self, key: str) -> Any:
        """The value of ``key`` ("" when absent)."""
        return await self._op("get", key, None)

    async def put(self, key: str, value: str) -> None:
        """Set ``key`` to ``value``."""
        await self._op("put", key, value)

    async def append(self, key: str, suffix: str) -> None:
        """Concatenate ``suffix`` to the value of ``key``."""
        await self._op("append", key, suffix)

    async def cas(self, key: str, expected: str, new: str) -> bool:
        """Set ``key`` to ``new`` if it holds ``expected``; True when it did."""
        return bool(await self._op("cas", key, [expected, new]))

    async def delete(self, key: str) -> bool:
        """Not offered by chain replication here."""
        scheme = "craq" if self.craq else "chain"
        raise UnsupportedOperation(f"{scheme} offers get, put, append and cas, not delete")

    async def _op(self, f: str, key: str, value: Any) -> Any:
        async with self._lock:
            # the tail answers writes: be connected to every member before the first one
            await self._conns.wait_dialled(self.request_timeout_s)
            return await self._recorded(f, key, value, self._call(f, key, value))

    def _first_target(self, f: str) -> int:
        if f != "get":
            return self._head
        return self._random_replica() if self.craq else self._tail

    def _random_replica(self) -> int:
        return self.replicas[self._rng.randrange(len(self.replicas))]

    async def _call(self, f: str, key: str, value: Any) -> Any:
        from pnyx.protocols.chain.messages import KvRequest

        request_id = next(self._request_ids)
        msg = KvRequest(request_id, f, key, value)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s
        target = self._first_target(f)
        said: dict[int, str] = {}
        attempt_s = self.request_timeout_s
        if f == "get":
            attempt_s = min(attempt_s, CHAIN_READ_RETRY_S)
        try:
            while (left := deadline - loop.time()) > 0:
                reply = await self._attempt(target, msg, min(left, attempt_s))
                if isinstance(reply, str):
                    said[target] = reply
                    target = self._after_silence(target)
                    continue
                if reply.ok:
                    return reply.result
                said[target] = reply.error or "refused"
                target = await self._after_refusal(f, target, reply)
        finally:
            self._conns.forget(request_id)
        shown = "; ".join(f"node {n}: {s}" for n, s in sorted(said.items())) or "no member"
        raise ClientError(f"{f} {key!r} got no answer within {self.deadline_s:g} s ({shown})")

    async def _attempt(self, target: int, msg: Any, timeout_s: float) -> ClientReply | str:
        return await self._send_and_wait(
            target, msg, timeout_s,
            dial_wait_s=min(timeout_s, self.request_timeout_s),
            pause_s=min(timeout_s, RETRY_BACKOFF_S * 5),
        )  # fmt: skip

    def _after_silence(self, target: int) -> int:
        """Someone else: the master (which names head and tail) or a random replica."""
        self._conns.dial_all()
        if self.master is not None and target != self.master and self._rng.random() < 0.5:
            return self.master
        return self._random_replica()

    async def _after_refusal(self, f: str, target: int, reply: ClientReply) -> int:
        if reply.error not in ("not_serving", "not_replica", "busy", "version_gone"):
            raise KvError(f"{f} refused by node {target}: {reply.error}")
        hint = reply.leader_hint
        if hint is not None and hint != target and hint in self._conns.members:
            if f == "get":
                self._tail = hint
            else:
                self._head = hint
            return hint
        await asyncio.sleep(RETRY_BACKOFF_S)
        return self._after_silence(target)


class AsyncDynamoKv(_SchemeClient):
    """KV client of a Dynamo-style cluster (``get`` and ``put`` only).

    A request goes to a random node among the key's top N replicas (the ring is computed
    from the member ids, as the nodes compute it), the next one on silence or refusal.  As
    the simulator's client, it keeps per key the context of its last read plus its own
    writes, and a ``put`` passes it back so the write replaces the siblings it saw.
    :meth:`get` resolves siblings like the simulator's client (its own latest write if among
    them, else the greatest); :meth:`get_siblings` returns them all.
    """

    def __init__(
        self,
        members: Mapping[int, Address],
        *,
        history: list[HistoryEvent] | None = None,
        process: int = 0,
        client_id: int | None = None,
        request_timeout_s: float = 2.0,
        deadline_s: float = 10.0,
        seed: int | None = None,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        from pnyx.protocols.dynamo import WIRE_TYPES, Ring
        from pnyx.protocols.dynamo.runtime_def import dynamo_config

        ids = tuple(sorted(members))
        self.config = dynamo_config(len(ids))
        self._ring = Ring(ids, self.config.vnodes)
        self._connect(
            members, WIRE_TYPES, history=history, process=process, client_id=client_id,
            request_timeout_s=request_timeout_s, deadline_s=deadline_s, seed=seed, ssl=ssl,
        )  # fmt: skip
        self.contexts: dict[str, Any] = {}
        self.own_latest: dict[str, str] = {}

    async def get_siblings(self, key: str) -> tuple[Any, ...]:
        """Every sibling value of ``key`` (empty when absent); remembers the context."""
        from pnyx.protocols.dynamo import Get, ReadResult

        async with self._lock:
            result = await self._call(key, lambda rid: Get(rid, key))
            read = msgspec.convert(result, ReadResult)
            self.contexts[key] = read.context
            return read.values

    async def get(self, key: str) -> Any:
        """The resolved value of ``key`` (None when absent)."""
        self._note("invoke", "get", key, None)
        try:
            values = await self.get_siblings(key)
        except (ClientError, KvError, asyncio.CancelledError):
            self._note("fail", "get", key, None)  # a read changes nothing
            raise
        resolved = self._resolve(key, values)
        self._note("ok", "get", key, resolved)
        return resolved

    async def put(self, key: str, value: str) -> None:
        """Write ``value`` over the siblings this client last read of ``key``."""
        await self._recorded("put", key, value, self._put(key, value))

    async def _put(self, key: str, value: str) -> None:
        from pnyx.protocols.dynamo import Put, WriteResult
        from pnyx.protocols.dynamo.versions import EMPTY, add_dots

        async with self._lock:
            context = self.contexts.get(key, EMPTY)
            result = await self._call(key, lambda rid: Put(rid, key, value, context))
            written = msgspec.convert(result, WriteResult)
            self.contexts[key] = add_dots(context, ((written.node, written.counter),))
            self.own_latest[key] = value

    async def append(self, key: str, suffix: str) -> None:
        """Not offered (Dynamo stores opaque values)."""
        raise UnsupportedOperation("dynamo offers get and put only, not append")

    async def cas(self, key: str, expected: str, new: str) -> bool:
        """Not offered (no quorum system gives an atomic compare-and-set)."""
        raise UnsupportedOperation("dynamo offers get and put only, not cas")

    async def delete(self, key: str) -> bool:
        """Not offered."""
        raise UnsupportedOperation("dynamo offers get and put only, not delete")

    def _resolve(self, key: str, values: tuple[Any, ...]) -> Any:
        if not values:
            return None
        mine = self.own_latest.get(key)
        if mine in values:
            return mine
        return max(values, key=repr)

    async def _call(self, key: str, build: Any) -> Any:
        replicas = list(self._ring.preference_list(key)[: self.config.n])
        self._rng.shuffle(replicas)
        request_id = next(self._request_ids)
        msg = build(request_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s
        said: dict[int, str] = {}
        try:
            for attempt in itertools.count():
                left = deadline - loop.time()
                if left <= 0:
                    break
                target = replicas[attempt % len(replicas)]
                reply = await self._attempt(target, msg, min(left, self.request_timeout_s))
                if isinstance(reply, ClientReply) and reply.ok:
                    return reply.result
                said[target] = reply if isinstance(reply, str) else reply.error or "refused"
                await asyncio.sleep(RETRY_BACKOFF_S)
        finally:
            self._conns.forget(request_id)
        shown = "; ".join(f"node {n}: {s}" for n, s in sorted(said.items()))
        raise ClientError(f"{key!r}: no quorum answer within {self.deadline_s:g} s ({shown})")

    async def _attempt(self, target: int, msg: Any, timeout_s: float) -> ClientReply | str:
        return await self._send_and_wait(target, msg, timeout_s, dial_wait_s=timeout_s, pause_s=0)


class _RaftKv:
    """:class:`AsyncKvClient` (raft, primary-backup) with the :class:`KvApi` shape."""

    def __init__(self, client: AsyncKvClient) -> None:
        self._client = client

    @property
    def history(self) -> list[HistoryEvent] | None:
        return self._client.history

    @property
    def process(self) -> int:
        return self._client.process

    async def get(self, key: str) -> Any:
        return await self._client.get(key)

    async def put(self, key: str, value: str) -> None:
        await self._client.put(key, value)

    async def append(self, key: str, suffix: str) -> None:
        await self._client.append(key, suffix)

    async def cas(self, key: str, expected: str, new: str) -> bool:
        return await self._client.cas(key, expected, new)

    async def delete(self, key: str) -> bool:
        return await self._client.delete(key)

    async def close(self) -> None:
        await self._client.close()


SCHEME_CLIENTS = ("raft", "primary-backup", "chain", "craq", "dynamo")
"""Protocols :func:`open_kv` has a KV client for."""


def open_kv(
    protocol: str,
    members: Mapping[int, Address],
    *,
    history: list[HistoryEvent] | None = None,
    process: int = 0,
    request_timeout_s: float = 1.0,
    deadline_s: float = 10.0,
    seed: int | None = None,
    ssl: ssl_module.SSLContext | None = None,
) -> KvApi:
    """An asyncio KV client of a ``protocol`` cluster (call inside a running loop); ``ssl``
    for a cluster with TLS (``pnyx.runtime.tls.client_ssl_context(ca_file)``).

    ValueError naming the supported protocols for any other."""
    if protocol in RAFT_KV_LIKE:
        client = AsyncKvClient(
            members, history=history, process=process,
            request_timeout_s=request_timeout_s, deadline_s=deadline_s, ssl=ssl,
        )  # fmt: skip
        return _RaftKv(client)
    if protocol in CHAIN_LIKE:
        ids = tuple(sorted(members))
        return AsyncChainKv(
            members, craq=protocol == "craq", master=config_node(protocol, ids),
            history=history, process=process, request_timeout_s=request_timeout_s,
            deadline_s=deadline_s, seed=seed, ssl=ssl,
        )  # fmt: skip
    if protocol == "dynamo":
        return AsyncDynamoKv(
            members, history=history, process=process,
            request_timeout_s=max(request_timeout_s, 2.0), deadline_s=deadline_s, seed=seed,
            ssl=ssl,
        )  # fmt: skip
    raise ValueError(
        f"no KV client for protocol {protocol!r}; pnyx kv serves {', '.join(SCHEME_CLIENTS)}"
    )


def replicas_of(protocol: str, members: Mapping[int, Address]) -> tuple[int, ...]:
    """The data nodes among ``members`` (every member but a configuration process)."""
    return data_nodes(protocol, tuple(sorted(members)))


def _random_client_id() -> int:
    """A fresh client id, unlikely to collide with another client's (from the OS)."""
    return CLIENT_ID_BASE + random.SystemRandom().randrange(1, 1 << 48)
