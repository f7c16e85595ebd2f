"""Viewstamped Replication on real processes (``pnyx cluster up --protocol vr``).

The same KV state machine and client vocabulary as Raft's service, so ``pnyx kv`` and
:class:`pnyx.services.kv.KvClient` work unchanged.  Disk-less by default (the paper's
model): the write-ahead log holds only the boot marker, and a restarted process recovers
its state from the others with the nonce protocol (at most f members down at once).
"""

from __future__ import annotations

from typing import Any

from pnyx.core import DurableState, NodeFactory, Rng
from pnyx.protocols.vr import (
    CLIENT_MESSAGE_TYPES,
    PEER_MESSAGE_TYPES,
    RECORD_TYPES,
    VrConfig,
    VrEntry,
    VrNode,
    make_state_machine,
    serve,
)
from pnyx.sim.spec import RuntimeDef

RUNTIME_CONFIG_FIELDS: dict[str, Any] = {
    "commit_interval_ticks": 5,
    "view_change_timeout_ticks": 50,
    "view_change_jitter_ticks": 30,
    "resend_ticks": 10,
    "max_prepare_entries": 256,
    "max_pending_ops": 4096,
    "checkpoint_interval_ops": 1_000,
}
"""VR timers for real processes (10 ms ticks): Commit every 50 ms, view change after
0.5-0.8 s of silence, like Raft's service's election timeout; a checkpoint (snapshot of the
state machine, log prefix dropped) every 1,000 executed ops, so the log stays bounded."""


def vr_node_factory(durable: bool = False, **overrides: Any) -> NodeFactory:
    """VR nodes with the runtime timers (``durable``: write view and log to the WAL instead
    of recovering from the other members) and ``overrides`` of
    :class:`~pnyx.protocols.vr.VrConfig` fields (e.g. the etcd service's
    ``commit_interval_ticks=1``)."""
    config = VrConfig(**{**RUNTIME_CONFIG_FIELDS, **overrides, "durable": durable})

    def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> VrNode:
        return VrNode(node_id, peers, rng, durable, config)

    return make_node


VR_RUNTIME = RuntimeDef(
    peer_message_types=PEER_MESSAGE_TYPES,
    client_message_types=CLIENT_MESSAGE_TYPES,
    entry_type=VrEntry,
    record_types=RECORD_TYPES,
    make_node=vr_node_factory(),
    make_state_machine=make_state_machine,
    serve=serve,
)
