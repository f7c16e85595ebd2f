"""A remote's mistake closes that connection, never the node; a clock stall is reported."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from pnyx.catalog import get_runnable
from pnyx.core import ClientReply, Codec, Message
from pnyx.protocols.raft import (
    AppendEntries,
    ClientRequest,
    ReadRequest,
    RequestVote,
)
from pnyx.runtime import FramedClient, NodeRunner, RunnerConfig, encode_frame
from pnyx.runtime.transport import Hello, TransportConfig, make_wire_codec
from tests.runtime.runtime_helpers import run_async, wait_until
from tests.runtime.runtime_toy import WIRE_TYPES, Add, Cluster, Ping, Pong, Push

TOY_CODEC: Codec[Message] = make_wire_codec((*WIRE_TYPES, ClientReply))


def toy_frame(msg: Message) -> bytes:
    return encode_frame(TOY_CODEC.encode(msg))


async def send_and_wait_closed(address: tuple[str, int], data: bytes) -> None:
    """Send ``data`` on a new connection; fail unless the node closes it within 10 s."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(10.0):
            while await reader.read(65536):
                pass
    except ConnectionResetError:
        pass
    finally:
        writer.close()


async def one_add(cluster: Cluster, value: int, request_id: int) -> ClientReply:
    client = await cluster.client(1)
    try:
        return await client.request(Add(request_id, value), request_id, 10.0)
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("role", "frames", "reason"),
    [
        # issue 16 item 1: a peer hello, then a client message type
        ("peer", [Hello(2, "peer"), Add(1, 5)], "wrong_message_type"),
        ("peer", [Hello(2, "peer"), ClientReply(1, True)], "wrong_message_type"),
        ("client", [Hello(0, "client"), Push(1, (), 0)], "wrong_message_type"),
        ("client", [Hello(0, "client"), Pong(3)], "wrong_message_type"),
        # the node refuses a message with InvalidMessage from step
        ("peer", [Hello(2, "peer"), Ping(-1)], "invalid_message"),
        ("client", [Hello(0, "client"), Ping(-1)], "invalid_message"),
    ],
)
def test_a_remote_mistake_closes_its_connection_and_the_node_keeps_serving(
    tmp_path: Path,
    role: str,
    frames: list[Message],
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        cluster = Cluster(tmp_path, 2, tick_ms=1000)
        try:
            await cluster.start(1)
            runner = cluster.runners[1]
            await send_and_wait_closed(cluster.addresses[1], b"".join(toy_frame(m) for m in frames))
            await wait_until(
                lambda: runner.transport.stats.rejected.get(reason) == 1,
                what=f"rejection {reason}",
            )
            assert runner.metrics.sample("pnyx_connections_rejected_total", {"reason": reason}) == 1
            assert runner.failure is None and runner.health()["status"] == "ok"
            await cluster.start(2)
            reply = await one_add(cluster, 5, 2)
            assert reply.ok and reply.result == 5, reply
            assert runner.failure is None
        finally:
            await cluster.close()

    with caplog.at_level(logging.WARNING):
        run_async(scenario(), 30.0)
    assert f"reason={reason}" in caplog.text


def test_other_exceptions_from_step_still_stop_the_node(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = Cluster(tmp_path, 1, tick_ms=1000)
        try:
            runner = await cluster.start(1)
            node = cluster.node(1)

            def broken_step(msg: Message, from_id: int) -> None:
                raise RuntimeError("a bug in the node")

            node.step = broken_step  # type: ignore[method-assign]
            client = await cluster.client(1)
            try:
                await client.send(Add(1, 1))
                await wait_until(lambda: runner.failure is not None, what="fail-stop")
            finally:
                await client.close()
            assert isinstance(runner.failure, RuntimeError)
        finally:
            await cluster.close()

    run_async(scenario())


def test_three_frames_no_longer_stop_a_raft_node(tmp_path: Path) -> None:
    """Issue 16 item 1 as reported: peer hello + ReadRequest crashed RaftNode.step."""
    service = get_runnable("raft")

    async def scenario() -> None:
        config = RunnerConfig(
            node_id=1,
            data_dir=None,
            peers={1: ("127.0.0.1", 0), 2: ("127.0.0.1", 1), 3: ("127.0.0.1", 1)},
            tick_ms=10,
            seed=1,
            transport=TransportConfig(backoff_initial_ms=50, backoff_max_ms=200),
        )
        runner = NodeRunner.for_protocol(service, config)
        codec = runner.codec
        await runner.start()
        try:
            attacks: list[list[Message]] = [
                [Hello(2, "peer"), ReadRequest(1, {"kind": "get", "key": "x"})],
                [Hello(3, "peer"), ClientRequest(2, None)],
                [Hello(0, "client"), RequestVote(99, 0, 0)],
                [Hello(0, "client"), AppendEntries(99, 0, 0, (), 0)],
            ]
            for frames in attacks:
                data = b"".join(encode_frame(codec.encode(m)) for m in frames)
                await send_and_wait_closed(runner.address, data)
            await wait_until(
                lambda: runner.transport.stats.rejected.get("wrong_message_type") == 4,
                what="four wrong_message_type rejections",
            )
            assert runner.failure is None
            assert getattr(runner.node, "term", None) == 0, "no attacker frame reached step"
            client = await FramedClient.connect(runner.address, service.message_types)
            try:
                reply = await client.request(ReadRequest(7, None), 7, 10.0)
            finally:
                await client.close()
            assert reply.ok is False and reply.error == "not_leader", reply
        finally:
            await runner.stop()

    run_async(scenario(), 30.0)


def test_a_clock_stall_is_reported_to_the_node(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = Cluster(tmp_path, 1, tick_ms=5)
        try:
            runner = await cluster.start(1, max_ticks_per_round=3)
            node = cluster.node(1)
            await wait_until(lambda: node.ticks >= 3, what="ticking")
            assert node.stalls == []
            time.sleep(0.3)  # the event loop (the whole process) stalls for 60 ticks
            await wait_until(lambda: node.stalls != [], what="clock_stalled call")
            missed, ticks_before = node.stalls[0]
            assert missed >= 0.3 / 0.005 - 3 - 1, node.stalls
            assert ticks_before <= node.ticks - 3, "the kept ticks come after the report"
            assert runner.failure is None
        finally:
            await cluster.close()

    run_async(scenario())
