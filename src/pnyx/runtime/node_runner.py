"""Drive one sans-IO node for real: WAL recovery, TCP transport, a tick timer, the Ready loop.

One driver coroutine owns the node.  Each round it steps every queued inbound message
(bounded), delivers due ticks, then carries out ``ready()`` batches in contract order:

1. ``persist`` → WAL append + **one** fdatasync for the whole batch (group commit), run in
   a dedicated WAL thread so sockets keep being read meanwhile (and messages arriving
   during the fsync join the next batch);
2. ``send`` → transport (peers) or client connections (ids ≥ ``CLIENT_ID_BASE``);
3. ``apply`` → state machine; an ``Apply`` with ``reply_to`` gets a ``ClientReply``;
   ``Restore`` → ``state_machine.restore``;
4. ``record`` → stamped with wall-clock ns and kept in a bounded history;
5. ``services`` → the optional ``on_service`` hook;

then ``advance``.  Nothing from a batch is sent before its persist ops are durable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from pnyx.core import (
    Apply,
    ClientReply,
    Codec,
    HistoryEvent,
    InvalidMessage,
    Message,
    Node,
    NodeFactory,
    Ready,
    Record,
    Restore,
    StateMachine,
    is_client,
)
from pnyx.runtime.datadir import (
    STAMP_FILE,
    DataDirStamp,
    LockHandle,
    claim_data_dir,
    lock_data_dir,
    record_wal_created,
)
from pnyx.runtime.faultclock import FaultClock
from pnyx.runtime.metrics import MetricsServer, NodeMetrics
from pnyx.runtime.ticks import DueTicks
from pnyx.runtime.transport import (
    TASK_STOP_TIMEOUT_S,
    Address,
    Transport,
    TransportConfig,
    cancel_and_wait,
    make_wire_codec,
)
from pnyx.runtime.wal import MemoryLog, OpCodec, PersistCodec, WalConfig, WriteAheadLog
from pnyx.sim.spec import ProtocolDef

log = logging.getLogger("pnyx.runtime.runner")

WAL_CLOSE_TIMEOUT_S = 10.0
"""How long ``stop()`` waits for the WAL thread to finish closing the log."""

T = TypeVar("T")

DATA_DIR_STAMP = STAMP_FILE
"""File in a node's data directory naming the node it belongs to (see ``datadir``)."""


@dataclass(frozen=True)
class RunnerConfig:
    """How to run one node.  ``peers`` maps every group member's id to its address.

    The node's own entry (if present) is ignored for dialling; the group handed to the node
    factory is ``sorted(peers | {node_id})``.
    """

    node_id: int
    data_dir: Path | None
    """Where the WAL lives; None runs the node in memory (nothing durable, see ``MemoryLog``)."""
    peers: Mapping[int, Address] = field(default_factory=dict)
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    tick_ms: int = 10
    """Wall-clock milliseconds per logical tick."""
    seed: int | None = None
    """Seed of the node's RNG and of reconnect jitter; None draws one from the OS."""
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    """Port of the ``/metrics`` + ``/health`` HTTP server; None disables it, 0 picks one."""
    inbox_messages: int = 4096
    """Bound of the inbound message queue; readers wait (TCP backpressure) when it is full."""
    max_step_batch: int = 1024
    """Messages stepped before the node's ``ready()`` is drained."""
    max_ticks_per_round: int = 16
    """Ticks delivered at once after a stall (the rest are dropped, like a paused clock)."""
    history_events: int = 10_000
    """Bound of the in-memory history of ``Record`` events."""
    transport: TransportConfig = field(default_factory=TransportConfig)
    wal: WalConfig = field(default_factory=WalConfig)
    fault_clock: Path | None = None
    """Fault testing only: take the node's time from this clock file (``faultclock``)
    instead of the event loop's monotonic clock."""


class NodeFailed(RuntimeError):
    """The runner stopped because carrying out a batch failed (WAL error, node bug)."""


class NodeRunner:
    """Runs one node; see the module docstring for the loop.

    Example::

        runner = NodeRunner(config, make_node, WIRE_TYPES,
                            peer_message_types=PEER_MESSAGE_TYPES,
                            client_message_types=CLIENT_MESSAGE_TYPES,
                            state_machine=sm, op_codec=PersistCodec(entry_type=Delivery))
        await runner.start()        # recovers the WAL, listens, dials peers
        ...
        await runner.stop()

    ``peer_message_types`` are the messages accepted from peers and
    ``client_message_types`` those accepted from clients; the transport closes a
    connection that sends anything else, before it reaches ``step``.  A node that raises
    ``pnyx.core.InvalidMessage`` from ``step`` for a remote's message gets that sender's
    connection closed and keeps running; any other exception from the node stops it.
    """

    @classmethod
    def for_protocol(
        cls,
        definition: ProtocolDef,
        config: RunnerConfig,
        *,
        state_machine: StateMachine | None = None,
        make_node: NodeFactory | None = None,
        **options: Any,
    ) -> NodeRunner:
        """A runner of the protocol ``definition`` (see :mod:`pnyx.catalog`): its message
        types by role, a WAL codec for its entry and record types, a fresh state machine (or
        ``state_machine``), its runtime node factory (or ``make_node``), and its ``serve``
        hook for ``Ready.services`` requests.  ``options`` go to ``NodeRunner`` (e.g.
        ``listen_sock``).  ValueError for a simulator-only definition."""
        runtime = definition.runtime
        if runtime is None or not definition.runnable:
            raise ValueError(f"protocol {definition.name!r} does not run as real processes")
        sm = state_machine
        make_sm = runtime.make_state_machine or definition.make_state_machine
        if sm is None and make_sm is not None:
            sm = make_sm()
        serve = runtime.serve or definition.serve
        runner: NodeRunner

        def on_service(request: object) -> None:
            if serve is None:
                raise RuntimeError(f"{definition.name} asked for service {request!r}")
            serve(runner.node, sm, request)

        runner = cls(
            config,
            make_node or runtime.make_node or definition.make_node,
            runtime.message_types,
            peer_message_types=runtime.peer_message_types,
            client_message_types=runtime.client_message_types,
            state_machine=sm,
            op_codec=PersistCodec(runtime.entry_type, runtime.record_types),
            on_service=on_service,
            **options,
        )
        return runner

    def __init__(
        self,
        config: RunnerConfig,
        make_node: NodeFactory,
        message_types: Iterable[type[Any]] | Codec[Any],
        *,
        peer_message_types: Iterable[type[Message]],
        client_message_types: Iterable[type[Message]],
        state_machine: StateMachine | None = None,
        op_codec: OpCodec | None = None,
        listen_sock: socket.socket | None = None,
        metrics_hook: Callable[[Node, NodeMetrics], None] | None = None,
        on_record: Callable[[Any], None] | None = None,
        on_service: Callable[[Any], None] | None = None,
    ) -> None:
        assert not is_client(config.node_id), f"node id {config.node_id} is a client id"
        assert config.tick_ms > 0, f"tick_ms={config.tick_ms} must be positive"
        self.config = config
        self.state_machine = state_machine
        self._make_node = make_node
        types = message_types.types if isinstance(message_types, Codec) else message_types
        self.peer_message_types = tuple(peer_message_types)
        self.client_message_types = tuple(client_message_types)
        self.codec = make_wire_codec(
            (*tuple(types), *self.peer_message_types, *self.client_message_types, ClientReply)
        )
        self._op_codec = op_codec
        self._listen_sock = listen_sock
        self._metrics_hook = metrics_hook
        self._on_record = on_record
        self._on_service = on_service
        self.seed = config.seed if config.seed is not None else int.from_bytes(os.urandom(8))
        self.metrics = NodeMetrics(config.node_id)
        self.history: deque[Any] = deque(maxlen=config.history_events)
        self.last_applied = 0
        self.failure: BaseException | None = None
        self._node: Node | None = None
        self._wal: WriteAheadLog | MemoryLog | None = None
        self._data_lock: LockHandle | None = None
        self._transport: Transport | None = None
        self._metrics_server: MetricsServer | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._inbox: asyncio.Queue[tuple[int, Message]] | None = None
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._due = DueTicks(config.node_id, config.tick_ms, config.max_ticks_per_round, log)
        self.fault_clock: FaultClock | None = None
        """The fault clock the node's time comes from (``RunnerConfig.fault_clock``)."""
        self._now: Callable[[], float] = time.monotonic
        """The node's clock in seconds: the loop's (after start) or the fault clock."""
        self._stopping = False
        self._stopped: asyncio.Event | None = None
        self._stop_task: asyncio.Future[None] | None = None

    # -- accessors -----------------------------------------------------------------------

    @property
    def node(self) -> Node:
        """The node being driven (after :meth:`start`)."""
        assert self._node is not None, "runner not started"
        return self._node

    @property
    def wal(self) -> WriteAheadLog | MemoryLog:
        """The node's write-ahead log, or its ``MemoryLog`` when in memory (after :meth:`start`)."""
        assert self._wal is not None, "runner not started"
        return self._wal

    @property
    def transport(self) -> Transport:
        """The node's transport (after :meth:`start`)."""
        assert self._transport is not None, "runner not started"
        return self._transport

    @property
    def address(self) -> Address:
        """Where the node listens for peers and clients."""
        address = self.transport.address
        assert address is not None
        return address

    @property
    def metrics_address(self) -> Address | None:
        """Where ``/metrics`` and ``/health`` are served, if enabled."""
        return self._metrics_server.address if self._metrics_server else None

    @property
    def group(self) -> tuple[int, ...]:
        """Every node id of the group, this one included."""
        return tuple(sorted({*self.config.peers, self.config.node_id}))

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Recover durable state, build the node, start listening, dialling and ticking.

        On failure everything started so far is stopped again before the error propagates.
        """
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._inbox = asyncio.Queue(maxsize=cfg.inbox_messages)
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"pnyx-wal-{cfg.node_id}")
        self._now = loop.time
        if cfg.fault_clock is not None:
            self.fault_clock = FaultClock(cfg.fault_clock)
            self._now = self.fault_clock.now
        if cfg.data_dir is None:
            self._wal = MemoryLog()
        else:
            self._data_lock = lock_data_dir(cfg.data_dir)
            stamp = DataDirStamp(cfg.node_id, self.group, cfg.transport.cluster)
            had_wal = claim_data_dir(cfg.data_dir, stamp)
            self._wal = await loop.run_in_executor(self._executor, self._open_wal, had_wal)
            record_wal_created(cfg.data_dir, stamp)
        durable = self._wal.recovered()
        rng = random.Random(self.seed)
        self._node = self._make_node(cfg.node_id, self.group, rng, durable)
        self._transport = Transport(
            cfg.node_id,
            cfg.peers,
            self.codec,
            self._deliver,
            peer_message_types=self.peer_message_types,
            client_message_types=self.client_message_types,
            config=cfg.transport,
            rng=random.Random(self.seed ^ 0x5EED),
            on_reject=lambda reason: self.metrics.rejected.labels(reason).inc(),
        )
        await self._transport.start(
            host=cfg.listen_host, port=cfg.listen_port, sock=self._listen_sock
        )
        if cfg.metrics_port is not None:
            self._metrics_server = MetricsServer(self.metrics, self.health)
            await self._metrics_server.start(cfg.metrics_host, cfg.metrics_port)
        self._tasks = [asyncio.ensure_future(self._drive()), asyncio.ensure_future(self._ticker())]
        self._wake.set()
        log.info(
            "node_started node=%d address=%s:%d log_last_index=%d records=%d seed=%d "
            "tick_ms=%d metrics=%s",
            cfg.node_id,
            *self.address,
            durable.last_index,
            len(durable.records),
            self.seed,
            cfg.tick_ms,
            self.metrics_address,
        )

    async def stop(self) -> None:
        """Stop ticking and driving, close sockets, close the WAL.  Safe to call twice."""
        if self._stopping:
            return
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        await cancel_and_wait(self._tasks, TASK_STOP_TIMEOUT_S)
        if self._transport is not None:
            await self._transport.close()
        if self._metrics_server is not None:
            await self._metrics_server.close()
        wal_closed = await self._close_wal()
        if self._data_lock is not None and wal_closed:
            self._data_lock.release()  # after the WAL is closed: the directory is free now
        if self._stopped is not None:
            self._stopped.set()
        log.info("node_stopped node=%d", self.config.node_id)

    async def _close_wal(self) -> bool:
        """Close the WAL in its thread, waiting at most ``WAL_CLOSE_TIMEOUT_S``.

        False when the WAL thread did not finish in time (e.g. stuck in fsync): the data
        directory then stays locked until the process exits, so nobody else writes to it
        while this thread still might.
        """
        executor = self._executor
        if executor is None:
            return True
        closed = True
        if self._wal is not None:
            future = asyncio.get_running_loop().run_in_executor(executor, self._wal.close)
            done, _ = await asyncio.wait({future}, timeout=WAL_CLOSE_TIMEOUT_S)
            if not done:
                closed = False
                log.error(
                    "wal_close_timeout node=%d timeout_s=%.1f: the data directory stays "
                    "locked until the process exits",
                    self.config.node_id,
                    WAL_CLOSE_TIMEOUT_S,
                )
            elif future.exception() is not None:
                log.warning(
                    "wal_close_failed node=%d error=%r", self.config.node_id, future.exception()
                )
        executor.shutdown(wait=closed)
        return closed

    async def wait_stopped(self) -> None:
        """Return once the runner stopped; raise :class:`NodeFailed` if it failed."""
        assert self._stopped is not None, "runner not started"
        await self._stopped.wait()
        if self.failure is not None:
            raise NodeFailed(
                f"node {self.config.node_id} failed: {self.failure!r}"
            ) from self.failure

    async def __aenter__(self) -> NodeRunner:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def health(self) -> dict[str, Any]:
        """The ``/health`` report, merged with the node's own ``status()`` when it has one."""
        transport = self._transport
        report: dict[str, Any] = {
            "status": "failed" if self.failure else ("stopping" if self._stopping else "ok"),
            "node_id": self.config.node_id,
            "leader": None,
            "last_applied": self.last_applied,
            "peers_connected": {
                str(p): transport.peer_connected(p) for p in self.group if p != self.config.node_id
            }
            if transport
            else {},
            "clients": len(transport.client_ids) if transport else 0,
            "error": repr(self.failure) if self.failure else None,
        }
        report.update(node_status(self._node))
        return report

    def _open_wal(self, must_exist: bool) -> WriteAheadLog:
        assert self.config.data_dir is not None
        return WriteAheadLog(
            self.config.data_dir / "wal",
            self._op_codec,
            self.config.wal,
            on_sync=self.metrics.fsync_seconds.observe,
            must_exist=must_exist,
        )

    # -- inbound -------------------------------------------------------------------------

    async def _deliver(self, sender: int, msg: Message) -> None:
        assert self._inbox is not None and self._wake is not None
        await self._inbox.put((sender, msg))
        self._wake.set()

    async def _ticker(self) -> None:
        assert self._wake is not None
        self._due.start(self._now())
        while True:
            await asyncio.sleep(self._sleep_s(self._due.until_next_s(self._now())))
            self._due.collect(self._now())  # each round collects too: it sees a whole stall
            self._wake.set()

    def _sleep_s(self, clock_s: float) -> float:
        """Real seconds to sleep until ``clock_s`` more seconds of the node's clock pass."""
        if self.fault_clock is not None:
            return self.fault_clock.real_s(clock_s)
        return max(0.0, clock_s)

    # -- the driver ----------------------------------------------------------------------

    async def _drive(self) -> None:
        assert self._wake is not None
        try:
            while not self._stopping:
                await self._wake.wait()
                self._wake.clear()
                await self._round()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.failure = exc
            log.critical("node_failed node=%d error=%r", self.config.node_id, exc, exc_info=exc)
            self._stop_task = asyncio.ensure_future(self.stop())

    async def _round(self) -> None:
        assert self._inbox is not None and self._wake is not None
        node = self.node
        cfg = self.config
        ticks = self._due.take(self._now(), node)  # a stall is reported before any step
        stepped = 0
        while stepped < cfg.max_step_batch and not self._inbox.empty():
            sender, msg = self._inbox.get_nowait()
            if is_client(sender):
                self.metrics.proposals.inc()
            try:
                node.step(msg, sender)
            except InvalidMessage as exc:
                if sender == cfg.node_id:
                    raise  # the node refused its own message: a bug, fail-stop
                self._refuse_remote(sender, msg, exc)
            stepped += 1
        self.metrics.messages_in.inc(stepped)
        for _ in range(ticks):
            node.tick()
        self.metrics.ticks.inc(ticks)
        while node.has_ready() and not self._stopping:
            await self._carry_out(node.ready())
            if not self._inbox.empty():
                break  # step what arrived during the fsync first: it joins the next batch
        if not self._inbox.empty() or node.has_ready():
            self._wake.set()

    def _refuse_remote(self, sender: int, msg: Message, exc: InvalidMessage) -> None:
        """A remote sent a message the node refused: close that sender, keep running."""
        log.warning(
            "invalid_message node=%d sender=%d msg=%s error=%s",
            self.config.node_id,
            sender,
            type(msg).__name__,
            exc,
        )
        self.transport.close_sender(sender, "invalid_message", f"{type(msg).__name__}: {exc}")

    async def _carry_out(self, ready: Ready) -> None:
        node = self.node
        if ready.persist:
            wal = self.wal
            if isinstance(wal, MemoryLog):
                wal.write(ready.persist)  # nothing to wait for: skip the thread hop
            else:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._executor, wal.write, ready.persist)
            self.metrics.persist_ops.inc(len(ready.persist))
        for send in ready.send:
            self._send(send.to, send.msg)
        for item in ready.apply:
            self._apply(item)
        for record in ready.record:
            self._record(record)
        for service in ready.services:
            if self._on_service is not None:
                self._on_service(service)
            else:
                log.debug("service_ignored node=%d request=%r", self.config.node_id, service)
        node.advance(ready)
        self.metrics.batches.inc()
        self.metrics.observe_node(node_status(node))
        if self._metrics_hook is not None:
            self._metrics_hook(node, self.metrics)

    def _send(self, to: int, msg: Message) -> None:
        if to == self.config.node_id:
            assert self._inbox is not None
            try:
                self._inbox.put_nowait((to, msg))
            except asyncio.QueueFull:
                self.metrics.messages_dropped.inc()
            return
        try:
            kept = self.transport.send(to, msg)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            log.error(
                "send_unencodable node=%d to=%d msg=%r error=%s", self.config.node_id, to, msg, exc
            )
            kept = False
        self.metrics.messages_out.inc()
        if not kept:
            self.metrics.messages_dropped.inc()

    def _apply(self, item: Apply | Restore) -> None:
        sm = self.state_machine
        if isinstance(item, Restore):
            if sm is not None:
                sm.restore(item.data)
            self.metrics.restores.inc()
            self.last_applied = item.index
            return
        ok, result, error = True, None, ""
        if sm is not None:
            try:
                result = sm.apply(item.command)
            except Exception as exc:  # deterministic on every replica: report, keep going
                ok, error = False, f"{type(exc).__name__}: {exc}"
                log.error(
                    "apply_failed node=%d index=%d command=%r error=%s",
                    self.config.node_id,
                    item.index,
                    item.command,
                    error,
                )
        self.metrics.applies.inc()
        self.last_applied = max(self.last_applied, item.index)
        if item.reply_to is not None:
            self._send(item.reply_to, ClientReply(item.request_id, ok, result, error=error))
            self.metrics.replies.inc()

    def _record(self, record: Record) -> None:
        event = record.event
        if isinstance(event, HistoryEvent) and event.time == 0:
            event = msgspec.structs.replace(event, time=time.time_ns())
        self.history.append(event)
        if self._on_record is not None:
            self._on_record(event)


def node_status(node: object) -> dict[str, Any]:
    """A node's optional ``status()`` report (leader, term, commit_index, members, ...)."""
    status = getattr(node, "status", None)
    if not callable(status):
        return {}
    report = status()
    assert isinstance(report, dict), f"status() of {type(node).__name__} must return a dict"
    return report


def bind_listen_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket (port 0 picks a free one) to hand to a runner.

    Binding every node's socket first lets a cluster learn all addresses before any
    node starts.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def run_event_loop(main: Coroutine[Any, Any, T], *, use_uvloop: bool = True) -> T:
    """Run ``main`` on uvloop when installed (``pnyx[fast]``), else on asyncio's loop."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            result: T = uvloop.run(main)
            return result
    return asyncio.run(main)
