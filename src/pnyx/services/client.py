"""The pnyx client: talks to any member, follows leader redirects, retries safely.

A client has a stable id (declared in its hello, ≥ ``CLIENT_ID_BASE``) and numbers its
requests; a retried request keeps its number, so a protocol with client sessions applies
it once and returns the cached reply.  ``AsyncClient`` is for asyncio code; ``Client``
wraps it for synchronous callers (its event loop runs in a background thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar

from pnyx.core import CLIENT_ID_BASE, ClientReply, Message
from pnyx.runtime.client import FramedClient
from pnyx.runtime.framing import RemoteProtocolError
from pnyx.runtime.transport import Address

log = logging.getLogger("pnyx.client")

T = TypeVar("T")

RequestBuilder = Callable[[int], Message]
"""Builds the request message for a given request id (the same id on every retry)."""


READ_IDLE_S = 3600.0
"""The reply reader re-arms its wait this often when the connection is idle."""

RETRYABLE_ERRORS = frozenset({"not_leader", "no_leader", "leader_unknown", "retry", "busy"})
"""``ClientReply.error`` values that mean: nothing happened, try again (``busy``: on the
same member after a pause; the others: elsewhere)."""
RETRY_BACKOFF_S = 0.05


class ClientError(Exception):
    """The request could not be completed: every member failed or the deadline passed."""


class AsyncClient:
    """Asyncio client of a pnyx group.  ``members`` maps node ids to addresses."""

    def __init__(
        self,
        members: Mapping[int, Address],
        message_types: Iterable[type[Message]],
        *,
        client_id: int | None = None,
        request_timeout_s: float = 2.0,
        deadline_s: float = 30.0,
    ) -> None:
        assert members, "a client needs at least one member address"
        self.members = dict(members)
        self.client_id = client_id if client_id is not None else _random_client_id()
        assert self.client_id >= CLIENT_ID_BASE, f"client id {self.client_id} is a node id"
        self.request_timeout_s = request_timeout_s
        self.deadline_s = deadline_s
        self._message_types = tuple(message_types)
        self._order = sorted(self.members)
        self._target = self._order[0]
        self._seq = itertools.count(1)
        self._conn: FramedClient | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._waiting: dict[int, tuple[FramedClient, asyncio.Future[ClientReply]]] = {}
        """Request id → (the connection it was sent on, its reply)."""
        self._connecting = asyncio.Lock()
        self._epoch = 0
        """Bumped whenever the client moves to another member."""
        self.redirects = 0
        self.retries = 0

    @property
    def target(self) -> int:
        """The member requests go to now (the leader, once a redirect was followed)."""
        return self._target

    async def close(self) -> None:
        """Close the connection (pending calls fail)."""
        await self._disconnect()

    async def call(self, build: RequestBuilder) -> ClientReply:
        """Send one request, following redirects and retrying until a reply or the deadline.

        Safe to await concurrently: calls share the connection, and only the first call to
        see a connection fail (or a redirect) moves everyone to another member.
        """
        request_id = next(self._seq)
        msg = build(request_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s
        while loop.time() < deadline:
            epoch = self._epoch
            reply = await self._attempt(request_id, msg)
            if reply is None:
                self.retries += 1
                await self._switch(epoch, None)
                continue
            if not reply.ok and reply.leader_hint is not None and reply.leader_hint != self._target:
                self.redirects += 1
                await self._switch(epoch, reply.leader_hint)
                continue
            if not reply.ok and reply.error in RETRYABLE_ERRORS:
                self.retries += 1
                await asyncio.sleep(RETRY_BACKOFF_S)
                if reply.error != "busy":
                    await self._switch(epoch, None)
                continue
            return reply
        raise ClientError(
            f"request {request_id} got no reply from members {self._order} within "
            f"{self.deadline_s} s"
        )

    async def _attempt(self, request_id: int, msg: Message) -> ClientReply | None:
        try:
            conn = await self._ensure_connected()
            future: asyncio.Future[ClientReply] = asyncio.get_running_loop().create_future()
            self._waiting[request_id] = (conn, future)
            await conn.send(msg)
            return await asyncio.wait_for(future, self.request_timeout_s)
        except (OSError, TimeoutError, RemoteProtocolError, ConnectionError) as exc:
            log.info(
                "request_retry client=%d target=%d error=%r", self.client_id, self._target, exc
            )
            return None
        finally:
            self._waiting.pop(request_id, None)

    async def _switch(self, epoch: int, hint: int | None) -> None:
        """Move to ``hint`` (or the next member) unless another call already moved on."""
        if epoch != self._epoch:
            return
        self._epoch += 1
        if hint is not None and hint in self.members:
            self._target = hint
        else:
            position = self._order.index(self._target)
            self._target = self._order[(position + 1) % len(self._order)]
        await self._disconnect()

    async def _ensure_connected(self) -> FramedClient:
        async with self._connecting:
            if self._conn is None:
                self._conn = await FramedClient.connect(
                    self.members[self._target],
                    self._message_types,
                    client_id=self.client_id,
                    timeout_s=self.request_timeout_s,
                )
                self._reader_task = asyncio.ensure_future(self._read_replies(self._conn))
            return self._conn

    async def _read_replies(self, conn: FramedClient) -> None:
        try:
            while True:
                try:
                    reply = await conn.recv(READ_IDLE_S)
                except TimeoutError:
                    continue
                if isinstance(reply, ClientReply):
                    waiting = self._waiting.get(reply.request_id)
                    if waiting is not None and not waiting[1].done():
                        waiting[1].set_result(reply)
        except (OSError, RemoteProtocolError, ValueError, ConnectionError) as exc:
            log.info("reply_stream_closed client=%d error=%r", self.client_id, exc)
        finally:
            # Only the calls sent on this connection lost their reply path.
            for sent_on, future in self._waiting.values():
                if sent_on is conn and not future.done():
                    future.set_exception(ConnectionError("connection closed"))

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        task, self._reader_task = self._reader_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if conn is not None:
            await conn.close()


class LoopThread:
    """An asyncio event loop in a daemon thread, for synchronous facades over async code."""

    def __init__(self, name: str = "pnyx-client") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        """Stop the loop and its thread."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


class Client:
    """Synchronous facade over :class:`AsyncClient`."""

    def __init__(
        self, members: Mapping[int, Address], message_types: Iterable[type[Message]], **options: Any
    ) -> None:
        self._loop = LoopThread()
        self._async = AsyncClient(members, message_types, **options)

    @property
    def client_id(self) -> int:
        """This client's stable id."""
        return self._async.client_id

    def call(self, build: RequestBuilder) -> ClientReply:
        """Blocking :meth:`AsyncClient.call`."""
        return self._loop.run(self._async.call(build))

    def close(self) -> None:
        """Close the connection and stop the background loop."""
        self._loop.run(self._async.close())
        self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _random_client_id() -> int:
    return CLIENT_ID_BASE + random.SystemRandom().randrange(1, 1 << 48)
