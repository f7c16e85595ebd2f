"""The replication schemes (primary-backup, chain, CRAQ, Dynamo) as real-process services.

How a cluster of these schemes is laid out, for ``pnyx cluster`` and the clients.  What each
process runs is the protocol's own definition (``pnyx.protocols.{primary_backup,chain,
dynamo}.runtime_def``): the simulator's code, with only the timing constants in ticks
scaled for 10 ms ticks on a loaded machine.

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

CONFIG_LAST = "last"
CONFIG_FIRST = "first"
CONFIG_PROCESS: dict[str, str] = {
    "chain": CONFIG_LAST,
    "craq": CONFIG_LAST,
    "primary-backup": CONFIG_FIRST,
}
"""Protocols whose cluster has one extra configuration process, and where its id sits."""

CHAIN_LIKE = frozenset({"chain", "craq"})
RAFT_KV_LIKE = frozenset({"raft", "paxos", "vr", "vr-durable", "primary-backup"})
"""Protocols served by the Raft KV client (sessions, ``ClientRequest``/``ReadRequest``)."""


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
