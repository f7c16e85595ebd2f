"""All-to-all heartbeats with one failure detector (phi-accrual or fixed timeout) per peer.

Every node sends a :class:`Heartbeat` to every peer each ``heartbeat_interval_ticks`` and
feeds the heartbeats it receives to that peer's detector.  A peer is declared dead when
its detector turns unavailable and alive again at its next heartbeat.  Each detector
reports the tick at which it will turn unavailable, so a node keeps one deadline per
peer in a heap instead of evaluating every detector every tick.

Every peer is assumed alive at start: its detector gets a heartbeat at tick 0, so a
peer that never sends one is still declared dead.
"""

from __future__ import annotations

import heapq
from collections import deque

from pnyx.core import InvalidMessage, Message, Outbox, Rng
from pnyx.protocols.membership.config import FixedConfig, PhiConfig
from pnyx.protocols.membership.fixed import FixedDetector
from pnyx.protocols.membership.messages import Heartbeat, MemberEvent, MemberView
from pnyx.protocols.membership.phi import PhiDetector

MAX_EVENTS = 10_000
"""Bound on undrained events; the oldest are dropped (counted in ``events_dropped``)."""


def _make_detector(config: PhiConfig | FixedConfig) -> PhiDetector | FixedDetector:
    if isinstance(config, PhiConfig):
        return PhiDetector(config)
    return FixedDetector(config)


class HeartbeatNode(Outbox):
    """One member of an all-to-all heartbeat group (implements :class:`pnyx.core.Node`)."""

    def __init__(
        self,
        node_id: int,
        peers: tuple[int, ...],
        rng: Rng,
        detector: PhiConfig | FixedConfig,
        heartbeat_interval_ticks: int,
    ) -> None:
        if heartbeat_interval_ticks <= 0:
            raise ValueError(
                f"heartbeat_interval_ticks must be positive, got {heartbeat_interval_ticks}"
            )
        super().__init__()
        self.node_id = node_id
        self.peers = tuple(sorted(p for p in set(peers) if p != node_id))
        self.heartbeat_interval_ticks = heartbeat_interval_ticks
        self._now_ticks = 0
        self._seq = 0
        self._next_heartbeat_ticks = rng.randrange(0, heartbeat_interval_ticks)
        self._detectors: dict[int, PhiDetector | FixedDetector] = {}
        self._alive: dict[int, bool] = {}
        self._scheduled: dict[int, int | None] = {}
        self._deadlines: list[tuple[int, int]] = []
        self._events: deque[MemberEvent] = deque()
        self._stats = {"sent": 0, "sent_heartbeat": 0, "events_dropped": 0, "unknown_sender": 0}
        for peer in self.peers:
            det = _make_detector(detector)
            det.heartbeat(0)
            self._detectors[peer] = det
            self._alive[peer] = True
            self._scheduled[peer] = None
            self._schedule(peer)

    # -- node contract -----------------------------------------------------------------

    def step(self, msg: Message, from_id: int) -> None:
        """Feed a heartbeat to the sender's detector; a dead sender comes back alive."""
        if not isinstance(msg, Heartbeat):
            raise InvalidMessage(f"heartbeat node got unexpected message {type(msg).__name__}")
        det = self._detectors.get(from_id)
        if det is None:
            self._stats["unknown_sender"] += 1
            return
        det.heartbeat(self._now_ticks)
        if not self._alive[from_id]:
            self._alive[from_id] = True
            self._emit(from_id, "alive")
        self._schedule(from_id)

    def tick(self) -> None:
        """Send heartbeats when due and declare dead the peers whose deadline passed."""
        self._now_ticks += 1
        if self._now_ticks >= self._next_heartbeat_ticks:
            self._next_heartbeat_ticks = self._now_ticks + self.heartbeat_interval_ticks
            self._seq += 1
            for peer in self.peers:
                self._send(peer, Heartbeat(self._seq))
            self._stats["sent"] += len(self.peers)
            self._stats["sent_heartbeat"] += len(self.peers)
        while self._deadlines and self._deadlines[0][0] <= self._now_ticks:
            deadline, peer = heapq.heappop(self._deadlines)
            if self._scheduled[peer] != deadline:
                continue  # superseded by an earlier deadline already handled
            self._scheduled[peer] = None
            self._check(peer)

    # -- queries -----------------------------------------------------------------------

    def members(self) -> dict[int, MemberView]:
        """Self and every peer, alive or dead (incarnation is always 0)."""
        views = {self.node_id: MemberView("", "alive", 0)}
        for peer in self.peers:
            views[peer] = MemberView("", "alive" if self._alive[peer] else "dead", 0)
        return views

    def take_events(self) -> list[MemberEvent]:
        """Drain the alive→dead and dead→alive changes seen since the last call."""
        events = list(self._events)
        self._events.clear()
        return events

    def stats(self) -> dict[str, int]:
        """Counters: messages sent, dropped events, heartbeats from unknown senders."""
        return dict(self._stats)

    def detector(self, peer: int) -> PhiDetector | FixedDetector:
        """The detector watching ``peer`` (read-only use)."""
        return self._detectors[peer]

    def status(self) -> dict[str, object]:
        """Summary for health reports."""
        dead = sum(1 for alive in self._alive.values() if not alive)
        return {"members": len(self.peers) + 1, "dead": dead}

    # -- internals ---------------------------------------------------------------------

    def _check(self, peer: int) -> None:
        det = self._detectors[peer]
        if det.is_available(self._now_ticks):
            self._schedule(peer)
        elif self._alive[peer]:
            self._alive[peer] = False
            self._emit(peer, "dead")

    def _schedule(self, peer: int) -> None:
        deadline = self._detectors[peer].unavailable_at_ticks()
        if deadline is None:
            return
        deadline = max(deadline, self._now_ticks + 1)
        current = self._scheduled[peer]
        if current is None or deadline < current:
            self._scheduled[peer] = deadline
            heapq.heappush(self._deadlines, (deadline, peer))

    def _emit(self, peer: int, state: str) -> None:
        if len(self._events) >= MAX_EVENTS:
            self._events.popleft()
            self._stats["events_dropped"] += 1
        self._events.append(MemberEvent(peer, "", "alive" if state == "alive" else "dead", 0))
