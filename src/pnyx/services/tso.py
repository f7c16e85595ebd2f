"""The timestamp oracle as a real service (``pnyx cluster up --protocol tso``) and its client.

:class:`AsyncTsoClient` has two ways to get timestamps:

- ``await get_batch(count)``: one request for ``count`` timestamps (a range), for callers
  that want many at once;
- ``await next()``: one timestamp per call, with *concurrent* calls coalesced the way
  TiDB's PD client does it: while a request is in flight, callers queue; when it returns,
  one request asks for as many timestamps as there are callers waiting and gives each
  caller one.  No timestamp is kept for later: every caller's timestamp comes from a
  request sent after the caller asked.

Guarantees: every timestamp is unique (across all clients of the group), and a timestamp
asked for after another one was returned (to any client) is larger than it; so a
transaction that takes its timestamp after a commit was acknowledged sees that commit.
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

DEFAULT_MAX_COALESCED = 10_000
"""Most ``next()`` callers one coalesced request serves by default."""


class TsoError(Exception):
    """The oracle refused a request (the message says why)."""


class AsyncTsoClient:
    """Timestamps from a TSO group over one connection.

    ``get_batch(count)`` asks for ``count`` timestamps at once; ``next()`` asks for one,
    coalescing concurrent callers into one request of at most ``max_coalesced``
    timestamps.  Both are safe to call concurrently.  Options go to
    :class:`~pnyx.services.client.AsyncClient` (``request_timeout_s``, ``deadline_s``, ...).
    """

    def __init__(
        self,
        members: Mapping[int, Address],
        *,
        max_coalesced: int = DEFAULT_MAX_COALESCED,
        **options: Any,
    ) -> None:
        if not 1 <= max_coalesced <= MAX_BATCH:
            raise ValueError(f"max_coalesced must be in [1, {MAX_BATCH}], got {max_coalesced}")
        self.max_coalesced = max_coalesced
        self._client = AsyncClient(members, TSO_MESSAGES, **options)
        self._waiting: list[asyncio.Future[int]] = []
        self._pump: asyncio.Task[None] | None = None
        self.requests_sent = 0
        """Requests sent so far (``get_batch`` calls and coalesced ``next()`` rounds)."""
        self.timestamps_served = 0
        """Timestamps received so far."""

    @property
    def leader(self) -> int:
        """The member the client talks to now."""
        return self._client.target

    async def get_batch(self, count: int) -> range:
        """``count`` fresh timestamps, as a range (one request)."""
        if not 1 <= count <= MAX_BATCH:
            raise ValueError(f"count must be in [1, {MAX_BATCH}], got {count}")
        self.requests_sent += 1
        reply = await self._client.call(lambda request_id: TsoRequest(request_id, count))
        if not reply.ok:
            raise TsoError(f"timestamp request refused: {reply.error}")
        first, got = int(reply.result[0]), int(reply.result[1])
        if got != count or first < 1:
            raise TsoError(f"malformed answer {reply.result!r} to a request for {count}")
        self.timestamps_served += got
        return range(first, first + got)

    async def next(self) -> int:
        """One fresh timestamp, from a request sent after this call began (concurrent
        callers share one request).  Raises what the request raised (ClientError,
        TsoError)."""
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.ensure_future(self._serve_waiting())
        return await waiter

    async def _serve_waiting(self) -> None:
        """Serve the queued ``next()`` callers, one request per round, until none waits.

        Each round takes at least one caller off the queue and only callers add to it, so
        the loop ends once callers stop arriving."""
        while self._waiting:
            callers = [w for w in self._waiting[: self.max_coalesced] if not w.done()]
            del self._waiting[: self.max_coalesced]
            if not callers:
                continue
            try:
                stamps = await self.get_batch(len(callers))
            except asyncio.CancelledError:
                _fail([*callers, *self._waiting], ClientError("the timestamp client was closed"))
                self._waiting.clear()
                raise
            except Exception as exc:
                _fail(callers, exc)
                continue
            for caller, stamp in zip(callers, stamps, strict=True):
                if not caller.done():  # a caller cancelled meanwhile: its timestamp is skipped
                    caller.set_result(stamp)

    async def close(self) -> None:
        """Close the connection; waiting ``next()`` callers get ClientError."""
        pump, self._pump = self._pump, None
        if pump is not None and not pump.done():
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        _fail(self._waiting, ClientError("the timestamp client was closed"))
        self._waiting.clear()
        await self._client.close()


def _fail(callers: list[asyncio.Future[int]], exc: BaseException) -> None:
    for caller in callers:
        if not caller.done():
            caller.set_exception(exc)


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
