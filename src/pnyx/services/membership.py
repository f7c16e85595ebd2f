"""Embed a SWIM (+ Lifeguard) group member in an application: :class:`Member`.

Example::

    member = Member(2, listen=("127.0.0.1", 7947), seeds={1: ("127.0.0.1", 7946)},
                    config=SwimConfig.lan(tick_ms=10), tick_ms=10,
                    on_dead=lambda event: print("lost", event.member_id))
    await member.start()
    print(member.members())          # {1: MemberView(addr=..., state='alive', ...), ...}
    await member.leave()             # graceful: the others see state "left"
    await member.stop()

The member runs on the caller's event loop (a :class:`~pnyx.runtime.member_runner.MemberRunner`
over UDP).  Callbacks are called from that loop, one per membership change of another
member, in the order the protocol saw them:

* ``on_join(event)``: a member seen for the first time, alive;
* ``on_alive(event)``: a known member is alive again (refuted a suspicion, or came back
  after being declared dead or having left, with a higher incarnation);
* ``on_suspect(event)``: a member is suspected;
* ``on_dead(event)``: a member was declared dead, or left (``event.state == "left"``).

``event`` is a :class:`~pnyx.protocols.membership.messages.MemberEvent`.  A callback may
be a coroutine function: its coroutine is run as a task.  An exception in a callback is
logged and never stops the member.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pnyx.core import Rng
from pnyx.protocols.membership.config import SwimConfig, ms_to_ticks
from pnyx.protocols.membership.messages import SWIM_TYPES, MemberEvent, MemberView
from pnyx.protocols.membership.swim import SwimNode
from pnyx.runtime.member_runner import (
    MemberConfig,
    MemberRunner,
    format_address,
    parse_member_addr,
)
from pnyx.runtime.transport import TASK_STOP_TIMEOUT_S, cancel_and_wait
from pnyx.runtime.udp import DEFAULT_MAX_DATAGRAM_BYTES, Address, UdpConfig

__all__ = [
    "DEFAULT_TICK_MS",
    "Callback",
    "Member",
    "MemberEvent",
    "MemberView",
    "SwimConfig",
    "fit_datagrams",
    "lan_config",
    "updates_per_datagram",
]

log = logging.getLogger("pnyx.services.membership")

DEFAULT_TICK_MS = 10
"""Milliseconds per tick of an embedded member unless told otherwise."""

LAN_PROBE_MS = 1000
"""memberlist's LAN probe interval; :func:`lan_config` scales the profile from it."""

MAX_UPDATE_BYTES = 80
"""Generous size of one encoded membership update with a ``[IPv6]:port`` address."""

Callback = Callable[[MemberEvent], object]
"""A membership callback: a function or a coroutine function taking the event."""


def updates_per_datagram(max_datagram_bytes: int = DEFAULT_MAX_DATAGRAM_BYTES) -> int:
    """Membership updates one datagram can carry with room for the message around them."""
    return max(1, (max_datagram_bytes - 100) // MAX_UPDATE_BYTES)


def lan_config(
    tick_ms: int,
    *,
    probe_ms: int = LAN_PROBE_MS,
    lifeguard: bool = True,
    max_datagram_bytes: int = DEFAULT_MAX_DATAGRAM_BYTES,
) -> SwimConfig:
    """memberlist's LAN profile in ticks of ``tick_ms``, every duration scaled by
    ``probe_ms / 1000`` (probe timeout = probe/2, gossip = probe/5, push/pull = 30 probes,
    reap = 60 probes), with piggyback and push/pull chunks small enough for one datagram.

    ``probe_ms=1000`` is the LAN profile itself; tests use e.g. 200 to detect faster.
    """
    if probe_ms < 2 * tick_ms:
        raise ValueError(f"probe_ms={probe_ms} must be at least two ticks of {tick_ms} ms")
    scaled = dataclasses.replace(
        SwimConfig.lan(tick_ms, lifeguard=lifeguard),
        probe_interval_ticks=ms_to_ticks(probe_ms, tick_ms),
        probe_timeout_ticks=ms_to_ticks(probe_ms // 2, tick_ms),
        gossip_interval_ticks=ms_to_ticks(probe_ms // 5, tick_ms),
        push_pull_interval_ticks=ms_to_ticks(30 * probe_ms, tick_ms),
        dead_reap_ticks=ms_to_ticks(60 * probe_ms, tick_ms),
        join_retry_ticks=ms_to_ticks(probe_ms, tick_ms),
    )
    return fit_datagrams(scaled, max_datagram_bytes)


def fit_datagrams(config: SwimConfig, max_datagram_bytes: int) -> SwimConfig:
    """``config`` with piggybacked updates and push/pull chunks bounded so every message
    fits one datagram (``SwimConfig.lan`` allows 64 states per push/pull chunk, which a
    1,400-byte datagram cannot hold: the transport would refuse them)."""
    per_datagram = updates_per_datagram(max_datagram_bytes)
    if max(config.max_piggyback_updates, config.push_pull_chunk_states) <= per_datagram:
        return config
    return dataclasses.replace(
        config,
        max_piggyback_updates=min(config.max_piggyback_updates, per_datagram),
        push_pull_chunk_states=min(config.push_pull_chunk_states, per_datagram),
    )


def _address(value: Address | str, what: str) -> Address:
    if isinstance(value, str):
        parsed = parse_member_addr(value)
        if parsed is None:
            raise ValueError(f"{what}: bad address {value!r}, expected HOST:PORT")
        return parsed
    host, port = value
    if not isinstance(host, str) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"{what}: bad address {value!r}, expected (host, port)")
    return host, port


class Member:
    """One SWIM group member embedded in the caller's asyncio program (module docstring)."""

    def __init__(
        self,
        node_id: int,
        listen: Address | str = ("127.0.0.1", 0),
        seeds: Mapping[int, Address | str] | None = None,
        config: SwimConfig | None = None,
        *,
        tick_ms: int = DEFAULT_TICK_MS,
        on_join: Callback | None = None,
        on_suspect: Callback | None = None,
        on_dead: Callback | None = None,
        on_alive: Callback | None = None,
        metrics_port: int | None = None,
        rng_seed: int | None = None,
        udp: UdpConfig | None = None,
    ) -> None:
        """``config`` must be in ticks of ``tick_ms`` (default: :func:`lan_config` of
        ``tick_ms``; its piggyback and push/pull chunk sizes are capped to fit a datagram);
        ``seeds`` maps member ids to join through to their addresses (empty for the first
        member); ``metrics_port`` serves ``/metrics`` and ``/health`` (0 picks a port)."""
        if node_id < 0:
            raise ValueError(f"node_id={node_id} must not be negative")
        host, port = _address(listen, "listen")
        seed_addresses = {int(m): _address(a, f"seed {m}") for m, a in (seeds or {}).items()}
        udp_config = udp or UdpConfig()
        self.node_id = node_id
        self.config = fit_datagrams(
            config or lan_config(tick_ms, max_datagram_bytes=udp_config.max_datagram_bytes),
            udp_config.max_datagram_bytes,
        )
        self._callbacks: dict[str, Callback | None] = {
            "join": on_join,
            "alive": on_alive,
            "suspect": on_suspect,
            "dead": on_dead,
        }
        self._seen: dict[int, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.callback_errors = 0
        """Exceptions raised by callbacks (logged)."""
        self._runner = MemberRunner(
            MemberConfig(
                node_id=node_id,
                listen_host=host,
                listen_port=port,
                seeds=seed_addresses,
                tick_ms=tick_ms,
                seed=rng_seed,
                metrics_port=metrics_port,
                udp=udp_config,
            ),
            self._make_node,
            SWIM_TYPES,
            on_event=self._on_event,
        )

    def _make_node(self, addr: str, rng: Rng) -> SwimNode:
        seeds = {m: format_address(a) for m, a in self._runner.config.seeds.items()}
        return SwimNode(self.node_id, addr, self.config, rng, seeds)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the socket and start probing and joining through the seeds.

        OSError (e.g. the port is in use) propagates, with nothing left running."""
        await self._runner.start()

    async def leave(self, timeout_s: float | None = None) -> None:
        """Leave gracefully: the others see this member as ``left`` (bounded wait, then it
        keeps running until :meth:`stop`)."""
        await self._runner.leave(timeout_s)

    async def stop(self) -> None:
        """Stop without leaving (the others will detect it as dead); bounded."""
        await self._runner.stop()
        await cancel_and_wait(list(self._tasks), TASK_STOP_TIMEOUT_S)

    async def __aenter__(self) -> Member:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._runner.running:
                await self.leave()
        finally:
            await self.stop()

    # -- queries ---------------------------------------------------------------------------

    @property
    def address(self) -> Address:
        """Where this member receives datagrams (after :meth:`start`)."""
        return self._runner.address

    @property
    def metrics_address(self) -> Address | None:
        """Where ``/metrics`` and ``/health`` are served, if enabled."""
        return self._runner.metrics_address

    @property
    def runner(self) -> MemberRunner:
        """The runner driving the protocol node (metrics, UDP counters)."""
        return self._runner

    def members(self) -> dict[int, MemberView]:
        """Every member this one knows (itself included) and its state and incarnation."""
        node = self._runner.node
        assert isinstance(node, SwimNode)
        return node.members()

    def local_health(self) -> int:
        """Lifeguard local health score (0 healthy)."""
        node = self._runner.node
        assert isinstance(node, SwimNode)
        return node.local_health()

    # -- callbacks -------------------------------------------------------------------------

    def _on_event(self, event: Any) -> None:
        if not isinstance(event, MemberEvent) or event.member_id == self.node_id:
            return
        kind = self._kind(event)
        self._seen[event.member_id] = event.state
        callback = self._callbacks.get(kind) if kind else None
        if callback is not None:
            self._call(callback, event)

    def _kind(self, event: MemberEvent) -> str | None:
        """Which callback a change fires: join, alive, suspect, dead (dead or left)."""
        before = self._seen.get(event.member_id)
        if event.state == "alive":
            if before is None:
                return "join"
            return "alive" if before != "alive" else None
        if event.state == before:
            return None
        return "suspect" if event.state == "suspect" else "dead"

    def _call(self, callback: Callback, event: MemberEvent) -> None:
        try:
            result = callback(event)
        except Exception:
            self.callback_errors += 1
            log.exception("member_callback_failed node=%d event=%r", self.node_id, event)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._await(result, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _await(self, result: Awaitable[object], event: MemberEvent) -> None:
        try:
            await result
        except asyncio.CancelledError:
            raise
        except Exception:
            self.callback_errors += 1
            log.exception("member_callback_failed node=%d event=%r", self.node_id, event)
