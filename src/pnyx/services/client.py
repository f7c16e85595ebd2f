"""The pnyx client: talks to any member, follows leader redirects, retries safely.

A client has a stable id (declared in its hello, ≥ ``CLIENT_ID_BASE``) and numbers its
requests; a retried request keeps its number, so a protocol with client sessions applies
it once and returns the cached reply.  ``AsyncClient`` is for asyncio code; ``Client``
wraps it for synchronous callers (its event loop runs in a background thread).

Every wait is bounded: one attempt by ``request_timeout_s``, a call by ``deadline_s``,
closing by :data:`TASK_END_BOUND_S`; and a caller's cancellation is never swallowed (a
cancelled ``call()`` or ``close()`` ends cancelled).  Timeouts use ``asyncio.timeout`` and
``asyncio.wait``, not ``asyncio.wait_for``, which on Python 3.11 drops a cancellation that
arrives while the awaited operation completes (CPython gh-86296).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import ssl as ssl_module
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


READ_IDLE_S = 1.0
"""How often an idle reply reader wakes to check that its connection is still in use."""
TASK_END_BOUND_S = 5.0
"""How long closing a connection waits for its cancelled reply reader to end."""

RETRYABLE_ERRORS = frozenset({"not_leader", "no_leader", "leader_unknown", "retry", "busy"})
"""``ClientReply.error`` values that mean: nothing happened, try again (``busy``: on the
same member after a pause; the others: elsewhere)."""
RETRY_BACKOFF_S = 0.05


class ClientError(Exception):
    """The request could not be completed: every member failed or the deadline passed.

    The message says what each member did with the request (refused the connection, did
    not reply, answered ``not_leader`` naming a leader or not, ...).
    """


class AsyncClient:
    """Asyncio client of a pnyx group.  ``members`` maps node ids to addresses.

    ``ssl`` (e.g. ``pnyx.runtime.tls.client_ssl_context(ca_file)``) makes every connection
    TLS, verifying the node against that context's CA.
    """

    def __init__(
        self,
        members: Mapping[int, Address],
        message_types: Iterable[type[Message]],
        *,
        client_id: int | None = None,
        request_timeout_s: float = 2.0,
        deadline_s: float = 30.0,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self.client_id = client_identity(members, client_id, request_timeout_s, deadline_s)
        self.members = dict(members)
        self.request_timeout_s = request_timeout_s
        self.deadline_s = deadline_s
        self._ssl = ssl
        self._message_types = tuple(message_types)
        self._order = sorted(self.members)
        self._target = self._order[0]
        self._seq = itertools.count(1)
        self._conn: FramedClient | None = None
        self._conn_member = self._target
        self._reader_task: asyncio.Task[None] | None = None
        self._waiting: dict[int, tuple[FramedClient, asyncio.Future[ClientReply]]] = {}
        """Request id → (the connection it was sent on, its reply)."""
        self._connecting = asyncio.Lock()
        self._epoch = 0
        """Bumped whenever the client moves to another member."""
        self._closed = False
        self.redirects = 0
        """Refusals naming another leader, counted per call."""
        self.retries = 0
        """Failed or refused attempts retried, counted per call."""
        self.switches = 0
        """Times the client moved to another member (one per failover, however many calls
        were in flight)."""

    @property
    def target(self) -> int:
        """The member requests go to now (the leader, once a redirect was followed)."""
        return self._target

    @property
    def in_flight(self) -> int:
        """Requests sent and waiting for their reply now."""
        return len(self._waiting)

    async def close(self) -> None:
        """Close the connection; calls in flight and later calls fail with ClientError."""
        self._closed = True
        await self._disconnect()

    async def call(self, build: RequestBuilder) -> ClientReply:
        """Send one request, following redirects and retrying until a reply or the deadline.

        Safe to await concurrently: calls share the connection, and only the first call to
        see a connection fail (or a redirect) moves everyone to another member.  Raises
        :class:`ClientError` (saying what each member answered) after ``deadline_s``, or at
        once when every member answered that the leader is a node this client has no
        address for.
        """
        request_id = next(self._seq)
        msg = build(request_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s
        outcomes: dict[int, str] = {}
        """Member → what it last did with this request (for the error message)."""
        elsewhere: set[int] = set()
        """Members whose last answer named a leader outside ``self.members``."""
        while (left := deadline - loop.time()) > 0:
            if self._closed:
                raise ClientError(f"request {request_id}: the client is closed")
            epoch = self._epoch
            member, reply = await self._attempt(request_id, msg, min(left, self.request_timeout_s))
            if isinstance(reply, str):
                outcomes[member] = reply
                elsewhere.discard(member)
                self.retries += 1
                await self._switch(epoch, None)
                continue
            if reply.ok:
                return reply
            outcomes[member] = self._describe_refusal(member, reply)
            hint = _known_leader(reply)
            if hint is not None and hint != member and hint in self.members:
                self.redirects += 1
                await self._switch(epoch, hint)
                continue
            if reply.error not in RETRYABLE_ERRORS:
                return reply
            if hint is not None and hint not in self.members:
                elsewhere.add(member)
                if elsewhere >= set(self._order):
                    headline = f"request {request_id} cannot reach the leader"
                    raise ClientError(self._failure(headline, outcomes))
            else:
                elsewhere.discard(member)
            self.retries += 1
            await asyncio.sleep(RETRY_BACKOFF_S)
            if reply.error != "busy":
                await self._switch(epoch, None)
        headline = f"request {request_id} got no usable reply within {self.deadline_s} s"
        raise ClientError(self._failure(headline, outcomes))

    def _describe_refusal(self, member: int, reply: ClientReply) -> str:
        hint = _known_leader(reply)
        if reply.error != "not_leader":
            return f"member {member} answered {reply.error or 'an unnamed error'}"
        if hint is None or hint == member:
            return f"member {member} answered not_leader (leader unknown)"
        if hint in self.members:
            return f"member {member} answered not_leader (leader is node {hint})"
        return (
            f"member {member} answered not_leader (leader is node {hint}, which is not among "
            f"this client's members {self._order}: add its address)"
        )

    def _failure(self, headline: str, outcomes: Mapping[int, str]) -> str:
        untried = [m for m in self._order if m not in outcomes]
        said = [outcomes[m] for m in self._order if m in outcomes]
        if untried:
            said.append(f"member(s) {untried} not tried")
        return f"{headline}: " + "; ".join(said)

    async def _attempt(
        self, request_id: int, msg: Message, timeout_s: float
    ) -> tuple[int, ClientReply | str]:
        """(member, its reply or what went wrong with it)."""
        member = self._target
        try:
            async with asyncio.timeout(timeout_s):
                conn, member = await self._ensure_connected()
                future: asyncio.Future[ClientReply] = asyncio.get_running_loop().create_future()
                self._waiting[request_id] = (conn, future)
                await conn.send(msg)
                return member, await future
        except TimeoutError:
            problem = f"member {member} did not reply within {timeout_s:.1f} s"
        except (OSError, RemoteProtocolError, ConnectionError) as exc:
            problem = f"member {member} failed: {exc!r}"
        finally:
            self._waiting.pop(request_id, None)
        log.info("request_retry client=%d %s", self.client_id, problem)
        return member, problem

    async def _switch(self, epoch: int, hint: int | None) -> None:
        """Move to ``hint`` (or the next member) unless another call already moved on."""
        if epoch != self._epoch:
            return
        self._epoch += 1
        self.switches += 1
        if hint is not None and hint in self.members:
            self._target = hint
        else:
            position = self._order.index(self._target)
            self._target = self._order[(position + 1) % len(self._order)]
        await self._disconnect()

    async def _ensure_connected(self) -> tuple[FramedClient, int]:
        async with self._connecting:
            if self._conn is None:
                if self._closed:
                    raise ConnectionError("the client is closed")
                member = self._target
                conn = await FramedClient.connect(
                    self.members[member],
                    self._message_types,
                    client_id=self.client_id,
                    timeout_s=self.request_timeout_s,
                    ssl=self._ssl,
                )
                self._conn, self._conn_member = conn, member
                self._reader_task = asyncio.ensure_future(self._read_replies(conn))
            return self._conn, self._conn_member

    async def _read_replies(self, conn: FramedClient) -> None:
        """Hand replies to the calls waiting for them, while ``conn`` is the current one."""
        try:
            while self._conn is conn:
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
            if self._conn is conn:  # the node went away: the next call dials again
                self._conn, self._reader_task = None, None
                await conn.close()
        finally:
            self._fail_waiting(conn)

    def _fail_waiting(self, conn: FramedClient) -> None:
        """Calls sent on ``conn`` lost their reply path: let them retry."""
        for sent_on, future in self._waiting.values():
            if sent_on is conn and not future.done():
                future.set_exception(ConnectionError("connection closed"))

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        task, self._reader_task = self._reader_task, None
        if conn is None:
            return
        self._fail_waiting(conn)
        if task is not None:
            task.cancel()
        await conn.close()  # also ends the reader should its cancellation be lost
        if task is not None:
            await wait_cancelled([task], TASK_END_BOUND_S, "reply reader")


async def wait_cancelled(
    tasks: Iterable[asyncio.Task[Any]], bound_s: float, what: str
) -> list[asyncio.Task[Any]]:
    """Cancel ``tasks`` and wait up to ``bound_s`` for them to end; returns those still running.

    The caller's own cancellation propagates (nothing here catches BaseException around an
    ``await``); the tasks' exceptions are retrieved and logged.
    """
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=bound_s)
    stuck = [task for task in pending if not task.done()]
    for task in tasks:
        if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("%s ended with %r", what, exc)
    if stuck:
        log.warning(
            "%d %s task(s) still running %.1f s after cancellation", len(stuck), what, bound_s
        )
    return stuck


async def run_bounded(coro: Coroutine[Any, Any, T], bound_s: float, what: str) -> T:
    """Await ``coro`` for at most ``bound_s``, then cancel it and give it ``bound_s`` more.

    TimeoutError (naming ``what``) when it still has not ended; its own exception otherwise.
    A cancellation of the caller cancels ``coro`` too and propagates.
    """
    task = asyncio.ensure_future(coro)
    try:
        done, _ = await asyncio.wait([task], timeout=bound_s)
        if not done:
            log.warning("%s takes more than %.1f s: cancelling it", what, bound_s)
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=bound_s)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        raise TimeoutError(f"{what} did not end within {2 * bound_s:.1f} s, even when cancelled")
    if task.cancelled():
        raise TimeoutError(f"{what} did not finish within {bound_s:.1f} s and was cancelled")
    return task.result()


class LoopThread:
    """An asyncio event loop in a daemon thread, for synchronous facades over async code."""

    def __init__(self, name: str = "pnyx-client") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (at most ``timeout_s``).

        If the wait ends early (TimeoutError, KeyboardInterrupt in the calling thread),
        ``coro`` is cancelled on the loop before the exception is re-raised.
        """
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout_s)
        except BaseException:
            future.cancel()
            raise

    def close(self, timeout_s: float = 5.0) -> None:
        """Cancel what still runs on the loop (bounded), stop the loop and its thread."""
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            with contextlib.suppress(TimeoutError):
                self.run(_cancel_other_tasks(timeout_s), timeout_s + 1.0)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning(
                "event loop thread %s did not stop within %.1f s", self._thread.name, timeout_s
            )
            return  # a running loop cannot be closed; the daemon thread dies with the process
        self._loop.close()


async def _cancel_other_tasks(bound_s: float) -> None:
    current = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not current]
    await wait_cancelled(others, bound_s, "leftover")


class Client:
    """Synchronous facade over :class:`AsyncClient` (same options, ``ssl`` included)."""

    def __init__(
        self,
        members: Mapping[int, Address],
        message_types: Iterable[type[Message]],
        *,
        ssl: ssl_module.SSLContext | None = None,
        **options: Any,
    ) -> None:
        self._async = AsyncClient(members, message_types, ssl=ssl, **options)
        self._loop = LoopThread()

    @property
    def client_id(self) -> int:
        """This client's stable id."""
        return self._async.client_id

    def call(self, build: RequestBuilder) -> ClientReply:
        """Blocking :meth:`AsyncClient.call`."""
        return self._loop.run(self._async.call(build))

    def close(self) -> None:
        """Close the connection and stop the background loop."""
        try:
            self._loop.run(self._async.close(), TASK_END_BOUND_S + 5.0)
        finally:
            self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _known_leader(reply: ClientReply) -> int | None:
    """The leader a refusal names, None when the member does not know one (hint 0/None)."""
    hint = reply.leader_hint
    return hint if hint is not None and hint > 0 else None


def client_identity(
    members: Mapping[int, Address],
    client_id: int | None,
    request_timeout_s: float,
    deadline_s: float,
) -> int:
    """Check a client's options and return its id (a random one above the node ids when
    ``client_id`` is None); ValueError naming the bad value."""
    if not members:
        raise ValueError("a client needs at least one member address")
    if request_timeout_s <= 0 or deadline_s <= 0:
        raise ValueError(
            f"request_timeout_s ({request_timeout_s}) and deadline_s ({deadline_s}) "
            "must be positive"
        )
    chosen = client_id if client_id is not None else _random_client_id()
    if chosen < CLIENT_ID_BASE:
        raise ValueError(f"client id {chosen} is a node id (< {CLIENT_ID_BASE})")
    return chosen


def _random_client_id() -> int:
    return CLIENT_ID_BASE + random.SystemRandom().randrange(1, 1 << 48)
