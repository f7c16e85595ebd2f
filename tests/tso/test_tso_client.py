"""The timestamp client's ``next()`` against a scripted oracle: concurrent callers are
coalesced into one request, callers that arrive while a request is in flight wait for the
next one, and no timestamp is ever served from a request sent before its caller asked."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pnyx.core import ClientReply
from pnyx.protocols.tso import TsoRequest
from pnyx.services.tso import AsyncTsoClient, ClientError, TsoError

MEMBERS = {1: ("127.0.0.1", 9)}  # never connected: the scripted oracle answers instead
WAIT_S = 30.0


class _Oracle:
    """Answers the client's requests with increasing timestamps, each request held until
    the test releases it (``hold``) or at once."""

    def __init__(self, hold: bool) -> None:
        self.hold = hold
        self.counts: list[int] = []
        self.released: list[asyncio.Event] = []
        self.failure: Exception | None = None
        self.next_ts = 1

    async def call(self, build: Any) -> ClientReply:
        request = build(len(self.counts) + 1)
        assert isinstance(request, TsoRequest)
        self.counts.append(request.count)
        gate = asyncio.Event()
        self.released.append(gate)
        if self.hold:
            await asyncio.wait_for(gate.wait(), WAIT_S)
        if self.failure is not None:
            raise self.failure
        first, self.next_ts = self.next_ts, self.next_ts + request.count
        return ClientReply(request.request_id, True, [first, request.count])

    async def sent(self, requests: int) -> None:
        """Wait until ``requests`` requests were sent."""
        async with asyncio.timeout(WAIT_S):
            while len(self.counts) < requests:
                await asyncio.sleep(0)


def _client(oracle: _Oracle, **options: Any) -> AsyncTsoClient:
    client = AsyncTsoClient(MEMBERS, **options)
    client._client.call = oracle.call  # type: ignore[method-assign]
    return client


def test_callers_arriving_during_a_request_wait_for_the_next_one_and_share_it() -> None:
    async def scenario() -> None:
        oracle = _Oracle(hold=True)
        client = _client(oracle)
        first = asyncio.ensure_future(client.next())
        await oracle.sent(1)
        later = [asyncio.ensure_future(client.next()) for _ in range(5)]
        await asyncio.sleep(0)
        assert oracle.counts == [1], "callers that came during a request joined it"
        oracle.released[0].set()
        value = await first
        await oracle.sent(2)
        assert oracle.counts == [1, 5], "the waiting callers were not coalesced"
        oracle.released[1].set()
        values = await asyncio.gather(*later)
        assert len(set(values)) == 5
        assert min(values) > value
        assert (client.requests_sent, client.timestamps_served) == (2, 6)

    asyncio.run(scenario())


def test_sequential_calls_never_reuse_an_earlier_request() -> None:
    async def scenario() -> None:
        oracle = _Oracle(hold=False)
        client = _client(oracle)
        values = [await client.next() for _ in range(4)]
        assert oracle.counts == [1, 1, 1, 1], "a timestamp was served from an earlier request"
        assert values == sorted(values) and len(set(values)) == 4

    asyncio.run(scenario())


def test_a_coalesced_request_asks_for_at_most_max_coalesced() -> None:
    async def scenario() -> None:
        oracle = _Oracle(hold=False)
        client = _client(oracle, max_coalesced=4)
        values = await asyncio.gather(*(client.next() for _ in range(10)))
        assert oracle.counts == [4, 4, 2]
        assert sorted(values) == list(range(1, 11))

    asyncio.run(scenario())


def test_a_failed_request_fails_its_callers_and_the_next_call_works() -> None:
    async def scenario() -> None:
        oracle = _Oracle(hold=False)
        oracle.failure = TsoError("refused")
        client = _client(oracle)
        results = await asyncio.gather(*(client.next() for _ in range(3)), return_exceptions=True)
        assert all(isinstance(r, TsoError) for r in results), results
        oracle.failure = None
        assert await client.next() >= 1

    asyncio.run(scenario())


def test_a_cancelled_caller_does_not_stop_the_others() -> None:
    async def scenario() -> None:
        oracle = _Oracle(hold=True)
        client = _client(oracle)
        callers = [asyncio.ensure_future(client.next()) for _ in range(3)]
        await oracle.sent(1)
        callers[1].cancel()
        oracle.released[0].set()
        done = await asyncio.gather(*callers, return_exceptions=True)
        assert isinstance(done[1], asyncio.CancelledError)
        assert isinstance(done[0], int) and isinstance(done[2], int) and done[0] != done[2]

    asyncio.run(scenario())


def test_close_fails_the_waiting_callers() -> None:
    async def scenario() -> None:
        oracle = _Oracle(hold=True)
        client = _client(oracle)
        callers = [asyncio.ensure_future(client.next()) for _ in range(3)]
        await oracle.sent(1)
        await client.close()
        done = await asyncio.gather(*callers, return_exceptions=True)
        assert all(isinstance(r, ClientError) for r in done), done

    asyncio.run(scenario())


def test_bad_max_coalesced_is_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match="got 0"):
        AsyncTsoClient(MEMBERS, max_coalesced=0)
