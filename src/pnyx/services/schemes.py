"""The replication schemes (primary-backup, chain, CRAQ, Dynamo) as real-process services.

Each ``_name()`` factory below is registered in :mod:`pnyx.services.catalog` and returns the
:class:`~pnyx.services.catalog.ServiceDef` that ``pnyx serve`` / ``pnyx cluster up`` run.
The protocol code is the simulator's (``pnyx.protocols.{primary_backup,chain,dynamo}``);
only the timing constants in ticks are scaled for 10 ms ticks on a loaded machine.

Configuration process: chain, CRAQ and primary-backup need a configuration service.  A
cluster of ``--nodes N`` of these schemes runs ``N`` data nodes plus **one extra process**
for it (:func:`process_count`): for chain and CRAQ the master is the highest id (``N+1``),
as in the simulator; for primary-backup the view manager is node 1 and the servers are
``2..N+1``.  That process keeps its configuration in its fsynced WAL (chain master: epoch,
members, incarnations; view manager: the view), so it may restart; while it is down, the
data nodes keep serving until their leases run out and no repair happens.  It is a single
process standing in for a replicated (e.g. Raft-backed) configuration store.
"""

from __future__ import annotations

from typing import Any

from pnyx.core import DurableState, Node, Rng
from pnyx.services.catalog import ServiceDef

CONFIG_LAST = "last"
CONFIG_FIRST = "first"
CONFIG_PROCESS: dict[str, str] = {
    "chain": CONFIG_LAST,
    "craq": CONFIG_LAST,
    "primary-backup": CONFIG_FIRST,
}
"""Protocols whose cluster has one extra configuration process, and where its id sits."""

CHAIN_LIKE = frozenset({"chain", "craq"})
RAFT_KV_LIKE = frozenset({"raft", "paxos", "vr", "primary-backup"})
"""Protocols served by the Raft KV client (sessions, ``ClientRequest``/``ReadRequest``)."""

PB_DEAD_TICKS = 50
"""Primary-backup: silence after which the view manager declares a server failed (500 ms
at 10 ms ticks; the simulator's 10 ticks would flap on a loaded machine)."""

DYNAMO_RUNTIME_FIELDS: dict[str, Any] = {
    "request_timeout_ticks": 50,
    "handoff_ticks": 50,
    "anti_entropy_ticks": 100,
}
"""Dynamo timing for real processes (10 ms ticks): replica writes wait for an fsync, so a
request gets 500 ms before the coordinator suspects the silent replicas."""


def process_count(protocol: str, nodes: int) -> int:
    """How many processes a cluster of ``nodes`` data nodes of ``protocol`` runs."""
    return nodes + (1 if protocol in CONFIG_PROCESS else 0)


def config_node(protocol: str, ids: tuple[int, ...]) -> int | None:
    """The id of the configuration process among ``ids``, None when there is none."""
    where = CONFIG_PROCESS.get(protocol)
    if where is None or not ids:
        return None
    return max(ids) if where == CONFIG_LAST else min(ids)


def data_nodes(protocol: str, ids: tuple[int, ...]) -> tuple[int, ...]:
    """The ids among ``ids`` that hold data (every id but the configuration process)."""
    config = config_node(protocol, ids)
    return tuple(sorted(i for i in ids if i != config))


def _chain_service(name: str, *, craq: bool) -> ServiceDef:
    from pnyx.protocols.chain import ChainMaster, ChainNode
    from pnyx.protocols.chain.messages import WIRE_TYPES, KvRequest

    def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> Node:
        if len(peers) < 2:
            raise ValueError(f"{name} needs a master and at least one replica, got {peers}")
        master = config_node(name, peers)
        assert master is not None
        replicas = data_nodes(name, peers)
        if node_id == master:
            return ChainMaster(node_id, replicas, durable)
        return ChainNode(node_id, master, replicas, durable, craq=craq)

    reads = "reads at any replica (clean/dirty versions)" if craq else "reads at the tail"
    return ServiceDef(
        name=name,
        summary=f"{'CRAQ' if craq else 'chain replication'} KV, {reads}; the last node is "
        "the configuration master",
        make_node=make_node,
        peer_message_types=tuple(t for t in WIRE_TYPES if t is not KvRequest),
        client_message_types=(KvRequest,),
    )


def _chain() -> ServiceDef:
    return _chain_service("chain", craq=False)


def _craq() -> ServiceDef:
    return _chain_service("craq", craq=True)


def _primary_backup() -> ServiceDef:
    from pnyx.protocols.primary_backup import WIRE_TYPES, Server, ViewManager
    from pnyx.protocols.raft.messages import ClientRequest, ReadRequest

    def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> Node:
        if len(peers) < 2:
            raise ValueError(f"primary-backup needs a view manager and a server, got {peers}")
        manager = min(peers)
        if node_id == manager:
            servers = tuple(p for p in peers if p != manager)
            return ViewManager(node_id, servers, durable, dead_ticks=PB_DEAD_TICKS)
        return Server(node_id, manager, durable)

    return ServiceDef(
        name="primary-backup",
        summary="primary-backup KV (the backup acknowledges before the primary replies); "
        "node 1 is the view manager",
        make_node=make_node,
        peer_message_types=WIRE_TYPES,
        client_message_types=(ClientRequest, ReadRequest),
    )


def dynamo_config(nodes: int) -> Any:
    """The :class:`~pnyx.protocols.dynamo.DynamoConfig` of a real cluster of ``nodes``:
    N = min(3, nodes), R = W = a majority of N (strict quorums), runtime timing."""
    from pnyx.protocols.dynamo import DynamoConfig

    n = min(3, nodes)
    majority = n // 2 + 1
    return DynamoConfig(n=n, r=majority, w=majority, **DYNAMO_RUNTIME_FIELDS)


def _dynamo() -> ServiceDef:
    from pnyx.protocols.dynamo import CLIENT_MESSAGE_TYPES, PEER_MESSAGE_TYPES, DynamoNode

    def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> Node:
        return DynamoNode(node_id, peers, rng, durable, dynamo_config(len(peers)))

    return ServiceDef(
        name="dynamo",
        summary="Dynamo-style quorum KV (N=3, R=W=2, siblings, hinted handoff, read repair, "
        "Merkle anti-entropy)",
        make_node=make_node,
        peer_message_types=PEER_MESSAGE_TYPES,
        client_message_types=CLIENT_MESSAGE_TYPES,
    )
