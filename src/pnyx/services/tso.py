"""The timestamp oracle as a real service (``pnyx cluster up --protocol tso``) and its client.

:class:`AsyncTsoClient` asks the leader for batches of timestamps and hands them out one by
one from memory (client-side batching, as TiDB's PD client does): ``await next()`` costs a
round trip only when the local batch is used up.  Every timestamp is unique and larger than
any timestamp handed out (to any client) before the request for its batch was sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from pnyx.core import Message
from pnyx.protocols.raft import PEER_MESSAGE_TYPES
from pnyx.protocols.tso import (
    MAX_BATCH,
    TsoRequest,
)
from pnyx.runtime.transport import Address
from pnyx.services.client import AsyncClient, ClientError, LoopThread

TSO_MESSAGES: tuple[type[Message], ...] = (*PEER_MESSAGE_TYPES, TsoRequest)
"""Everything a TSO node may send or receive."""

DEFAULT_BATCH = 1_000
"""Timestamps a client asks for per request by default."""


class TsoError(Exception):
    """The oracle refused a request (the message says why)."""


class AsyncTsoClient:
    """Timestamps from a TSO group, fetched ``batch`` at a time.

    ``get_batch`` is safe to call concurrently (requests share one connection);
    ``next`` serves from the local batch.  Options go to
    :class:`~pnyx.services.client.AsyncClient` (``request_timeout_s``, ``deadline_s``, ...).
    """

    def __init__(
        self, members: Mapping[int, Address], *, batch: int = DEFAULT_BATCH, **options: Any
    ) -> None:
        if not 1 <= batch <= MAX_BATCH:
            raise ValueError(f"batch must be in [1, {MAX_BATCH}], got {batch}")
        self.batch = batch
        self._client = AsyncClient(members, TSO_MESSAGES, **options)
        self._next = 0
        self._end = 0
        self._refill = asyncio.Lock()

    @property
    def leader(self) -> int:
        """The member the client talks to now."""
        return self._client.target

    async def get_batch(self, count: int) -> range:
        """``count`` fresh timestamps, as a range."""
        if not 1 <= count <= MAX_BATCH:
            raise ValueError(f"count must be in [1, {MAX_BATCH}], got {count}")
        reply = await self._client.call(lambda request_id: TsoRequest(request_id, count))
        if not reply.ok:
            raise TsoError(f"timestamp request refused: {reply.error}")
        first, got = int(reply.result[0]), int(reply.result[1])
        if got != count or first < 1:
            raise TsoError(f"malformed answer {reply.result!r} to a request for {count}")
        return range(first, first + got)

    async def next(self) -> int:
        """One fresh timestamp (from the local batch; a round trip when it is used up)."""
        if self._next >= self._end:
            async with self._refill:
                if self._next >= self._end:
                    fresh = await self.get_batch(self.batch)
                    self._next, self._end = fresh.start, fresh.stop
        value = self._next
        self._next += 1
        return value

    async def close(self) -> None:
        """Close the connection."""
        await self._client.close()


class TsoClient:
    """Synchronous facade over :class:`AsyncTsoClient` (its loop runs in a thread)."""

    def __init__(self, members: Mapping[int, Address], **options: Any) -> None:
        self._loop = LoopThread("pnyx-tso-client")
        self._async: AsyncTsoClient = self._loop.run(_make_async(members, options))

    def get_batch(self, count: int) -> range:
        """Blocking :meth:`AsyncTsoClient.get_batch`."""
        return self._loop.run(self._async.get_batch(count))

    def next(self) -> int:
        """Blocking :meth:`AsyncTsoClient.next`."""
        return self._loop.run(self._async.next())

    @property
    def leader(self) -> int:
        """The member the client talks to now."""
        return self._async.leader

    def close(self) -> None:
        """Close the connection and stop the loop."""
        try:
            self._loop.run(self._async.close(), 10.0)
        finally:
            self._loop.close()

    def __enter__(self) -> TsoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _make_async(members: Mapping[int, Address], options: dict[str, Any]) -> AsyncTsoClient:
    return AsyncTsoClient(members, **options)


__all__ = ["AsyncTsoClient", "ClientError", "TsoClient", "TsoError"]
