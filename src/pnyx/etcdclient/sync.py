"""A blocking etcd v3 client: :class:`~pnyx.etcdclient.aio.AsyncEtcdClient` run on an
event loop in a background thread, with the same methods and results."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from pnyx.etcdclient.aio import (
    DEFAULT_ENDPOINT,
    AsyncEtcdClient,
    Bytes,
    Compare,
    DeleteResult,
    EtcdError,
    KeyValue,
    Lease,
    LeaseInfo,
    Op,
    PutResult,
    RangeResult,
    SortOrder,
    SortTarget,
    TxnResult,
    WatchEvent,
)
from pnyx.etcdclient.recipes import DEFAULT_TTL, Election, LockHandle, Session, hold_lock

T = TypeVar("T")


class EtcdClient:
    """Blocking etcd v3 client; use as ``with EtcdClient("127.0.0.1:2379") as etcd``."""

    def __init__(
        self,
        endpoints: Sequence[str] | str = (DEFAULT_ENDPOINT,),
        *,
        timeout_s: float = 5.0,
        connect_timeout_s: float = 2.0,
    ) -> None:
        self.aio = AsyncEtcdClient(endpoints, timeout_s=timeout_s,
                                   connect_timeout_s=connect_timeout_s)  # fmt: skip
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="pnyx-etcd-client")  # fmt: skip
        self._thread.start()

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._loop.is_running():
            return
        with contextlib.suppress(Exception):
            self._call(self.aio.close(), timeout_s=10.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10.0)
        if not self._thread.is_alive():
            self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout_s)
        except BaseException:
            future.cancel()
            raise

    # -- KV ------------------------------------------------------------------------------

    def range(
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
        serializable: bool = False,
    ) -> RangeResult:
        return self._call(self.aio.range(
            key, range_end, prefix=prefix, limit=limit, revision=revision,
            sort_order=sort_order, sort_target=sort_target, keys_only=keys_only,
            count_only=count_only, serializable=serializable))  # fmt: skip

    def get(self, key: Bytes, *, revision: int = 0, serializable: bool = False) -> KeyValue | None:
        return self._call(self.aio.get(key, revision=revision, serializable=serializable))

    def put(self, key: Bytes, value: Bytes, *, lease: int = 0, prev_kv: bool = False) -> PutResult:
        return self._call(self.aio.put(key, value, lease=lease, prev_kv=prev_kv))

    def delete(self, key: Bytes, range_end: Bytes | None = None, *, prefix: bool = False,
               prev_kv: bool = False) -> DeleteResult:  # fmt: skip
        return self._call(self.aio.delete(key, range_end, prefix=prefix, prev_kv=prev_kv))

    def txn(self, compare: Sequence[Compare], success: Sequence[Op] = (),
            failure: Sequence[Op] = ()) -> TxnResult:  # fmt: skip
        return self._call(self.aio.txn(compare, success, failure))

    def compact(self, revision: int, *, physical: bool = False) -> None:
        self._call(self.aio.compact(revision, physical=physical))

    # -- leases --------------------------------------------------------------------------

    def lease_grant(self, ttl: int, lease_id: int = 0) -> Lease:
        return self._call(self.aio.lease_grant(ttl, lease_id))

    def lease_revoke(self, lease_id: int) -> None:
        self._call(self.aio.lease_revoke(lease_id))

    def lease_keep_alive_once(self, lease_id: int) -> int:
        return self._call(self.aio.lease_keep_alive_once(lease_id))

    def lease_time_to_live(self, lease_id: int, *, keys: bool = False) -> LeaseInfo:
        return self._call(self.aio.lease_time_to_live(lease_id, keys=keys))

    # -- watch ---------------------------------------------------------------------------

    def watch(self, key: Bytes, range_end: Bytes | None = None, *, prefix: bool = False,
              start_revision: int = 0, prev_kv: bool = False) -> SyncWatch:  # fmt: skip
        """``with etcd.watch("k") as w: event = w.get(timeout_s=5)`` or ``for event in w``."""
        return SyncWatch(self, key, range_end, prefix, start_revision, prev_kv)

    # -- recipes -------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name: str | bytes, *, ttl: int = DEFAULT_TTL,
             timeout_s: float | None = None) -> Iterator[LockHandle]:  # fmt: skip
        """Hold etcd's mutex ``name`` inside the block; ``handle.revision`` is the fencing
        token.  ``timeout_s``: give up waiting (TimeoutError)."""
        manager = hold_lock(self.aio, name, ttl=ttl)
        handle = self._call(manager.__aenter__(), timeout_s)
        try:
            yield handle
        finally:
            self._call(manager.__aexit__(None, None, None), 30.0)

    @contextlib.contextmanager
    def campaign(self, name: str | bytes, proposal: str | bytes, *, ttl: int = DEFAULT_TTL,
                 timeout_s: float | None = None) -> Iterator[KeyValue]:  # fmt: skip
        """Lead election ``name`` with ``proposal`` inside the block (resign on exit)."""
        election = Election(self.aio, name)
        session = Session(self.aio, ttl)
        self._call(session.open())
        try:
            yield self._call(election.campaign(session, proposal), timeout_s)
            self._call(election.resign(), 30.0)
        finally:
            self._call(session.close(), 30.0)

    def leader(self, name: str | bytes) -> KeyValue | None:
        """The current leader of election ``name`` (None: nobody)."""
        return self._call(Election(self.aio, name).leader())


class SyncWatch:
    """A watch read from a blocking thread (events queued by the client's loop)."""

    def __init__(self, client: EtcdClient, key: Bytes, range_end: Bytes | None, prefix: bool,
                 start_revision: int, prev_kv: bool) -> None:  # fmt: skip
        self._queue: queue.Queue[WatchEvent | BaseException | None] = queue.Queue()
        self._watch = client.aio.watch(key, range_end, prefix=prefix,
                                       start_revision=start_revision, prev_kv=prev_kv)  # fmt: skip
        self._client = client
        self._future = asyncio.run_coroutine_threadsafe(self._pump(), client._loop)

    async def _pump(self) -> None:
        try:
            async for event in self._watch:
                self._queue.put(event)
        except (EtcdError, OSError) as exc:
            self._queue.put(exc)
        finally:
            self._queue.put(None)

    def get(self, timeout_s: float | None = None) -> WatchEvent | None:
        """The next event; None at the timeout or once the watch ended."""
        try:
            item = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def __iter__(self) -> Iterator[WatchEvent]:
        while (event := self.get()) is not None:
            yield event

    def cancel(self) -> None:
        with contextlib.suppress(Exception):
            self._client._call(self._watch.cancel(), 10.0)
        self._future.cancel()

    def __enter__(self) -> SyncWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()
