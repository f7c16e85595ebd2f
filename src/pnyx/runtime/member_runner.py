"""Drive one sans-IO group member for real over UDP: a tick timer, the Ready loop, metrics.

:class:`MemberRunner` hosts any :class:`pnyx.core.Node` whose effects are only ``send``
(membership protocols such as SWIM keep nothing durable).  One driver coroutine owns the
node; each round it steps the queued inbound messages (bounded), delivers the ticks that
fell due on the event loop's monotonic clock (at most ``max_ticks_per_round``; beyond that
the node's optional ``clock_stalled`` is told, as :class:`~pnyx.runtime.NodeRunner` does),
drains the node's membership events (``take_events()``, when it has it), learns member
addresses from them, hands them to ``on_event``, then sends the ``ready()`` batch over UDP.

A batch asking for ``persist`` is a bug for a member (it has no storage): the runner stops
with :class:`MemberFailed`.  ``apply``/``record``/``services`` effects are counted and
ignored.  ``/metrics`` shows, besides the generic node metrics, each member's state and
incarnation as this member sees them, its local health and the UDP counters.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pnyx.core import InvalidMessage, Message, Node, Rng
from pnyx.runtime.metrics import MetricsServer, NodeMetrics
from pnyx.runtime.ticks import DueTicks
from pnyx.runtime.transport import TASK_STOP_TIMEOUT_S, cancel_and_wait
from pnyx.runtime.udp import Address, UdpConfig, UdpTransport, make_codec

log = logging.getLogger("pnyx.runtime.member")

MEMBER_STATES = ("alive", "suspect", "dead", "left")
"""Values of ``pnyx_member_state``: the index of the state in this tuple."""

DEFAULT_LEAVE_TIMEOUT_S = 2.0
"""How long :meth:`MemberRunner.leave` keeps running to gossip the leave, at most."""

LEAVE_FANOUT = 3
"""Datagrams sent after a leave that let :meth:`MemberRunner.leave` return early."""

MakeMember = Callable[[str, Rng], Node]
"""Builds the node from its own address (``"host:port"``, after binding) and its RNG."""


@dataclass(frozen=True)
class MemberConfig:
    """How to run one member.  ``seeds`` are members to join through (id → address)."""

    node_id: int
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    """UDP port to bind; 0 picks a free one."""
    seeds: Mapping[int, Address] = field(default_factory=dict)
    tick_ms: int = 10
    """Wall-clock milliseconds per logical tick."""
    seed: int | None = None
    """Seed of the node's RNG; None draws one from the OS."""
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    """Port of the ``/metrics`` + ``/health`` HTTP server; None disables it, 0 picks one."""
    inbox_messages: int = 4096
    """Bound of the inbound queue; datagrams beyond it are dropped (``inbox_full``)."""
    max_step_batch: int = 1024
    """Messages stepped before the node's ``ready()`` is drained."""
    max_ticks_per_round: int = 16
    """Ticks delivered at once after a stall (the rest are dropped, like a paused clock)."""
    udp: UdpConfig = field(default_factory=UdpConfig)
    leave_timeout_s: float = DEFAULT_LEAVE_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.tick_ms < 1:
            raise ValueError(f"tick_ms={self.tick_ms} must be at least 1")
        if self.node_id in self.seeds:
            raise ValueError(f"member {self.node_id} lists itself among its seeds")
        for name in ("inbox_messages", "max_step_batch", "max_ticks_per_round"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.leave_timeout_s < 0:
            raise ValueError(f"leave_timeout_s={self.leave_timeout_s} must be >= 0")


class MemberFailed(RuntimeError):
    """The runner stopped because the node failed (a bug in the node: fail-stop)."""


def format_address(address: Address) -> str:
    """``(host, port)`` as the ``addr`` string members gossip (IPv6 hosts in brackets)."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_member_addr(text: str) -> Address | None:
    """The ``(host, port)`` of a gossiped ``addr``; None when it is empty or malformed."""
    host, colon, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


class MemberRunner:
    """Runs one member over UDP; see the module docstring for the loop.

    Example::

        runner = MemberRunner(MemberConfig(node_id=1, listen_port=7946),
                              lambda addr, rng: SwimNode(1, addr, config, rng, {}),
                              WIRE_TYPES, on_event=print)
        await runner.start()
        ...
        await runner.leave()
        await runner.stop()

    ``on_event`` is called from the event loop with every event the node reports from
    ``take_events()``; an exception from it is logged, never fatal.
    """

    def __init__(
        self,
        config: MemberConfig,
        make_node: MakeMember,
        message_types: Iterable[type[Message]],
        *,
        on_event: Callable[[Any], None] | None = None,
    ) -> None:
        self.config = config
        self._make_node = make_node
        self.codec = make_codec(message_types)
        self._on_event = on_event
        self.seed = config.seed if config.seed is not None else int.from_bytes(os.urandom(8))
        self.metrics = NodeMetrics(config.node_id)
        self.failure: BaseException | None = None
        self.invalid_messages = 0
        self.ignored_effects = 0
        self._node: Node | None = None
        self._udp: UdpTransport | None = None
        self._metrics_server: MetricsServer | None = None
        self._inbox: deque[tuple[int, Message]] = deque()
        self._wake: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._due = DueTicks(config.node_id, config.tick_ms, config.max_ticks_per_round, log)
        self._now: Callable[[], float] = time.monotonic
        self._stopping = False
        self._stop_task: asyncio.Future[None] | None = None
        self._address_texts: dict[int, str] = {}
        """The node's ``addr`` string last applied to the transport, per member."""
        self.metrics.registry.register(_MemberCollector(self))

    # -- accessors -----------------------------------------------------------------------

    @property
    def node(self) -> Node:
        """The node being driven (after :meth:`start`)."""
        if self._node is None:
            raise RuntimeError("member runner not started")
        return self._node

    @property
    def udp(self) -> UdpTransport:
        """The member's UDP transport (after :meth:`start`)."""
        if self._udp is None:
            raise RuntimeError("member runner not started")
        return self._udp

    @property
    def address(self) -> Address:
        """Where the member receives datagrams."""
        address = self.udp.address
        if address is None:
            raise RuntimeError("member runner not started")
        return address

    @property
    def metrics_address(self) -> Address | None:
        """Where ``/metrics`` and ``/health`` are served, if enabled."""
        return self._metrics_server.address if self._metrics_server else None

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._node is not None and not self._stopping

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the socket, build the node, start ticking and driving (and ``/metrics``).

        On failure (e.g. the port is in use: OSError) everything started is stopped again.
        """
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        self._now = loop.time
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._udp = UdpTransport(
            cfg.node_id,
            self.codec,
            self._deliver,
            config=cfg.udp,
        )
        await self._udp.start(cfg.listen_host, cfg.listen_port)
        for member_id, address in cfg.seeds.items():
            self._udp.set_address(member_id, address)
        self._node = self._make_node(format_address(self.address), random.Random(self.seed))
        if cfg.metrics_port is not None:
            self._metrics_server = MetricsServer(self.metrics, self.health)
            await self._metrics_server.start(cfg.metrics_host, cfg.metrics_port)
        self._tasks = [asyncio.ensure_future(self._drive()), asyncio.ensure_future(self._ticker())]
        self._wake.set()
        log.info(
            "member_started node=%d address=%s seeds=%s tick_ms=%d seed=%d metrics=%s",
            cfg.node_id,
            format_address(self.address),
            ",".join(f"{i}={format_address(a)}" for i, a in sorted(cfg.seeds.items())) or "-",
            cfg.tick_ms,
            self.seed,
            self.metrics_address,
        )

    async def leave(self, timeout_s: float | None = None) -> None:
        """Leave the group gracefully: ask the node to leave (``leave()``), then keep running
        until the node says its leave was gossiped (``leave_done()``; without it: until it
        sent ``LEAVE_FANOUT`` datagrams, or one per peer if fewer) or ``timeout_s``
        (``config.leave_timeout_s``) passed.  The runner keeps running after."""
        if not self.running:
            return
        node = self.node
        leave = getattr(node, "leave", None)
        if not callable(leave):
            return
        leave()
        assert self._wake is not None
        self._wake.set()
        bound_s = self.config.leave_timeout_s if timeout_s is None else timeout_s
        done = getattr(node, "leave_done", None)
        if not callable(done):
            target = self.udp.stats.datagrams_sent + min(LEAVE_FANOUT, self._peer_count())
            done = lambda: self.udp.stats.datagrams_sent >= target  # noqa: E731
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bound_s
        while self.running and not done():
            if loop.time() >= deadline:
                log.info("member_leave_timeout node=%d timeout_s=%.1f",
                         self.config.node_id, bound_s)  # fmt: skip
                return
            await asyncio.sleep(min(0.02, max(0.0, deadline - loop.time())))
        log.info("member_left node=%d", self.config.node_id)

    def _peer_count(self) -> int:
        members = getattr(self.node, "members", None)
        if callable(members):
            return sum(
                1
                for member_id, view in members().items()
                if member_id != self.config.node_id and view.state in ("alive", "suspect")
            )
        return len(self.udp.addresses())

    async def stop(self) -> None:
        """Stop ticking and driving, close the socket and ``/metrics``.  Safe to call twice;
        returns within ``TASK_STOP_TIMEOUT_S`` plus the metrics server's close bound."""
        if self._stopping:
            return
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        await cancel_and_wait(self._tasks, TASK_STOP_TIMEOUT_S)
        if self._udp is not None:
            self._udp.close()
        if self._metrics_server is not None:
            await self._metrics_server.close()
        if self._stopped is not None:
            self._stopped.set()
        log.info("member_stopped node=%d", self.config.node_id)

    async def wait_stopped(self) -> None:
        """Return once the runner stopped; raise :class:`MemberFailed` if the node failed."""
        if self._stopped is None:
            raise RuntimeError("member runner not started")
        await self._stopped.wait()
        if self.failure is not None:
            raise MemberFailed(
                f"member {self.config.node_id} failed: {self.failure!r}"
            ) from self.failure

    def health(self) -> dict[str, Any]:
        """The ``/health`` report: status, each member's state, local health."""
        bound = self._udp.address if self._udp is not None else None
        report: dict[str, Any] = {
            "status": "failed" if self.failure else ("stopping" if self._stopping else "ok"),
            "node_id": self.config.node_id,
            "address": format_address(bound) if bound is not None else None,
            "error": repr(self.failure) if self.failure else None,
        }
        node = self._node
        if node is not None:
            report["members"] = {
                str(m): {"addr": v.addr, "state": v.state, "incarnation": v.incarnation}
                for m, v in sorted(member_views(node).items())
            }
            report["local_health"] = local_health(node)
        return report

    # -- inbound and time ----------------------------------------------------------------

    def _deliver(self, sender: int, msg: Message) -> bool:
        if len(self._inbox) >= self.config.inbox_messages:
            return False
        self._inbox.append((sender, msg))
        if self._wake is not None:
            self._wake.set()
        return True

    async def _ticker(self) -> None:
        assert self._wake is not None
        self._due.start(self._now())
        while True:
            await asyncio.sleep(max(0.0, self._due.until_next_s(self._now())))
            self._due.collect(self._now())
            self._wake.set()

    # -- the driver ----------------------------------------------------------------------

    async def _drive(self) -> None:
        assert self._wake is not None
        try:
            while not self._stopping:
                await self._wake.wait()
                self._wake.clear()
                self._round()
                await asyncio.sleep(0)  # let datagrams and the ticker in between rounds
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failure = exc
            log.critical("member_failed node=%d error=%r", self.config.node_id, exc, exc_info=exc)
            self._stop_task = asyncio.ensure_future(self.stop())

    def _round(self) -> None:
        assert self._wake is not None
        node = self.node
        ticks = self._due.take(self._now(), node)
        stepped = 0
        while stepped < self.config.max_step_batch and self._inbox:
            sender, msg = self._inbox.popleft()
            self._step(node, sender, msg)
            stepped += 1
        self.metrics.messages_in.inc(stepped)
        for _ in range(ticks):
            node.tick()
        self.metrics.ticks.inc(ticks)
        self._drain_events(node)
        while node.has_ready() and not self._stopping:
            self._carry_out(node)
        if self._inbox:
            self._wake.set()

    def _step(self, node: Node, sender: int, msg: Message) -> None:
        try:
            node.step(msg, sender)
        except InvalidMessage as exc:
            if sender == self.config.node_id:
                raise  # the node refused its own message: a bug, fail-stop
            self.invalid_messages += 1
            self.metrics.rejected.labels("invalid_message").inc()
            log.warning("invalid_message node=%d sender=%d msg=%s error=%s",
                        self.config.node_id, sender, type(msg).__name__, exc)  # fmt: skip

    def _drain_events(self, node: Node) -> None:
        take = getattr(node, "take_events", None)
        if not callable(take):
            return
        for event in take():
            address = parse_member_addr(getattr(event, "addr", ""))
            member_id = getattr(event, "member_id", None)
            own = member_id == self.config.node_id
            if address is not None and isinstance(member_id, int) and not own:
                self.udp.set_address(member_id, address)
            if self._on_event is not None:
                try:
                    self._on_event(event)
                except Exception as exc:  # a user's callback: report, keep the member running
                    log.exception("member_event_callback_failed node=%d event=%r error=%r",
                                  self.config.node_id, event, exc)  # fmt: skip

    def _carry_out(self, node: Node) -> None:
        ready = node.ready()
        if ready.persist:
            raise MemberFailed(
                f"member {self.config.node_id}: the node asked to persist "
                f"{len(ready.persist)} op(s), but a member runner has no storage"
            )
        for send in ready.send:
            self._send(send.to, send.msg)
        ignored = len(ready.apply) + len(ready.record) + len(ready.services)
        self.ignored_effects += ignored
        node.advance(ready)
        self.metrics.batches.inc()

    def _send(self, to: int, msg: Message) -> None:
        self.metrics.messages_out.inc()
        if to == self.config.node_id:
            if not self._deliver(to, msg):
                self.metrics.messages_dropped.inc()
            return
        self._refresh_address(to)
        if not self.udp.send(to, msg):
            self.metrics.messages_dropped.inc()

    def _refresh_address(self, member_id: int) -> None:
        """Take ``member_id``'s address from the node (``address_of``) when it has one: its
        table is authoritative, and it knows targets of ping-reqs that sent no event."""
        lookup = getattr(self._node, "address_of", None)
        if not callable(lookup):
            return
        text = lookup(member_id)
        if not text or self._address_texts.get(member_id) == text:
            return
        address = parse_member_addr(text)
        if address is not None:
            self._address_texts[member_id] = text
            self.udp.set_address(member_id, address)


def member_views(node: object) -> dict[int, Any]:
    """A node's ``members()`` (id → view with ``addr``, ``state``, ``incarnation``), or {}."""
    members = getattr(node, "members", None)
    if not callable(members):
        return {}
    views: dict[int, Any] = members()
    return views


def local_health(node: object) -> int:
    """A node's Lifeguard local health score (``local_health()``), 0 when it has none."""
    health = getattr(node, "local_health", None)
    return int(health()) if callable(health) else 0


class _MemberCollector(Collector):
    """Membership metrics read from the node and the transport at scrape time."""

    def __init__(self, runner: MemberRunner) -> None:
        self._runner = runner

    def collect(self) -> Iterable[Metric]:
        runner = self._runner
        node = runner._node
        if node is None:
            return []
        return [*self._member_metrics(node), *self._udp_metrics(runner.udp), _stats_metric(node)]

    def _member_metrics(self, node: Node) -> list[Metric]:
        state = GaugeMetricFamily(
            "pnyx_member_state",
            "State of each member as this member sees it: 0 alive, 1 suspect, 2 dead, 3 left",
            labels=["member"],
        )
        incarnation = GaugeMetricFamily(
            "pnyx_member_incarnation",
            "Incarnation of each member as this member sees it",
            labels=["member"],
        )
        counts = dict.fromkeys(MEMBER_STATES, 0)
        for member_id, view in sorted(member_views(node).items()):
            code = MEMBER_STATES.index(view.state) if view.state in MEMBER_STATES else -1
            state.add_metric([str(member_id)], code)
            incarnation.add_metric([str(member_id)], view.incarnation)
            counts[view.state] = counts.get(view.state, 0) + 1
        by_state = GaugeMetricFamily(
            "pnyx_members", "Members this member knows, by state", labels=["state"]
        )
        for name, count in counts.items():
            by_state.add_metric([name], count)
        health = GaugeMetricFamily(
            "pnyx_local_health",
            "Lifeguard local health score (0 healthy; probe interval and timeout scale by 1+it)",
            value=local_health(node),
        )
        return [state, incarnation, by_state, health]

    def _udp_metrics(self, udp: UdpTransport) -> list[Metric]:
        stats = udp.stats
        sent = CounterMetricFamily(
            "pnyx_udp_datagrams_sent", "Datagrams sent", stats.datagrams_sent
        )
        received = CounterMetricFamily(
            "pnyx_udp_datagrams_received", "Valid datagrams received", stats.datagrams_received
        )
        dropped = CounterMetricFamily(
            "pnyx_udp_datagrams_dropped",
            "Inbound datagrams dropped (garbage, bad crc, unknown version, ...), by reason",
            labels=["reason"],
        )
        for reason, count in sorted(stats.dropped.items()):
            dropped.add_metric([reason], count)
        refused = CounterMetricFamily(
            "pnyx_udp_send_refused", "Outbound messages not sent, by reason", labels=["reason"]
        )
        for reason, count in sorted(stats.send_failed.items()):
            refused.add_metric([reason], count)
        return [sent, received, dropped, refused]


def _stats_metric(node: Node) -> Metric:
    """The node's own counters (``stats()``), e.g. messages sent by kind."""
    family = GaugeMetricFamily(
        "pnyx_member_node_stat", "Counters the protocol node keeps (stats())", labels=["name"]
    )
    stats = getattr(node, "stats", None)
    if callable(stats):
        for name, value in sorted(stats().items()):
            family.add_metric([str(name)], float(value))
    return family
