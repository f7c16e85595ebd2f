"""Simulator specs for chain replication (``chain``), CRAQ (``craq``) and a broken CRAQ.

The last node of a run is the configuration master; the others form the initial chain.
The master stands in for a fault-tolerant (e.g. Raft-backed) configuration service, so
the schedule never crashes, pauses or isolates it.  Replicas keep no durable data, so the
schedule also keeps the paper's failure assumption: at most one replica is down or cut off
at a time (a crash never overlaps another crash or a partition, with a settling gap), and
no disk faults.  At the end the KV history must be linearizable, and after the heal every
write acknowledged to a client must still be in the tail's state (no acknowledged write
lost) with the chain repaired to every replica.

Targeted fault point (``replica cut``, when partitions are on): one replica is cut off from
the *other replicas* only (the master and the clients still reach it) for 100-600 ms.  The
master sees it alive and keeps the chain, so every write behind the cut stays dirty at the
replicas upstream of it while clients keep reading there: exactly the window in which a
CRAQ that serves dirty versions (``craq-broken``) answers a read with a value a later read
at the tail contradicts.  The cuts are drawn from an RNG stream of their own.  With them
and 6 clients, ``pnyx sim craq-broken --seeds 1..200`` is caught (``linearizability``) on 40
of 200 seeds (first: seed 4); with 3 clients and no cuts it was 3 of 200.  A cut that would
overlap a crash is left out (crashes keep the other faults apart, as before).

``*-register`` specs run the same protocols with a get/put-only workload (unique written
values), the input of the register consistency checkers of :mod:`pnyx.check.consistency`
(see :mod:`pnyx.cli.consistency_matrix`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pnyx.core import DurableState, HistoryEvent, Node, Record, Rng
from pnyx.protocols.chain import ChainClient, ChainMaster, ChainNode
from pnyx.protocols.chain.client import KEYS as CHAIN_KEYS
from pnyx.protocols.chain.messages import KvRequest
from pnyx.protocols.chain.runtime_def import chain_runtime
from pnyx.sim.schedule import FaultEvent, Schedule, generate, split
from pnyx.sim.spec import Monitor, ProtocolDef, SimRandom, Violation, World

SUPPORTED_FAULTS = frozenset(
    {"delay", "drop", "duplicate", "reorder", "partition", "crash", "pause", "skew", "slow"}
)
SETTLE_US = 600_000
"""Gap kept between a crash and any other crash or partition (rejoin and state transfer)."""
LINEARIZABILITY_TIMEOUT_S = 20.0
REPLICA_CUTS = (4, 10)
"""How many replica cuts a seed with partitions draws (inclusive range)."""
REPLICA_CUT_US = (20_000, 120_000)
"""Duration range of one replica cut."""
CRAQ_CLIENTS = 6
"""Clients of the CRAQ runs (and of ``chain-register``): CRAQ's point is reads at every
replica, and a dirty read shows only when other clients read the key while its write is
stuck (with 3 clients, all of them soon wait on writes of their own)."""


_LAYOUT = chain_runtime("chain", craq=False)
"""Where the master sits (:attr:`~pnyx.sim.spec.RuntimeDef.config_node`: the highest id),
the same in the simulator as on real processes."""


def _master(peers: tuple[int, ...]) -> int:
    master = _LAYOUT.config_id(peers)
    if master is None:
        raise ValueError(f"chain needs a master and at least one replica, got {peers}")
    return master


def _replicas(peers: tuple[int, ...]) -> tuple[int, ...]:
    master = _master(peers)
    return tuple(sorted(p for p in peers if p != master))


def _node_factory(*, craq: bool, dirty_reads: bool = False) -> Any:
    def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> Node:
        if len(peers) < 2:
            raise ValueError(f"chain needs a master and at least one replica, got {peers}")
        if node_id == _master(peers):
            return ChainMaster(node_id, _replicas(peers))
        return ChainNode(
            node_id, _master(peers), _replicas(peers), durable, craq=craq, dirty_reads=dirty_reads
        )

    return make_node


class RegisterChainClient(ChainClient):
    """A chain client whose workload is gets and puts only (every put writes a unique
    token), for the register consistency checkers; otherwise :class:`ChainClient`."""

    def _start(self) -> None:
        rng = self._rng
        self._request_id += 1
        kind = "put" if rng.random() < 0.5 else "get"
        key = CHAIN_KEYS[rng.randrange(0, len(CHAIN_KEYS))]
        value = f"{self.node_id % 1000}.{self._request_id}" if kind == "put" else None
        op = KvRequest(self._request_id, kind, key, value)
        self._op = op
        self._age_ticks = 0
        self._ready.record.append(Record(HistoryEvent(self.node_id, "invoke", kind, value, key)))
        if kind == "put":
            target = self._head
        elif self._reads_anywhere:
            target = self._pick_any()
        else:
            target = self._tail
        self._send_op(op, target)


def _client_factory(*, craq: bool, register: bool = False) -> Any:
    kind = RegisterChainClient if register else ChainClient

    def make_client(client_id: int, node_ids: tuple[int, ...], rng: Rng) -> Node:
        return kind(client_id, _replicas(node_ids), rng, reads_anywhere=craq)

    return make_client


class ChainMonitor(Monitor):
    """Chain repaired after the heal, acknowledged writes kept, history linearizable."""

    def __init__(self, node_ids: tuple[int, ...]) -> None:
        self.node_ids = node_ids
        self.master = _master(node_ids)
        self.replicas = _replicas(node_ids)
        self.unknown: list[str] = []

    def liveness(self, world: World) -> str | None:
        master = world.node(self.master)
        if not isinstance(master, ChainMaster):
            return "master down"
        if sorted(master.chain) != list(self.replicas):
            return f"chain {master.chain} misses replicas of {self.replicas}"
        for node_id in self.replicas:
            node = world.node(node_id)
            if not isinstance(node, ChainNode) or not node.has_state:
                return f"replica {node_id} has no state yet"
            if node.epoch != master.epoch:
                return f"replica {node_id} at epoch {node.epoch}, master at {master.epoch}"
        return None

    def at_end(self, world: World) -> Violation | None:
        lost = self._lost_writes(world)
        if lost:
            return Violation("no-lost-write", lost)
        from pnyx.check.history import History
        from pnyx.check.linearizability import check_linearizable
        from pnyx.check.models import KVModel

        result = check_linearizable(
            History.from_events(world.history), KVModel(), timeout_s=LINEARIZABILITY_TIMEOUT_S
        )
        if result.verdict == "not-linearizable":
            return Violation("linearizability", result.explain())
        if result.verdict != "linearizable":
            self.unknown.append(f"linearizability {result.verdict}: {result.explain()}")
        return None

    def _lost_writes(self, world: World) -> str:
        """An acknowledged put that must be the key's final value (every other write to the
        key completed before it was invoked) but that the tail does not hold."""
        master = world.node(self.master)
        if not isinstance(master, ChainMaster):
            return ""
        tail = world.node(master.chain[-1])
        if not isinstance(tail, ChainNode) or not tail.has_state:
            return ""
        for key, value in sorted(_final_puts(world).items()):
            versions = tail.versions.get(key, [])
            held = versions[-1][1] if versions else ""
            if held != value:
                return f"acknowledged put {key}={value!r} lost: the tail holds {held!r}"
        return ""

    def unknowns(self) -> list[str]:
        return list(self.unknown)


def _final_puts(world: World) -> dict[str, Any]:
    """key -> value of an acknowledged put that every other write to the key precedes in
    real time (it completed before the put was invoked): the key's only possible final value."""
    open_ops: dict[int, tuple[int, Any]] = {}
    writes: dict[str, list[tuple[int, int, str, Any]]] = {}
    """key -> (invoke position, completion position or a huge one, type, value) per write."""
    never = len(world.history) + 1
    for position, event in enumerate(world.history):
        if event.key is None or event.f == "get":
            continue
        if event.type == "invoke":
            open_ops[event.process] = (position, event.value)
            writes.setdefault(str(event.key), []).append((position, never, event.f, event.value))
            continue
        started = open_ops.pop(event.process, None)
        if started is None:
            continue
        entries = writes[str(event.key)]
        for index, (begin, _, f, value) in enumerate(entries):
            if begin == started[0]:
                done = position if event.type == "ok" else never
                entries[index] = (begin, done, f if event.type == "ok" else "?", value)
    final: dict[str, Any] = {}
    for key, entries in writes.items():
        for begin, done, f, value in entries:
            others = [e for e in entries if e[0] != begin]
            if f == "put" and done < never and all(e[1] < begin for e in others):
                final[key] = value
    return final


@dataclasses.dataclass(frozen=True)
class ChainSpec(ProtocolDef):
    """A chain spec that draws its own schedule (master kept safe, one replica out at a time).

    The schedule is drawn for :attr:`default_clients`; its faults name nodes only, so a run
    asked for another client count (``SimConfig.clients``, ``pnyx sim chain --clients N``)
    keeps the same faults with that many clients."""

    def draw_schedule(
        self, seed: int, nodes: int, fault_ms: int, faults: frozenset[str]
    ) -> Schedule | None:
        base = generate(seed, nodes, self.default_clients, fault_ms, faults & SUPPORTED_FAULTS)
        kept = list(_filter_events(base.events, nodes))
        if "partition" in faults:  # cuts only where they overlap no crash
            cuts = replica_cuts(seed, nodes, fault_ms)
            kept += [cut for cut in cuts if not _crash_with_others(cut, kept)]
        kept.sort(key=lambda e: (e.start_us, e.kind, e.node))
        return dataclasses.replace(base, events=tuple(kept))


def replica_cuts(seed: int, nodes: int, fault_ms: int) -> tuple[FaultEvent, ...]:
    """The seed's replica cuts: a replica cut off from the other replicas (not from the
    master or clients), drawn from the stream ``pnyx-chain-cut:<seed>``."""
    rng = SimRandom(f"pnyx-chain-cut:{seed}")
    replicas = _replicas(tuple(range(1, nodes + 1))) if nodes >= 2 else ()
    if len(replicas) < 2:
        return ()
    cuts: list[FaultEvent] = []
    for _ in range(rng.randint(*REPLICA_CUTS)):
        node = replicas[rng.randrange(0, len(replicas))]
        length_us = rng.randrange(*REPLICA_CUT_US)
        start_us = rng.randrange(0, max(1, fault_ms * 1000 - length_us))
        links = split((node,), replicas)
        cuts.append(
            FaultEvent(
                "partition",
                start_us,
                start_us + length_us,
                node=node,
                shape="replica-cut",
                links=links,
            )
        )
    return tuple(cuts)


def _filter_events(events: tuple[FaultEvent, ...], nodes: int) -> tuple[FaultEvent, ...]:
    master = _master(tuple(range(1, nodes + 1)))
    kept: list[FaultEvent] = []
    for event in sorted(events, key=lambda e: (e.start_us, e.kind, e.node)):
        if event.kind in ("crash", "pause", "slow") and event.node == master:
            continue
        if event.kind not in ("crash", "pause", "partition", "slow") or event.target:
            continue
        if event.kind == "partition" and not event.links:
            continue
        if _crash_with_others(event, kept):
            continue
        kept.append(event)
    return tuple(kept)


def _crash_with_others(event: FaultEvent, kept: list[FaultEvent]) -> bool:
    """True when ``event`` is a crash overlapping another fault, or overlaps a crash."""
    others = [e for e in kept if event.kind == "crash" or e.kind == "crash"]
    return any(_overlaps(event, other) for other in others)


def _overlaps(a: FaultEvent, b: FaultEvent) -> bool:
    return a.start_us < b.end_us + SETTLE_US and b.start_us < a.end_us + SETTLE_US


def _spec(
    name: str,
    summary: str,
    *,
    craq: bool,
    dirty: bool = False,
    register: bool = False,
    clients: int = 3,
) -> ChainSpec:
    return ChainSpec(
        name=name,
        summary=summary,
        make_node=_node_factory(craq=craq, dirty_reads=dirty),
        make_client=_client_factory(craq=craq, register=register),
        make_monitor=ChainMonitor,
        default_nodes=4,
        default_clients=clients,
        broken=dirty,
    )


CHAIN = _spec("chain", "chain replication with a configuration master", craq=False)
CRAQ = _spec(
    "craq",
    "CRAQ: chain replication with apportioned clean/dirty reads",
    craq=True,
    clients=CRAQ_CLIENTS,
)
CRAQ_BROKEN = _spec(
    "craq-broken",
    "deliberately broken CRAQ: serves dirty versions",
    craq=True,
    dirty=True,
    clients=CRAQ_CLIENTS,
)

CHAIN_REGISTER = _spec(
    "chain-register",
    "chain replication, get/put workload (consistency table)",
    craq=False,
    register=True,
    clients=CRAQ_CLIENTS,
)
CRAQ_REGISTER = _spec(
    "craq-register",
    "CRAQ, get/put workload (consistency table)",
    craq=True,
    register=True,
    clients=CRAQ_CLIENTS,
)
CRAQ_REGISTER_BROKEN = _spec(
    "craq-register-broken",
    "deliberately broken CRAQ (serves dirty versions), get/put workload (consistency table)",
    craq=True,
    dirty=True,
    register=True,
    clients=CRAQ_CLIENTS,
)


# -- as real processes (pnyx serve / cluster up --protocol): the runtime part ----------
CHAIN = dataclasses.replace(CHAIN, runtime=chain_runtime("chain", craq=False))
CRAQ = dataclasses.replace(CRAQ, runtime=chain_runtime("craq", craq=True))
