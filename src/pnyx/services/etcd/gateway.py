"""The etcd server's way into its Raft group: writes with server-side sessions, reads, admin.

etcd clients send no client id or sequence number, so the server keeps its own: a pool of
*lanes*, each one session of the state machine with at most one command in flight.  A
write takes a free lane and numbers the command with the lane's next sequence number.
Numbered commands queue for a few *flights*: each flight sends what is queued (up to
``max_batch_commands`` / ``max_batch_bytes``) as one log entry (``ClientRequest``, the
commands wrapped by ``SessionCodec.batch``; a lone command goes as it is) through
:class:`~pnyx.services.client.AsyncClient`, which follows leader redirects and retries
after timeouts and leader changes with the same entry, so a retried write is applied
once.  Batching makes the Raft, WAL and wire cost per entry, not per write.  Any member's
server works: a follower's gateway sends to the leader.

A command whose outcome stayed unknown (deadline passed) leaves its lane usable: if that
command is applied later, its sequence number is below the lane's next one and the state
machine answers it ``stale`` without applying it twice.

Linearizable reads are ``ReadRequest``\\ s (ReadIndex on the leader); serializable reads are
served by the caller from the local state machine.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl as ssl_module
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pnyx.core import ClientReply, Message
from pnyx.protocols.raft import AdminRequest, ClientRequest, ReadRequest
from pnyx.runtime.transport import Address
from pnyx.services.client import AsyncClient, ClientError, wait_cancelled

log = logging.getLogger("pnyx.etcd.gateway")

RETRY_ERRORS = frozenset({"busy", "transferring"})
"""Leader answers that mean: nothing happened, send the same request again shortly."""
RETRY_BACKOFF_S = 0.01
SESSION_REOPENS = 3
STOP_BOUND_S = 5.0


class GatewayError(Exception):
    """The group did not answer in time (the request may or may not have been applied)."""


class RefusedError(Exception):
    """The leader refused the request (``error`` is Raft's reason, e.g. ``not_learner``)."""

    def __init__(self, error: str, reply: ClientReply) -> None:
        super().__init__(error)
        self.error = error
        self.reply = reply


@dataclass(frozen=True)
class SessionCodec:
    """How the state machine's exactly-once sessions look on the log.

    ``open_command`` opens a session (its result is the new session id); ``command(session,
    seq, op)`` wraps ``op``; ``is_expired(result)`` recognises the answer to a command of a
    session the state machine no longer knows (it was not applied).
    """

    open_command: Any
    command: Callable[[int, int, Any], Any]
    is_expired: Callable[[Any], bool]
    batch: Callable[[list[Any]], Any] | None = None
    """Several commands as one log entry whose result is the list of their results."""


@dataclass(frozen=True)
class GatewayOptions:
    """Bounds of a :class:`Gateway`."""

    max_lanes: int = 128
    """Writes in flight at once (each lane is one session); more wait for a lane."""
    connections: int = 4
    """Connections to the group, shared round-robin by flights, reads and admin."""
    flights: int = 4
    """Log entries of batched writes in flight at once."""
    max_batch_commands: int = 64
    max_batch_bytes: int = 1 << 20
    """A batch holds at most this many commands and bytes (a bigger command goes alone)."""
    request_timeout_s: float = 2.0
    """One attempt at one member."""
    deadline_s: float = 10.0
    """A request keeps retrying (leader changes, busy leader) this long."""


class _Lane:
    __slots__ = ("seq", "session")

    def __init__(self) -> None:
        self.session = 0
        self.seq = 0


class _Queued:
    __slots__ = ("command", "future", "size")

    def __init__(self, command: Any, size: int, future: asyncio.Future[Any]) -> None:
        self.command = command
        self.size = size
        self.future = future


class Gateway:
    """Writes, linearizable reads and admin requests of one server to its Raft group."""

    def __init__(
        self,
        members: Mapping[int, Address],
        message_types: tuple[type[Message], ...],
        sessions: SessionCodec,
        options: GatewayOptions | None = None,
        *,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        """``ssl`` (e.g. ``pnyx.runtime.tls.client_ssl_context(ca)``) when the group's
        ports speak TLS."""
        self.options = options or GatewayOptions()
        self._sessions = sessions
        self._clients = [
            AsyncClient(
                members,
                message_types,
                request_timeout_s=self.options.request_timeout_s,
                deadline_s=self.options.deadline_s,
                ssl=ssl,
            )
            for _ in range(max(1, self.options.connections))
        ]
        self._next_client = 0
        self._idle: list[_Lane] = []
        self._lanes = 0
        self._lane_free = asyncio.Condition()
        self._queue: deque[_Queued] = deque()
        self._queued = asyncio.Event()
        self._flights: list[asyncio.Task[None]] = []
        self._closed = False

    async def close(self) -> None:
        """Stop the flights (bounded) and close every connection; calls in flight and
        queued fail with :class:`GatewayError`."""
        self._closed = True
        flights, self._flights = self._flights, []
        await wait_cancelled(flights, STOP_BOUND_S, "gateway flight")
        _fail(list(self._queue), "the server is stopping")
        self._queue.clear()
        results = await asyncio.gather(*(c.close() for c in self._clients), return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.warning("gateway_close_failed error=%r", result)

    @property
    def pending(self) -> int:
        """Writes taken a lane and not answered yet."""
        return self._lanes - len(self._idle)

    def _client(self) -> AsyncClient:
        self._next_client = (self._next_client + 1) % len(self._clients)
        return self._clients[self._next_client]

    # -- writes ----------------------------------------------------------------------------

    async def write(self, op: Any, size: int = 0) -> Any:
        """Apply ``op`` (about ``size`` bytes encoded) once through the log; the state
        machine's result."""
        lane = await self._take_lane()
        try:
            return await self._write_on(lane, op, size)
        finally:
            await self._return_lane(lane)

    async def _take_lane(self) -> _Lane:
        async with self._lane_free:
            while not self._idle and self._lanes >= self.options.max_lanes:
                await self._lane_free.wait()
            if self._idle:
                return self._idle.pop()
            self._lanes += 1
            return _Lane()

    async def _return_lane(self, lane: _Lane) -> None:
        async with self._lane_free:
            self._idle.append(lane)
            self._lane_free.notify()

    async def _write_on(self, lane: _Lane, op: Any, size: int) -> Any:
        for _ in range(SESSION_REOPENS):
            if lane.session == 0:
                lane.session, lane.seq = await self._open_session(), 0
            lane.seq += 1
            command = self._sessions.command(lane.session, lane.seq, op)
            result = await self._propose(command, size)
            if self._sessions.is_expired(result):
                lane.session = 0  # an expired session never applied the command: redo
                continue
            return result
        raise GatewayError("the group keeps expiring this server's sessions")

    async def _open_session(self) -> int:
        session = await self._propose(self._sessions.open_command, 0)
        if not isinstance(session, int) or isinstance(session, bool) or session <= 0:
            raise GatewayError(f"opening a session answered {session!r}")
        return session

    async def _propose(self, command: Any, size: int) -> Any:
        """Queue ``command`` for the next flight; its result."""
        if self._closed:
            raise GatewayError("the server is stopping")
        if not self._flights:
            self._flights = [
                asyncio.ensure_future(self._flight(self._client()))
                for _ in range(max(1, self.options.flights))
            ]
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(command, size, future))
        self._queued.set()
        return await future

    async def _flight(self, client: AsyncClient) -> None:
        """Send what is queued, one log entry at a time, and hand out the results."""
        while True:
            while not self._queue:
                self._queued.clear()
                await self._queued.wait()
            batch = self._take_batch()
            try:
                results = await self._send_batch(client, batch)
            except (GatewayError, RefusedError) as exc:
                _fail(batch, exc)
                continue
            except Exception as exc:  # a bug: fail these writes, keep the flight alive
                log.exception("gateway_flight_failed writes=%d", len(batch))
                _fail(batch, f"internal error: {exc!r}")
                continue
            except asyncio.CancelledError:
                _fail(batch, "the server stopped with the write in flight (applied or not)")
                raise
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)

    def _take_batch(self) -> list[_Queued]:
        options = self.options
        batch = [self._queue.popleft()]
        size = batch[0].size
        while self._queue and len(batch) < options.max_batch_commands:
            if size + self._queue[0].size > options.max_batch_bytes:
                break
            item = self._queue.popleft()
            size += item.size
            batch.append(item)
        return batch

    async def _send_batch(self, client: AsyncClient, batch: list[_Queued]) -> list[Any]:
        wrap = self._sessions.batch
        if len(batch) == 1 or wrap is None:
            results = []
            for item in batch:
                reply = await self._call(
                    client, functools.partial(ClientRequest, command=item.command)
                )
                results.append(_result(reply))
            return results
        command = wrap([item.command for item in batch])
        reply = await self._call(client, functools.partial(ClientRequest, command=command))
        results = _result(reply)
        if not isinstance(results, list | tuple) or len(results) != len(batch):
            raise GatewayError(f"a batch of {len(batch)} writes answered {results!r}")
        return list(results)

    # -- reads and admin ---------------------------------------------------------------------

    async def read(self, query: Any) -> Any:
        """A linearizable read: ``query`` is answered by the leader after a ReadIndex round."""
        reply = await self._call(self._client(), lambda rid: ReadRequest(rid, query))
        return _result(reply)

    async def admin(self, action: str, node: int, *, other: int = 0, min_voters: int = 1) -> Any:
        """A membership or leadership request; the configuration the leader reports.

        :class:`RefusedError` with Raft's reason when the leader refused it."""
        reply = await self._call(
            self._client(),
            lambda rid: AdminRequest(rid, action, node, min_voters=min_voters, other=other),
        )
        return _result(reply)

    async def _call(self, client: AsyncClient, build: Callable[[int], Message]) -> ClientReply:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.deadline_s
        while True:
            if self._closed:
                raise GatewayError("the server is stopping")
            try:
                reply = await client.call(build)
            except ClientError as exc:
                raise GatewayError(str(exc)) from exc
            if reply.ok or reply.error not in RETRY_ERRORS or loop.time() > deadline:
                return reply
            await asyncio.sleep(RETRY_BACKOFF_S)


def _fail(batch: list[_Queued], problem: Exception | str) -> None:
    """Fail every queued write of ``batch`` (each with an exception of its own)."""
    for item in batch:
        if item.future.done():
            continue
        if isinstance(problem, RefusedError):
            item.future.set_exception(RefusedError(problem.error, problem.reply))
        else:
            item.future.set_exception(GatewayError(str(problem)))


def _result(reply: ClientReply) -> Any:
    if not reply.ok:
        raise RefusedError(reply.error or "refused", reply)
    return reply.result


__all__ = [
    "Gateway",
    "GatewayError",
    "GatewayOptions",
    "RefusedError",
    "SessionCodec",
]
