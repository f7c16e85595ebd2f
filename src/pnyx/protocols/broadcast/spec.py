"""Simulator spec for reliable broadcast: exactly-once delivery at every node."""

from __future__ import annotations

from typing import Any

from pnyx.core import Apply, Restore
from pnyx.protocols.broadcast import (
    CLIENT_MESSAGE_TYPES,
    PEER_MESSAGE_TYPES,
    Delivery,
    make_broken_node,
    make_node,
)
from pnyx.protocols.broadcast.client import make_client
from pnyx.sim.spec import Monitor, ProtocolDef, RuntimeDef, Violation, World


class BroadcastMonitor(Monitor):
    """Integrity (no duplicate, no invented message) and agreement (all deliver everything).

    A restarted node's state machine starts empty and the node replays its log into it,
    so a node's delivered set is reset on restart: exactly once per incarnation.  A node
    that stopped on a damaged disk is faulty and owes no deliveries.
    """

    def __init__(self, node_ids: tuple[int, ...]) -> None:
        self.node_ids = node_ids
        self.delivered: dict[int, set[str]] = {n: set() for n in node_ids}
        self.everywhere: set[str] = set()
        self.ever: dict[int, set[str]] = {n: set() for n in node_ids}
        """node -> what it delivered in any incarnation."""
        self._invoked: set[str] = set()
        self._seen_history = 0

    def on_apply(
        self, world: World, node_id: int, item: Apply | Restore, result: Any
    ) -> Violation | None:
        assert isinstance(item, Apply), "broadcast never restores snapshots"
        entry = item.command
        assert isinstance(entry, Delivery)
        mine = self.delivered[node_id]
        if entry.msg_id in mine:
            return Violation("no-duplication", f"node {node_id} delivered {entry.msg_id} twice")
        if not self._was_broadcast(world, entry.msg_id):
            return Violation("no-creation", f"node {node_id} delivered unknown {entry.msg_id}")
        self._mark_delivered(node_id, entry.msg_id)
        return None

    def _mark_delivered(self, node_id: int, key: str) -> None:
        """``node_id`` delivered the message named ``key`` (in this incarnation)."""
        self.delivered[node_id].add(key)
        self.ever[node_id].add(key)
        self.everywhere.add(key)

    def on_restart(self, world: World, node_id: int) -> None:
        self.delivered[node_id] = set()

    def liveness(self, world: World) -> str | None:
        acked = {str(e.value) for e in world.history if e.type == "ok"}
        stopped = [n for n in self.node_ids if world.stopped(n)]
        # A node stopped on a damaged disk is faulty: what only it delivered (and acknowledged)
        # is owed to no one.
        only_stopped = set().union(*(self.ever[n] for n in stopped)) - set().union(
            *(self.ever[n] for n in self.node_ids if n not in stopped)
        )
        must = (self.everywhere | acked) - only_stopped
        for node_id in self.node_ids:
            if world.stopped(node_id):
                continue  # down for good on a damaged disk: not a correct process
            missing = must - self.delivered[node_id]
            if missing:
                return f"node {node_id} has not delivered {len(missing)}: {sorted(missing)[:5]}"
        return None

    def _was_broadcast(self, world: World, msg_id: str) -> bool:
        """Whether a client invoked the broadcast of ``msg_id`` (its ``invoke`` event)."""
        history = world.history
        for event in history[self._seen_history :]:
            if event.type == "invoke":
                self._invoked.add(str(event.value))
        self._seen_history = len(history)
        return msg_id in self._invoked


BROADCAST = ProtocolDef(
    name="broadcast",
    summary="reliable broadcast with acknowledged retransmission (exactly-once delivery)",
    make_node=make_node,
    make_client=make_client,
    make_monitor=BroadcastMonitor,
    runtime=RuntimeDef(PEER_MESSAGE_TYPES, CLIENT_MESSAGE_TYPES, entry_type=Delivery),
)

BROADCAST_BROKEN = ProtocolDef(
    name="broadcast-broken",
    summary="deliberately broken broadcast: relays once, never retransmits",
    make_node=make_broken_node,
    make_client=make_client,
    make_monitor=BroadcastMonitor,
    broken=True,
)
