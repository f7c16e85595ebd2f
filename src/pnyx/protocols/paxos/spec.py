"""Multi-Paxos in the simulator: Raft's KV clients, the Paxos monitor, swarm settings, nemesis.

Safety after every event, from the acceptances nodes made durable (``accept_journal``)
and their chosen prefixes:

- ``chosen-unique``: at most one value is chosen per slot (a phase-2 quorum accepted it at
  one ballot);
- ``accepted-above-chosen``: a value accepted for a slot at a ballot above one at which a
  value was chosen equals that value (Paxos' P2b, the invariant its proof rests on);
- ``ballot-value``: one value per (slot, ballot) (a leader proposes once per slot);
- ``state-machine-safety``: every node's chosen prefix holds the same value per slot
  (a skipped gap counts as a value of its own), and every applied command per slot is the
  same across nodes and restarts;
- ``monotone-commit`` and ``apply-order``.

Liveness in the heal phase: a leader whose proposals are all chosen, and every live node
has applied through its commit.  At the end, the clients' history must be linearizable
against the ``kv`` model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pnyx.core import Apply, DurableState, Ready, Restore, Rng
from pnyx.core.node import StateMachine
from pnyx.protocols.paxos import (
    LEADER,
    MUTANTS,
    Accept,
    Accepted,
    PaxosConfig,
    PaxosNode,
    Prepare,
    Promise,
    Slot,
    quorum_sizes,
    serve,
)
from pnyx.protocols.paxos.config import SESSION_NO_DEDUP
from pnyx.protocols.paxos.messages import KIND_HOLE, Ballot
from pnyx.protocols.paxos.runtime_def import PAXOS_RUNTIME, paxos_node_factory
from pnyx.protocols.raft.client import KvClient
from pnyx.protocols.raft.kv import KvStateMachine
from pnyx.protocols.raft.spec import (
    KvHistoryMonitor,
    split_settings,
)
from pnyx.sim.nemesis import Strike
from pnyx.sim.spec import Monitor, ProtocolDef, SimRandom, Violation, World

SIM_CONFIG = PaxosConfig(
    election_jitter_ticks=6,
    max_batch_slots=4,
    max_inflight_slots=8,
    snapshot_threshold_slots=24,
)
"""Small batches, window and snapshot threshold so that every mechanism runs in a short run."""

SKIPPED = ("<skipped gap>",)
"""What the monitor records for a slot a node counts as chosen without holding a value."""


class PaxosMonitor(KvHistoryMonitor):
    """Paxos' invariants, checked incrementally (each acceptance and commit looked at once)."""

    def __init__(self, node_ids: tuple[int, ...], config: PaxosConfig = SIM_CONFIG) -> None:
        self.node_ids = node_ids
        self.q1, self.q2 = quorum_sizes(len(node_ids), config.phase1_quorum, config.phase2_quorum)
        self.accepted: dict[int, dict[Ballot, tuple[Any, set[int]]]] = {}
        """slot -> ballot -> (value, acceptors that made it durable)."""
        self.chosen: dict[int, tuple[Ballot, Any]] = {}
        """slot -> (lowest ballot it was chosen at, the value)."""
        self.committed: dict[int, Any] = {}
        """slot -> the value some node's chosen prefix holds there."""
        self.applied: dict[int, Any] = {}
        self._cursor: dict[int, tuple[int, int, int]] = {}
        """node -> (object id, journal entries seen, commit seen)."""
        self._last_apply: dict[int, int] = {}
        self.unknown: list[str] = []

    def on_restart(self, world: World, node_id: int) -> None:
        self._last_apply.pop(node_id, None)

    def on_apply(
        self, world: World, node_id: int, item: Apply | Restore, result: Any
    ) -> Violation | None:
        last = self._last_apply.get(node_id, 0)
        if isinstance(item, Restore):
            self._last_apply[node_id] = item.index
            return None
        if item.read_only:
            return None
        if item.index <= last:
            return Violation("apply-order", f"node {node_id} applied {item.index} after {last}")
        self._last_apply[node_id] = item.index
        before = self.applied.setdefault(item.index, item.command)
        if before != item.command:
            return Violation(
                "state-machine-safety",
                f"slot {item.index}: node {node_id} applied {item.command!r}, "
                f"another node applied {before!r}",
            )
        return None

    def after_event(self, world: World) -> Violation | None:
        for node_id in self.node_ids:
            node = world.node(node_id)
            if isinstance(node, PaxosNode):
                violation = self._check_node(node)
                if violation is not None:
                    return violation
        return None

    def _check_node(self, node: PaxosNode) -> Violation | None:
        seen = self._cursor.get(node.node_id)
        if seen is None or seen[0] != id(node):
            seen = (id(node), 0, node.offset)
        _, journaled, commit_seen = seen
        if node.journal_seq == journaled and node.commit == commit_seen:
            return None
        if node.commit < commit_seen:
            return Violation(
                "monotone-commit", f"node {node.node_id} commit went {commit_seen} -> {node.commit}"
            )
        fresh = node.journal_seq - journaled
        journal = node.accept_journal
        for slot, ballot, value in list(journal)[max(0, len(journal) - fresh) :]:
            violation = self._accepted(node.node_id, slot, ballot, _value(value))
            if violation is not None:
                return violation
        for slot in range(max(commit_seen, node.offset) + 1, node.commit + 1):
            violation = self._committed(node, slot)
            if violation is not None:
                return violation
        self._cursor[node.node_id] = (id(node), node.journal_seq, node.commit)
        return None

    def _accepted(self, node_id: int, slot: int, ballot: Ballot, value: Any) -> Violation | None:
        per_ballot = self.accepted.setdefault(slot, {})
        known = per_ballot.get(ballot)
        if known is None:
            known = per_ballot[ballot] = (value, set())
        elif known[0] != value:
            return Violation(
                "ballot-value",
                f"slot {slot} ballot {ballot}: node {node_id} accepted {value!r}, "
                f"another node {known[0]!r}",
            )
        known[1].add(node_id)
        chosen = self.chosen.get(slot)
        if chosen is not None and ballot > chosen[0] and value != chosen[1]:
            return Violation(
                "accepted-above-chosen",
                f"slot {slot}: node {node_id} accepted {value!r} at ballot {ballot}, above "
                f"ballot {chosen[0]} where {chosen[1]!r} was chosen",
            )
        if len(known[1]) >= self.q2 and (chosen is None or ballot < chosen[0]):
            return self._chose(slot, ballot, value)
        return None

    def _chose(self, slot: int, ballot: Ballot, value: Any) -> Violation | None:
        before = self.chosen.get(slot)
        self.chosen[slot] = (ballot, value)
        if before is not None and before[1] != value:
            return Violation(
                "chosen-unique",
                f"slot {slot}: {value!r} chosen at ballot {ballot}, {before[1]!r} at {before[0]}",
            )
        for other, (accepted, nodes) in sorted(self.accepted[slot].items()):
            if other > ballot and accepted != value:
                return Violation(
                    "accepted-above-chosen",
                    f"slot {slot}: nodes {sorted(nodes)} accepted {accepted!r} at ballot "
                    f"{other}, above ballot {ballot} where {value!r} was chosen",
                )
        return None

    def _committed(self, node: PaxosNode, slot: int) -> Violation | None:
        held = node.entry(slot)
        value = SKIPPED if held is None or held.kind == KIND_HOLE else _value(held)
        known = self.committed.setdefault(slot, value)
        if known != value:
            return Violation(
                "state-machine-safety",
                f"slot {slot}: node {node.node_id} holds {value!r} as chosen, "
                f"another node {known!r}",
            )
        return None

    def liveness(self, world: World) -> str | None:
        up = [i for i in self.node_ids if not world.stopped(i)]
        if len(up) < max(self.q1, self.q2):
            return None  # too many nodes fail-stopped on damaged disks for any quorum
        nodes = [n for i in up if isinstance(n := world.node(i), PaxosNode)]
        leaders = [n for n in nodes if n.role == LEADER]
        if not leaders:
            return "no leader"
        leader = max(leaders, key=lambda n: n.ballot)
        if leader.commit < leader.last_slot:
            return f"leader {leader.node_id} has chosen {leader.commit} of {leader.last_slot}"
        behind = [f"{n.node_id} (applied {n.applied})" for n in nodes if n.applied < leader.commit]
        if behind:
            return f"behind leader commit {leader.commit}: {', '.join(behind)}"
        return None


def _value(slot: Slot) -> Any:
    return (slot.kind, slot.value)


# -- swarm settings and the protocol-aware nemesis ------------------------------------------


def draw_paxos_settings(rng: SimRandom) -> dict[str, Any]:
    """One swarm seed's settings: quorum shape, batches, window, snapshots, client mix."""
    return {
        "phase2_quorum": rng.choice((None, None, 2)),
        "max_batch_slots": rng.choice((1, 4, 16)),
        "max_inflight_slots": rng.choice((1, 4, 8, 64)),
        "snapshot_threshold_slots": rng.choice((4, 24, 200)),
        "election_jitter_ticks": rng.choice((2, 6, 10)),
        "max_think_ticks": rng.choice((0, 3, 10)),
        "retry_ticks": rng.choice((4, 8, 16)),
    }


NEMESIS_RULES: tuple[str, ...] = (
    "promise-crash",
    "prepare-isolate",
    "prepare-cut-leader",
    "accept-crash",
    "accept-isolate",
    "ack-crash",
    "read-isolate",
)
"""``promise-crash``: crash an acceptor right after it sends a promise; half the time it is
back at once and an older leader's accept that the network held back (one it never got)
reaches it right after (a forgotten promise takes it);
``prepare-isolate``: cut a candidate off from its peers mid-phase-1 (as its prepares leave);
``prepare-cut-leader``: as a candidate's prepares leave, cut the links between it and the
leader it wants to replace (the old leader keeps proposing, unaware);
``accept-crash``: crash a leader right after it sends accepts (they reach only some
acceptors: a value accepted by a minority, or a gap, for the next leader's phase 1);
``accept-isolate``: isolate a leader as it sends accepts (its proposals stay on it);
``ack-crash``: crash an acceptor right after it acknowledges accepts;
``read-isolate``: cut a leader off from its peers (clients still reach it) as it answers a
read, so that a successor commits writes while it still thinks it leads."""


class PaxosNemesis:
    """Proposes strikes at the moments Paxos is vulnerable (see :data:`NEMESIS_RULES`)."""

    def __init__(self, rules: frozenset[str]) -> None:
        unknown = rules - set(NEMESIS_RULES)
        if unknown:
            raise ValueError(f"unknown paxos nemesis rules {sorted(unknown)}")
        self.rules = rules
        self._last_accept: dict[tuple[int, int], Accept] = {}
        """(leader, acceptor) -> the latest Accept that leader sent that acceptor."""

    def on_batch(self, world: World, node_id: int, ready: Ready, rng: SimRandom) -> Strike | None:
        node = world.node(node_id)
        if not isinstance(node, PaxosNode):
            return None
        rules = self.rules
        kinds = {type(s.msg) for s in ready.send}
        if "promise-crash" in rules:
            if node.role == LEADER and Accept in kinds:
                self._record_accepts(node_id, ready)
            if Promise in kinds:
                return self._promise_crash(node, ready, rng)
        if Prepare in kinds:
            hit = self._phase1_strike(world, node, rng)
            if hit is not None:
                return hit
        if node.role == LEADER and Accept in kinds:
            if "accept-crash" in rules and rng.random() < 0.5:
                return Strike("crash", node_id, rng.randrange(5_000, 150_000), "accept-crash")
            if "accept-isolate" in rules:
                return Strike("isolate", node_id, rng.randrange(50_000, 300_000), "accept-isolate")
        if "ack-crash" in rules and Accepted in kinds:
            return Strike("crash", node_id, rng.randrange(1_000, 20_000), "ack-crash")
        if "read-isolate" in rules and node.role == LEADER and _serves_read(ready):
            return Strike("isolate", node_id, rng.randrange(200_000, 800_000), "read-isolate")
        return None

    def _record_accepts(self, leader: int, ready: Ready) -> None:
        """Remember the latest accepts this leader sent each acceptor (``promise-crash``)."""
        for send in ready.send:
            if type(send.msg) is Accept:
                self._last_accept[(leader, send.to)] = send.msg

    def _promise_crash(self, node: PaxosNode, ready: Ready, rng: SimRandom) -> Strike:
        """Crash a node that just promised.  Half the time it is back at once, and an older
        leader's accept that the network held back (one the node never got) reaches it
        right after: a node that forgot its promise takes it."""
        node_id = node.node_id
        promised = max(tuple(s.msg.ballot) for s in ready.send if type(s.msg) is Promise)
        if rng.random() < 0.5:
            return Strike("crash", node_id, rng.randrange(1_000, 30_000), "promise-crash")
        down_us = rng.randrange(0, 2_000)
        held = [
            (leader, msg)
            for (leader, to), msg in sorted(self._last_accept.items())
            if to == node_id and tuple(msg.ballot) < promised and _missed(node, msg)
        ]
        if not held:
            return Strike("crash", node_id, down_us, "promise-crash")
        leader, msg = held[rng.randrange(0, len(held))]
        late_us = down_us + rng.randrange(1_000, 5_000)
        stale = Strike("inject", node_id, late_us, "promise-crash", message=msg, source=leader)
        return Strike("crash", node_id, down_us, "promise-crash", also=(stale,))

    def _phase1_strike(self, world: World, node: PaxosNode, rng: SimRandom) -> Strike | None:
        rules = self.rules
        if "prepare-isolate" in rules and rng.random() < 0.5:
            cut_us = rng.randrange(20_000, 200_000)
            return Strike("isolate", node.node_id, cut_us, "prepare-isolate")
        if "prepare-cut-leader" in rules:
            leaders = [
                i
                for i in world.node_ids
                if i != node.node_id
                and isinstance(n := world.node(i), PaxosNode)
                and n.role == LEADER
            ]
            if leaders:
                cut_us = rng.randrange(50_000, 400_000)
                return Strike("cut", node.node_id, cut_us, "prepare-cut-leader", tuple(leaders))
        return None


def _missed(node: PaxosNode, msg: Accept) -> bool:
    """The node does not hold what ``msg`` proposes at its first slot (never got it)."""
    held = node.entry(msg.first)
    return msg.first > node.commit and (held is None or held.ballot != tuple(msg.ballot))


def _serves_read(ready: Ready) -> bool:
    return any(
        isinstance(item, Apply) and item.read_only and item.reply_to is not None
        for item in ready.apply
    )


def paxos_spec(
    mutants: frozenset[str] = frozenset(),
    config: PaxosConfig | None = None,
    name: str = "paxos",
    client_options: Mapping[str, Any] | None = None,
) -> ProtocolDef:
    """The Multi-Paxos spec; ``mutants`` (names from ``MUTANTS``) breaks it on purpose.

    Raises KeyError naming the valid mutants for an unknown one (``pnyx sim paxos+NAME``).
    """
    unknown = sorted(mutants - MUTANTS)
    if unknown:
        raise KeyError(
            f"unknown protocol {name!r}: unknown paxos mutants {unknown}; "
            f"valid: {', '.join(sorted(MUTANTS))}"
        )
    base = config or SIM_CONFIG
    node_config = dataclasses.replace(base, mutants=mutants)
    dedup = SESSION_NO_DEDUP not in mutants
    client_kwargs = dict(client_options or {})

    def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> Any:
        return PaxosNode(node_id, peers, rng, durable, node_config)

    def make_client(client_id: int, node_ids: tuple[int, ...], rng: Rng) -> Any:
        return KvClient(client_id, node_ids, rng, admin=False, **client_kwargs)

    def make_sm() -> StateMachine:
        return KvStateMachine(dedup=dedup)

    def make_monitor(node_ids: tuple[int, ...]) -> Monitor:
        return PaxosMonitor(node_ids, node_config)

    def configure(settings: Mapping[str, Any]) -> ProtocolDef:
        clients, protocol = split_settings(settings)
        return paxos_spec(
            mutants, dataclasses.replace(base, **protocol), name, {**client_kwargs, **clients}
        )

    return ProtocolDef(
        name=name,
        summary="Multi-Paxos KV: one phase 1 for all slots, pipelined batched phase 2, "
        "no-op gaps, catch-up, snapshots, quorum-round reads, Flexible Paxos quorums",
        make_node=make_node,
        make_client=make_client,
        make_monitor=make_monitor,
        make_state_machine=make_sm,
        serve=serve,
        default_nodes=5,
        default_clients=3,
        broken=bool(mutants),
        draw_settings=draw_paxos_settings,
        configure=configure,
        make_nemesis=PaxosNemesis,
        nemesis_rules=NEMESIS_RULES,
        swarm_nodes=(3, 5, 5, 7),
    )


def paxos_mutant_spec(mutants: frozenset[str], name: str) -> ProtocolDef:
    """``pnyx sim paxos+NAME[,NAME]``: Multi-Paxos broken by the named mutants."""
    return paxos_spec(mutants=mutants, name=name)


PAXOS = paxos_spec()


# -- as real processes (pnyx serve / cluster up --protocol): the runtime part ----------
PAXOS = dataclasses.replace(PAXOS, runtime=PAXOS_RUNTIME)


# -- Flexible Paxos quorum sizes from the command line --------------------------------------

QUORUM_PROTOCOLS: tuple[str, ...] = ("paxos", "etcd-paxos")
"""Simulator protocols (and their ``+MUTANT`` variants) whose nodes take Flexible Paxos
quorum sizes (``pnyx sim NAME --phase1-quorum Q1 --phase2-quorum Q2``)."""


def takes_quorums(name: str) -> bool:
    """True for a protocol name of the Paxos family (``paxos``, ``etcd-paxos+MUTANT``)."""
    return name.split("+", 1)[0] in QUORUM_PROTOCOLS


def checked_quorums(nodes: int, phase1: int | None, phase2: int | None) -> tuple[int, int]:
    """:func:`quorum_sizes`, but a size given out of range is named as given (rather than
    through the size derived from it)."""
    for name, size in (("phase-1", phase1), ("phase-2", phase2)):
        if size is not None and not 1 <= size <= nodes:
            raise ValueError(f"{name} quorum {size} must be between 1 and {nodes} acceptors")
    return quorum_sizes(nodes, phase1, phase2)


def with_quorums(
    spec: ProtocolDef, nodes: int, phase1: int | None, phase2: int | None
) -> ProtocolDef:
    """``spec`` (of the Paxos family) whose nodes and monitor use these quorum sizes for a
    cluster of ``nodes`` acceptors (None: derived, see :func:`quorum_sizes`).

    Raises ValueError with :func:`quorum_sizes`' message for an invalid pair, and naming
    the protocol for one outside :data:`QUORUM_PROTOCOLS`.
    """
    if not takes_quorums(spec.name) or spec.configure is None:
        raise ValueError(
            f"protocol {spec.name!r} has no Flexible Paxos quorums; "
            f"only {', '.join(QUORUM_PROTOCOLS)} (and their mutants) take them"
        )
    q1, q2 = checked_quorums(nodes, phase1, phase2)
    return spec.configure({"phase1_quorum": q1, "phase2_quorum": q2})


def paxos_runtime_with_quorums(nodes: int, phase1: int | None, phase2: int | None) -> ProtocolDef:
    """Multi-Paxos on real processes whose nodes use these quorum sizes for ``nodes``
    acceptors (``pnyx serve --protocol paxos --phase1-quorum Q1 --phase2-quorum Q2``).

    Raises ValueError with :func:`quorum_sizes`' message for an invalid pair.
    """
    q1, q2 = checked_quorums(nodes, phase1, phase2)
    factory = paxos_node_factory(phase1_quorum=q1, phase2_quorum=q2)
    return dataclasses.replace(PAXOS, runtime=dataclasses.replace(PAXOS_RUNTIME, make_node=factory))
