"""Chain replication and CRAQ on real processes (``pnyx cluster up --protocol chain|craq``).

A cluster of ``--nodes N`` runs ``N`` replicas plus the configuration master, the highest
id (``N+1``), as in the simulator: the :class:`RuntimeDef` says so (``config_node``), and
both the node factory and the cluster layout (:mod:`pnyx.services.schemes`) read it there.
The master keeps its configuration durable (epoch, members, incarnations), so it may
restart; it is one process standing in for a replicated configuration store.
"""

from __future__ import annotations

import dataclasses

from pnyx.core import DurableState, Node, NodeFactory, Rng
from pnyx.protocols.chain.master import ChainMaster
from pnyx.protocols.chain.messages import WIRE_TYPES, KvRequest
from pnyx.protocols.chain.node import ChainNode
from pnyx.sim.spec import RuntimeDef


def chain_node_factory(name: str, runtime: RuntimeDef, *, craq: bool) -> NodeFactory:
    """Nodes of a real chain (``craq``: CRAQ): ``runtime``'s configuration process is the
    master, with durable configuration; the others are replicas in id order."""

    def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> Node:
        master = runtime.config_id(peers)
        if len(peers) < 2 or master is None:
            raise ValueError(f"{name} needs a master and at least one replica, got {peers}")
        replicas = tuple(sorted(p for p in peers if p != master))
        if node_id == master:
            return ChainMaster(node_id, replicas, durable)
        return ChainNode(node_id, master, replicas, durable, craq=craq)

    return make_node


def chain_runtime(name: str, *, craq: bool) -> RuntimeDef:
    """The :class:`RuntimeDef` of ``chain`` (``craq=False``) or ``craq``."""
    runtime = RuntimeDef(
        peer_message_types=tuple(t for t in WIRE_TYPES if t is not KvRequest),
        client_message_types=(KvRequest,),
        config_node="highest",
    )
    return dataclasses.replace(runtime, make_node=chain_node_factory(name, runtime, craq=craq))
