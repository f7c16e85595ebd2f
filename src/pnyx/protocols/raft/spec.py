"""Raft in the simulator: KV clients, the safety/liveness monitor, swarm settings, nemesis.

Safety, after every event and between the steps of one resume: election safety (one leader
per term, and one leader per term as any node sees it), log matching (same index and term
=> same entry and same predecessor term), leader completeness (a leader of term T holds
every entry committed in a term before T), state-machine safety (one command per applied
index, across all nodes and restarts) and a monotone commit index per node life.  Liveness
in the heal phase: a leader that has committed in its term, is not stuck in a joint
configuration, and every live member of its configuration has applied through its commit
index.  At the end the clients' history must be linearizable against the ``kv`` model (a
checker time-out is counted as unknown).

Violation names (stable; ``MUTANT_PROPERTIES`` refers to them): ``election-safety``,
``log-matching``, ``leader-completeness``, ``state-machine-safety``, ``snapshot-term``,
``monotone-commit``, ``commit-beyond-log``, ``apply-order``, ``read-after-apply``,
``linearizability``, ``liveness``; the runner adds ``invariant`` (a node's
``invariants()``) and ``exception``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pnyx.core import (
    CLIENT_ID_BASE,
    Apply,
    DurableState,
    LogAppend,
    NodeFactory,
    Ready,
    Restore,
    Rng,
)
from pnyx.core.node import StateMachine
from pnyx.protocols.raft import CLIENT_MESSAGE_TYPES, PEER_MESSAGE_TYPES
from pnyx.protocols.raft.client import KEYS, KvClient, Steer
from pnyx.protocols.raft.config import MUTANTS, SESSION_NO_DEDUP, RaftConfig
from pnyx.protocols.raft.kv import GET, PUT, KvStateMachine
from pnyx.protocols.raft.messages import (
    ENTRY_COMMAND,
    ENTRY_CONFIG,
    HARD_STATE_KEY,
    TRANSFER,
    AdminRequest,
    AppendResponse,
    ConfigData,
    Entry,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    RequestVote,
    VoteResponse,
)
from pnyx.protocols.raft.node import LEADER, NO_NODE, RaftNode
from pnyx.protocols.raft.services import serve
from pnyx.sim.nemesis import Strike
from pnyx.sim.spec import Monitor, ProtocolDef, RuntimeDef, SimRandom, Violation, World

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
"""Budget for the end-of-run history check; past it the verdict is unknown: not a failure
of the seed, but counted (``SimResult.unknown``) and bounded over a seed set."""
LINEARIZABILITY_MAX_STEPS: int | None = None
"""Optional search-step budget per partition (deterministic, unlike the time-out)."""


class KvHistoryMonitor(Monitor):
    """Base for monitors of a KV service driven by :class:`KvClient`: at the end of a run the
    clients' history must be linearizable against the ``kv`` model.

    A subclass sets ``self.unknown`` (a list) in its ``__init__``; verdicts the check could
    not reach in its budget are added there and reported by :meth:`unknowns`.
    """

    unknown: list[str]

    def unknowns(self) -> list[str]:
        return list(self.unknown)

    def at_end(self, world: World) -> Violation | None:
        from pnyx.check.history import History
        from pnyx.check.linearizability import check_linearizable
        from pnyx.check.models import KVModel

        history = History.from_events(world.history)
        result = check_linearizable(
            history,
            KVModel(),
            timeout_s=LINEARIZABILITY_TIMEOUT_S,
            max_steps=LINEARIZABILITY_MAX_STEPS,
        )
        if result.verdict == "not-linearizable":
            return Violation("linearizability", result.explain())
        if result.verdict != "linearizable":
            self.unknown.append(f"linearizability {result.verdict}: {result.explain()}")
        return None


class RaftMonitor(KvHistoryMonitor):
    """Raft's invariants, checked incrementally (each entry and commit is looked at once)."""

    def __init__(self, node_ids: tuple[int, ...]) -> None:
        self.node_ids = node_ids
        self.leader_of_term: dict[int, int] = {}
        self.committed: dict[int, int] = {}
        """index -> term of every entry some node has committed."""
        self.commit_seen_term: dict[int, int] = {}
        """index -> the lowest current term of a node seen holding the index committed: the
        entry was committed in that term or earlier (Leader Completeness binds only the
        leaders of later terms)."""
        self.leader_seen: dict[int, tuple[int, int]] = {}
        """term -> (leader, node that reported it): the leader nodes believe in per term."""
        self.unknown: list[str] = []
        """Checks that could not decide (e.g. the linearizability checker timed out)."""
        self.entries: dict[tuple[int, int], tuple[int | None, Any]] = {}
        """(index, term) -> (term of the entry before it, the entry)."""
        self.applied: dict[int, Any] = {}
        self._seen: dict[int, tuple[int, int, int, int]] = {}
        """node -> (object id, log generation, entries checked through, commit seen)."""
        self._last_apply: dict[int, int] = {}
        self._leaders_checked: set[tuple[int, int]] = set()
        self._fingerprint: dict[int, tuple[int, ...]] = {}
        """node -> what its checked state looked like (unchanged nodes are not re-checked)."""

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
        conf = leader.log.config()
        if conf.joint:
            return f"leader {leader.node_id} still in a joint configuration (C_old,new)"
        members = conf.members
        behind = [
            f"{n.node_id} (applied {n.applied})"
            for n in nodes
            if n.node_id in members and n.applied < leader.commit
        ]
        if behind:
            return f"members behind leader commit {leader.commit}: {', '.join(behind)}"
        return None

    # -- invariants ---------------------------------------------------------------------------

    def _check_node(self, node: RaftNode) -> Violation | None:
        node_id = node.node_id
        log = node.log
        # Every check below is a function of these (the log changes only by appending,
        # which moves last_index, or by truncation/snapshots, which bump the generation).
        fingerprint = (
            id(node),
            node.term,
            node.leader,
            node.commit,
            log.last_index,
            log.generation,
            log.offset,
            node.role == LEADER,
        )
        if self._fingerprint.get(node_id) == fingerprint:
            return None
        violation = self._check_changed_node(node)
        if violation is None:
            self._fingerprint[node_id] = fingerprint
        return violation

    def _check_changed_node(self, node: RaftNode) -> Violation | None:
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
        violation = self._check_leader_seen(node)
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
        seen_term = self.commit_seen_term
        for index, term in self.committed.items():
            # Only entries committed before this leader's term bind it: a paused candidate
            # may legally win an older term after a later term committed more.
            if seen_term.get(index, node.term) >= node.term:
                continue
            if index > log.offset and log.term(index) != term:
                return Violation(
                    "leader-completeness",
                    f"leader {node.node_id} of term {node.term} has term {log.term(index)} "
                    f"at {index}, where term {term} was committed in term "
                    f"{seen_term[index]} or earlier",
                )
        return None

    def _check_leader_seen(self, node: RaftNode) -> Violation | None:
        """At most one leader per term, as any node sees it (its ``leader`` in its term)."""
        leader = node.leader
        if leader <= 0:
            return None
        known = self.leader_seen.setdefault(node.term, (leader, node.node_id))
        if known[0] != leader:
            return Violation(
                "election-safety",
                f"node {known[1]} saw {known[0]} lead term {node.term}, "
                f"node {node.node_id} saw {leader}",
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
            seen = self.commit_seen_term.get(index)
            if seen is None or node.term < seen:
                self.commit_seen_term[index] = node.term
            if known != term:
                return Violation(
                    "state-machine-safety",
                    f"node {node.node_id} committed term {term} at {index}; "
                    f"term {known} was committed there before",
                )
        return None


# -- swarm settings and the protocol-aware nemesis ------------------------------------------

CLIENT_SETTINGS = ("admin_probability", "max_think_ticks", "retry_ticks")
"""Swarm settings that shape the client mix (``KvClient`` arguments)."""


def split_settings(
    settings: Mapping[str, Any],
    client_keys: tuple[str, ...] = CLIENT_SETTINGS,
    spec_keys: tuple[str, ...] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split one swarm seed's settings into (client arguments, protocol config fields):
    ``client_keys`` go to the clients, ``spec_keys`` (read by the spec itself) to neither."""
    clients = {k: v for k, v in settings.items() if k in client_keys}
    not_config = (*client_keys, *spec_keys)
    protocol = {k: v for k, v in settings.items() if k not in not_config}
    return clients, protocol


def draw_raft_settings(rng: SimRandom) -> dict[str, Any]:
    """One swarm seed's Raft settings: protocol switches, windows, thresholds, client mix."""
    check_quorum = rng.random() < 0.8
    settings: dict[str, Any] = {
        "pre_vote": rng.random() < 0.7,
        "check_quorum": check_quorum,
        "lease_reads": check_quorum and rng.random() < 0.5,
        "max_inflight_msgs": rng.choice((1, 2, 4, 8)),
        "max_entries_per_msg": rng.choice((1, 4, 8, 64)),
        "snapshot_threshold_entries": rng.choice((8, 32, 200)),
        "election_jitter_ticks": rng.choice((2, 4, 10)),
        "initial_voters": None if rng.random() < 0.4 else SIM_CONFIG.initial_voters,
        "admin_probability": rng.choice((0.0, 0.1, 0.35, 0.7)),
        "max_think_ticks": rng.choice((0, 3, 10)),
        "retry_ticks": rng.choice((4, 8, 16)),
    }
    if "buggify" in {f.name for f in dataclasses.fields(RaftConfig)}:
        settings["buggify"] = rng.random() < 0.3
    return settings


SNAPSHOT_STRESS_P = 0.35
"""Chance that a swarm seed streams snapshots in small chunks (several chunks per stream)."""
LOW_THRESHOLD_P = 0.7
"""Chance that such a seed also takes snapshots every few entries."""


def draw_raft_stream_settings(rng: SimRandom) -> dict[str, Any]:
    """Settings added after the mutant table was measured (their own stream, see
    ``ProtocolDef.draw_stream_settings``): simulated snapshots are under ~200 bytes, so
    only small chunks make a stream of several chunks; low thresholds then make a newer
    snapshot while an older one is still streaming likely.  Drawn together, so that the
    seeds they change are few."""
    if rng.random() >= SNAPSHOT_STRESS_P:
        return {}
    settings: dict[str, Any] = {"snapshot_chunk_bytes": rng.choice((8, 16, 32))}
    if rng.random() < LOW_THRESHOLD_P:
        settings["snapshot_threshold_entries"] = rng.choice((2, 4, 8))
    return settings


NEMESIS_RULES: tuple[str, ...] = (
    "vote-crash",
    "joint-isolate",
    "joint-split",
    "read-pause",
    "read-isolate",
    "append-crash",
    "append-isolate",
    "commit-crash",
    "ack-crash",
    "joint-transfer",
    "snapshot-echo",
)
"""``vote-crash``: crash a node right after it sends a granted vote (it restarts quickly,
half the time at once);
``joint-isolate``: isolate a leader the moment it appends a joint configuration;
``joint-split``: at that moment, cut the leader and the incoming voters off from the rest;
``read-pause``: pause a leader just before it answers a read (mostly also cut off from its
peers for longer than the pause, so a successor's messages are not waiting for it);
``read-isolate``: cut a leader off from its peers (clients still reach it) as it answers
a read;
``append-crash``: crash a leader right after it sends new entries (its election no-op
included), so they reach only the followers the network let through (Figure 8);
``append-isolate``: isolate a leader as it appends new entries, so they stay only on it
(the other half of Figure 8: an uncommitted entry of a later term on one node);
``commit-crash``: crash a leader the moment its commit index moves to an entry of an
earlier term, before that batch's messages leave (a correct leader never does that: it
commits only its own term's entries);
``ack-crash``: crash a follower right after it acknowledges its leader, and restart it at
once (its acknowledgement still counts toward the leader's lease);
``joint-transfer``: as a leader appends a joint configuration, an admin asks it to hand
leadership to a voter of either half (the transfer overlaps the joint phase);
``snapshot-echo``: deliver a snapshot chunk again much later (a stale duplicate)."""

STREAM_NEMESIS_RULES: tuple[str, ...] = ("snapshot-stale", "lease-steal")
"""Rules with RNG streams of their own (added after the mutant table was measured; see
:mod:`pnyx.sim.nemesis`).
``lease-steal``: a sequence against leases.  (1) As a leader with lease reads sends
heartbeats while every voter is up to date, cut it off from one voter C and hold the
clients back (a quiet phase of the workload) for longer than an election timeout: C's
timer runs out with a log as good as anyone's.  (2) As C asks for votes, power-cycle the
other voters (back before C's request arrives) and cut the old leader off from its peers:
its lease still counts their acknowledgements from just before.  (3) Once C leads and has
committed in its term while the old leader still thinks it leads, steer a client to write
a key at C and then read it at the old leader.  A restarted voter must sit out an election
timeout; if it votes at once, the old leader serves that read from its lease, stale.
``snapshot-stale``: cut a follower off as its leader starts streaming it a snapshot of
several chunks (the stream stalls while the leader compacts further); once the leader
streams it a newer snapshot in the same term, deliver the first chunk of the older one
again in the middle of that stream (a copy the network held back; also after the heal,
where no lost message makes the stall detector restart the stream)."""


@dataclasses.dataclass
class _Steal:
    """A ``lease-steal`` sequence in progress."""

    leader: int
    candidate: int
    term: int
    voters: tuple[int, ...]
    """The other voters (power-cycled in step 2)."""
    step: int
    deadline_us: int
    """The sequence is given up if its next step has not come by then."""


NEMESIS_REQUEST_ID = 1 << 40
"""Request id of admin requests the nemesis sends (no client ever waits on it)."""


class RaftNemesis:
    """Proposes strikes at the moments Raft is vulnerable (see :data:`NEMESIS_RULES`)."""

    def __init__(self, rules: frozenset[str]) -> None:
        unknown = rules - set(NEMESIS_RULES) - set(STREAM_NEMESIS_RULES)
        if unknown:
            raise ValueError(f"unknown raft nemesis rules {sorted(unknown)}")
        self.rules = rules
        self._commit_seen: dict[int, tuple[int, int]] = {}
        """node -> (object id, commit index) when last seen."""
        self._first_chunks: dict[tuple[int, int, int], dict[int, InstallSnapshot]] = {}
        """(leader, term, follower) -> snapshot index -> the first chunk streamed of it."""
        self._steal: _Steal | None = None
        self._steal_proposed: _Steal | None = None
        """Step 1 as proposed; it becomes ``_steal`` once the run carries it out."""

    def on_batch(self, world: World, node_id: int, ready: Ready, rng: SimRandom) -> Strike | None:
        node = world.node(node_id)
        if not isinstance(node, RaftNode):
            return None
        rules = self.rules
        leading = node.role == LEADER
        if leading and "snapshot-stale" in rules:
            self._record_first_chunks(node, ready)  # also where another rule strikes
        if "commit-crash" in rules and self._commits_old_term(node):
            return Strike("halt", node_id, rng.randrange(5_000, 100_000), "commit-crash")
        if "vote-crash" in rules and _grants_vote(ready):
            # Half the time the node is back at once, before a competing candidate's request
            # of the same term reaches it (a forgotten vote is granted twice).
            quick = rng.random() < 0.5
            down_us = rng.randrange(0, 2_000) if quick else rng.randrange(1_000, 30_000)
            return Strike("crash", node_id, down_us, "vote-crash")
        joint = _appended_joint(ready) if leading else None
        if joint is not None and "joint-split" in rules and rng.random() < 0.5:
            incoming = tuple(sorted(set(joint.voters) - set(joint.outgoing) - {node_id}))
            group = (node_id, *incoming)
            return Strike("split", node_id, rng.randrange(50_000, 300_000), "joint-split", group)
        if joint is not None and "joint-transfer" in rules and rng.random() < 0.5:
            targets = sorted((set(joint.voters) | set(joint.outgoing)) - {node_id})
            if targets:
                target = targets[rng.randrange(0, len(targets))]
                request = AdminRequest(NEMESIS_REQUEST_ID, TRANSFER, target, 1, 0)
                delay_us = rng.randrange(0, 30_000)
                return Strike(
                    "inject",
                    node_id,
                    delay_us,
                    "joint-transfer",
                    message=request,
                    source=CLIENT_ID_BASE,
                )
        if joint is not None and "joint-isolate" in rules:
            return Strike("isolate", node_id, rng.randrange(30_000, 300_000), "joint-isolate")
        if leading and _serves_read(ready):
            if "read-pause" in rules and rng.random() < 0.5:
                pause_us = rng.randrange(100_000, 400_000)
                cut_us = pause_us + rng.randrange(0, 300_000) if rng.random() < 0.75 else 0
                return Strike("pause", node_id, pause_us, "read-pause", isolate_us=cut_us)
            if "read-isolate" in rules:
                return Strike("isolate", node_id, rng.randrange(100_000, 500_000), "read-isolate")
        if leading and ready.send and _appends_entries(ready):
            if "append-crash" in rules and rng.random() < 0.5:
                return Strike("crash", node_id, rng.randrange(5_000, 150_000), "append-crash")
            if "append-isolate" in rules:
                cut_us = rng.randrange(50_000, 300_000)
                return Strike("isolate", node_id, cut_us, "append-isolate")
        if "ack-crash" in rules and not leading and _acks_leader(ready):
            return Strike("crash", node_id, rng.randrange(1_000, 20_000), "ack-crash")
        if "snapshot-echo" in rules and any(type(s.msg) is InstallSnapshot for s in ready.send):
            return Strike("echo", node_id, rng.randrange(50_000, 500_000), "snapshot-echo")
        return None

    def stream_strike(
        self, world: World, node_id: int, ready: Ready, rngs: Mapping[str, SimRandom]
    ) -> Strike | None:
        """Strikes of :data:`STREAM_NEMESIS_RULES` (each draws from its own stream)."""
        node = world.node(node_id)
        if not isinstance(node, RaftNode):
            return None
        steal_rng = rngs.get("lease-steal")
        if steal_rng is not None and not world.healing:
            hit = self._lease_steal(world, node, ready, steal_rng)
            if hit is not None:
                return hit
        if node.role != LEADER:
            return None
        rng = rngs.get("snapshot-stale")
        if rng is None or not any(type(s.msg) is InstallSnapshot for s in ready.send):
            return None
        stale = self._stale_chunk(world, node, ready)
        if stale is not None:
            follower, chunk = stale
            delay_us = rng.randrange(0, 3_000)
            return Strike(
                "inject", follower, delay_us, "snapshot-stale", message=chunk, source=node_id
            )
        first = [
            s.to
            for s in ready.send
            if type(s.msg) is InstallSnapshot and s.msg.offset == 0 and not s.msg.done
        ]
        if first and not world.healing:
            cut_us = rng.randrange(200_000, 3_000_000)
            return Strike("isolate", first[0], cut_us, "snapshot-stale")
        return None

    # -- lease-steal ----------------------------------------------------------------------

    def _lease_steal(
        self, world: World, node: RaftNode, ready: Ready, rng: SimRandom
    ) -> Strike | None:
        """The next step of a ``lease-steal`` sequence at this batch, if it is its moment."""
        steal = self._steal
        if steal is not None and world.now_us > steal.deadline_us:
            steal = self._steal = None
        if steal is None:
            return self._steal_cut(world, node, ready, rng)
        old = world.node(steal.leader)
        if not isinstance(old, RaftNode) or old.role != LEADER or old.term != steal.term:
            self._steal = None  # the old leader is gone: nothing left to steal
            return None
        if node.node_id != steal.candidate:
            return None
        if steal.step == 1:
            return self._steal_reboot(world, node, ready, steal, rng)
        return self._steal_steer(world, node, steal, rng)

    def stream_struck(self, hit: Strike) -> None:
        """A ``lease-steal`` sequence starts when its first step is carried out."""
        if hit.rule == "lease-steal" and hit.kind == "cut":
            self._steal, self._steal_proposed = self._steal_proposed, None

    def _steal_steer(
        self, world: World, node: RaftNode, steal: _Steal, rng: SimRandom
    ) -> Strike | None:
        """Step 3: the candidate leads and has committed in its term; the old leader still
        thinks it leads.  A client writes a key at the new leader, then reads it at the old."""
        if node.role != LEADER or node.term <= steal.term:
            return None
        if node.log.term(node.commit) != node.term:
            return None
        self._steal = None
        key = KEYS[rng.randrange(0, len(KEYS))]
        steer = Steer(ops=((node.node_id, PUT, key), (steal.leader, GET, key)))
        client = world.client_ids[rng.randrange(0, len(world.client_ids))]
        return Strike(
            "inject", client, 0, "lease-steal", message=steer, source=node.node_id, followup=True
        )

    def _steal_cut(
        self, world: World, node: RaftNode, ready: Ready, rng: SimRandom
    ) -> Strike | None:
        """Step 1: a leasing, idle leader's heartbeat batch; every voter up to date."""
        cfg = node.cfg
        if node.role != LEADER or not cfg.lease_reads or node.transfer_target != NO_NODE:
            return None
        conf = node.log.config()
        last = node.log.last_index
        if conf.joint or node.commit != last:
            return None
        if not any(type(s.msg) is Heartbeat for s in ready.send):
            return None
        others = sorted(v for v in conf.voters if v != node.node_id)
        peers = [world.node(v) for v in others]
        if not others or not all(
            isinstance(p, RaftNode) and p.term == node.term and p.log.last_index == last
            for p in peers
        ):
            return None
        candidate = others[rng.randrange(0, len(others))]
        timeout_ticks = cfg.election_timeout_ticks + cfg.election_jitter_ticks
        quiet_ticks = timeout_ticks + rng.randrange(2, timeout_ticks + 1)
        quiet_us = quiet_ticks * world.tick_us
        voters = tuple(v for v in others if v != candidate)
        deadline_us = world.now_us + quiet_us
        self._steal_proposed = _Steal(node.node_id, candidate, node.term, voters, 1, deadline_us)
        hold = Steer(idle_ticks=quiet_ticks)
        also = tuple(
            Strike("inject", c, 0, "lease-steal", message=hold, source=node.node_id)
            for c in world.client_ids
        )
        return Strike("cut", node.node_id, quiet_us, "lease-steal", (candidate,), also=also)

    def _steal_reboot(
        self, world: World, node: RaftNode, ready: Ready, steal: _Steal, rng: SimRandom
    ) -> Strike | None:
        """Step 2: the cut-off voter asks for votes; the others' logs are no better."""
        if not any(type(s.msg) is RequestVote for s in ready.send):
            return None
        mine = (node.log.last_term, node.log.last_index)
        for v in steal.voters:
            voter = world.node(v)
            if not isinstance(voter, RaftNode):
                return None
            if (voter.log.last_term, voter.log.last_index) > mine:
                return None
        cut_us = rng.randrange(50_000, 300_000)
        steal.step = 2
        steal.deadline_us = world.now_us + cut_us
        # Back before the vote requests arrive (the network takes at least 100 us).
        cycle = tuple(Strike("crash", v, rng.randrange(0, 80), "lease-steal") for v in steal.voters)
        return Strike("isolate", steal.leader, cut_us, "lease-steal", also=cycle, followup=True)

    def _record_first_chunks(self, node: RaftNode, ready: Ready) -> None:
        """Remember the first chunks (of snapshots of several chunks) this leader streams,
        per term and follower (``snapshot-stale``; no randomness)."""
        for send in ready.send:
            msg = send.msg
            if type(msg) is InstallSnapshot and msg.offset == 0 and not msg.done:
                firsts = self._first_chunks.setdefault((node.node_id, msg.term, send.to), {})
                firsts[msg.index] = msg

    def _stale_chunk(
        self, world: World, node: RaftNode, ready: Ready
    ) -> tuple[int, InstallSnapshot] | None:
        """At a chunk (not the last) of a newer snapshot, the first chunk of the latest older
        one this leader streamed to that follower in its term, which the follower still
        lacks (beyond its commit index): (follower, chunk), if any."""
        self._record_first_chunks(node, ready)
        for send in ready.send:
            msg = send.msg
            if type(msg) is not InstallSnapshot or msg.done:
                continue
            firsts = self._first_chunks.get((node.node_id, msg.term, send.to), {})
            follower = world.node(send.to)
            commit = follower.commit if isinstance(follower, RaftNode) else 0
            older = [i for i in firsts if commit < i < msg.index]
            if older:
                return send.to, firsts[max(older)]
        return None

    def _commits_old_term(self, node: RaftNode) -> bool:
        """Did this leader's commit index just move to an entry of an earlier term?"""
        before = self._commit_seen.get(node.node_id)
        self._commit_seen[node.node_id] = (id(node), node.commit)
        if before is None or before[0] != id(node) or node.role != LEADER:
            return False
        return node.commit > before[1] and node.log.term(node.commit) != node.term


def _acks_leader(ready: Ready) -> bool:
    return any(type(s.msg) in (AppendResponse, HeartbeatResponse) for s in ready.send)


def _grants_vote(ready: Ready) -> bool:
    return any(
        type(s.msg) is VoteResponse and s.msg.granted and not s.msg.pre_vote for s in ready.send
    )


def _appended_joint(ready: Ready) -> ConfigData | None:
    """The joint configuration (C_old,new) this batch appends, if any."""
    for op in ready.persist:
        if type(op) is LogAppend:
            for entry in op.entries:
                data = getattr(entry, "data", None)
                if entry.kind == ENTRY_CONFIG and isinstance(data, ConfigData) and data.outgoing:
                    return data
    return None


def _serves_read(ready: Ready) -> bool:
    return any(
        isinstance(item, Apply) and item.read_only and item.reply_to is not None
        for item in ready.apply
    )


def _appends_entries(ready: Ready) -> bool:
    """New entries of any kind (commands, the election no-op, configurations)."""
    return any(type(op) is LogAppend and op.entries for op in ready.persist)


def raft_spec(
    mutants: frozenset[str] = frozenset(),
    config: RaftConfig | None = None,
    membership: bool = True,
    name: str = "raft",
    client_options: Mapping[str, Any] | None = None,
) -> ProtocolDef:
    """The Raft spec; ``mutants`` (names from ``MUTANTS``) breaks it on purpose (tests only).

    ``client_options`` are passed to every ``KvClient`` (swarm: the client mix).
    """
    unknown = mutants - MUTANTS
    assert not unknown, f"unknown mutants {sorted(unknown)}; valid: {sorted(MUTANTS)}"
    base = config or SIM_CONFIG
    node_config = dataclasses.replace(base, mutants=mutants)
    dedup = SESSION_NO_DEDUP not in mutants
    client_kwargs = dict(client_options or {})

    def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> Any:
        return RaftNode(node_id, peers, rng, durable, node_config)

    def make_client(client_id: int, node_ids: tuple[int, ...], rng: Rng) -> Any:
        admin = membership and client_id == CLIENT_ID_BASE
        return KvClient(client_id, node_ids, rng, admin=admin, **client_kwargs)

    def make_sm() -> StateMachine:
        return KvStateMachine(dedup=dedup)

    def configure(settings: Mapping[str, Any]) -> ProtocolDef:
        clients, protocol = split_settings(settings)
        return raft_spec(
            mutants,
            dataclasses.replace(base, **protocol),
            membership,
            name,
            {**client_kwargs, **clients},
        )

    return ProtocolDef(
        name=name,
        summary="Raft-replicated key-value store: pre-vote, check-quorum, ReadIndex reads, "
        "snapshots, joint consensus, client sessions",
        make_node=make_node,
        make_client=make_client,
        make_monitor=RaftMonitor,
        make_state_machine=make_sm,
        serve=serve,
        default_nodes=5,
        default_clients=3,
        broken=bool(mutants),
        draw_settings=draw_raft_settings,
        draw_stream_settings=draw_raft_stream_settings,
        configure=configure,
        make_nemesis=RaftNemesis,
        nemesis_rules=NEMESIS_RULES,
        stream_nemesis_rules=STREAM_NEMESIS_RULES,
        swarm_nodes=(3, 5, 5, 7),
        runtime=RAFT_RUNTIME,
    )


def raft_mutant_spec(mutants: frozenset[str], name: str) -> ProtocolDef:
    """``raft+MUTANT[,MUTANT]``: Raft broken by those mutants; KeyError naming the valid ones."""
    unknown = sorted(mutants - MUTANTS)
    if unknown:
        raise KeyError(
            f"unknown protocol {name!r}: unknown mutants {unknown}; "
            f"valid: {', '.join(sorted(MUTANTS))}"
        )
    return raft_spec(mutants=mutants, name=name)


RAFT_RUNTIME_CONFIG_FIELDS: dict[str, Any] = {
    "snapshot_threshold_entries": 10_000,
    "max_entries_per_msg": 256,
    "max_inflight_msgs": 16,
    "snapshot_chunk_bytes": 1 << 20,
}
"""Raft tuning for real processes (10 ms ticks): bigger batches, windows and snapshots than
the simulator's deliberately small ones."""


def raft_node_factory(**overrides: Any) -> NodeFactory:
    """A factory of Raft nodes with the runtime tuning and ``overrides`` of
    :class:`~pnyx.protocols.raft.RaftConfig` fields (e.g. ``election_timeout_ticks``)."""
    config = RaftConfig(**{**RAFT_RUNTIME_CONFIG_FIELDS, **overrides})

    def make_node(
        node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState
    ) -> RaftNode:
        return RaftNode(node_id, peers, rng, durable, config)

    return make_node


RAFT_RUNTIME = RuntimeDef(
    peer_message_types=PEER_MESSAGE_TYPES,
    client_message_types=CLIENT_MESSAGE_TYPES,
    entry_type=Entry,
    record_types={HARD_STATE_KEY: HardState},
    make_node=raft_node_factory(),
    make_state_machine=KvStateMachine,
    serve=serve,
)
"""Raft's KV on real processes: the runtime tuning, the plain KV state machine."""

RAFT = raft_spec()
