"""Multi-Paxos on real processes (``pnyx cluster up --protocol paxos``).

The same KV state machine (sessions for exactly-once) and client vocabulary as Raft's
service, so ``pnyx kv`` and :class:`pnyx.services.kv.KvClient` work unchanged.  Membership
changes (``AdminRequest``) are answered ``not_supported``: the acceptors are fixed.
"""

from __future__ import annotations

from typing import Any

from pnyx.core import NodeFactory
from pnyx.protocols.paxos import (
    CLIENT_MESSAGE_TYPES,
    ENTRY_TYPE,
    PEER_MESSAGE_TYPES,
    RECORD_TYPES,
    STATE_MACHINE,
    PaxosConfig,
    make_node_factory,
    serve,
)
from pnyx.sim.spec import RuntimeDef

RUNTIME_CONFIG_FIELDS: dict[str, Any] = {
    "election_timeout_ticks": 30,
    "election_jitter_ticks": 20,
    "heartbeat_interval_ticks": 5,
    "max_batch_slots": 256,
    "max_inflight_slots": 1024,
    "snapshot_threshold_slots": 10_000,
}
"""Paxos tuning for real processes (10 ms ticks): phase 1 after 0.3-0.5 s without a leader
(no pre-vote, so a little longer than Raft's service: a busy machine must not depose a
healthy leader), bigger batches, window and snapshots than the simulator's."""


def paxos_node_factory(**overrides: Any) -> NodeFactory:
    """A factory of Paxos nodes with the runtime tuning and ``overrides`` of
    :class:`~pnyx.protocols.paxos.PaxosConfig` fields (e.g. ``phase2_quorum``)."""
    return make_node_factory(PaxosConfig(**{**RUNTIME_CONFIG_FIELDS, **overrides}))


PAXOS_RUNTIME = RuntimeDef(
    peer_message_types=PEER_MESSAGE_TYPES,
    client_message_types=CLIENT_MESSAGE_TYPES,
    entry_type=ENTRY_TYPE,
    record_types=RECORD_TYPES,
    make_node=paxos_node_factory(),
    make_state_machine=STATE_MACHINE,
    serve=serve,
)
