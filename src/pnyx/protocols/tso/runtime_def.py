"""The timestamp oracle on real processes (``pnyx cluster up --protocol tso``): a Raft group
whose leader hands out timestamp batches (clients: :mod:`pnyx.services.tso`)."""

from __future__ import annotations

from pnyx.core import DurableState, Rng
from pnyx.protocols.raft import PEER_MESSAGE_TYPES, Entry, HardState, RaftConfig
from pnyx.protocols.raft.messages import HARD_STATE_KEY
from pnyx.protocols.raft.spec import RAFT_RUNTIME_CONFIG_FIELDS
from pnyx.protocols.tso import WINDOW_SIZE, TsoNode, TsoRequest, TsoStateMachine
from pnyx.protocols.tso.services import serve
from pnyx.sim.spec import RuntimeDef

_CONFIG = RaftConfig(**RAFT_RUNTIME_CONFIG_FIELDS)


def make_runtime_node(
    node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState
) -> TsoNode:
    """A TSO node with Raft's runtime tuning."""
    return TsoNode(node_id, peers, rng, durable, _CONFIG, WINDOW_SIZE)


TSO_RUNTIME = RuntimeDef(
    peer_message_types=PEER_MESSAGE_TYPES,
    client_message_types=(TsoRequest,),
    entry_type=Entry,
    record_types={HARD_STATE_KEY: HardState},
    make_node=make_runtime_node,
    make_state_machine=TsoStateMachine,
    serve=serve,
)
