"""The etcd Watch service in-process: streams, history replay, cancel, compaction, and
bounds (a client with hundreds of streams that never reads does not grow the node's
memory without bound nor stop it from serving others)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from aetcd.rpc import rpc_pb2, rpc_pb2_grpc

from tests.services.test_etcd_server import client, one_node, run


async def _requests(*messages: Any, hold: asyncio.Event | None = None) -> AsyncIterator[Any]:
    for message in messages:
        yield message
    if hold is not None:
        await hold.wait()  # keep our side open (closing it ends the stream, as in etcd)


def _create(key: bytes, **fields: Any) -> Any:
    return rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key, **fields))


async def _next(call: Any, timeout_s: float = 10.0) -> Any:
    async with asyncio.timeout(timeout_s):
        return await call.read()


def test_watch_replays_history_then_streams_new_events_in_order(tmp_path: Path) -> None:
    async def body() -> None:
        async with one_node(tmp_path / "n") as server, client(server) as c:
            for i in range(3):
                await c.put(f"k{i}".encode(), b"old")
            host, port = server.client_address
            hold = asyncio.Event()
            async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
                stub = rpc_pb2_grpc.WatchStub(channel)
                call = stub.Watch(
                    _requests(
                        _create(b"k", range_end=b"l", start_revision=2, prev_kv=True), hold=hold
                    )
                )
                created = await _next(call)
                assert created.created and created.header.member_id == server.member_id
                replay = await _next(call)
                assert [e.kv.mod_revision for e in replay.events] == [2, 3, 4]
                await c.put(b"k0", b"new")
                await c.delete(b"k1")
                revisions: list[int] = []
                while len(revisions) < 2:
                    response = await _next(call)
                    revisions += [e.kv.mod_revision for e in response.events]
                    if response.events and response.events[0].kv.key == b"k0":
                        assert response.events[0].prev_kv.value == b"old"
                assert revisions == [5, 6]
                hold.set()
                call.cancel()

    run(body)


def test_cancel_and_compacted_start_revision(tmp_path: Path) -> None:
    async def body() -> None:
        async with one_node(tmp_path / "n") as server, client(server) as c:
            for i in range(4):
                await c.put(b"a", str(i).encode())
            await c.compact(4)
            host, port = server.client_address
            hold = asyncio.Event()
            async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
                stub = rpc_pb2_grpc.WatchStub(channel)
                call = stub.Watch(_requests(_create(b"a", start_revision=2), hold=hold))
                assert (await _next(call)).created
                canceled = await _next(call)
                assert canceled.canceled and canceled.compact_revision == 4
                hold.set()
                call.cancel()
                requests = _requests(
                    _create(b"a", watch_id=7),
                    rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=7)),
                    hold=asyncio.Event(),
                )
                call = stub.Watch(requests)
                assert (await _next(call)).watch_id == 7
                gone = await _next(call)
                assert gone.canceled and gone.watch_id == 7
                call.cancel()

    run(body)


def test_streams_that_never_read_stay_bounded_and_others_are_served(tmp_path: Path) -> None:
    streams, writes, value = 200, 60, b"x" * 4096

    async def body() -> None:
        async with one_node(tmp_path / "n", max_watch_streams=streams + 5) as server:
            host, port = server.client_address
            hold = asyncio.Event()
            async with grpc.aio.insecure_channel(f"{host}:{port}") as lazy, client(server) as c:
                stub = rpc_pb2_grpc.WatchStub(lazy)
                calls = [stub.Watch(_requests(_create(b"w", range_end=b"x"), hold=hold))
                         for _ in range(streams)]  # fmt: skip
                async with asyncio.timeout(20):
                    while len(server.watch_streams) < streams:
                        await asyncio.sleep(0.05)
                loop = asyncio.get_running_loop()
                for i in range(writes):
                    started = loop.time()
                    await c.put(f"w{i}".encode(), value)
                    assert loop.time() - started < 5  # the node keeps serving
                assert (await c.get(b"w0")).value == value
                hub = server.watch_streams.hub
                limit = server.options.watch_pending_responses
                assert all(len(s.outbox) <= limit for s in hub._streams.values())
                hold.set()
                for call in calls:
                    call.cancel()
            async with asyncio.timeout(10):
                while len(server.watch_streams):
                    await asyncio.sleep(0.05)

    run(body)


def test_too_many_streams_are_refused(tmp_path: Path) -> None:
    async def body() -> None:
        async with one_node(tmp_path / "n", max_watch_streams=2) as server:
            host, port = server.client_address
            hold = asyncio.Event()
            async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
                stub = rpc_pb2_grpc.WatchStub(channel)
                calls = [stub.Watch(_requests(_create(b"k"), hold=hold)) for _ in range(2)]
                for call in calls:
                    assert (await _next(call)).created
                third = stub.Watch(_requests(_create(b"k"), hold=hold))
                try:
                    await _next(third)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                else:
                    raise AssertionError("a third stream was accepted")
                hold.set()
                for call in calls:
                    call.cancel()

    run(body)
