"""Primary-backup in the simulator: the Raft KV client, a lost-write invariant, linearizability.

Node 1 is the view manager, the others are servers.  Safety after every step: a primary
that serves view v holds every operation any primary answered in an earlier view
(``acknowledged-write-lost`` otherwise).  Liveness in the heal phase: the manager's view is
acknowledged and its primary serves, unless the primary of a view not yet acknowledged
crashed (the ack rule then keeps the manager in that view: unavailable by design; the
monitor's ``unavailable`` says so).  At the end the clients' history must be
linearizable against the ``kv`` model.

Violation names: ``acknowledged-write-lost``, ``linearizability``, ``liveness``.

``primary-backup-register`` runs the same with a get/put-only workload (unique written
values), the input of the register consistency checkers (:mod:`pnyx.cli.consistency_matrix`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pnyx.core import DurableState, Node, Rng
from pnyx.protocols.primary_backup import Server, ViewManager, make_node
from pnyx.protocols.primary_backup.runtime_def import PRIMARY_BACKUP_RUNTIME
from pnyx.protocols.raft.client import KvClient
from pnyx.protocols.raft.kv import GET, PUT
from pnyx.sim.spec import Monitor, ProtocolDef, Violation, World

LINEARIZABILITY_TIMEOUT_S = 20.0
"""Budget for the end-of-run history check; past it the verdict is unknown."""


class PrimaryBackupMonitor(Monitor):
    """No acknowledged write lost across views; a serving primary in the end; linearizable."""

    def __init__(self, node_ids: tuple[int, ...]) -> None:
        self.node_ids = node_ids
        self.manager = min(node_ids)
        self.replied: dict[int, int] = {}
        """view -> highest operation index a primary of that view answered."""
        self.lost_in_view: dict[int, int] = {}
        """server -> the manager's view number when it last restarted (lost its state)."""
        self.unavailable = ""
        """Set when the run ended unavailable by design (the data's only holder crashed)."""
        self.unknown: list[str] = []

    def on_restart(self, world: World, node_id: int) -> None:
        manager = world.node(self.manager)
        if node_id != self.manager and isinstance(manager, ViewManager):
            self.lost_in_view[node_id] = manager.view.num

    def on_step(self, world: World, node_id: int, node: Node) -> None:
        if isinstance(node, Server) and node.replied_index:
            num = node.view.num
            if node.replied_index > self.replied.get(num, 0):
                self.replied[num] = node.replied_index

    def after_event(self, world: World) -> Violation | None:
        for node_id in self.node_ids:
            node = world.node(node_id)
            if isinstance(node, Server) and node.serving:
                num = node.view.num
                need = max((i for v, i in self.replied.items() if v < num), default=0)
                if node.applied_index < need:
                    return Violation(
                        "acknowledged-write-lost",
                        f"server {node_id} serves view {num} with ops through "
                        f"{node.applied_index}, but op {need} was acknowledged earlier",
                    )
        return None

    def liveness(self, world: World) -> str | None:
        manager = world.node(self.manager)
        if not isinstance(manager, ViewManager):
            return None if world.stopped(self.manager) else "view manager down"
        view = manager.view
        primary = world.node(view.primary) if view.primary else None
        if manager.acked and isinstance(primary, Server) and primary.serving:
            return None
        lost = isinstance(primary, Server) and primary.restarted and not primary.is_primary
        if not manager.acked and (lost or view.primary in self.lost_in_view):
            # The primary of an unacknowledged view crashed: the manager may not move on
            # (the ack rule), so the service is unavailable by design.
            self.unavailable = f"primary {view.primary} of unacked view {view.num} crashed"
            return None
        return f"view {view.num} (acked={manager.acked}) has no serving primary"

    def unknowns(self) -> list[str]:
        return list(self.unknown)

    def at_end(self, world: World) -> Violation | None:
        from pnyx.check.history import History
        from pnyx.check.linearizability import check_linearizable
        from pnyx.check.models import KVModel

        result = check_linearizable(
            History.from_events(world.history), KVModel(), timeout_s=LINEARIZABILITY_TIMEOUT_S
        )
        if result.verdict == "not-linearizable":
            return Violation("linearizability", result.explain())
        if result.verdict != "linearizable":
            self.unknown.append(f"linearizability {result.verdict}: {result.explain()}")
        return None


def _make_client(client_id: int, node_ids: tuple[int, ...], rng: Rng) -> Any:
    return KvClient(client_id, node_ids, rng, admin=False)


class RegisterKvClient(KvClient):
    """A KV client whose workload is gets and puts only (each put writes a unique token)."""

    def _pick_kind(self) -> str:
        return PUT if self._rng.random() < 0.5 else GET


def _make_register_client(client_id: int, node_ids: tuple[int, ...], rng: Rng) -> Any:
    return RegisterKvClient(client_id, node_ids, rng, admin=False)


def _node_factory(**broken: bool) -> Any:
    def build(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> Any:
        return make_node(node_id, peers, rng, durable, **broken)

    return build


PRIMARY_BACKUP = ProtocolDef(
    name="primary-backup",
    summary="primary-backup KV with a view manager, acked forwarding and state transfer",
    make_node=_node_factory(),
    make_client=_make_client,
    make_monitor=PrimaryBackupMonitor,
    default_nodes=4,
    default_clients=3,
)

PRIMARY_BACKUP_BROKEN = ProtocolDef(
    name="primary-backup-broken",
    summary="deliberately broken primary-backup: the primary answers before its backup acks",
    make_node=_node_factory(reply_early=True),
    make_client=_make_client,
    make_monitor=PrimaryBackupMonitor,
    default_nodes=4,
    default_clients=3,
    broken=True,
)


PRIMARY_BACKUP_REGISTER = ProtocolDef(
    name="primary-backup-register",
    summary="primary-backup KV, get/put workload (consistency table)",
    make_node=_node_factory(),
    make_client=_make_register_client,
    make_monitor=PrimaryBackupMonitor,
    default_nodes=4,
    default_clients=3,
)


# -- as real processes (pnyx serve / cluster up --protocol): the runtime part ----------
PRIMARY_BACKUP = dataclasses.replace(PRIMARY_BACKUP, runtime=PRIMARY_BACKUP_RUNTIME)
