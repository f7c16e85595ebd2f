"""Transport: bounded queues drop the oldest frame, links redial with backoff, uvloop works."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import socket
import struct
from pathlib import Path
from typing import Any

import pytest

import pnyx.runtime.transport as transport_module
from pnyx.core import Message
from pnyx.runtime import FrameDecoder, Transport, TransportConfig, encode_frame, run_event_loop
from pnyx.runtime.transport import Hello, make_wire_codec
from tests.runtime.runtime_helpers import run_async, wait_until
from tests.runtime.runtime_toy import WIRE_TYPES, Add, Cluster, Ping, Pong

CODEC = make_wire_codec((Ping,))
TOY_CODEC = make_wire_codec(WIRE_TYPES)


def toy_frame(msg: Message) -> bytes:
    return encode_frame(TOY_CODEC.encode(msg))


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


# -- memory and connection bounds (issue 16 item 5) -------------------------------------

MIB = 1024 * 1024
JUNK = b"\xab" * (256 * 1024)


def rss_bytes() -> int:
    """This process's resident set size (VmRSS)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def flood(address: tuple[str, int], preamble: bytes, junk_bytes: int) -> bool:
    """Send ``preamble`` then ``junk_bytes`` of junk without buffering it here.

    Returns True if everything was sent (the node kept the connection open).
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, address)
        await loop.sock_sendall(sock, preamble)
        sent = 0
        while sent < junk_bytes:
            await loop.sock_sendall(sock, JUNK)
            sent += len(JUNK)
        return True
    except OSError:
        return False
    finally:
        sock.close()


def test_huge_length_prefixes_do_not_grow_the_node_memory(tmp_path: Path) -> None:
    """Issue 16 item 5: connections each announcing a 16 MiB frame and sending junk."""
    budget = 32 * MIB
    attackers_pre_hello, attackers_client = 8, 16
    junk_bytes = 10 * MIB

    async def scenario() -> None:
        config = TransportConfig(max_buffered_bytes=budget)  # max_frame_bytes: 16 MiB
        cluster = Cluster(tmp_path, 1, transport=config)
        try:
            runner = await cluster.start(1)
            address = cluster.addresses[1]
            huge = struct.pack(">IB", 16 * MIB, 1)
            client_hello = encode_frame(CODEC.encode(Hello(0, "client")))
            gc.collect()
            baseline = rss_bytes()
            peak = [baseline]

            async def sample() -> None:
                while True:
                    peak[0] = max(peak[0], rss_bytes())
                    await asyncio.sleep(0.005)

            sampler = asyncio.ensure_future(sample())
            try:
                floods = [flood(address, huge, junk_bytes) for _ in range(attackers_pre_hello)]
                floods += [
                    flood(address, client_hello + huge, junk_bytes) for _ in range(attackers_client)
                ]
                completed = await asyncio.gather(*floods)
                client = await cluster.client(1)
                try:
                    reply = await client.request(Add(1, 5), 1, 10.0)
                finally:
                    await client.close()
                peak[0] = max(peak[0], rss_bytes())
            finally:
                sampler.cancel()
                await asyncio.gather(sampler, return_exceptions=True)
            assert reply.ok and reply.result == 5, "the node keeps serving"
            stats = runner.transport.stats
            assert stats.rejected.get("oversized") == attackers_pre_hello, stats.rejected
            assert stats.rejected.get("memory_budget", 0) >= attackers_client // 2, stats.rejected
            assert completed.count(True) <= attackers_client // 2, "most floods were cut off"
            assert stats.peak_buffered_bytes <= budget
            growth_mib = (peak[0] - baseline) / MIB
            # Before the fix the node held every connection's junk (24 x 10 MiB).
            assert growth_mib < budget / MIB + 24, f"RSS grew by {growth_mib:.0f} MiB"
            assert runner.failure is None
        finally:
            await cluster.close()

    run_async(scenario(), 60.0)


async def open_idle_clients(address: tuple[str, int], count: int) -> list[asyncio.StreamWriter]:
    hello = encode_frame(CODEC.encode(Hello(0, "client")))
    writers: list[asyncio.StreamWriter] = []
    for start in range(0, count, 100):
        batch = await asyncio.gather(
            *(asyncio.open_connection(*address) for _ in range(min(100, count - start)))
        )
        for _reader, writer in batch:
            writer.write(hello)
            writers.append(writer)
    return writers


def test_a_thousand_idle_clients_do_not_lock_out_a_peer(tmp_path: Path) -> None:
    """Issue 16 item 5: 1,030 idle clients made peer dials fail with too_many_connections."""

    async def scenario() -> None:
        cluster = Cluster(tmp_path, 2, tick_ms=1000)
        writers: list[asyncio.StreamWriter] = []
        try:
            runner = await cluster.start(1)
            cap = runner.transport.config.max_client_connections
            writers = await open_idle_clients(cluster.addresses[1], cap + 6)
            await wait_until(
                lambda: runner.transport.stats.rejected.get("too_many_clients") == 6,
                timeout_s=30.0,
                what="clients beyond the cap refused",
            )
            assert runner.transport.connection_counts()["client"] == cap
            _reader, peer = await asyncio.open_connection(*cluster.addresses[1])
            peer.write(encode_frame(CODEC.encode(Hello(2, "peer"))) + toy_frame(Pong(5)))
            await wait_until(lambda: (2, 5) in cluster.node(1).pongs, what="the peer's pong")
            peer.close()
        finally:
            for writer in writers:
                writer.close()
            await cluster.close()

    run_async(scenario(), 90.0)


def test_connections_without_a_hello_are_capped_oldest_first(tmp_path: Path) -> None:
    async def scenario() -> None:
        config = TransportConfig(max_pending_connections=16, hello_timeout_ms=30_000)
        cluster = Cluster(tmp_path, 2, tick_ms=1000, transport=config)
        silent: list[asyncio.StreamWriter] = []
        try:
            runner = await cluster.start(1)
            for _ in range(40):
                _reader, writer = await asyncio.open_connection(*cluster.addresses[1])
                silent.append(writer)
            await wait_until(
                lambda: runner.transport.stats.rejected.get("too_many_pending") == 24,
                what="24 oldest silent connections closed",
            )
            assert runner.transport.connection_counts()["pending"] == 16
            _reader, peer = await asyncio.open_connection(*cluster.addresses[1])
            peer.write(encode_frame(CODEC.encode(Hello(2, "peer"))) + toy_frame(Pong(6)))
            await wait_until(lambda: (2, 6) in cluster.node(1).pongs, what="the peer's pong")
            peer.close()
        finally:
            for writer in silent:
                writer.close()
            await cluster.close()

    run_async(scenario(), 30.0)


def test_idle_clients_are_closed_and_busy_ones_kept(tmp_path: Path) -> None:
    async def scenario() -> None:
        config = TransportConfig(client_idle_timeout_s=1.0)
        cluster = Cluster(tmp_path, 1, transport=config)
        try:
            runner = await cluster.start(1)
            idle = await cluster.client(1)
            busy = await cluster.client(1)
            loop = asyncio.get_running_loop()
            started = loop.time()
            request_id = 0
            try:
                transport = runner.transport
                # the count comes when the idle connection is shed; it leaves client_ids once
                # its handler has unwound: keep the busy one busy until both are seen
                while (
                    "idle_timeout" not in transport.stats.rejected
                    or transport.client_ids != [busy.client_id]
                ):
                    if loop.time() - started > 60.0:  # generous: a loaded machine
                        raise AssertionError(
                            f"the idle client was never closed: clients {transport.client_ids}"
                        )
                    request_id += 1
                    reply = await busy.request(Add(request_id, 1), request_id, 10.0)
                    assert reply.ok
                    await asyncio.sleep(0.05)
                assert loop.time() - started >= 1.0
                assert transport.client_ids == [busy.client_id]
                with pytest.raises(ConnectionError):
                    await idle.recv(5.0)
            finally:
                await idle.close()
                await busy.close()
        finally:
            await cluster.close()

    run_async(scenario(), 120.0)


# -- cancellation and bounded close ------------------------------------------------------


async def peer_transport(deliver: Any) -> tuple[Transport, asyncio.StreamWriter]:
    """A transport whose only peer (node 2) has connected and sent one Ping."""
    transport = Transport(1, {2: ("127.0.0.1", 1)}, CODEC, deliver, **TYPES)
    address = await transport.start()
    _reader, writer = await asyncio.open_connection(*address)
    writer.write(encode_frame(CODEC.encode(Hello(2, "peer"))) + encode_frame(CODEC.encode(Ping(1))))
    await writer.drain()
    return transport, writer


def test_close_does_not_swallow_the_callers_cancellation() -> None:
    async def scenario() -> None:
        delivering = asyncio.Event()

        async def slow_cleanup_deliver(sender: int, msg: Message) -> None:
            delivering.set()
            try:
                await asyncio.Event().wait()
            finally:
                await asyncio.sleep(0.5)  # a handler that takes a while to wind down

        transport, writer = await peer_transport(slow_cleanup_deliver)
        try:
            await asyncio.wait_for(delivering.wait(), 5.0)
            closer = asyncio.ensure_future(transport.close())
            await asyncio.sleep(0.05)  # closer is now waiting for the handler
            closer.cancel()
            await asyncio.wait({closer}, timeout=5.0)
            assert closer.cancelled(), "close() swallowed its caller's cancellation"
        finally:
            writer.close()
            await transport.close()

    run_async(scenario())


def test_close_is_bounded_when_a_task_ignores_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport_module, "TASK_STOP_TIMEOUT_S", 0.5)

    async def scenario() -> None:
        delivering = asyncio.Event()
        release = asyncio.Event()

        async def stubborn_deliver(sender: int, msg: Message) -> None:
            delivering.set()
            while not release.is_set():
                with contextlib.suppress(asyncio.CancelledError):
                    await release.wait()

        transport, writer = await peer_transport(stubborn_deliver)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(delivering.wait(), 5.0)
            started = loop.time()
            await asyncio.wait_for(transport.close(), 10.0)
            assert loop.time() - started < 5.0
        finally:
            release.set()
            writer.close()

    run_async(scenario())


def test_close_stops_a_link_that_is_redialling() -> None:
    """A cancellation that arrives as a dial fails must not be lost (asyncio.wait_for on
    3.11 loses it: the link went on redialling after close())."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(30):
            config = TransportConfig(backoff_initial_ms=1, backoff_max_ms=2)
            transport = Transport(
                1, {2: ("127.0.0.1", free_port())}, CODEC, noop_deliver, config=config, **TYPES
            )
            await transport.start()
            link = transport._links[2]
            await asyncio.sleep(0.01)  # a few refused dials
            started = loop.time()
            await transport.close()
            assert link.task is not None and link.task.done(), "the link survived close()"
            assert loop.time() - started < 1.0

    run_async(scenario(), 60.0)


async def noop_deliver(sender: int, msg: Message) -> None:
    return None
