"""Transport: bounded queues drop the oldest frame, links redial with backoff, uvloop works."""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path

from pnyx.core import Message
from pnyx.runtime import FrameDecoder, Transport, TransportConfig, run_event_loop
from pnyx.runtime.transport import Hello, make_wire_codec
from tests.runtime.runtime_helpers import run_async, wait_until
from tests.runtime.runtime_toy import Add, Cluster, Ping

CODEC = make_wire_codec((Ping,))
TYPES = {"peer_message_types": (Ping,), "client_message_types": (Ping,)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_full_queue_drops_oldest_and_the_link_redials_when_the_peer_appears() -> None:
    async def scenario() -> None:
        port = free_port()  # nobody listens here yet: the link keeps redialling
        inbox: list[tuple[int, Message]] = []

        async def deliver(sender: int, msg: Message) -> None:
            inbox.append((sender, msg))

        config = TransportConfig(send_queue_frames=4, backoff_initial_ms=5, backoff_max_ms=40)
        sender = Transport(
            1,
            {2: ("127.0.0.1", port)},
            CODEC,
            deliver,
            config=config,
            rng=random.Random(7),
            **TYPES,
        )
        await sender.start()
        received: list[Message] = []

        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            decoder = FrameDecoder()
            while data := await reader.read(65536):
                received.extend(CODEC.decode(p) for p in decoder.feed(data))
            writer.close()

        server = None
        try:
            kept = [sender.send(2, Ping(n)) for n in range(10)]
            assert kept == [True] * 4 + [False] * 6
            assert sender.stats.frames_dropped == 6
            assert not sender.peer_connected(2)
            await asyncio.sleep(0.05)  # a few failed dials with backoff
            server = await asyncio.start_server(on_conn, "127.0.0.1", port)
            await wait_until(lambda: len(received) == 5, what="hello + the 4 newest pings")
            assert received[0] == Hello(1, "peer")
            assert received[1:] == [Ping(6), Ping(7), Ping(8), Ping(9)]
            assert sender.peer_connected(2)
            assert sender.stats.write_batches < sender.stats.frames_sent, "frames are batched"
        finally:
            await sender.close()
            if server is not None:
                server.close()

    run_async(scenario())


def test_backoff_is_exponential_jittered_and_capped() -> None:
    async def scenario() -> None:
        async def deliver(sender: int, msg: Message) -> None:
            raise AssertionError("nothing is delivered here")

        config = TransportConfig(backoff_initial_ms=10, backoff_max_ms=100)
        transport = Transport(
            1, {2: ("127.0.0.1", 1)}, CODEC, deliver, config=config, rng=random.Random(3), **TYPES
        )
        link = transport._links[2]
        delays_ms = [link.backoff_s(attempt) * 1000 for attempt in range(8)]
        for attempt, delay in enumerate(delays_ms):
            base = min(100, 10 * 2**attempt)
            assert base / 2 <= delay <= base, (attempt, delay)
        assert len({round(d, 6) for d in delays_ms}) == len(delays_ms), "jittered"

    run_async(scenario())


def test_a_cluster_runs_on_uvloop(tmp_path: Path) -> None:
    async def scenario() -> str:
        cluster = Cluster(tmp_path, 3)
        try:
            await cluster.start_all()
            client = await cluster.client(1)
            try:
                reply = await client.request(Add(1, 5), 1, 5.0)
                assert reply.ok and reply.result == 5
            finally:
                await client.close()
            return type(asyncio.get_running_loop()).__module__
        finally:
            await cluster.close()

    loop_module = run_event_loop(asyncio.wait_for(scenario(), 20.0))
    assert loop_module.startswith("uvloop")
