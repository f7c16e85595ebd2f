"""Raft in the simulator: KV clients, the safety/liveness monitor, and the broken variants.

Safety, after every event: election safety (one leader per term), log matching (same
index and term => same entry and same predecessor term), leader completeness (a new
leader holds every entry committed before it), state-machine safety (one command per
applied index, across all nodes and restarts) and a monotone commit index per node life.
Liveness in the heal phase: a leader that has committed in its term, and every live member
of its configuration has applied through its commit index.  At the end the clients'
history must be linearizable against the ``kv`` model.
"""

from __future__ import annotations

from typing import Any

from pnyx.core import CLIENT_ID_BASE, Apply, DurableState, Restore, Rng
from pnyx.core.node import StateMachine
from pnyx.protocols.raft.client import KvClient
from pnyx.protocols.raft.config import MUTANTS, SESSION_NO_DEDUP, RaftConfig
from pnyx.protocols.raft.kv import KvStateMachine
from pnyx.protocols.raft.messages import ENTRY_COMMAND
from pnyx.protocols.raft.node import LEADER, RaftNode
from pnyx.protocols.raft.services import serve
from pnyx.sim.spec import Monitor, ProtocolSpec, Violation, World

SIM_CONFIG = RaftConfig(
    election_jitter_ticks=4,
    initial_voters=(1, 2, 3),
    max_entries_per_msg=8,
    max_inflight_msgs=4,
    snapshot_threshold_entries=32,
    snapshot_chunk_bytes=256,
)
"""Small batches, windows, snapshots and chunks, tight election jitter (split votes) and two
learners to start with, so that every mechanism runs in a short run."""

LINEARIZABILITY_TIMEOUT_S = 20.0
"""Budget for the end-of-run history check; past it the verdict is unknown (not a failure)."""


class RaftMonitor(Monitor):
    """Raft's invariants, checked incrementally (each entry and commit is looked at once)."""

    def __init__(self, node_ids: tuple[int, ...]) -> None:
        self.node_ids = node_ids
        self.leader_of_term: dict[int, int] = {}
        self.committed: dict[int, int] = {}
        """index -> term of every entry some node has committed."""
        self.entries: dict[tuple[int, int], tuple[int | None, Any]] = {}
        """(index, term) -> (term of the entry before it, the entry)."""
        self.applied: dict[int, Any] = {}
        self._seen: dict[int, tuple[int, int, int, int]] = {}
        """node -> (object id, log generation, entries checked through, commit seen)."""
        self._last_apply: dict[int, int] = {}
        self._leaders_checked: set[tuple[int, int]] = set()

    # -- hooks -------------------------------------------------------------------------------

    def on_restart(self, world: World, node_id: int) -> None:
        self._seen.pop(node_id, None)
        self._last_apply.pop(node_id, None)

    def on_apply(
        self, world: World, node_id: int, item: Apply | Restore, result: Any
    ) -> Violation | None:
        last = self._last_apply.get(node_id, 0)
        if isinstance(item, Restore):
            self._last_apply[node_id] = item.index
            return None
        if item.read_only:
            if item.index > last and self._commands_between(world, node_id, last, item.index):
                return Violation(
                    "read-after-apply",
                    f"node {node_id} served a read at {item.index} but applied only {last}",
                )
            return None
        if item.index <= last:  # gaps are no-op and configuration entries
            return Violation(
                "apply-order", f"node {node_id} applied {item.index} right after {last}"
            )
        self._last_apply[node_id] = item.index
        before = self.applied.setdefault(item.index, item.command)
        if before != item.command:
            return Violation(
                "state-machine-safety",
                f"index {item.index}: node {node_id} applied {item.command!r}, "
                f"another node applied {before!r}",
            )
        return None

    @staticmethod
    def _commands_between(world: World, node_id: int, last: int, index: int) -> bool:
        """Does the node's log hold a command in (last, index] (so a read there is early)?"""
        node = world.node(node_id)
        assert isinstance(node, RaftNode)
        log = node.log
        return any(
            log.entry(i).kind == ENTRY_COMMAND for i in range(max(last, log.offset) + 1, index + 1)
        )

    def after_event(self, world: World) -> Violation | None:
        for node_id in self.node_ids:
            node = world.node(node_id)
            if isinstance(node, RaftNode):
                violation = self._check_node(node)
                if violation is not None:
                    return violation
        return None

    def liveness(self, world: World) -> str | None:
        nodes = [n for i in self.node_ids if isinstance(n := world.node(i), RaftNode)]
        leaders = [n for n in nodes if n.role == LEADER]
        if not leaders:
            return "no leader"
        leader = max(leaders, key=lambda n: n.term)
        if leader.log.term(leader.commit) != leader.term:
            return f"leader {leader.node_id} has not committed in term {leader.term}"
        members = leader.log.config().members
        behind = [
            f"{n.node_id} (applied {n.applied})"
            for n in nodes
            if n.node_id in members and n.applied < leader.commit
        ]
        if behind:
            return f"members behind leader commit {leader.commit}: {', '.join(behind)}"
        return None

    def at_end(self, world: World) -> Violation | None:
        from pnyx.check.history import History
        from pnyx.check.linearizability import check_linearizable
        from pnyx.check.models import KVModel

        history = History.from_events(world.history)
        result = check_linearizable(history, KVModel(), timeout_s=LINEARIZABILITY_TIMEOUT_S)
        if result.verdict == "not-linearizable":
            return Violation("linearizability", result.explain())
        return None

    # -- invariants ---------------------------------------------------------------------------

    def _check_node(self, node: RaftNode) -> Violation | None:
        node_id = node.node_id
        log = node.log
        seen = self._seen.get(node_id)
        if seen is None or seen[0] != id(node):
            seen = (id(node), -1, log.offset, 0)
        _, generation, checked, commit_seen = seen
        if node.commit < commit_seen:
            return Violation(
                "monotone-commit", f"node {node_id} commit went from {commit_seen} to {node.commit}"
            )
        if node.role == LEADER:
            violation = self._check_leader(node)
            if violation is not None:
                return violation
        committed_term = self.committed.get(log.offset)
        if log.offset and committed_term is not None and committed_term != log.offset_term:
            return Violation(
                "snapshot-term",
                f"node {node_id} snapshot at {log.offset} says term {log.offset_term}; "
                f"term {committed_term} was committed there",
            )
        if generation != log.generation:
            checked = log.offset
        checked = max(checked, log.offset)
        violation = self._check_entries(node, checked + 1)
        if violation is None:
            violation = self._check_commits(node, max(commit_seen, log.offset) + 1)
        self._seen[node_id] = (id(node), log.generation, log.last_index, node.commit)
        return violation

    def _check_leader(self, node: RaftNode) -> Violation | None:
        first = self.leader_of_term.setdefault(node.term, node.node_id)
        if first != node.node_id:
            return Violation(
                "election-safety", f"nodes {first} and {node.node_id} both lead term {node.term}"
            )
        if (node.node_id, node.term) in self._leaders_checked:
            return None
        self._leaders_checked.add((node.node_id, node.term))
        log = node.log
        for index, term in self.committed.items():
            if index > log.offset and log.term(index) != term:
                return Violation(
                    "leader-completeness",
                    f"leader {node.node_id} of term {node.term} has term {log.term(index)} "
                    f"at {index}, where term {term} was committed",
                )
        return None

    def _check_entries(self, node: RaftNode, start: int) -> Violation | None:
        log = node.log
        entries = self.entries
        for index in range(start, log.last_index + 1):
            entry = log.entry(index)
            prev = log.term(index - 1) if index - 1 >= log.offset else None
            known = entries.setdefault((index, entry.term), (prev, entry))
            if known[1] != entry or (prev is not None and known[0] not in (None, prev)):
                return Violation(
                    "log-matching",
                    f"node {node.node_id} holds {entry!r} at {index} after term {prev}; "
                    f"another node holds {known[1]!r} there after term {known[0]}",
                )
        return None

    def _check_commits(self, node: RaftNode, start: int) -> Violation | None:
        log = node.log
        for index in range(start, node.commit + 1):
            term = log.term(index)
            if term is None:
                return Violation(
                    "commit-beyond-log",
                    f"node {node.node_id} commit {node.commit} beyond its log end {log.last_index}",
                )
            known = self.committed.setdefault(index, term)
            if known != term:
                return Violation(
                    "state-machine-safety",
                    f"node {node.node_id} committed term {term} at {index}; "
                    f"term {known} was committed there before",
                )
        return None


def raft_spec(
    mutants: frozenset[str] = frozenset(),
    config: RaftConfig | None = None,
    membership: bool = True,
    name: str = "raft",
) -> ProtocolSpec:
    """The Raft spec; ``mutants`` (names from ``MUTANTS``) breaks it on purpose (tests only)."""
    unknown = mutants - MUTANTS
    assert not unknown, f"unknown mutants {sorted(unknown)}; valid: {sorted(MUTANTS)}"
    base = config or SIM_CONFIG
    node_config = RaftConfig(**{**base.__dict__, "mutants": mutants})
    dedup = SESSION_NO_DEDUP not in mutants

    def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> Any:
        return RaftNode(node_id, peers, rng, durable, node_config)

    def make_client(client_id: int, node_ids: tuple[int, ...], rng: Rng) -> Any:
        return KvClient(client_id, node_ids, rng, admin=membership and client_id == CLIENT_ID_BASE)

    def make_sm() -> StateMachine:
        return KvStateMachine(dedup=dedup)

    return ProtocolSpec(
        name=name,
        summary="Raft KV: pre-vote, check-quorum, ReadIndex, snapshots, joint consensus",
        make_node=make_node,
        make_client=make_client,
        make_monitor=RaftMonitor,
        make_state_machine=make_sm,
        serve=serve,
        default_nodes=5,
        default_clients=3,
        broken=bool(mutants),
    )


RAFT = raft_spec()
