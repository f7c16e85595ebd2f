"""The etcd server's way into its Raft group: writes with server-side sessions, reads, admin.

etcd clients send no client id or sequence number, so the server keeps its own: a pool of
*lanes*, each one session of the state machine with at most one command in flight.  A
write takes a free lane, numbers the command with the lane's next sequence number and
sends it (``ClientRequest``) through :class:`~pnyx.services.client.AsyncClient`, which
follows leader redirects and retries after timeouts and leader changes with the same
command, so a retried write is applied once.  Any member's server works: a follower's
gateway sends to the leader.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pnyx.core import ClientReply, Message
from pnyx.protocols.raft import AdminRequest, ClientRequest, ReadRequest
from pnyx.runtime.transport import Address
from pnyx.services.client import AsyncClient, ClientError

log = logging.getLogger("pnyx.etcd.gateway")

RETRY_ERRORS = frozenset({"busy", "transferring"})
"""Leader answers that mean: nothing happened, send the same request again shortly."""
RETRY_BACKOFF_S = 0.01
SESSION_REOPENS = 3


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


@dataclass(frozen=True)
class GatewayOptions:
    """Bounds of a :class:`Gateway`."""

    max_lanes: int = 128
    """Writes in flight at once (each lane is one session); more wait for a lane."""
    connections: int = 4
    """Connections to the group, shared round-robin by lanes and reads."""
    request_timeout_s: float = 2.0
    """One attempt at one member."""
    deadline_s: float = 10.0
    """A request keeps retrying (leader changes, busy leader) this long."""


class _Lane:
    __slots__ = ("client", "seq", "session")

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.session = 0
        self.seq = 0


class Gateway:
    """Writes, linearizable reads and admin requests of one server to its Raft group."""

    def __init__(
        self,
        members: Mapping[int, Address],
        message_types: tuple[type[Message], ...],
        sessions: SessionCodec,
        options: GatewayOptions | None = None,
    ) -> None:
        self.options = options or GatewayOptions()
        self._sessions = sessions
        self._clients = [
            AsyncClient(
                members,
                message_types,
                request_timeout_s=self.options.request_timeout_s,
                deadline_s=self.options.deadline_s,
            )
            for _ in range(max(1, self.options.connections))
        ]
        self._next_client = 0
        self._idle: list[_Lane] = []
        self._lanes = 0
        self._lane_free = asyncio.Condition()
        self._closed = False

    async def close(self) -> None:
        """Close every connection; calls in flight fail with :class:`GatewayError`."""
        self._closed = True
        results = await asyncio.gather(*(c.close() for c in self._clients), return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.warning("gateway_close_failed error=%r", result)

    def _client(self) -> AsyncClient:
        self._next_client = (self._next_client + 1) % len(self._clients)
        return self._clients[self._next_client]

    # -- writes ----------------------------------------------------------------------------

    async def write(self, op: Any) -> Any:
        """Apply ``op`` once through the log; the state machine's result."""
        lane = await self._take_lane()
        try:
            return await self._write_on(lane, op)
        finally:
            await self._return_lane(lane)

    async def _take_lane(self) -> _Lane:
        async with self._lane_free:
            while not self._idle and self._lanes >= self.options.max_lanes:
                await self._lane_free.wait()
            if self._idle:
                return self._idle.pop()
            self._lanes += 1
            return _Lane(self._client())

    async def _return_lane(self, lane: _Lane) -> None:
        async with self._lane_free:
            self._idle.append(lane)
            self._lane_free.notify()

    async def _write_on(self, lane: _Lane, op: Any) -> Any:
        for _ in range(SESSION_REOPENS):
            if lane.session == 0:
                lane.session, lane.seq = await self._open_session(lane.client), 0
            lane.seq += 1
            command = self._sessions.command(lane.session, lane.seq, op)
            result = await self._propose(lane.client, command)
            if self._sessions.is_expired(result):
                lane.session = 0  # an expired session never applied the command: redo
                continue
            return result
        raise GatewayError("the group keeps expiring this server's sessions")

    async def _open_session(self, client: AsyncClient) -> int:
        session = await self._propose(client, self._sessions.open_command)
        if not isinstance(session, int) or isinstance(session, bool) or session <= 0:
            raise GatewayError(f"opening a session answered {session!r}")
        return session

    async def _propose(self, client: AsyncClient, command: Any) -> Any:
        reply = await self._call(client, functools.partial(ClientRequest, command=command))
        return _result(reply)

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
