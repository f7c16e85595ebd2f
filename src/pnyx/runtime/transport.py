"""Asyncio TCP transport: framed messages between nodes, and between a node and its clients.

Each node dials every peer for its outbound traffic (one TCP connection per direction)
and accepts inbound connections from peers and clients on one listening port.  The first
frame on every connection is a :class:`Hello` naming the sender.

* Outbound peer messages go through a bounded per-peer queue.  When it is full the
  *oldest* frame is dropped and :meth:`Transport.send` returns False: protocols
  retransmit, and the newest message carries the freshest state.
* Inbound messages go to the runner through an awaited callback; while the runner's
  bounded inbox is full the reader stops reading, so TCP flow control pushes back.
* Queued frames are written in batches (one ``write`` per batch, up to
  ``write_batch_bytes``).  A lost connection is redialled with jittered exponential backoff.
* A malformed, oversized or truncated frame closes that one connection with a logged
  reason (and a metrics count); it never raises out of the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from pnyx.core import CLIENT_ID_BASE, Codec, Message, is_client
from pnyx.runtime.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    FrameDecoder,
    RemoteProtocolError,
    encode_frame,
)

log = logging.getLogger("pnyx.runtime.transport")

Address = tuple[str, int]
"""A TCP endpoint ``(host, port)``."""

Deliver = Callable[[int, Message], Awaitable[None]]
"""Hands one inbound message and its sender to the runner; awaiting it is the backpressure."""


class Hello(Message, frozen=True):
    """First frame on every connection: who is talking.

    ``role`` is ``"peer"`` (``sender`` is its node id) or ``"client"`` (``sender`` is the
    client id it wants, ≥ ``CLIENT_ID_BASE``, or 0 to have one assigned).
    """

    sender: int
    role: str
    cluster: str = ""


class Welcome(Message, frozen=True):
    """Node → client, right after the client's hello: the client id it was given."""

    client_id: int
    node_id: int


WIRE_CONTROL_TYPES: tuple[type[Message], ...] = (Hello, Welcome)
"""Runtime control messages mixed into every wire codec."""


@dataclass(frozen=True)
class TransportConfig:
    """Bounds and timings of the transport (all names carry their unit)."""

    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    send_queue_frames: int = 4096
    """Per peer (and per client connection) outbound queue bound."""
    write_batch_bytes: int = 256 * 1024
    read_chunk_bytes: int = 64 * 1024
    backoff_initial_ms: int = 20
    backoff_max_ms: int = 2000
    connect_timeout_ms: int = 2000
    hello_timeout_ms: int = 5000
    max_connections: int = 1024
    """Inbound connections beyond this are closed on accept."""
    cluster: str = ""
    """Cluster name carried in hellos; a peer hello naming another cluster is refused."""


class TransportStats:
    """Counters the runner exports as metrics."""

    def __init__(self) -> None:
        self.frames_sent = 0
        self.frames_received = 0
        self.frames_dropped = 0
        self.write_batches = 0
        self.connects = 0
        self.rejected: dict[str, int] = {}

    def reject(self, reason: str) -> None:
        """Count one connection closed for ``reason``."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


def make_wire_codec(message_types: tuple[type[Any], ...]) -> Codec[Message]:
    """A codec for a protocol's messages plus the runtime's control messages."""
    types = list(dict.fromkeys((*message_types, *WIRE_CONTROL_TYPES)))
    return Codec(types)


class _OutQueue:
    """A bounded FIFO of encoded frames that drops its oldest frame when full."""

    def __init__(self, limit_frames: int) -> None:
        assert limit_frames > 0, f"queue bound {limit_frames} must be positive"
        self.limit_frames = limit_frames
        self.frames: deque[bytes] = deque()
        self.ready = asyncio.Event()

    def put(self, frame: bytes) -> bool:
        """Queue ``frame``; False when the oldest frame had to be dropped for it."""
        kept_all = True
        if len(self.frames) >= self.limit_frames:
            self.frames.popleft()
            kept_all = False
        self.frames.append(frame)
        self.ready.set()
        return kept_all

    async def take_batch(self, max_bytes: int) -> list[bytes]:
        """Wait for frames; take at least one and at most about ``max_bytes`` of them."""
        while not self.frames:
            self.ready.clear()
            await self.ready.wait()
        batch = [self.frames.popleft()]
        size = len(batch[0])
        while self.frames and size + len(self.frames[0]) <= max_bytes:
            frame = self.frames.popleft()
            batch.append(frame)
            size += len(frame)
        return batch


async def _pump(
    queue: _OutQueue, writer: asyncio.StreamWriter, cfg: TransportConfig, stats: TransportStats
) -> None:
    """Write queued frames in batches until the connection fails."""
    while True:
        batch = await queue.take_batch(cfg.write_batch_bytes)
        writer.write(b"".join(batch))
        await writer.drain()
        stats.frames_sent += len(batch)
        stats.write_batches += 1


class _PeerLink:
    """The outbound connection to one peer: dial, hello, pump; redial with backoff."""

    def __init__(self, transport: Transport, peer_id: int, address: Address) -> None:
        self.transport = transport
        self.peer_id = peer_id
        self.address = address
        self.queue = _OutQueue(transport.config.send_queue_frames)
        self.connected = False
        self.task: asyncio.Task[None] | None = None

    def backoff_s(self, attempt: int) -> float:
        cfg = self.transport.config
        base_ms = min(cfg.backoff_max_ms, cfg.backoff_initial_ms * (1 << min(attempt, 30)))
        return base_ms * (0.5 + 0.5 * self.transport.rng.random()) / 1000.0

    async def run(self) -> None:
        """Keep one connection to the peer up for as long as the transport lives."""
        attempt = 0
        while True:
            try:
                connection = await self._dial()
                if connection is not None:
                    attempt = 0
                    await self._serve(*connection)
            except asyncio.CancelledError:
                raise
            except Exception:  # a link must outlive any one connection's failure
                log.exception("peer_link_error peer=%d address=%s", self.peer_id, self.address)
            await asyncio.sleep(self.backoff_s(attempt))
            attempt += 1

    async def _dial(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        cfg = self.transport.config
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(*self.address), cfg.connect_timeout_ms / 1000.0
            )
        except (OSError, TimeoutError) as exc:
            log.debug(
                "peer_dial_failed peer=%d address=%s error=%r", self.peer_id, self.address, exc
            )
            return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = self.transport
        _set_nodelay(writer)
        hello = Hello(transport.node_id, "peer", transport.config.cluster)
        writer.write(transport.frame(hello))
        self.connected = True
        transport.stats.connects += 1
        log.info("peer_connected peer=%d address=%s", self.peer_id, self.address)
        pump = asyncio.ensure_future(_pump(self.queue, writer, transport.config, transport.stats))
        watch = asyncio.ensure_future(reader.read(1))  # peers never write here: EOF = closed
        try:
            await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.connected = False
            for task in (pump, watch):
                task.cancel()
            for task in (pump, watch):
                with contextlib.suppress(BaseException):
                    await task
            await _close_writer(writer)
        log.info("peer_disconnected peer=%d address=%s", self.peer_id, self.address)


class _ClientConn:
    """A connected client: its outbound queue and the task writing it."""

    def __init__(self, client_id: int, writer: asyncio.StreamWriter, limit_frames: int) -> None:
        self.client_id = client_id
        self.writer = writer
        self.queue = _OutQueue(limit_frames)
        self.task: asyncio.Task[None] | None = None
        self.overflowed = False


class Transport:
    """Framed TCP messaging for one node (see the module docstring for the guarantees)."""

    def __init__(
        self,
        node_id: int,
        peers: Mapping[int, Address],
        codec: Codec[Message],
        deliver: Deliver,
        *,
        config: TransportConfig | None = None,
        rng: random.Random | None = None,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        assert not is_client(node_id), f"node id {node_id} is in the client range"
        self.node_id = node_id
        self.config = config or TransportConfig()
        self.codec = codec
        self.rng = rng or random.Random(node_id)
        self.stats = TransportStats()
        self._deliver = deliver
        self._on_reject = on_reject
        self._links = {
            pid: _PeerLink(self, pid, addr) for pid, addr in peers.items() if pid != node_id
        }
        self._clients: dict[int, _ClientConn] = {}
        self._next_client_id = CLIENT_ID_BASE
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.address: Address | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(
        self, *, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None
    ) -> Address:
        """Listen (on ``sock`` when given, else on ``host:port``) and dial every peer."""
        if sock is not None:
            self._server = await asyncio.start_server(self._on_connection, sock=sock)
        else:
            self._server = await asyncio.start_server(self._on_connection, host, port)
        bound = self._server.sockets[0].getsockname()
        self.address = (str(bound[0]), int(bound[1]))
        for link in self._links.values():
            link.task = asyncio.ensure_future(link.run())
        return self.address

    async def close(self) -> None:
        """Stop listening, drop every connection and cancel every task."""
        if self._server is not None:
            self._server.close()
        tasks: list[asyncio.Task[None]] = [k.task for k in self._links.values() if k.task]
        tasks += [c.task for c in self._clients.values() if c.task]
        tasks += list(self._handlers)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for conn in list(self._clients.values()):
            await _close_writer(conn.writer)
        self._clients.clear()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    # -- sending -------------------------------------------------------------------------

    def frame(self, msg: Message) -> bytes:
        """Encode and frame one message (a local message over the bound is a ValueError)."""
        return encode_frame(self.codec.encode(msg), max_frame_bytes=self.config.max_frame_bytes)

    def send(self, to: int, msg: Message) -> bool:
        """Queue ``msg`` for node or client ``to``; False when it (or an older one) was lost.

        Unknown peers and disconnected clients lose the message: the sender's protocol
        must retransmit or the client retry.
        """
        frame = self.frame(msg)
        if is_client(to):
            return self._send_client(to, frame)
        link = self._links.get(to)
        if link is None:
            log.warning("send_to_unknown_peer to=%d msg=%s", to, type(msg).__name__)
            return False
        kept = link.queue.put(frame)
        if not kept:
            self.stats.frames_dropped += 1
        return kept

    def peer_connected(self, peer_id: int) -> bool:
        """True while the outbound connection to ``peer_id`` is up."""
        link = self._links.get(peer_id)
        return link is not None and link.connected

    @property
    def client_ids(self) -> list[int]:
        """Clients currently connected."""
        return sorted(self._clients)

    def _send_client(self, client_id: int, frame: bytes) -> bool:
        conn = self._clients.get(client_id)
        if conn is None:
            self.stats.frames_dropped += 1
            return False
        if not conn.queue.put(frame):
            # A client that does not read its replies is cut off rather than buffered.
            self.stats.frames_dropped += 1
            if not conn.overflowed:
                conn.overflowed = True
                log.warning(
                    "client_too_slow client=%d queue_frames=%d: closing",
                    client_id,
                    conn.queue.limit_frames,
                )
                if conn.task is not None:
                    conn.task.cancel()
            return False
        return True

    # -- receiving -----------------------------------------------------------------------

    def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._handle(reader, writer))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        sender: int | None = None
        try:
            if len(self._handlers) > self.config.max_connections:
                raise RemoteProtocolError(
                    "too_many_connections", f"limit max_connections={self.config.max_connections}"
                )
            _set_nodelay(writer)
            decoder = FrameDecoder(self.config.max_frame_bytes)
            pending: deque[bytes] = deque()
            hello = await asyncio.wait_for(
                self._read_hello(reader, decoder, pending), self.config.hello_timeout_ms / 1000.0
            )
            sender = self._admit(hello, writer)
            await self._read_loop(sender, reader, decoder, pending)
        except RemoteProtocolError as exc:
            self._reject(exc.reason)
            log.warning(
                "connection_rejected remote=%s sender=%s reason=%s detail=%s",
                peer,
                sender,
                exc.reason,
                exc.detail,
            )
        except TimeoutError:
            self._reject("hello_timeout")
            log.warning("connection_rejected remote=%s reason=hello_timeout", peer)
        except (ConnectionError, OSError) as exc:
            log.info("connection_lost remote=%s sender=%s error=%r", peer, sender, exc)
        except asyncio.CancelledError:
            raise
        except Exception:  # never let one connection take the node down
            self._reject("internal")
            log.exception("connection_handler_failed remote=%s sender=%s", peer, sender)
        finally:
            if sender is not None and is_client(sender):
                self._drop_client(sender, writer)
            await _close_writer(writer)

    def _reject(self, reason: str) -> None:
        self.stats.reject(reason)
        if self._on_reject is not None:
            self._on_reject(reason)

    async def _read_hello(
        self, reader: asyncio.StreamReader, decoder: FrameDecoder, pending: deque[bytes]
    ) -> Hello:
        while not pending:
            data = await reader.read(self.config.read_chunk_bytes)
            if not data:
                decoder.close()
                raise RemoteProtocolError("no_hello", "connection closed before a hello")
            pending.extend(decoder.feed(data))
        first = self._decode(pending.popleft())
        if not isinstance(first, Hello):
            raise RemoteProtocolError("no_hello", f"first frame is {type(first).__name__}")
        return first

    def _admit(self, hello: Hello, writer: asyncio.StreamWriter) -> int:
        if hello.role == "peer":
            if hello.sender not in self._links:
                raise RemoteProtocolError(
                    "unknown_peer",
                    f"hello from node {hello.sender}, peers are {sorted(self._links)}",
                )
            if hello.cluster != self.config.cluster:
                raise RemoteProtocolError(
                    "wrong_cluster",
                    f"cluster {hello.cluster!r}, this node is in {self.config.cluster!r}",
                )
            return hello.sender
        if hello.role == "client":
            client_id = self._register_client(hello.sender, writer)
            self._send_client(client_id, self.frame(Welcome(client_id, self.node_id)))
            return client_id
        raise RemoteProtocolError("bad_hello", f"unknown role {hello.role!r}")

    async def _read_loop(
        self,
        sender: int,
        reader: asyncio.StreamReader,
        decoder: FrameDecoder,
        pending: deque[bytes],
    ) -> None:
        while True:
            while pending:
                msg = self._decode(pending.popleft())
                if isinstance(msg, (Hello, Welcome)):
                    raise RemoteProtocolError("bad_control", f"{type(msg).__name__} mid-stream")
                self.stats.frames_received += 1
                await self._deliver(sender, msg)
            data = await reader.read(self.config.read_chunk_bytes)
            if not data:
                decoder.close()
                return
            pending.extend(decoder.feed(data))

    def _decode(self, payload: bytes) -> Message:
        try:
            return self.codec.decode(payload)
        except (msgspec.MsgspecError, ValueError) as exc:
            raise RemoteProtocolError("undecodable", f"{len(payload)}-byte payload: {exc}") from exc

    # -- clients -------------------------------------------------------------------------

    def _register_client(self, wanted: int, writer: asyncio.StreamWriter) -> int:
        if is_client(wanted):
            client_id = wanted
            old = self._clients.pop(client_id, None)
            if old is not None and old.task is not None:  # a reconnect replaces the old one
                old.task.cancel()
        else:
            while self._next_client_id in self._clients:
                self._next_client_id += 1
            client_id = self._next_client_id
            self._next_client_id += 1
        conn = _ClientConn(client_id, writer, self.config.send_queue_frames)
        conn.task = asyncio.ensure_future(self._client_writer(conn))
        self._clients[client_id] = conn
        return client_id

    async def _client_writer(self, conn: _ClientConn) -> None:
        try:
            await _pump(conn.queue, conn.writer, self.config, self.stats)
        except (ConnectionError, OSError):
            pass
        finally:
            conn.writer.close()

    def _drop_client(self, client_id: int, writer: asyncio.StreamWriter) -> None:
        conn = self._clients.get(client_id)
        if conn is not None and conn.writer is writer:
            del self._clients[client_id]
            if conn.task is not None:
                conn.task.cancel()


def _set_nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 1.0)
