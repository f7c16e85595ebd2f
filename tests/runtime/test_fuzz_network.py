"""Network-input fuzzing: arbitrary frames of every wire message type, to a running node.

A real Raft node (in memory, its two peers unreachable) listens on loopback.  Each
example opens a connection, says hello as a peer (the right cluster id) or as a client,
or not at all, and sends a hypothesis-drawn mix of frames: every wire message type with
type-correct but arbitrary field values, raw msgpack of the wrong shape, garbage bytes,
wrong versions, oversized lengths and truncated frames.  After every example the node
must still be running, answer a real client request, and stay under a memory bound.

``PNYX_FUZZ_EXAMPLES`` raises the example count (soak runs); the default keeps the test
well under a minute on a loaded machine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import types
import typing
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pnyx.catalog import get_runnable
from pnyx.core import ClientReply, Message
from pnyx.protocols.raft import ReadRequest
from pnyx.runtime import FramedClient, NodeRunner, RunnerConfig, bind_listen_socket, encode_frame
from pnyx.runtime.transport import Hello, TransportConfig, Welcome

CLUSTER = "fuzz-cluster"
MIB = 1024 * 1024
RSS_GROWTH_BOUND_BYTES = 96 * MIB
"""The process may grow by at most this much over the run, plus ``HYPOTHESIS_BYTES_PER_EXAMPLE``
per example: hypothesis's own bookkeeping grows (measured ≈ 30 KiB per example here, with
or without any traffic to the node)."""
HYPOTHESIS_BYTES_PER_EXAMPLE = 96 * 1024
MAX_FRAME_BYTES = 256 * 1024
EXAMPLES = int(os.environ.get("PNYX_FUZZ_EXAMPLES", "300"))

SERVICE = get_runnable("raft")
WIRE_TYPES: tuple[type[Message], ...] = (
    *SERVICE.message_types,
    ClientReply,
    Hello,
    Welcome,
)


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


# -- strategies --------------------------------------------------------------------------

INTS = st.one_of(
    st.integers(-3, 300),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([0, 1, 2, 3, 1000, 2**31, 2**63 - 1, -1, -(2**63)]),
)
ANY_VALUE = st.recursive(
    st.none() | st.booleans() | INTS | st.text(max_size=20) | st.binary(max_size=64),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def value_for(tp: Any) -> st.SearchStrategy[Any]:
    """Type-correct arbitrary values for a field annotated ``tp``."""
    origin = typing.get_origin(tp)
    if tp is int:
        return INTS
    if tp is bool:
        return st.booleans()
    if tp is str:
        return st.text(max_size=24) | st.sampled_from(["peer", "client", CLUSTER, "get", ""])
    if tp is bytes:
        return st.binary(max_size=256)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return struct_of(tp)
    if origin is tuple:
        (item, *_rest) = typing.get_args(tp)
        return st.lists(value_for(item), max_size=5).map(tuple)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(value_for(arg) for arg in typing.get_args(tp)))
    if tp is type(None):
        return st.none()
    return ANY_VALUE


def struct_of(cls: type[msgspec.Struct]) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    fields = msgspec.structs.fields(cls)
    return st.tuples(*(value_for(hints[f.name]) for f in fields)).map(lambda args: cls(*args))


def encoded(msg: Any) -> bytes:
    return msgspec.msgpack.encode(msg)


def frames_of(payload: bytes) -> bytes:
    return encode_frame(payload, max_frame_bytes=1 << 30)


VALID_FRAME = st.one_of(*(struct_of(cls) for cls in WIRE_TYPES)).map(
    lambda msg: frames_of(encoded(msg))
)
WRONG_SHAPE_FRAME = st.tuples(
    st.sampled_from([cls.__name__ for cls in WIRE_TYPES] + ["Nope", ""]),
    st.lists(ANY_VALUE, max_size=8),
).map(lambda tagged: frames_of(encoded([tagged[0], *tagged[1]])))
GARBAGE_FRAME = st.binary(max_size=512).map(frames_of)
RAW_BYTES = st.binary(min_size=1, max_size=256)
BAD_VERSION_FRAME = st.tuples(
    st.integers(0, 255).filter(lambda v: v != 1), st.binary(max_size=64)
).map(lambda vp: struct.pack(">IB", len(vp[1]) + 1, vp[0]) + vp[1])
HUGE_LENGTH = st.integers(MAX_FRAME_BYTES + 1, 2**32 - 1).map(lambda n: struct.pack(">I", n))
TRUNCATED_FRAME = st.tuples(st.integers(10, 5000), st.binary(max_size=9)).map(
    lambda lp: struct.pack(">IB", lp[0], 1) + lp[1]
)
ANY_FRAME = st.one_of(
    VALID_FRAME,
    VALID_FRAME,
    VALID_FRAME,
    WRONG_SHAPE_FRAME,
    GARBAGE_FRAME,
    RAW_BYTES,
    BAD_VERSION_FRAME,
    HUGE_LENGTH,
    TRUNCATED_FRAME,
)

HELLOS = st.one_of(
    st.sampled_from([2, 3]).map(lambda n: Hello(n, "peer", CLUSTER)),
    st.sampled_from([0, 1000, 4242]).map(lambda n: Hello(n, "client")),
    st.just(None),  # no hello: the first fuzzed frame is the first frame
)


# -- the node ----------------------------------------------------------------------------


class FuzzTarget:
    """One Raft node on its own event loop; examples are run on that loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.peer_socks = [bind_listen_socket(), bind_listen_socket()]  # never accepted
        self.runner: NodeRunner | None = None
        self.request_id = 0
        self.examples = 0
        self.baseline_rss = 0

    def start(self) -> None:
        self.loop.run_until_complete(self._start())

    async def _start(self) -> None:
        peers = {
            1: ("127.0.0.1", 0),
            **{i + 2: s.getsockname()[:2] for i, s in enumerate(self.peer_socks)},
        }
        config = RunnerConfig(
            node_id=1,
            data_dir=None,
            peers=peers,
            tick_ms=10,
            seed=7,
            transport=TransportConfig(
                cluster=CLUSTER,
                max_frame_bytes=MAX_FRAME_BYTES,
                max_buffered_bytes=8 * MIB,
                hello_timeout_ms=2000,
                backoff_initial_ms=100,
                backoff_max_ms=1000,
            ),
        )
        runner = NodeRunner.for_protocol(SERVICE, config)
        await runner.start()
        self.runner = runner

    def close(self) -> None:
        if self.runner is not None:
            self.loop.run_until_complete(asyncio.wait_for(self.runner.stop(), 30.0))
        for sock in self.peer_socks:
            sock.close()
        self.loop.close()

    def run(self, coro: typing.Coroutine[Any, Any, None], timeout_s: float = 30.0) -> None:
        self.loop.run_until_complete(asyncio.wait_for(coro, timeout_s))

    async def attack(self, hello: Hello | None, frames: list[bytes], half_close: bool) -> None:
        assert self.runner is not None
        reader, writer = await asyncio.open_connection(*self.runner.address)
        try:
            data = (frames_of(encoded(hello)) if hello is not None else b"") + b"".join(frames)
            writer.write(data)
            await writer.drain()
            if half_close:
                writer.write_eof()
            # Drain what the node answers (a Welcome, replies) for a moment, or until closed.
            try:
                async with asyncio.timeout(0.05):
                    while await reader.read(65536):
                        pass
            except TimeoutError:
                pass
        except (ConnectionError, OSError):
            pass  # the node closed the connection on us: fine
        finally:
            writer.close()

    async def still_serving(self) -> None:
        runner = self.runner
        assert runner is not None
        if runner.failure is not None:
            raise AssertionError(f"the node stopped: {runner.failure!r}")
        self.request_id += 1
        client = await FramedClient.connect(runner.address, SERVICE.message_types, timeout_s=10.0)
        try:
            reply = await client.request(
                ReadRequest(self.request_id, None, "serializable"), self.request_id, 10.0
            )
        finally:
            await client.close()
        assert isinstance(reply, ClientReply), reply
        assert runner.health()["status"] == "ok"
        transport = runner.transport
        assert transport.stats.peak_buffered_bytes <= transport.config.max_buffered_bytes
        # Every connection of the example is gone, and so is every byte it made us buffer.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while any(transport.connection_counts().values()) or transport.buffered_bytes:
            if loop.time() > deadline:
                raise AssertionError(
                    f"connections left open: {transport.connection_counts()}, "
                    f"{transport.buffered_bytes} bytes buffered"
                )
            await asyncio.sleep(0.005)
        assert transport.client_ids == []


@pytest.fixture(scope="module")
def target() -> Iterator[FuzzTarget]:
    # Every rejected connection logs a warning; captured by pytest they would be most of
    # the memory growth measured below.
    pnyx_log = logging.getLogger("pnyx")
    level = pnyx_log.level
    pnyx_log.setLevel(logging.ERROR)
    fuzz = FuzzTarget()
    try:
        fuzz.start()
        fuzz.run(fuzz.still_serving())
        fuzz.baseline_rss = rss_bytes()
        yield fuzz
    finally:
        fuzz.close()
        pnyx_log.setLevel(level)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(
    hello=HELLOS,
    frames=st.lists(ANY_FRAME, min_size=1, max_size=6),
    half_close=st.booleans(),
)
def test_arbitrary_frames_never_stop_the_node(
    target: FuzzTarget, hello: Hello | None, frames: list[bytes], half_close: bool
) -> None:
    target.examples += 1
    target.run(target.attack(hello, frames, half_close))
    target.run(target.still_serving())
    growth = rss_bytes() - target.baseline_rss
    bound = RSS_GROWTH_BOUND_BYTES + target.examples * HYPOTHESIS_BYTES_PER_EXAMPLE
    assert growth < bound, f"RSS grew by {growth / MIB:.0f} MiB in {target.examples} examples"
