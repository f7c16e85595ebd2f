"""The replication schemes (primary-backup, chain, CRAQ, Dynamo) as real-process services.

How a cluster of these schemes is laid out, for ``pnyx cluster`` and the clients.  What each
process runs is the protocol's own definition (``pnyx.protocols.{primary_backup,chain,
dynamo}.runtime_def``): the simulator's code, with only the timing constants in ticks
scaled for 10 ms ticks on a loaded machine.

Configuration process: chain, CRAQ and primary-backup need a configuration service.  A
cluster of ``--nodes N`` of these schemes runs ``N`` data nodes plus **one extra process**
for it (:func:`process_count`).  Where it sits is the protocol's
:attr:`RuntimeDef.config_node <pnyx.sim.spec.RuntimeDef.config_node>`, which the node
factories read too: for chain and CRAQ the master is the highest id (``N+1``), as in the
simulator; for primary-backup the view manager is node 1 and the servers are ``2..N+1``.
That process keeps its configuration in its fsynced WAL (chain master: epoch, members,
incarnations; view manager: the view), so it may restart; while it is down, the data nodes
keep serving until their leases run out and no repair happens.  It is a single process
standing in for a replicated (e.g. Raft-backed) configuration store.
"""

from __future__ import annotations

from pnyx.catalog import get_runnable
from pnyx.sim.spec import RuntimeDef

CHAIN_LIKE = frozenset({"chain", "craq"})
RAFT_KV_LIKE = frozenset({"raft", "paxos", "vr", "vr-durable", "primary-backup"})
"""Protocols served by the Raft KV client (sessions, ``ClientRequest``/``ReadRequest``)."""


def process_count(protocol: str, nodes: int) -> int:
    """How many processes a cluster of ``nodes`` data nodes of ``protocol`` runs."""
    return nodes + _has_config(protocol)


def config_node(protocol: str, ids: tuple[int, ...]) -> int | None:
    """The id of the configuration process among ``ids``, None when there is none."""
    runtime = _runtime(protocol)
    return None if runtime is None else runtime.config_id(ids)


def data_nodes(protocol: str, ids: tuple[int, ...]) -> tuple[int, ...]:
    """The ids among ``ids`` that hold data (every id but the configuration process)."""
    config = config_node(protocol, ids)
    return tuple(sorted(i for i in ids if i != config))


def _has_config(protocol: str) -> int:
    runtime = _runtime(protocol)
    return 0 if runtime is None or runtime.config_node == "none" else 1


def _runtime(protocol: str) -> RuntimeDef | None:
    """The protocol's runtime part (where its configuration process sits); None for a name
    that does not run as real processes."""
    try:
        return get_runnable(protocol).runtime
    except KeyError:
        return None
