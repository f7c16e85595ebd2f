"""Asyncio TCP transport: framed messages between nodes, and between a node and its clients.

Each node dials every peer for its outbound traffic (one TCP connection per direction)
and accepts inbound connections from peers and clients on one listening port.  The first
frame on every connection is a :class:`Hello` naming the sender.

* Outbound peer messages go through a bounded per-peer queue.  When it is full the
  *oldest* frame is dropped and :meth:`Transport.send` returns False: protocols
  retransmit, and the newest message carries the freshest state.
* Inbound messages go to the runner through an awaited callback; while the runner's
  bounded inbox is full the reader stops reading, so TCP flow control pushes back.
* A peer connection carries only the protocol's peer message types and a client
  connection only its client types; anything else closes that connection
  (``wrong_message_type``) before it reaches the node.
* Memory a remote can make the node hold is bounded: the hello frame by
  ``max_hello_frame_bytes``, later frames by ``max_frame_bytes``, and all partly
  received frames of all connections together by ``max_buffered_bytes`` (when it is
  exhausted the connection holding the most is shed, clients before peers).  Connections
  that have not said hello, peer connections and client connections have separate caps,
  so a flood of one kind cannot lock out another; idle clients are closed after
  ``client_idle_timeout_s``.
* Queued frames are written in batches (one ``write`` per batch, up to
  ``write_batch_bytes``).  A lost connection is redialled with jittered exponential backoff.
* With ``TransportConfig.tls`` the listener speaks TLS and a peer hello is accepted only
  with a certificate of the cluster CA naming that peer (see :mod:`pnyx.runtime.tls`).
* A malformed, oversized or truncated frame closes that one connection with a logged
  reason (and a metrics count); it never raises out of the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from pnyx.core import CLIENT_ID_BASE, Codec, Message, is_client
from pnyx.runtime.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_HELLO_FRAME_BYTES,
    FrameDecoder,
    RemoteProtocolError,
    encode_frame,
)
from pnyx.runtime.tls import (
    TlsConfig,
    certificate_names_node,
    node_dns_name,
    peer_ssl_context,
    server_ssl_context,
)

log = logging.getLogger("pnyx.runtime.transport")

Address = tuple[str, int]
"""A TCP endpoint ``(host, port)``."""

Deliver = Callable[[int, Message], Awaitable[None]]
"""Hands one inbound message and its sender to the runner; awaiting it is the backpressure."""

TASK_STOP_TIMEOUT_S = 5.0
"""How long closing waits for cancelled tasks before giving up on them (logged)."""


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

PEER_ROLE = "peer"
CLIENT_ROLE = "client"
_PENDING_ROLE = "pending"
"""Role of an inbound connection that has not been admitted by its hello yet."""


@dataclass(frozen=True)
class TransportConfig:
    """Bounds and timings of the transport (all names carry their unit)."""

    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    """Bound on one frame after the hello (both directions)."""
    max_hello_frame_bytes: int = DEFAULT_MAX_HELLO_FRAME_BYTES
    """Bound on the first frame of an inbound connection, read before the remote is known."""
    max_buffered_bytes: int = 64 * 1024 * 1024
    """Node-wide bound on bytes of partly received (and not yet delivered) inbound frames."""
    send_queue_frames: int = 4096
    """Per peer (and per client connection) outbound queue bound."""
    write_batch_bytes: int = 256 * 1024
    read_chunk_bytes: int = 64 * 1024
    """Bytes read from a socket at once; also the stream buffer limit of each connection."""
    backoff_initial_ms: int = 20
    backoff_max_ms: int = 2000
    connect_timeout_ms: int = 2000
    hello_timeout_ms: int = 5000
    """An inbound connection must complete TLS (if on) and its hello within this."""
    max_pending_connections: int = 256
    """Inbound connections still before their hello; beyond it the oldest is closed."""
    max_peer_connections: int = 64
    """Inbound peer connections; a new one beyond it is refused (``too_many_peers``)."""
    max_client_connections: int = 1024
    """Client connections; a new one beyond it is refused (``too_many_clients``)."""
    client_idle_timeout_s: float = 300.0
    """A client connection that sends nothing for this long is closed (``idle_timeout``)."""
    cluster: str = ""
    """Cluster id carried in hellos; a peer hello naming another cluster is refused."""
    tls: TlsConfig | None = None
    """Speak TLS on the listener and to peers, and authenticate peers by certificate."""

    def __post_init__(self) -> None:
        if self.max_hello_frame_bytes < 64:
            raise ValueError(f"max_hello_frame_bytes={self.max_hello_frame_bytes} is below 64")
        if self.max_frame_bytes < self.max_hello_frame_bytes:
            raise ValueError(
                f"max_frame_bytes={self.max_frame_bytes} is below "
                f"max_hello_frame_bytes={self.max_hello_frame_bytes}"
            )
        if self.max_buffered_bytes < self.max_frame_bytes + self.read_chunk_bytes:
            raise ValueError(
                f"max_buffered_bytes={self.max_buffered_bytes} must hold one whole frame and a "
                f"read (max_frame_bytes + read_chunk_bytes = "
                f"{self.max_frame_bytes + self.read_chunk_bytes})"
            )
        for name in (
            "send_queue_frames",
            "max_pending_connections",
            "max_peer_connections",
            "max_client_connections",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.client_idle_timeout_s <= 0:
            raise ValueError(f"client_idle_timeout_s={self.client_idle_timeout_s} must be > 0")


class TransportStats:
    """Counters the runner exports as metrics."""

    def __init__(self) -> None:
        self.frames_sent = 0
        self.frames_received = 0
        self.frames_dropped = 0
        self.write_batches = 0
        self.connects = 0
        self.rejected: dict[str, int] = {}
        self.peak_buffered_bytes = 0

    def reject(self, reason: str) -> None:
        """Count one connection closed for ``reason``."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


def make_wire_codec(message_types: tuple[type[Any], ...]) -> Codec[Message]:
    """A codec for a protocol's messages plus the runtime's control messages."""
    types = list(dict.fromkeys((*message_types, *WIRE_CONTROL_TYPES)))
    return Codec(types)


async def cancel_and_wait(tasks: Collection[asyncio.Future[Any]], timeout_s: float) -> None:
    """Cancel ``tasks`` and wait (at most ``timeout_s``) until they finished.

    Only the tasks' own outcomes (their CancelledError included) are swallowed: if the
    task calling this is itself cancelled, the CancelledError propagates.
    """
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.debug("task_failed_on_close error=%r", task.exception())
    if pending:
        log.warning("tasks_not_stopped count=%d timeout_s=%.1f", len(pending), timeout_s)


class _OutQueue:
    """A bounded FIFO of encoded frames that drops its oldest frame when full."""

    def __init__(self, limit_frames: int) -> None:
        if limit_frames <= 0:
            raise ValueError(f"queue bound {limit_frames} must be positive")
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
        ctx = self.transport.peer_ssl
        timeout_s = cfg.connect_timeout_ms / 1000.0
        try:
            if ctx is None:
                connecting = asyncio.open_connection(*self.address)
            else:
                connecting = asyncio.open_connection(
                    *self.address,
                    ssl=ctx,
                    server_hostname=node_dns_name(self.peer_id),
                    ssl_handshake_timeout=timeout_s,
                )
            # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancellation that
            # arrives as the dial fails, and the link would keep redialling after close().
            async with asyncio.timeout(timeout_s):
                return await connecting
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            log.debug(
                "peer_dial_failed peer=%d address=%s error=%r", self.peer_id, self.address, exc
            )
            return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = self.transport
        _set_nodelay(writer)
        hello = Hello(transport.node_id, PEER_ROLE, transport.config.cluster)
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
            await cancel_and_wait((pump, watch), TASK_STOP_TIMEOUT_S)
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


class _Inbound:
    """One accepted connection: its role, its decoder and the budget bytes it holds."""

    def __init__(self, writer: asyncio.StreamWriter, max_hello_frame_bytes: int, now: float):
        self.writer = writer
        self.remote = writer.get_extra_info("peername")
        self.role = _PENDING_ROLE
        self.sender: int | None = None
        self.decoder = FrameDecoder(max_hello_frame_bytes)
        self.pending: deque[bytes] = deque()
        """Payloads received whole but not yet delivered."""
        self.pending_bytes = 0
        self.charged_bytes = 0
        """Bytes of the node-wide buffer budget this connection holds."""
        self.last_active = now
        self.task: asyncio.Task[None] | None = None
        self.closed_reason: str | None = None
        """Set when the transport closed this connection (it was logged and counted)."""

    def held_bytes(self) -> int:
        return self.decoder.buffered_bytes + self.pending_bytes

    def pop_pending(self) -> None:
        self.pending_bytes -= len(self.pending.popleft())


class Transport:
    """Framed TCP messaging for one node (see the module docstring for the guarantees).

    ``peer_message_types`` and ``client_message_types`` are the messages accepted on peer
    and on client connections; both must be in ``codec``.
    """

    def __init__(
        self,
        node_id: int,
        peers: Mapping[int, Address],
        codec: Codec[Message],
        deliver: Deliver,
        *,
        peer_message_types: Iterable[type[Message]],
        client_message_types: Iterable[type[Message]],
        config: TransportConfig | None = None,
        rng: random.Random | None = None,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        if is_client(node_id):
            raise ValueError(f"node id {node_id} is in the client range (≥ {CLIENT_ID_BASE})")
        self.node_id = node_id
        self.config = config or TransportConfig()
        self.codec = codec
        self.peer_types = frozenset(peer_message_types)
        self.client_types = frozenset(client_message_types)
        _check_types_in_codec(codec, self.peer_types | self.client_types)
        self.rng = rng or random.Random(node_id)
        self.stats = TransportStats()
        self._deliver = deliver
        self._on_reject = on_reject
        tls = self.config.tls
        self.server_ssl: ssl.SSLContext | None = server_ssl_context(tls) if tls else None
        self.peer_ssl: ssl.SSLContext | None = peer_ssl_context(tls) if tls else None
        self._links = {
            pid: _PeerLink(self, pid, addr) for pid, addr in peers.items() if pid != node_id
        }
        self._clients: dict[int, _ClientConn] = {}
        self._next_client_id = CLIENT_ID_BASE
        self._server: asyncio.Server | None = None
        self._inbound: dict[_Inbound, None] = {}
        """Every accepted connection, oldest first."""
        self._role_counts = {_PENDING_ROLE: 0, PEER_ROLE: 0, CLIENT_ROLE: 0}
        self._buffered_bytes = 0
        self._sweeper: asyncio.Task[None] | None = None
        self.address: Address | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(
        self, *, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None
    ) -> Address:
        """Listen (on ``sock`` when given, else on ``host:port``) and dial every peer."""
        limit = self.config.read_chunk_bytes
        if sock is not None:
            self._server = await asyncio.start_server(self._on_connection, sock=sock, limit=limit)
        else:
            self._server = await asyncio.start_server(self._on_connection, host, port, limit=limit)
        bound = self._server.sockets[0].getsockname()
        self.address = (str(bound[0]), int(bound[1]))
        for link in self._links.values():
            link.task = asyncio.ensure_future(link.run())
        self._sweeper = asyncio.ensure_future(self._sweep_idle_clients())
        return self.address

    async def close(self) -> None:
        """Stop listening, drop every connection and cancel every task (bounded)."""
        if self._server is not None:
            self._server.close()
        tasks: list[asyncio.Task[None]] = [k.task for k in self._links.values() if k.task]
        tasks += [c.task for c in self._clients.values() if c.task]
        tasks += [conn.task for conn in self._inbound if conn.task]
        if self._sweeper is not None:
            tasks.append(self._sweeper)
        await cancel_and_wait(tasks, TASK_STOP_TIMEOUT_S)
        for conn in list(self._clients.values()):
            await _close_writer(conn.writer)
        self._clients.clear()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()
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

    @property
    def buffered_bytes(self) -> int:
        """Bytes of inbound frames currently held (bounded by ``max_buffered_bytes``)."""
        return self._buffered_bytes

    def connection_counts(self) -> dict[str, int]:
        """Inbound connections by role: ``pending`` (before the hello), ``peer``, ``client``."""
        return dict(self._role_counts)

    def close_sender(self, sender: int, reason: str, detail: str) -> int:
        """Close every inbound connection of peer or client ``sender`` (a remote's mistake).

        Logged as ``connection_rejected`` and counted under ``reason``; returns how many
        connections were closed.
        """
        victims = [c for c in self._inbound if c.sender == sender and c.closed_reason is None]
        self._reject(reason)
        log.warning(
            "connection_rejected sender=%d reason=%s connections=%d detail=%s",
            sender,
            reason,
            len(victims),
            detail,
        )
        for conn in victims:
            self._close_conn(conn, reason)
        return len(victims)

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

    # -- accepting -----------------------------------------------------------------------

    def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.server_ssl is not None:
            # Called from connection_made: nothing was read yet.  Keep it so until
            # start_tls took over the socket, or the TLS ClientHello would land in `reader`.
            _pause_reading(writer)
        loop = asyncio.get_running_loop()
        conn = _Inbound(writer, self.config.max_hello_frame_bytes, loop.time())
        self._inbound[conn] = None
        self._role_counts[_PENDING_ROLE] += 1
        conn.task = asyncio.ensure_future(self._handle(conn, reader))
        if self._role_counts[_PENDING_ROLE] > self.config.max_pending_connections:
            oldest = next(c for c in self._inbound if c.role == _PENDING_ROLE)
            self._shed(
                oldest,
                "too_many_pending",
                f"more than max_pending_connections={self.config.max_pending_connections} "
                "connections without a hello: closed the oldest",
            )

    async def _handle(self, conn: _Inbound, reader: asyncio.StreamReader) -> None:
        try:
            await self._run_connection(conn, reader)
        except RemoteProtocolError as exc:
            self._log_reject(conn, exc.reason, exc.detail)
        except (ConnectionError, OSError) as exc:  # ssl.SSLError included
            if conn.role == _PENDING_ROLE and self.server_ssl is not None:
                self._log_reject(conn, "tls_handshake_failed", repr(exc))
            else:
                log.info(
                    "connection_lost remote=%s sender=%s error=%r", conn.remote, conn.sender, exc
                )
        except asyncio.CancelledError:
            raise
        except Exception:  # never let one connection take the node down
            self._reject("internal")
            log.exception("connection_handler_failed remote=%s sender=%s", conn.remote, conn.sender)
        finally:
            self._forget(conn)
            conn.decoder.clear()
            conn.pending.clear()
            conn.pending_bytes = 0
            conn.task = None  # no conn -> task -> traceback -> conn cycle keeps buffers alive
            conn.writer.close()

    async def _run_connection(self, conn: _Inbound, reader: asyncio.StreamReader) -> None:
        hello_timeout_s = self.config.hello_timeout_ms / 1000.0
        try:
            async with asyncio.timeout(hello_timeout_s):
                if self.server_ssl is not None:
                    await conn.writer.start_tls(self.server_ssl)
                _set_nodelay(conn.writer)
                hello = await self._read_hello(conn, reader)
        except TimeoutError:
            raise RemoteProtocolError(
                "hello_timeout", f"no hello within hello_timeout_ms={self.config.hello_timeout_ms}"
            ) from None
        self._admit(conn, hello)
        await self._read_loop(conn, reader)

    def _forget(self, conn: _Inbound) -> None:
        if conn not in self._inbound:
            return
        del self._inbound[conn]
        self._role_counts[conn.role] -= 1
        self._settle(conn, 0)
        if conn.role == CLIENT_ROLE and conn.sender is not None:
            self._drop_client(conn.sender, conn.writer)

    def _shed(self, conn: _Inbound, reason: str, detail: str) -> None:
        """Close ``conn`` from outside its handler: log, count, release its budget, cancel."""
        if conn.closed_reason is not None:
            return
        self._log_reject(conn, reason, detail)
        self._close_conn(conn, reason)

    def _close_conn(self, conn: _Inbound, reason: str) -> None:
        conn.closed_reason = reason
        self._settle(conn, 0)
        # Free the buffered bytes now: the handler only has to notice its cancellation.
        conn.decoder.clear()
        conn.pending.clear()
        conn.pending_bytes = 0
        if conn.task is not None:
            conn.task.cancel()

    def _log_reject(self, conn: _Inbound, reason: str, detail: str) -> None:
        self._reject(reason)
        log.warning(
            "connection_rejected remote=%s sender=%s reason=%s detail=%s",
            conn.remote,
            conn.sender,
            reason,
            detail,
        )

    def _reject(self, reason: str) -> None:
        self.stats.reject(reason)
        if self._on_reject is not None:
            self._on_reject(reason)

    async def _read_hello(self, conn: _Inbound, reader: asyncio.StreamReader) -> Hello:
        while not conn.pending:
            data = await reader.read(self.config.read_chunk_bytes)
            if not data:
                conn.decoder.close()
                raise RemoteProtocolError("no_hello", "connection closed before a hello")
            self._receive(conn, data, max_frames=1)
        first = self._decode(conn.pending[0])
        conn.pop_pending()
        self._settle(conn, conn.held_bytes())
        if not isinstance(first, Hello):
            raise RemoteProtocolError("no_hello", f"first frame is {type(first).__name__}")
        return first

    def _admit(self, conn: _Inbound, hello: Hello) -> None:
        if hello.role == PEER_ROLE:
            self._admit_peer(conn, hello)
        elif hello.role == CLIENT_ROLE:
            self._admit_client(conn, hello)
        else:
            raise RemoteProtocolError("bad_hello", f"unknown role {hello.role!r}")
        conn.decoder.max_frame_bytes = self.config.max_frame_bytes

    def _admit_peer(self, conn: _Inbound, hello: Hello) -> None:
        if hello.sender not in self._links:
            raise RemoteProtocolError(
                "unknown_peer", f"hello from node {hello.sender}, peers are {sorted(self._links)}"
            )
        if hello.cluster != self.config.cluster:
            raise RemoteProtocolError(
                "wrong_cluster",
                f"cluster {hello.cluster!r}, this node is in {self.config.cluster!r}",
            )
        if self.server_ssl is not None and not certificate_names_node(
            conn.writer.get_extra_info("peercert"), hello.sender
        ):
            raise RemoteProtocolError(
                "peer_not_authenticated",
                f"hello from node {hello.sender} without a cluster certificate naming "
                f"{node_dns_name(hello.sender)}",
            )
        self._replace(PEER_ROLE, hello.sender)
        if self._open_count(PEER_ROLE) >= self.config.max_peer_connections:
            raise RemoteProtocolError(
                "too_many_peers", f"limit max_peer_connections={self.config.max_peer_connections}"
            )
        self._set_role(conn, PEER_ROLE, hello.sender)

    def _admit_client(self, conn: _Inbound, hello: Hello) -> None:
        if is_client(hello.sender):
            self._replace(CLIENT_ROLE, hello.sender)
        if self._open_count(CLIENT_ROLE) >= self.config.max_client_connections:
            raise RemoteProtocolError(
                "too_many_clients",
                f"limit max_client_connections={self.config.max_client_connections}",
            )
        client_id = self._register_client(hello.sender, conn.writer)
        self._set_role(conn, CLIENT_ROLE, client_id)
        self._send_client(client_id, self.frame(Welcome(client_id, self.node_id)))

    def _replace(self, role: str, sender: int) -> None:
        """A new hello from ``sender`` replaces its older connections (a reconnect)."""
        for old in [c for c in self._inbound if c.role == role and c.sender == sender]:
            if old.closed_reason is None:
                log.info("connection_replaced %s=%d remote=%s", role, sender, old.remote)
                self._close_conn(old, "replaced")

    def _open_count(self, role: str) -> int:
        """Connections of ``role`` not being closed (replaced ones are on their way out)."""
        return sum(1 for c in self._inbound if c.role == role and c.closed_reason is None)

    def _set_role(self, conn: _Inbound, role: str, sender: int) -> None:
        self._role_counts[conn.role] -= 1
        self._role_counts[role] += 1
        conn.role = role
        conn.sender = sender

    # -- receiving -----------------------------------------------------------------------

    async def _read_loop(self, conn: _Inbound, reader: asyncio.StreamReader) -> None:
        assert conn.sender is not None
        sender = conn.sender
        allowed = self.peer_types if conn.role == PEER_ROLE else self.client_types
        self._receive(conn, b"")  # frames that arrived with the hello, now under the full limit
        loop = asyncio.get_running_loop()
        decode = self.codec.decode
        deliver = self._deliver
        stats = self.stats
        pending = conn.pending
        while True:
            while pending:  # its bytes stay charged until the whole batch is delivered
                payload = pending.popleft()
                try:
                    msg = decode(payload)
                except (msgspec.MsgspecError, ValueError) as exc:
                    detail = f"{len(payload)}-byte payload: {exc}"
                    raise RemoteProtocolError("undecodable", detail) from exc
                if type(msg) not in allowed:
                    raise self._not_allowed(conn, msg)
                stats.frames_received += 1
                await deliver(sender, msg)
            conn.pending_bytes = 0
            self._settle(conn, conn.decoder.buffered_bytes)
            data = await reader.read(self.config.read_chunk_bytes)
            if not data:
                conn.decoder.close()
                return
            conn.last_active = loop.time()
            self._receive(conn, data)

    @staticmethod
    def _not_allowed(conn: _Inbound, msg: Message) -> RemoteProtocolError:
        if isinstance(msg, (Hello, Welcome)):
            return RemoteProtocolError("bad_control", f"{type(msg).__name__} mid-stream")
        return RemoteProtocolError(
            "wrong_message_type", f"{type(msg).__name__} on a {conn.role} connection"
        )

    def _receive(self, conn: _Inbound, data: bytes, max_frames: int | None = None) -> None:
        """Feed ``data`` to the connection's decoder within the node-wide buffer budget."""
        self._reserve(conn, len(data))
        payloads = conn.decoder.feed(data, max_frames=max_frames)
        conn.pending.extend(payloads)
        conn.pending_bytes += sum(map(len, payloads))
        self._settle(conn, conn.held_bytes())

    def _reserve(self, conn: _Inbound, extra_bytes: int) -> None:
        """Make room for ``extra_bytes`` more held by ``conn``, shedding the biggest holders.

        Clients and connections before their hello are shed before peers, the connection
        holding the most bytes first.  When ``conn`` itself is that one it is refused.
        """
        limit = self.config.max_buffered_bytes
        while self._buffered_bytes + extra_bytes > limit:
            holders = [
                c
                for c in self._inbound
                if c.closed_reason is None and (c.charged_bytes > 0 or c is conn)
            ]
            victim = max(
                holders,
                key=lambda c: (
                    c.role != PEER_ROLE,
                    c.charged_bytes + (extra_bytes if c is conn else 0),
                ),
            )
            detail = (
                f"node-wide max_buffered_bytes={limit} exhausted; this connection held "
                f"{victim.charged_bytes} bytes"
            )
            if victim is conn:
                raise RemoteProtocolError("memory_budget", detail)
            self._shed(victim, "memory_budget", detail)

    def _settle(self, conn: _Inbound, held_bytes: int) -> None:
        """Record that ``conn`` now holds ``held_bytes`` of the budget."""
        if conn.closed_reason is not None:
            held_bytes = 0
        self._buffered_bytes += held_bytes - conn.charged_bytes
        conn.charged_bytes = held_bytes
        self.stats.peak_buffered_bytes = max(self.stats.peak_buffered_bytes, self._buffered_bytes)

    def _decode(self, payload: bytes) -> Message:
        try:
            msg = self.codec.decode(payload)
        except (msgspec.MsgspecError, ValueError) as exc:
            raise RemoteProtocolError("undecodable", f"{len(payload)}-byte payload: {exc}") from exc
        return msg

    async def _sweep_idle_clients(self) -> None:
        """Close client connections that sent nothing for ``client_idle_timeout_s``."""
        idle_s = self.config.client_idle_timeout_s
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, idle_s / 4))
            now = loop.time()
            for conn in list(self._inbound):
                if conn.role == CLIENT_ROLE and now - conn.last_active > idle_s:
                    self._shed(conn, "idle_timeout", f"nothing received for {idle_s:g} s")

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


def _check_types_in_codec(codec: Codec[Message], types: Iterable[type[Message]]) -> None:
    known = set(codec.types)
    missing = sorted(t.__name__ for t in types if t not in known)
    if missing:
        raise ValueError(f"message types {missing} are accepted but not in the wire codec")


def _pause_reading(writer: asyncio.StreamWriter) -> None:
    """Stop reading the socket (uvloop's transports are not ``asyncio.ReadTransport``s)."""
    transport: Any = writer.transport
    transport.pause_reading()


def _set_nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    """Close ``writer`` and wait (at most 1 s) for it; the caller's cancellation propagates."""
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
