"""Client of the Raft key-value service: get / put / append / cas / delete, exactly once.

Writes travel in a session opened on first use (reopened if the service expired it) with a
sequence number, so the automatic retries of :class:`~pnyx.services.client.AsyncClient`
(after a timeout or a leader change) are applied at most once.  Reads are linearizable
(ReadIndex) unless asked for ``serializable``.  Operations may be recorded as a history
for :mod:`pnyx.check`.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from pnyx.core import ClientReply, HistoryEvent, Message
from pnyx.protocols.raft import PEER_MESSAGES, AdminRequest, ClientRequest, ReadRequest
from pnyx.protocols.raft.kv import APPEND, CAS, DELETE, GET, OPEN_SESSION, PUT, Command, KvOp
from pnyx.runtime.transport import Address
from pnyx.services.client import TASK_END_BOUND_S, AsyncClient, ClientError, LoopThread

KV_MESSAGES: tuple[type[Message], ...] = (*PEER_MESSAGES, ClientRequest, ReadRequest, AdminRequest)
"""Everything a Raft KV node may send or receive."""


class KvError(Exception):
    """The service refused an operation (the message says why)."""


class AsyncKvClient:
    """One session with the KV service; operations run one at a time (exactly-once order).

    For concurrency, use one client per concurrent worker.  ``history`` (when given)
    receives an invoke/complete :class:`HistoryEvent` pair per operation, process
    ``process``; an operation that failed with an exception (or was cancelled) is recorded
    ``info``.  ``ssl`` and the other options are those of
    :class:`~pnyx.services.client.AsyncClient`.
    """

    def __init__(
        self,
        members: Mapping[int, Address],
        *,
        history: list[HistoryEvent] | None = None,
        process: int = 0,
        ssl: ssl_module.SSLContext | None = None,
        **client_options: Any,
    ) -> None:
        self._client = AsyncClient(members, KV_MESSAGES, ssl=ssl, **client_options)
        self._session = 0
        self._seq = 0
        self._lock = asyncio.Lock()
        self.history = history
        self.process = process

    @property
    def connection(self) -> AsyncClient:
        """The underlying connection (redirect and retry counters live there)."""
        return self._client

    async def close(self) -> None:
        """Close the connection."""
        await self._client.close()

    async def get(self, key: str, consistency: str = "linearizable") -> Any:
        """The value of ``key`` ("" when absent)."""
        return await self._record("get", key, None, self._read(KvOp(GET, key), consistency))

    async def put(self, key: str, value: str) -> None:
        """Set ``key`` to ``value``."""
        await self._record("put", key, value, self._write(KvOp(PUT, key, value)))

    async def append(self, key: str, suffix: str) -> None:
        """Concatenate ``suffix`` to the value of ``key``."""
        await self._record("append", key, suffix, self._write(KvOp(APPEND, key, suffix)))

    async def cas(self, key: str, expected: str, new: str) -> bool:
        """Set ``key`` to ``new`` if it holds ``expected``; True when it did."""
        op = KvOp(CAS, key, new, expected)
        result = await self._record("cas", key, [expected, new], self._write(op))
        return bool(result)

    async def delete(self, key: str) -> bool:
        """Remove ``key``; True when it existed."""
        return bool(await self._record("delete", key, None, self._write(KvOp(DELETE, key))))

    async def _record(self, f: str, key: str, value: Any, action: Any) -> Any:
        async with self._lock:
            self._note("invoke", f, key, value)
            try:
                result = await action
            except (ClientError, KvError, asyncio.CancelledError):
                self._note("info", f, key, value)  # it may or may not have happened
                raise
            self._note("ok", f, key, result if f in ("get", "cas", "delete") else value)
            return result

    def _note(self, kind: str, f: str, key: str, value: Any) -> None:
        if self.history is not None:
            event = HistoryEvent(self.process, kind, f, value, key, time.monotonic_ns())  # type: ignore[arg-type]
            self.history.append(event)

    async def _read(self, query: KvOp, consistency: str) -> Any:
        reply = await self._client.call(lambda rid: ReadRequest(rid, query, consistency))
        return _result(reply)

    async def _write(self, op: KvOp) -> Any:
        for _ in range(3):
            if self._session == 0:
                await self._open_session()
            self._seq += 1
            command = Command(self._session, self._seq, op)
            result = _result(await self._client.call(partial(ClientRequest, command=command)))
            if isinstance(result, dict) and result.get("error") == "session_expired":
                self._session = 0  # expired sessions never applied the command: safe to redo
                continue
            if isinstance(result, dict) and "error" in result:
                raise KvError(f"{op.kind} {op.key!r} refused: {result['error']}")
            return result
        raise KvError(f"{op.kind} {op.key!r}: the service keeps expiring this client's session")

    async def _open_session(self) -> None:
        opener = Command(0, 0, OPEN_SESSION)
        session = _result(await self._client.call(lambda rid: ClientRequest(rid, opener)))
        if not isinstance(session, int) or session <= 0:
            raise KvError(f"open_session answered {session!r}")
        self._session, self._seq = session, 0


def _result(reply: ClientReply) -> Any:
    if not reply.ok:
        raise KvError(f"request refused: {reply.error or 'unknown error'}")
    return reply.result


class KvClient:
    """Synchronous :class:`AsyncKvClient` (its event loop runs in a background thread)."""

    def __init__(
        self,
        members: Mapping[int, Address],
        *,
        ssl: ssl_module.SSLContext | None = None,
        **options: Any,
    ) -> None:
        self._kv = AsyncKvClient(members, ssl=ssl, **options)
        self._runner = LoopThread("pnyx-kv")

    def get(self, key: str, consistency: str = "linearizable") -> Any:
        """See :meth:`AsyncKvClient.get`."""
        return self._runner.run(self._kv.get(key, consistency=consistency))

    def put(self, key: str, value: str) -> None:
        """See :meth:`AsyncKvClient.put`."""
        self._runner.run(self._kv.put(key, value))

    def append(self, key: str, suffix: str) -> None:
        """See :meth:`AsyncKvClient.append`."""
        self._runner.run(self._kv.append(key, suffix))

    def cas(self, key: str, expected: str, new: str) -> bool:
        """See :meth:`AsyncKvClient.cas`."""
        return bool(self._runner.run(self._kv.cas(key, expected, new)))

    def delete(self, key: str) -> bool:
        """See :meth:`AsyncKvClient.delete`."""
        return bool(self._runner.run(self._kv.delete(key)))

    def close(self) -> None:
        """Close the connection and stop the background loop."""
        try:
            self._runner.run(self._kv.close(), TASK_END_BOUND_S + 5.0)
        finally:
            self._runner.close()

    def __enter__(self) -> KvClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
