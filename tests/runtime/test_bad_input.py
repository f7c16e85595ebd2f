"""Hostile bytes on a node's port close that connection, are counted, and crash nothing."""

from __future__ import annotations

import asyncio
import logging
import struct
from pathlib import Path

import pytest

from pnyx.core import Codec, Message
from pnyx.runtime import FrameDecoder, NodeRunner, RunnerConfig, encode_frame
from pnyx.runtime.framing import FRAME_VERSION, RemoteProtocolError
from pnyx.runtime.transport import Hello, TransportConfig, Welcome, make_wire_codec
from tests.runtime.runtime_helpers import run_async, wait_until
from tests.runtime.runtime_toy import (
    CLIENT_MESSAGE_TYPES,
    OP_CODEC,
    PEER_MESSAGE_TYPES,
    WIRE_TYPES,
    Cluster,
    Entry,
    Ping,
    Pong,
    Push,
    SumMachine,
    make_node,
)

MAX_FRAME_BYTES = 4096
CODEC: Codec[Message] = make_wire_codec(WIRE_TYPES)


def frame(msg: Message) -> bytes:
    return encode_frame(CODEC.encode(msg))


def header(length: int, version: int = FRAME_VERSION) -> bytes:
    return struct.pack(">IB", length, version)


# name -> (bytes to send, half-close afterwards?, rejection reason)
ATTACKS: dict[str, tuple[bytes, bool, str]] = {
    "garbage": (b"\xde\xad\xbe\xef" * 64, False, "oversized"),
    "truncated": (header(100) + b"x" * 10, True, "truncated"),
    "oversized": (header(MAX_FRAME_BYTES + 1) + b"x" * 64, False, "oversized"),
    "huge_length": (b"\xff\xff\xff\xff", False, "oversized"),
    "empty_frame": (b"\x00\x00\x00\x00", False, "empty_frame"),
    "bad_version": (header(3, version=9) + b"ab", False, "bad_version"),
    "undecodable": (header(4) + b"\xc1\xc1\xc1", False, "undecodable"),
    "no_hello": (frame(Ping(1)), False, "no_hello"),
    "unknown_peer": (frame(Hello(77, "peer")), False, "unknown_peer"),
    "bad_role": (frame(Hello(2, "overlord")), False, "bad_hello"),
    "bad_after_hello": (
        frame(Hello(2, "peer")) + header(5) + b"\x92\xa4Ping",
        False,
        "undecodable",
    ),
    "hello_twice": (frame(Hello(2, "peer")) * 2, False, "bad_control"),
    "silent": (b"", False, "hello_timeout"),
}


class FakePeer:
    """Plays node 2: listens for node 1's outbound link and records what arrives."""

    def __init__(self) -> None:
        self.received: list[Message] = []
        self.server: asyncio.Server | None = None
        self.address: tuple[str, int] = ("127.0.0.1", 0)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._on_conn, "127.0.0.1", 0)
        self.address = self.server.sockets[0].getsockname()[:2]

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        try:
            while data := await reader.read(65536):
                self.received.extend(CODEC.decode(p) for p in decoder.feed(data))
        finally:
            writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()


async def read_until_closed(reader: asyncio.StreamReader, timeout_s: float) -> bytes:
    """What the node sent before closing; fails if it keeps the connection open."""
    got = b""
    async with asyncio.timeout(timeout_s):
        try:
            while chunk := await reader.read(65536):
                got += chunk
        except ConnectionResetError:
            pass
    return got


async def start_node(tmp_path: Path, peer: FakePeer) -> NodeRunner:
    config = RunnerConfig(
        node_id=1,
        data_dir=tmp_path / "node1",
        peers={1: ("127.0.0.1", 0), 2: peer.address},
        tick_ms=1000,  # quiet: no re-pushes to the fake peer
        seed=1,
        transport=TransportConfig(
            max_frame_bytes=MAX_FRAME_BYTES, hello_timeout_ms=300, backoff_initial_ms=5
        ),
    )
    runner = NodeRunner(
        config,
        make_node,
        WIRE_TYPES,
        peer_message_types=PEER_MESSAGE_TYPES,
        client_message_types=CLIENT_MESSAGE_TYPES,
        state_machine=SumMachine(),
        op_codec=OP_CODEC,
    )
    await runner.start()
    return runner


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_bad_input_closes_the_connection_and_the_node_keeps_serving(
    tmp_path: Path, attack: str, caplog: pytest.LogCaptureFixture
) -> None:
    payload, half_close, reason = ATTACKS[attack]

    async def scenario() -> None:
        peer = FakePeer()
        await peer.start()
        runner = await start_node(tmp_path, peer)
        try:
            reader, writer = await asyncio.open_connection(*runner.address)
            writer.write(payload)
            await writer.drain()
            if half_close:
                writer.write_eof()
            await read_until_closed(reader, 3.0)
            writer.close()
            await wait_until(
                lambda: runner.transport.stats.rejected.get(reason) == 1,
                what=f"rejection {reason!r}",
            )
            assert runner.metrics.sample("pnyx_connections_rejected_total", {"reason": reason}) == 1
            assert runner.failure is None and runner.health()["status"] == "ok"
            # A well-behaved peer connecting afterwards is served normally.
            _reader2, writer2 = await asyncio.open_connection(*runner.address)
            writer2.write(frame(Hello(2, "peer")) + frame(Ping(9)))
            await writer2.drain()
            await wait_until(lambda: Pong(9) in peer.received, what="pong over node 1's link")
            assert isinstance(peer.received[0], Hello) and peer.received[0].sender == 1
            writer2.close()
        finally:
            await runner.stop()
            await peer.close()

    with caplog.at_level(logging.WARNING, logger="pnyx.runtime.transport"):
        run_async(scenario())
    assert f"reason={reason}" in caplog.text


def test_client_gets_welcome_with_an_assigned_id(tmp_path: Path) -> None:
    async def scenario() -> None:
        peer = FakePeer()
        await peer.start()
        runner = await start_node(tmp_path, peer)
        try:
            reader, writer = await asyncio.open_connection(*runner.address)
            writer.write(frame(Hello(0, "client")))
            await writer.drain()
            decoder = FrameDecoder()
            frames: list[bytes] = []
            async with asyncio.timeout(3):
                while not frames:
                    frames += decoder.feed(await reader.read(4096))
            welcome = CODEC.decode(frames[0])
            assert welcome == Welcome(1000, 1)
            assert runner.transport.client_ids == [1000]
            writer.close()
            await wait_until(lambda: runner.transport.client_ids == [], what="client dropped")
        finally:
            await runner.stop()
            await peer.close()

    run_async(scenario())


def test_frame_decoder_is_incremental_and_bounded() -> None:
    decoder = FrameDecoder(max_frame_bytes=16)
    data = encode_frame(b"hello") + encode_frame(b"") + encode_frame(b"world!")
    got: list[bytes] = []
    for i in range(len(data)):  # one byte at a time
        got += decoder.feed(data[i : i + 1])
    assert got == [b"hello", b"", b"world!"]
    assert decoder.buffered_bytes == 0
    decoder.feed(header(10)[:3])
    with pytest.raises(RemoteProtocolError, match="truncated"):
        decoder.close()
    with pytest.raises(RemoteProtocolError, match="exceeds max_frame_bytes=16"):
        FrameDecoder(max_frame_bytes=16).feed(header(17))
    with pytest.raises(ValueError, match="max_frame_bytes=16"):
        encode_frame(b"x" * 16, max_frame_bytes=16)


def test_the_hello_frame_is_bounded_before_the_remote_is_known(tmp_path: Path) -> None:
    """Before its hello a connection may send a few KiB; after it, whole frames."""

    async def scenario() -> None:
        cluster = Cluster(
            tmp_path, 2, transport=TransportConfig(max_frame_bytes=1 << 20, hello_timeout_ms=3000)
        )
        try:
            runner = await cluster.start(2)  # node 1 (the primary) is played by this test
            limit = runner.transport.config.max_hello_frame_bytes
            reader, writer = await asyncio.open_connection(*runner.address)
            writer.write(header(limit + 1))  # within max_frame_bytes, beyond the hello bound
            await writer.drain()
            await read_until_closed(reader, 5.0)
            writer.close()
            assert runner.transport.stats.rejected == {"oversized": 1}
            # A hello and a big frame in one write: the big one is judged after the hello.
            entries = tuple(Entry(1000, i, i) for i in range(3000))
            push = frame(Push(1, entries, 0))
            assert limit < len(push) < 1 << 20
            _reader2, writer2 = await asyncio.open_connection(*runner.address)
            writer2.write(frame(Hello(1, "peer")) + push)
            await writer2.drain()
            await wait_until(lambda: len(cluster.node(2).log) == 3000, what="push applied")
            writer2.close()
            assert runner.transport.stats.rejected == {"oversized": 1}
        finally:
            await cluster.close()

    run_async(scenario())
