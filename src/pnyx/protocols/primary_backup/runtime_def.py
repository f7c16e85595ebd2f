"""Primary-backup on real processes (``pnyx cluster up --protocol primary-backup``).

Node 1 (the lowest id) is the view manager, the others are servers: the :class:`RuntimeDef`
says so (``config_node``), and both the node factory and the cluster layout
(:mod:`pnyx.services.schemes`) read it there.  The manager keeps its view durable, so it
may restart.  Clients use Raft's KV client messages and sessions.
"""

from __future__ import annotations

from pnyx.core import DurableState, Node, Rng
from pnyx.protocols.primary_backup.messages import WIRE_TYPES
from pnyx.protocols.primary_backup.node import Server, ViewManager
from pnyx.protocols.raft.messages import ClientRequest, ReadRequest
from pnyx.sim.spec import RuntimeDef

PB_DEAD_TICKS = 50
"""Silence after which the view manager declares a server failed on real processes (500 ms
at 10 ms ticks; the simulator's 10 ticks would flap on a loaded machine)."""


def make_runtime_node(
    node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState
) -> Node:
    """The view manager (the runtime's configuration process: the lowest id) or a server of
    a real primary-backup cluster."""
    manager = PRIMARY_BACKUP_RUNTIME.config_id(peers)
    if len(peers) < 2 or manager is None:
        raise ValueError(f"primary-backup needs a view manager and a server, got {peers}")
    if node_id == manager:
        servers = tuple(p for p in peers if p != manager)
        return ViewManager(node_id, servers, durable, dead_ticks=PB_DEAD_TICKS)
    return Server(node_id, manager, durable)


PRIMARY_BACKUP_RUNTIME = RuntimeDef(
    peer_message_types=WIRE_TYPES,
    client_message_types=(ClientRequest, ReadRequest),
    make_node=make_runtime_node,
    config_node="lowest",
)
