"""AsyncClient: a caller's cancellation is never swallowed, and errors say what members said.

A scripted fake node (hello, welcome, then one canned reply per request) makes the
client's paths reproducible; real replica groups check the ``not_leader`` messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable

import pytest

from pnyx.catalog import get_runnable
from pnyx.core import ClientReply, Message
from pnyx.protocols.raft import KvOp, ReadRequest
from pnyx.runtime.framing import FrameDecoder, encode_frame
from pnyx.runtime.transport import Hello, Welcome, make_wire_codec
from pnyx.services import client as client_module
from pnyx.services.client import AsyncClient, ClientError
from pnyx.services.kv import KV_MESSAGES
from pnyx.services.objects import ReplicatedCounter
from pnyx.services.replicated import Replica
from tests.runtime.runtime_helpers import run_async
from tests.services.replicated_helpers import FAST, async_group, bind_group, make_replicas

Answer = Callable[[ReadRequest], ClientReply | None]
"""The fake node's reply to one request (None: never answer)."""

CANCEL_BOUND_S = 10.0
"""A cancelled call or close must end (cancelled) within this, even on a busy machine."""
CANCEL_POINTS = 120
"""Event-loop steps at which a call is cancelled (several connect/refuse/switch rounds)."""


def _get(rid: int) -> ReadRequest:
    return ReadRequest(rid, KvOp("get", "k"))


def not_leader(request: ReadRequest) -> ClientReply:
    return ClientReply(request.request_id, False, leader_hint=None, error="not_leader")


@contextlib.asynccontextmanager
async def fake_node(answer: Answer, node_id: int = 1) -> AsyncIterator[tuple[str, int]]:
    """A listening fake node on 127.0.0.1; yields its address."""
    codec = make_wire_codec((*KV_MESSAGES, ClientReply))
    handlers: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder(1 << 20)
        try:
            while data := await reader.read(65536):
                for payload in decoder.feed(data):
                    msg: Message = codec.decode(payload)
                    if isinstance(msg, Hello):
                        reply: Message | None = Welcome(msg.sender, node_id)
                    elif isinstance(msg, ReadRequest):
                        reply = answer(msg)
                    else:
                        reply = None
                    if reply is not None:
                        writer.write(encode_frame(codec.encode(reply)))
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(serve(reader, writer))
        handlers.add(task)
        task.add_done_callback(handlers.discard)

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    try:
        host, port = server.sockets[0].getsockname()[:2]
        yield (str(host), int(port))
    finally:
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.wait([*handlers, asyncio.ensure_future(server.wait_closed())], timeout=5)


async def _steps(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def _ends_cancelled(task: asyncio.Task[object], what: str) -> None:
    done, _ = await asyncio.wait([task], timeout=CANCEL_BOUND_S)
    assert task in done, f"{what} still runs {CANCEL_BOUND_S} s after its cancellation"
    if not task.cancelled():
        outcome = task.exception() or task.result()
        raise AssertionError(f"{what} swallowed its cancellation and ended with {outcome!r}")


def test_a_cancelled_call_ends_cancelled_wherever_the_cancel_lands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cancel a call refused over and over (connect, refusal, switch, reconnect, ...) at
    each of the first CANCEL_POINTS event-loop steps: it must end cancelled every time."""
    monkeypatch.setattr(client_module, "RETRY_BACKOFF_S", 0.0)

    async def main() -> None:
        async with fake_node(not_leader) as address:
            for point in range(CANCEL_POINTS):
                client = AsyncClient({1: address}, KV_MESSAGES, deadline_s=3.0)
                call = asyncio.ensure_future(client.call(_get))
                await _steps(point)
                call.cancel()
                await _ends_cancelled(call, f"call cancelled at step {point}")
                await asyncio.wait_for(client.close(), CANCEL_BOUND_S)

    run_async(main())


def test_a_cancelled_call_waiting_for_a_silent_member_ends_cancelled() -> None:
    async def main() -> None:
        async with fake_node(lambda request: None) as address:
            client = AsyncClient({1: address}, KV_MESSAGES, request_timeout_s=30.0)
            call = asyncio.ensure_future(client.call(_get))
            while client.in_flight == 0:
                await asyncio.sleep(0.001)
            call.cancel()
            await _ends_cancelled(call, "a call waiting for its reply")
            assert client.in_flight == 0
            await client.close()

    run_async(main())


def test_a_cancelled_close_ends_cancelled() -> None:
    """close() is cancelled while it waits for the reply reader to end."""

    async def main() -> None:
        replies = lambda r: ClientReply(r.request_id, True, "")  # noqa: E731
        async with fake_node(replies) as address:
            client = AsyncClient({1: address}, KV_MESSAGES)
            assert (await client.call(_get)).ok
            closing = asyncio.ensure_future(client.close())
            await asyncio.sleep(0)  # close() cancelled its reader and now waits for it
            closing.cancel()
            await _ends_cancelled(closing, "close()")
            with pytest.raises(ClientError, match="closed"):
                await client.call(_get)

    run_async(main())


def test_closing_fails_the_calls_in_flight_at_once() -> None:
    async def main() -> None:
        async with fake_node(lambda request: None) as address:
            client = AsyncClient({1: address}, KV_MESSAGES, request_timeout_s=30.0)
            call = asyncio.ensure_future(client.call(_get))
            while client.in_flight == 0:
                await asyncio.sleep(0.001)
            await client.close()
            with pytest.raises(ClientError, match="closed"):
                await asyncio.wait_for(call, CANCEL_BOUND_S)

    run_async(main())


def test_a_follower_only_client_is_told_which_node_leads() -> None:
    """The only endpoint is a follower: the error names the leader, without waiting."""

    async def main() -> None:
        members, socks = bind_group()
        counters = [ReplicatedCounter() for _ in members]
        replicas = make_replicas(counters, members, socks)
        async with async_group(replicas):
            await counters[0].incr.call_async(1)  # a leader is elected and known to all
            leader = replicas[0].leader_id
            assert leader is not None
            follower = next(i for i in members if i != leader)
            types = get_runnable("raft").message_types
            client = AsyncClient({follower: members[follower]}, types, deadline_s=20.0)
            started = asyncio.get_running_loop().time()
            try:
                with pytest.raises(ClientError) as caught:
                    await client.call(_get)
            finally:
                await client.close()
            took_s = asyncio.get_running_loop().time() - started
        expected = f"member {follower} answered not_leader (leader is node {leader}"
        assert expected in str(caught.value), str(caught.value)
        assert "not among this client's members" in str(caught.value)
        assert took_s < 10.0, f"took {took_s:.1f} s: the answer was not used at once"

    run_async(main())


def test_a_member_without_leader_is_reported_as_such() -> None:
    """A lone member of a three-node group never learns a leader: the deadline's error
    says that it answered not_leader (leader unknown), not that it did not answer."""

    async def main() -> None:
        members, socks = bind_group()
        for i in (2, 3):
            socks[i].close()  # nothing listens there
        lone = Replica(ReplicatedCounter(), 1, members, options=FAST, listen_sock=socks[1])
        await lone.start_async()
        try:
            types = get_runnable("raft").message_types
            client = AsyncClient({1: members[1]}, types, request_timeout_s=1.0, deadline_s=2.0)
            try:
                with pytest.raises(ClientError) as caught:
                    await client.call(_get)
            finally:
                await client.close()
        finally:
            await lone.stop_async()
        message = str(caught.value)
        assert re.search(
            r"within 2\.0 s: member 1 answered not_leader \(leader unknown\)", message
        ), message

    run_async(main())


def test_every_member_failing_is_described_member_by_member() -> None:
    async def main() -> None:
        async with fake_node(lambda request: None) as silent:
            closed = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
            refused = closed.sockets[0].getsockname()[:2]
            closed.close()
            await closed.wait_closed()
            client = AsyncClient(
                {1: silent, 2: refused}, KV_MESSAGES, request_timeout_s=0.5, deadline_s=3.0
            )
            try:
                with pytest.raises(ClientError) as caught:
                    await client.call(_get)
            finally:
                await client.close()
        message = str(caught.value)
        assert "member 1 did not reply within 0.5 s" in message, message
        assert "member 2 failed: ConnectionRefusedError" in message, message

    run_async(main())
