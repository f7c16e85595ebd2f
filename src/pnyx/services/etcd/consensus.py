"""The consensus under an etcd server: Raft, Multi-Paxos or Viewstamped Replication.

The etcd state machine (:class:`~pnyx.services.etcd.machine.ServedMachine`), its sessions,
the gateway and every gRPC service are the same over each: all three nodes speak Raft's
client vocabulary (``ClientRequest`` with session commands, ``ReadRequest`` answered by the
leader after a quorum round or through the log, ``AdminRequest``).  What the server asks of
"the leader" goes through one :class:`Consensus` adapter per protocol:

- :meth:`Consensus.leader_term`: whether this node leads now, and in which term / ballot
  round / view (the lessor restarts every TTL when the term changes: a node that lost and
  regained leadership between two lease checks forgets the keep-alives it did not see);
- :meth:`Consensus.status`: the node's status in Raft's shape (``role``, ``leader``,
  ``term``, ``commit_index``, ``applied_index``, ``members`` as voters / outgoing /
  learners), for ``Status``, ``MemberList``, response headers and metrics;
- :attr:`Consensus.membership` / :attr:`Consensus.move_leader`: whether etcd's
  ``MemberAdd`` / ``MemberRemove`` / ``MemberPromote`` (Raft's learner and joint-consensus
  changes) and ``MoveLeader`` (a leadership transfer) exist; the services refuse them
  otherwise, with :attr:`Consensus.refusal` saying why;
- :meth:`Consensus.node_factory`: the node with the etcd server's tuning (timeouts and
  heartbeat from :class:`NodeTuning`).

Names: ``raft`` (default), ``paxos``, ``vr`` (disk-less VR, recovery by the nonce
protocol), ``vr-durable`` (VR with view and log synced to the WAL).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pnyx.core import NodeFactory
from pnyx.sim.spec import ProtocolDef

RAFT = "raft"
PAXOS = "paxos"
VR = "vr"
VR_DURABLE = "vr-durable"
DEFAULT_CONSENSUS = RAFT
DEFAULT_HEARTBEAT_TICKS = 1
"""The heartbeat (Raft), commit notice (VR) interval in ticks of the etcd service: a
follower learns the commit index of a write it forwarded from the next append or
heartbeat, so every tick halves that wait (the runtime default is 2 to 5)."""


@dataclass(frozen=True)
class NodeTuning:
    """The etcd server's settings of its node, in ticks (None: the protocol's runtime
    default)."""

    election_timeout_ticks: int | None = None
    """Raft's election timeout, Paxos's phase-1 timeout, VR's view-change timeout."""
    heartbeat_ticks: int | None = None
    """Raft's and Paxos's heartbeat, VR's idle Commit interval (None: every tick)."""
    snapshot_threshold_entries: int | None = None
    """Log entries between snapshots (Raft and Paxos) or executed ops between checkpoints (VR)."""
    raft_mutants: frozenset[str] = frozenset()
    """Raft's bug catalogue (fault testing; Raft only)."""


@dataclass(frozen=True)
class Consensus:
    """How an etcd server runs over one consensus protocol (see the module doc)."""

    name: str
    title: str
    """The protocol's name in messages (``Multi-Paxos``)."""
    definition: str
    """The catalog name whose runtime (wire types, WAL codec, service hook) the node uses."""
    make_factory: Callable[[NodeTuning], NodeFactory]
    leader_term_of: Callable[[Any], int | None]
    status_of: Callable[[Any], dict[str, Any]]
    default_election_ticks: int
    """The election timeout in ticks when none is configured (for usage checks)."""
    membership: bool = False
    move_leader: bool = False
    epochs: bool = False
    """Lease epochs (:class:`~pnyx.protocols.etcd.requests.LeaseEpochRequest`): the
    lessor of a new leader runs only once the store applied its term as the lease epoch,
    and its expiries are ``LeaseExpireRequest(epoch)``, refused once a later epoch began.
    Multi-Paxos needs them: its next phase 1 may choose a deposed leader's expiry, accepted
    at an old ballot, after a leader in between renewed the lease."""

    def runnable(self) -> ProtocolDef:
        """The protocol definition the node runner takes its runtime parts from."""
        from pnyx.catalog import get_runnable

        return get_runnable(self.definition)

    def node_factory(self, tuning: NodeTuning) -> NodeFactory:
        """Nodes of this protocol with the etcd server's ``tuning``."""
        if tuning.raft_mutants and self.name != RAFT:
            raise ValueError(
                f"Raft's test mutants {sorted(tuning.raft_mutants)} need --consensus raft, "
                f"not {self.name}"
            )
        return self.make_factory(tuning)

    def leader_term(self, node: Any) -> int | None:
        """This node's term (ballot round, view) while it leads now; None otherwise."""
        return self.leader_term_of(node)

    def status(self, node: Any) -> dict[str, Any]:
        """The node's status in Raft's shape (see the module doc)."""
        return self.status_of(node)

    def refusal(self, what: str) -> str:
        """The message of a request this consensus cannot carry out."""
        return (
            f"pnyx: {what} is not supported by an etcd cluster over {self.title} "
            f"(--consensus {self.name}): only --consensus raft has it"
        )


# -- Raft ----------------------------------------------------------------------------------------


def _raft_factory(tuning: NodeTuning) -> NodeFactory:
    from pnyx.protocols.raft.spec import raft_node_factory

    overrides: dict[str, Any] = {"heartbeat_interval_ticks": tuning.heartbeat_ticks or 1}
    if tuning.raft_mutants:
        overrides["mutants"] = tuning.raft_mutants
    if tuning.election_timeout_ticks is not None:
        overrides["election_timeout_ticks"] = tuning.election_timeout_ticks
    if tuning.snapshot_threshold_entries is not None:
        overrides["snapshot_threshold_entries"] = tuning.snapshot_threshold_entries
    return raft_node_factory(**overrides)


def _raft_leader_term(node: Any) -> int | None:
    from pnyx.protocols.raft import LEADER

    return int(node.term) if getattr(node, "role", None) == LEADER else None


def _plain_status(node: Any) -> dict[str, Any]:
    from pnyx.runtime.node_runner import node_status

    return node_status(node)


# -- Multi-Paxos ----------------------------------------------------------------------------------


def _paxos_factory(tuning: NodeTuning) -> NodeFactory:
    from pnyx.protocols.paxos.runtime_def import RUNTIME_CONFIG_FIELDS, paxos_node_factory

    overrides: dict[str, Any] = {}
    election = tuning.election_timeout_ticks
    if election is not None:
        overrides["election_timeout_ticks"] = election
        heartbeat = int(RUNTIME_CONFIG_FIELDS["heartbeat_interval_ticks"])
        overrides["heartbeat_interval_ticks"] = max(1, min(heartbeat, election // 2))
    if tuning.heartbeat_ticks is not None:
        overrides["heartbeat_interval_ticks"] = tuning.heartbeat_ticks
    if tuning.snapshot_threshold_entries is not None:
        overrides["snapshot_threshold_slots"] = tuning.snapshot_threshold_entries
    return paxos_node_factory(**overrides)


def _paxos_leader_term(node: Any) -> int | None:
    """The leader's ballot as one number (its lease epoch)."""
    from pnyx.protocols.etcd.lease import ballot_epoch
    from pnyx.protocols.paxos import LEADER

    if getattr(node, "role", None) != LEADER:
        return None
    round_, node_id = node.ballot
    return ballot_epoch(int(round_), int(node_id))


# -- Viewstamped Replication -------------------------------------------------------------------


ETCD_VR_CHECKPOINT_OPS = 10_000
"""Executed ops between two VR checkpoints of the etcd state machine (its snapshot is much
larger than a KV store's; Raft's etcd service snapshots as often)."""


def _vr_factory(durable: bool) -> Callable[[NodeTuning], NodeFactory]:
    def make(tuning: NodeTuning) -> NodeFactory:
        from pnyx.protocols.vr.runtime_def import vr_node_factory

        overrides: dict[str, Any] = {
            "commit_interval_ticks": tuning.heartbeat_ticks or 1,
            "checkpoint_interval_ops": tuning.snapshot_threshold_entries or ETCD_VR_CHECKPOINT_OPS,
        }
        if tuning.election_timeout_ticks is not None:
            overrides["view_change_timeout_ticks"] = tuning.election_timeout_ticks
        return vr_node_factory(durable=durable, **overrides)

    return make


def _vr_leader_term(node: Any) -> int | None:
    return int(node.view) if getattr(node, "is_primary", False) else None


def _vr_status(node: Any) -> dict[str, Any]:
    """VR's status with Raft's keys: ``applied_index``, ``members`` as a configuration."""
    status = _plain_status(node)
    members = status.get("members")
    if isinstance(members, list | tuple):
        status["members"] = {"voters": list(members), "outgoing": [], "learners": []}
    status["applied_index"] = int(getattr(node, "applied", 0))
    if status.get("role") == "primary":
        status["role"] = "leader"
    return status


CONSENSUS: Mapping[str, Consensus] = {
    RAFT: Consensus(
        name=RAFT,
        title="Raft",
        definition="etcd",
        make_factory=_raft_factory,
        leader_term_of=_raft_leader_term,
        status_of=_plain_status,
        default_election_ticks=10,
        membership=True,
        move_leader=True,
    ),
    PAXOS: Consensus(
        name=PAXOS,
        title="Multi-Paxos",
        definition="paxos",
        make_factory=_paxos_factory,
        leader_term_of=_paxos_leader_term,
        status_of=_plain_status,
        default_election_ticks=30,
        epochs=True,
    ),
    VR: Consensus(
        name=VR,
        title="Viewstamped Replication",
        definition="vr",
        make_factory=_vr_factory(durable=False),
        leader_term_of=_vr_leader_term,
        status_of=_vr_status,
        default_election_ticks=50,
    ),
    VR_DURABLE: Consensus(
        name=VR_DURABLE,
        title="Viewstamped Replication (durable)",
        definition="vr-durable",
        make_factory=_vr_factory(durable=True),
        leader_term_of=_vr_leader_term,
        status_of=_vr_status,
        default_election_ticks=50,
    ),
}
"""Every consensus an etcd server runs over, by ``--consensus`` name."""


def consensus_names() -> list[str]:
    """The names ``--consensus`` accepts (Raft first)."""
    return list(CONSENSUS)


def get_consensus(name: str) -> Consensus:
    """The adapter of ``name``; ValueError naming the valid ones otherwise."""
    try:
        return CONSENSUS[name]
    except KeyError:
        raise ValueError(
            f"unknown consensus {name!r} for the etcd service; valid: "
            f"{', '.join(consensus_names())}"
        ) from None


__all__ = [
    "CONSENSUS",
    "DEFAULT_CONSENSUS",
    "DEFAULT_HEARTBEAT_TICKS",
    "PAXOS",
    "RAFT",
    "VR",
    "VR_DURABLE",
    "Consensus",
    "NodeTuning",
    "consensus_names",
    "get_consensus",
]
