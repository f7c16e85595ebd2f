"""Per-node Prometheus metrics and a tiny asyncio HTTP server for ``/metrics`` and ``/health``.

Each node has its own :class:`prometheus_client.CollectorRegistry`, so several nodes in one
process (tests, ``cluster up`` in-process) never mix their numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("pnyx.runtime.metrics")

FSYNC_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
"""Histogram buckets for fsync latency, in seconds (100 µs … 1 s)."""


class NodeMetrics:
    """The metrics of one node.  The runner updates the generic ones itself.

    Protocol-specific numbers (elections, leader changes, term) are observed by the
    runner from the node's optional ``status()`` report (``leader``, ``term``,
    ``elections_started``) or set by a ``metrics_hook`` — see :meth:`observe_node`.
    """

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.proposals = Counter("pnyx_proposals", "Client requests received", registry=r)
        self.applies = Counter("pnyx_applies", "Commands applied to the state machine", registry=r)
        self.restores = Counter(
            "pnyx_restores", "Snapshots restored into the state machine", registry=r
        )
        self.replies = Counter("pnyx_client_replies", "Replies sent to clients", registry=r)
        self.fsync_seconds = Histogram(
            "pnyx_fsync_seconds", "WAL fdatasync latency", buckets=FSYNC_BUCKETS_S, registry=r
        )
        self.persist_ops = Counter("pnyx_persist_ops", "Durable write ops made durable", registry=r)
        self.batches = Counter("pnyx_ready_batches", "Ready batches carried out", registry=r)
        self.messages_in = Counter(
            "pnyx_messages_received", "Messages stepped into the node", registry=r
        )
        self.messages_out = Counter(
            "pnyx_messages_sent", "Messages handed to the transport", registry=r
        )
        self.messages_dropped = Counter(
            "pnyx_messages_dropped", "Outbound messages dropped (full queue, no client)", registry=r
        )
        self.rejected = Counter(
            "pnyx_connections_rejected", "Connections closed for bad input", ["reason"], registry=r
        )
        self.elections = Counter("pnyx_elections", "Elections started by this node", registry=r)
        self.leader_changes = Counter(
            "pnyx_leader_changes", "Changes of the known leader", registry=r
        )
        self.term = Gauge("pnyx_term", "Current term (when the protocol has one)", registry=r)
        self.leader = Gauge("pnyx_leader", "Known leader id, -1 if none", registry=r)
        self.leader.set(-1)
        self.ticks = Counter("pnyx_ticks", "Logical ticks delivered", registry=r)
        self._last_leader: Any = None
        self._last_elections = 0

    def observe_node(self, status: dict[str, Any]) -> None:
        """Update protocol gauges from a node's ``status()`` report (keys are optional)."""
        leader = status.get("leader")
        if leader != self._last_leader:
            if leader is not None:
                self.leader_changes.inc()
            self._last_leader = leader
            self.leader.set(leader if isinstance(leader, int) else -1)
        term = status.get("term")
        if isinstance(term, int):
            self.term.set(term)
        started = status.get("elections_started")
        if isinstance(started, int) and started > self._last_elections:
            self.elections.inc(started - self._last_elections)
            self._last_elections = started

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of one sample (tests and status output)."""
        value = self.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else float(value)

    def render(self) -> bytes:
        """The Prometheus text exposition of this node's registry."""
        return generate_latest(self.registry)


class MetricsServer:
    """Serves ``GET /metrics`` (Prometheus text) and ``GET /health`` (JSON) over asyncio."""

    MAX_REQUEST_BYTES = 8192
    REQUEST_TIMEOUT_S = 5.0

    def __init__(self, metrics: NodeMetrics, health: Callable[[], dict[str, Any]]) -> None:
        self.metrics = metrics
        self.health = health
        self._server: asyncio.Server | None = None
        self.address: tuple[str, int] | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on ``host:port`` (0 picks a free port); return the bound address."""
        self._server = await asyncio.start_server(self._handle, host, port)
        bound = self._server.sockets[0].getsockname()
        self.address = (str(bound[0]), int(bound[1]))
        return self.address

    async def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):  # not CancelledError: the caller's own
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > self.MAX_REQUEST_BYTES:
                raise ValueError("request head too large")
            status, ctype, body = self._route(head.split(b"\r\n", 1)[0])
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ValueError,
            ConnectionError,
        ) as exc:
            log.debug("metrics_request_failed error=%r", exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    def _route(self, request_line: bytes) -> tuple[str, str, bytes]:
        parts = request_line.decode("latin-1").split()
        if len(parts) < 2 or parts[0] != "GET":
            return "405 Method Not Allowed", "text/plain", b"only GET\n"
        path = parts[1].split("?", 1)[0]
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, self.metrics.render()
        if path == "/health":
            report = self.health()
            status = "200 OK" if report.get("status") == "ok" else "503 Service Unavailable"
            return status, "application/json", json.dumps(report).encode() + b"\n"
        return "404 Not Found", "text/plain", b"try /metrics or /health\n"
