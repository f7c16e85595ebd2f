"""etcd's ``concurrency`` recipes, client side: session, mutex (lock), election.

The same algorithms as etcd's Go ``clientv3/concurrency`` package, so they interoperate with
``etcdctl lock`` / ``etcdctl elect`` and with etcd's own v3lock / v3election services:

- a :class:`Session` is a lease kept alive in the background;
- :class:`Mutex` puts ``NAME/<lease id in hex>`` under the session's lease if it does not
  exist (one txn), then waits until every key under ``NAME/`` created before it is deleted:
  waiters are served in creation order.  The lock key's create revision is a **fencing
  token**: it grows with every acquisition, so a protected resource that remembers the
  highest token it saw (or a txn comparing ``create(lock key) == token``) refuses a holder
  whose lock has since expired;
- :class:`Election` is the same queue; the first key is the leader, its value the proposal.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pnyx.etcdclient.aio import (
    AsyncEtcdClient,
    Compare,
    Delete,
    EtcdError,
    Get,
    KeyValue,
    Put,
    RangeResult,
    to_bytes,
)

DEFAULT_TTL = 60
"""Session lease TTL in seconds, as etcd's concurrency package."""


class SessionExpired(EtcdError):
    """The session's lease is gone: a lock or leadership held under it is lost."""

    def __init__(self, message: str = "session expired: the lease is gone") -> None:
        super().__init__("NOT_FOUND", message)


class Session:
    """A lease kept alive until :meth:`close` (which revokes it); ``lost`` is set if the
    keep-alive fails for good (the lease expired or was revoked)."""

    def __init__(self, client: AsyncEtcdClient, ttl: int = DEFAULT_TTL) -> None:
        self.client = client
        self.ttl = ttl
        self.lease_id = 0
        self.lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Session:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        lease = await self.client.lease_grant(self.ttl)
        self.lease_id = lease.id
        self._task = asyncio.create_task(self._keep_alive())

    async def _keep_alive(self) -> None:
        try:
            async for _ in self.client.lease_keep_alive(self.lease_id):
                pass
        except EtcdError:
            pass
        self.lost.set()

    async def close(self) -> None:
        """Stop the keep-alive and revoke the lease (its keys are deleted)."""
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        if self.lease_id and not self.lost.is_set():
            with contextlib.suppress(EtcdError):
                await self.client.lease_revoke(self.lease_id)


async def _wait_delete(client: AsyncEtcdClient, key: bytes, revision: int) -> None:
    async with client.watch(key, start_revision=revision) as watch:
        async for event in watch:
            if event.type == "DELETE":
                return


async def wait_deletes(client: AsyncEtcdClient, prefix: bytes, max_create_revision: int) -> None:
    """Until no key under ``prefix`` has a create revision ≤ ``max_create_revision``."""
    while True:
        result = await client.range(
            prefix, prefix=True, sort_order="descend", sort_target="create", limit=1,
            max_create_revision=max_create_revision)  # fmt: skip
        if not result.kvs:
            return
        await _wait_delete(client, result.kvs[0].key, result.revision)


async def _until_lost(session: Session, work: asyncio.Future[None]) -> None:
    lost: asyncio.Future[Any] = asyncio.ensure_future(session.lost.wait())
    try:
        await asyncio.wait([work, lost], return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # the caller gave up (cancelled, timed out): ``work`` ends too
        await cancel_and_wait([work, lost])
        raise
    lost.cancel()
    if not work.done():
        await cancel_and_wait([work])
        raise SessionExpired()
    work.result()


async def _queue(session: Session, prefix: bytes, value: bytes) -> tuple[bytes, int, KeyValue]:
    """Put our key under ``prefix`` (or find it): (our key, its create revision, first key)."""
    key = prefix + f"{session.lease_id:x}".encode()
    first = Get(prefix, prefix=True, sort_order="ascend", sort_target="create", limit=1)
    resp = await session.client.txn(
        [Compare(key, "create", "=", 0)],
        [Put(key, value, lease=session.lease_id), first],
        [Get(key), first],
    )
    if resp.succeeded:
        revision = resp.revision
    else:
        mine = resp.responses[0]
        assert isinstance(mine, RangeResult)
        revision = mine.kvs[0].create_revision
    owner = resp.responses[1]
    assert isinstance(owner, RangeResult)
    first_kv = owner.kvs[0] if owner.kvs else KeyValue(key, value, revision, revision, 1)
    return key, revision, first_kv


@dataclass(frozen=True)
class LockHandle:
    """A held lock: its key and the key's create revision, the fencing token."""

    key: bytes
    revision: int
    lease_id: int


class Mutex:
    """etcd's distributed mutex on ``name`` under ``session`` (see the module docstring)."""

    def __init__(self, session: Session, name: str | bytes) -> None:
        self.session = session
        self.prefix = to_bytes(name) + b"/"
        self.key = b""
        self.revision = 0

    async def lock(self) -> LockHandle:
        """Wait until we hold the lock (cancel to give up: our queue entry is removed)."""
        client = self.session.client
        self.key, self.revision, first = await _queue(self.session, self.prefix, b"")
        try:
            if first.create_revision != self.revision:
                wait = asyncio.ensure_future(wait_deletes(client, self.prefix, self.revision - 1))
                await _until_lost(self.session, wait)
            if await client.get(self.key) is None:
                raise SessionExpired()
        except BaseException:
            with contextlib.suppress(EtcdError):
                await client.delete(self.key)
            raise
        return LockHandle(self.key, self.revision, self.session.lease_id)

    async def unlock(self) -> None:
        await self.session.client.delete(self.key)
        self.key, self.revision = b"", 0


@contextlib.asynccontextmanager
async def hold_lock(
    client: AsyncEtcdClient, name: str | bytes, *, ttl: int = DEFAULT_TTL
) -> AsyncIterator[LockHandle]:
    """``async with hold_lock(client, "jobs") as lock:`` — a session, the lock, and
    on exit the unlock and the session's revoke.  ``lock.revision`` is the fencing token."""
    async with Session(client, ttl) as session:
        mutex = Mutex(session, name)
        handle = await mutex.lock()
        try:
            yield handle
        finally:
            with contextlib.suppress(EtcdError):
                await mutex.unlock()


class Election:
    """etcd's election on ``name``: :meth:`campaign` waits for leadership, :meth:`observe`
    follows the leader's proposals."""

    def __init__(self, client: AsyncEtcdClient, name: str | bytes) -> None:
        self.client = client
        self.prefix = to_bytes(name) + b"/"
        self.key = b""
        self.revision = 0
        self.session: Session | None = None

    async def campaign(self, session: Session, value: str | bytes) -> KeyValue:
        """Wait until we lead (with ``value`` as our proposal); our key as it is then."""
        self.session = session
        data = to_bytes(value)
        self.key, self.revision, _ = await _queue(session, self.prefix, data)
        current = await self.client.get(self.key)
        if current is not None and current.value != data:
            await self.proclaim(data)
        try:
            wait = asyncio.ensure_future(wait_deletes(self.client, self.prefix, self.revision - 1))
            await _until_lost(session, wait)
        except BaseException:
            with contextlib.suppress(EtcdError):
                await self.client.delete(self.key)
            raise
        mine = await self.client.get(self.key)
        if mine is None:
            raise SessionExpired()
        return mine

    async def proclaim(self, value: str | bytes) -> None:
        """Change the leader's proposal without losing leadership."""
        if self.session is None or not self.key:
            raise EtcdError("FAILED_PRECONDITION", "election: not leader")
        resp = await self.client.txn(
            [Compare(self.key, "create", "=", self.revision)],
            [Put(self.key, value, lease=self.session.lease_id)],
        )
        if not resp.succeeded:
            raise EtcdError("FAILED_PRECONDITION", "election: not leader")

    async def resign(self) -> None:
        """Give up leadership (or our place in the queue)."""
        if self.key:
            await self.client.txn([Compare(self.key, "create", "=", self.revision)],
                                  [Delete(self.key)])  # fmt: skip
        self.key, self.revision = b"", 0

    async def leader(self) -> KeyValue | None:
        """The current leader's key and proposal, None when nobody leads."""
        result = await self.client.range(self.prefix, prefix=True, sort_order="ascend",
                                         sort_target="create", limit=1)  # fmt: skip
        return result.kvs[0] if result.kvs else None

    async def observe(self) -> AsyncIterator[KeyValue]:
        """Every leader (and every new proposal of a leader), as they come."""
        while True:
            result = await self.client.range(self.prefix, prefix=True, sort_order="ascend",
                                             sort_target="create", limit=1)  # fmt: skip
            if result.kvs:
                leader = result.kvs[0]
            else:
                leader = await self._next_put(result.revision + 1)
            yield leader
            async with self.client.watch(leader.key,
                                         start_revision=leader.mod_revision + 1) as watch:
                async for event in watch:
                    if event.type == "DELETE":
                        break
                    if event.kv.value != leader.value:
                        leader = event.kv
                        yield leader

    async def _next_put(self, revision: int) -> KeyValue:
        async with self.client.watch(self.prefix, prefix=True, start_revision=revision) as watch:
            async for event in watch:
                if event.type == "PUT":
                    return event.kv
        raise EtcdError("CANCELLED", "election: watch ended")


CANCEL_BOUND_S = 5.0
"""How long a cancelled background task may take to end."""


async def cancel_and_wait(
    tasks: list[asyncio.Task[Any]] | list[asyncio.Future[Any]], bound_s: float = CANCEL_BOUND_S
) -> None:
    """Cancel ``tasks`` and wait (at most ``bound_s``) for them to end.  The caller's own
    cancellation propagates (no ``CancelledError`` is caught around the wait); the tasks'
    outcomes, errors included, are retrieved and dropped."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=bound_s)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()

