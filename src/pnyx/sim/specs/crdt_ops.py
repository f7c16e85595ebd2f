"""Simulator specs for causal broadcast and the op-based CRDTs disseminated over it.

``causal-broadcast`` (and its broken variant ``causal-broadcast-broken``) checks the
broadcast itself: causal order of deliveries, no duplication, no creation, agreement
after heal.  The ``crdt-*`` specs run op-based CRDT replicas over it and add strong
eventual convergence and type-specific intent checks.
"""

from __future__ import annotations

from typing import Any

from pnyx.core import Apply, Restore
from pnyx.protocols.broadcast import CausalEntry, make_causal_node, make_unchecked_causal_node
from pnyx.protocols.broadcast.client import make_client
from pnyx.sim.spec import Monitor, ProtocolSpec, Violation, World


class CausalMonitor(Monitor):
    """Causal order, no duplication, no creation (safety); agreement after heal (liveness).

    Messages are named by a key the client chose (its ``msg_id``/``edit_id``, which the
    history's ``invoke`` events list).  When a node delivers its own message ``m`` (the
    moment it broadcasts it), what it had delivered before is ``m``'s causal past; every
    node must have delivered all of it before delivering ``m``.  A restarted node replays
    its log, so its delivered set is per incarnation.  A node stopped on a damaged disk is
    faulty and owes nothing.
    """

    def __init__(self, node_ids: tuple[int, ...]) -> None:
        self.node_ids = node_ids
        self.delivered: dict[int, set[str]] = {n: set() for n in node_ids}
        self.ever: dict[int, set[str]] = {n: set() for n in node_ids}
        self.everywhere: set[str] = set()
        self.past: dict[str, frozenset[str]] = {}
        """message key -> keys its origin had delivered before broadcasting it."""
        self.identity: dict[str, tuple[int, int, Any]] = {}
        """message key -> (origin, seq, payload) as first delivered."""
        self._invoked: set[str] = set()
        self._seen_history = 0

    def key_of(self, entry: CausalEntry) -> str:
        """The client-chosen name of a delivered message."""
        payload = entry.payload
        return str(payload[0]) if isinstance(payload, list | tuple) and payload else "?"

    def on_apply(
        self, world: World, node_id: int, item: Apply | Restore, result: Any
    ) -> Violation | None:
        if not isinstance(item, Apply) or not isinstance(item.command, CausalEntry):
            return Violation("no-creation", f"node {node_id} applied {item!r}")
        entry = item.command
        key = self.key_of(entry)
        mine = self.delivered[node_id]
        if key in mine:
            return Violation("no-duplication", f"node {node_id} delivered {key} twice")
        if not self._was_invoked(world, key):
            return Violation("no-creation", f"node {node_id} delivered unknown {key}")
        ident = (entry.origin, entry.seq, entry.payload)
        first = self.identity.setdefault(key, ident)
        if first != ident:
            detail = f"node {node_id} delivered {key} as {ident}, first seen as {first}"
            return Violation("no-creation", detail)
        if entry.origin == node_id and key not in self.past:
            self.past[key] = frozenset(mine)
        missing = self.past.get(key, frozenset()) - mine
        if missing:
            return Violation(
                "causal-order",
                f"node {node_id} delivered {key} before {sorted(missing)[:3]}, which its origin "
                f"{entry.origin} had delivered before broadcasting it",
            )
        mine.add(key)
        self.ever[node_id].add(key)
        self.everywhere.add(key)
        return self.on_delivered(world, node_id, entry, key)

    def on_delivered(
        self, world: World, node_id: int, entry: CausalEntry, key: str
    ) -> Violation | None:
        """Hook for subclasses: ``entry`` passed the checks above and counts as delivered."""
        return None

    def on_restart(self, world: World, node_id: int) -> None:
        self.delivered[node_id] = set()

    def liveness(self, world: World) -> str | None:
        acked = {str(e.value) for e in world.history if e.type == "ok"}
        live = [n for n in self.node_ids if not world.stopped(n)]
        only_stopped = self.everywhere - set().union(*(self.ever[n] for n in live))
        must = (self.everywhere | acked) - only_stopped
        for node_id in live:
            missing = must - self.delivered[node_id]
            if missing:
                return f"node {node_id} has not delivered {len(missing)}: {sorted(missing)[:5]}"
        return None

    def _was_invoked(self, world: World, key: str) -> bool:
        history = world.history
        for event in history[self._seen_history :]:
            if event.type == "invoke":
                self._invoked.add(str(event.value))
        self._seen_history = len(history)
        return key in self._invoked


CAUSAL_BROADCAST = ProtocolSpec(
    name="causal-broadcast",
    summary="reliable broadcast with vector-clock causal delivery (Birman-Schiper-Stephenson)",
    make_node=make_causal_node,
    make_client=make_client,
    make_monitor=CausalMonitor,
)

CAUSAL_BROADCAST_BROKEN = ProtocolSpec(
    name="causal-broadcast-broken",
    summary="deliberately broken causal broadcast: delivers on arrival, no causal check",
    make_node=make_unchecked_causal_node,
    make_client=make_client,
    make_monitor=CausalMonitor,
    broken=True,
)
