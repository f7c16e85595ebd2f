"""etcd's ``Watch`` service: one bidirectional stream per call over this node's
:class:`~pnyx.protocols.etcd.watch.WatchHub`.

The hub sees every revision this node applies (:class:`WatchStreams` advances it once per
applied batch and wakes the streams that have something to send).  Per stream, a reader
task hands each ``WatchRequest`` (create / cancel / progress) to the hub, and the handler
writes what the hub has for it, a few responses at a time.  Memory stays bounded whatever
the client does: a client that never reads blocks only its own writer (gRPC flow
control), its hub outbox is capped (``max_pending_responses``) and its watchers then fall
back to catching up from the MVCC history once it reads again; the number of open
streams is capped too (``max_watch_streams``).  A client that closes its sending side
ends the stream, as etcd does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc  # type: ignore[import-untyped]
from aetcd.rpc import rpc_pb2_grpc  # type: ignore[import-untyped]

from pnyx.protocols.etcd.requests import WatchRequest
from pnyx.protocols.etcd.watch import WatchHub
from pnyx.services.client import wait_cancelled
from pnyx.services.etcd.auth_service import watch_permitted
from pnyx.services.etcd.convert import from_proto
from pnyx.services.etcd.kv_service import respond

if TYPE_CHECKING:
    from pnyx.services.etcd.server import EtcdServer

log = logging.getLogger("pnyx.etcd.watch")

WRITE_BATCH = 32
"""Responses written per wake-up (then the writer yields to other streams).  They are
taken from the hub one at a time, as each can be written: a writer blocked by a client
that does not read holds one response, so the hub's outbox for that stream stays full and
the hub does no catch-up work for it until the client reads again."""
READER_STOP_S = 5.0


class WatchStreams:
    """The node's watch hub and its open streams (each with a wake-up event)."""

    def __init__(self, hub: WatchHub, max_streams: int) -> None:
        self.hub = hub
        self.max_streams = max_streams
        self._wakers: dict[int, asyncio.Event] = {}
        self._flush_due = False

    def __len__(self) -> int:
        return len(self._wakers)

    def open(self) -> tuple[int, asyncio.Event]:
        """A new stream of the hub and the event that wakes its writer."""
        stream_id = self.hub.open_stream()
        waker = asyncio.Event()
        self._wakers[stream_id] = waker
        return stream_id, waker

    def close(self, stream_id: int) -> None:
        """Forget a stream and its watchers."""
        self._wakers.pop(stream_id, None)
        self.hub.close_stream(stream_id)

    def applied(self) -> None:
        """After-apply hook: advance the hub once the current batch is done (not at all
        while no stream is open: a new stream's first request advances it)."""
        if not self._flush_due and self._wakers:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Hand the newly applied revisions to the hub; wake the streams with output."""
        self._flush_due = False
        self.hub.advance()
        self.wake_ready()

    def wake_ready(self) -> None:
        """Wake every stream the hub has something for."""
        for stream_id, waker in self._wakers.items():
            if self.hub.has_output(stream_id):
                waker.set()

    def progress_tick(self) -> None:
        """The progress-notify interval passed."""
        self.hub.progress_tick()
        self.wake_ready()


class WatchService(rpc_pb2_grpc.WatchServicer):  # type: ignore[misc]
    """The ``etcdserverpb.Watch`` service of one member."""

    def __init__(self, server: EtcdServer) -> None:
        self.server = server
        self.streams = server.watch_streams

    async def Watch(self, requests: AsyncIterator[Any], context: Any) -> None:
        streams = self.streams
        if len(streams) >= streams.max_streams:
            self.server.on_status("Watch", grpc.StatusCode.RESOURCE_EXHAUSTED)
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"pnyx: too many watch streams on this member (max {streams.max_streams})",
            )
        stream_id, waker = streams.open()
        reader = asyncio.ensure_future(self._read(requests, stream_id, waker, context))
        try:
            await self._write(context, stream_id, waker, reader)
        finally:
            streams.close(stream_id)
            await wait_cancelled([reader], READER_STOP_S, "watch reader")
        self.server.on_status("Watch", grpc.StatusCode.OK)

    async def _read(
        self, requests: AsyncIterator[Any], stream_id: int, waker: Any, context: Any = None
    ) -> None:
        try:
            async for message in requests:
                r = from_proto(message, WatchRequest)
                if await watch_permitted(self.server, context, stream_id, r):
                    self.streams.hub.request(stream_id, r)
                waker.set()
        finally:
            waker.set()  # the writer notices the end of the client's side

    async def _write(self, context: Any, stream_id: int, waker: Any, reader: Any) -> None:
        hub = self.streams.hub
        while True:
            await waker.wait()
            waker.clear()
            for _ in range(WRITE_BATCH):
                taken = hub.take(stream_id, 1)
                if not taken:
                    break
                await context.write(respond(self.server, taken[0]))
            if hub.has_output(stream_id):
                waker.set()
                await asyncio.sleep(0)  # let other streams write too
            elif reader.done():
                reader.result()  # a broken request stream raises here
                return


__all__ = ["WatchService", "WatchStreams"]
