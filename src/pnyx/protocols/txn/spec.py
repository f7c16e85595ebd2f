"""Percolator-style transactions over multi-Raft in the simulator: one definition per mode.

``percolator`` (plain: prewrite, commit timestamp, primary commit), ``percolator-async``
(async commit), ``percolator-1pc`` (async commit, and 1PC for transactions whose keys
share a range) and ``txn-2pc`` (two-phase commit over the Raft groups, serializable).
Each run drives the bank and list-append workloads at once (half the
transactions each, disjoint keys) with every simulator fault, coordinator crashes at every
step (:data:`pnyx.protocols.txn.client.CRASH_STEPS`) and ranges splitting as keys appear.

The monitor keeps multi-Raft's checks after every event (per-group Raft safety,
state-machine safety, the range map, no record outside its range's bounds) and its
liveness, and at the end checks:

- ``lost-commit``: every write of an acknowledged transaction is in the final state (the
  committed versions plus the locks whose transaction is decided committed), and that
  state is atomic (the final state is read as a resolver would decide each lock);
- ``bank``: every committed read of all accounts sees the total and no negative balance,
  and so does the final state;
- snapshot isolation of the list-append transactions (:mod:`pnyx.check.snapshot_isolation`;
  ``txn-2pc``: serializability, :mod:`pnyx.check.serializability`): the violation is named
  by the checker (``G0``, ``G1a``, ``G1b``, ``G1c``, ``G-single``, ``G-nonadjacent``,
  ``lost-update``, ``G2-item``, ...) with its explanation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pnyx.core import DurableState, Node, Rng
from pnyx.protocols.multiraft.messages import META_GROUP, RangeBounds
from pnyx.protocols.multiraft.node import MultiRaftConfig, MultiRaftNode
from pnyx.protocols.multiraft.spec import SIM_RAFT, MultiRaftMonitor
from pnyx.protocols.raft.node import LEADER
from pnyx.protocols.txn.client import (
    ACK_BEFORE_DURABLE,
    ASYNC_COMMIT,
    CLIENT_MUTANTS,
    COMMIT_TS_BEFORE_PREWRITE,
    ONE_PC,
    PERCOLATOR,
    TWO_PC,
    TxnClient,
    TxnClientConfig,
)
from pnyx.protocols.txn.machine import MACHINE_MUTANTS, SPLIT_LOSES_LOCK, TxnRangeMachine
from pnyx.protocols.txn.messages import Lock
from pnyx.protocols.txn.mvcc import READER_IGNORES_LOCK, SCAN_IGNORES_LOCK, KeyRecord
from pnyx.protocols.txn.workloads import (
    BankConfig,
    bank_problems,
    final_bank_problem,
)
from pnyx.sim.spec import ProtocolDef, Violation, World

MUTANTS: frozenset[str] = MACHINE_MUTANTS | CLIENT_MUTANTS
MUTANT_PROPERTIES: dict[str, str] = {
    READER_IGNORES_LOCK: "G-single",
    COMMIT_TS_BEFORE_PREWRITE: "G-single",
    SPLIT_LOSES_LOCK: "lost-commit",
    ACK_BEFORE_DURABLE: "lost-commit",
    SCAN_IGNORES_LOCK: "lost-commit",
}
"""Mutant -> the property that catches it (first catching seeds in the package README)."""

SCAN_MUTANT_SHARE = 0.5
"""Share of reads done by scan in the definitions of ``MODE+scan_ignores_lock``."""

SIM_SPLIT_KEYS = ("acct3", "list0", "list3")
"""A fresh cluster has four data ranges; size splits (above 3 keys) make more as keys
appear."""
SIM_CONFIG = MultiRaftConfig(
    raft=SIM_RAFT,
    split_threshold_keys=3,
    checkpoint_entries=64,
    initial_split_keys=SIM_SPLIT_KEYS,
)
MODE_NAMES = {
    PERCOLATOR: "percolator",
    ASYNC_COMMIT: "percolator-async",
    ONE_PC: "percolator-1pc",
    TWO_PC: "txn-2pc",
}


class TxnMonitor(MultiRaftMonitor):
    """Multi-Raft's invariants after every event, the transaction checks at the end."""

    def __init__(
        self, node_ids: tuple[int, ...], bank: BankConfig, serializable: bool = False
    ) -> None:
        super().__init__(node_ids, only_stepped=True)
        self.bank = bank
        self.serializable = serializable
        """Check the list-append history for serializability (2pc mode), not only SI."""
        self.client_stats: dict[int, dict[str, int]] = {}
        """Each coordinator's counters (committed, aborted attempts, resolutions, crashes
        by step), for reports and tests."""

    def on_step(self, world: World, node_id: int, node: Node) -> None:
        if node_id in self._nodes:
            self._dirty.add(node_id)  # as MultiRaftMonitor.on_step (inline: called per batch)
        elif isinstance(node, TxnClient):
            self.client_stats[node_id] = node.stats

    def at_end(self, world: World) -> Violation | None:
        isolation = self._serializable if self.serializable else self._snapshot_isolation
        return (
            isolation(world)
            or self._bank_reads(world)
            or self._final_state(world)
        )

    def _final_state(self, world: World) -> Violation | None:
        if self.liveness(world) is not None:
            return None  # not settled: the runner reports liveness
        records = final_records(world, self.node_ids)
        final = committed_values(records)
        missing = _lost_commits(world, final)
        if missing:
            return Violation("lost-commit", missing)
        problem = final_bank_problem(self.bank, final)
        if problem:
            return Violation("bank", problem)
        return None

    def _bank_reads(self, world: World) -> Violation | None:
        problems = bank_problems(self.bank, world.history)
        if problems:
            return Violation("bank", f"{len(problems)} bad reads; first: {problems[0]}")
        return None

    def _snapshot_isolation(self, world: World) -> Violation | None:
        from pnyx.check.history import History
        from pnyx.check.snapshot_isolation import check_snapshot_isolation

        history = History.from_events(world.history)
        txns = [op for op in history if op.f == "txn"]
        result = check_snapshot_isolation(txns, kind="list-append")
        if result.verdict == "unknown":
            self.unknown.append(f"snapshot isolation unknown: {result.reason}")
            return None
        if not result.ok:
            return Violation(result.violations[0].name, result.explain())
        return None


    def _serializable(self, world: World) -> Violation | None:
        from pnyx.check.history import History
        from pnyx.check.serializability import check_serializable

        history = History.from_events(world.history)
        txns = [op for op in history if op.f == "txn"]
        result = check_serializable(txns, kind="list-append")
        if not result.ok:
            return Violation(result.anomaly_names[0], result.explain())
        return None


def final_records(world: World, node_ids: tuple[int, ...]) -> dict[str, KeyRecord]:
    """Every key's record on its range's current leader (the latest term's)."""
    nodes = [n for i in node_ids if isinstance(n := world.node(i), MultiRaftNode)]
    best: dict[int, tuple[int, TxnRangeMachine]] = {}
    for n in nodes:
        for gid, g in n.groups.items():
            sm = n.range_machine(gid)
            if gid == META_GROUP or g.role != LEADER or not isinstance(sm, TxnRangeMachine):
                continue
            if gid not in best or g.term > best[gid][0]:
                best[gid] = (g.term, sm)
    out: dict[str, KeyRecord] = {}
    for gid in sorted(best):
        sm = best[gid][1]
        for key, rec in sm.mvcc.records.items():
            if sm.bounds.contains(key):
                out[key] = rec
    return out


def committed_values(records: Mapping[str, KeyRecord]) -> dict[str, Any]:
    """The value of every key once each pending lock is decided as a resolver would: its
    primary's commit record commits it; an async transaction whose keys are all locked (or
    committed) commits at the largest ``min_commit_ts``; anything else is rolled back."""
    out: dict[str, Any] = {}
    for key, rec in records.items():
        value = rec.visible(2**62)
        lock = rec.lock
        if lock is not None and not lock.read_only and _decided_committed(records, lock):
            value = lock.value
        out[key] = value
    return out


def _decided_committed(records: Mapping[str, KeyRecord], lock: Lock) -> bool:
    primary = records.get(lock.primary)
    if primary is None:
        return False
    if primary.commit_of(lock.start_ts):
        return True
    plock = primary.lock
    if plock is None or plock.start_ts != lock.start_ts or not plock.use_async:
        return False
    for key in (lock.primary, *plock.secondaries):
        rec = records.get(key)
        if rec is None:
            return False
        own = rec.lock is not None and rec.lock.start_ts == lock.start_ts
        if not own and not rec.commit_of(lock.start_ts):
            return False
    return True


def _lost_commits(world: World, final: Mapping[str, Any]) -> str:
    """An acknowledged list append missing from the final state (empty: none)."""
    for ev in world.history:
        if ev.type != "ok" or ev.f != "txn":
            continue
        for f, key, value in ev.value:
            if f == "append" and value not in (final.get(key) or ()):
                return (
                    f"process {ev.process}'s acknowledged append of {value} to {key!r} is not "
                    f"in the final state {list(final.get(key) or ())}"
                )
    return ""


def txn_spec(
    mode: str = PERCOLATOR,
    mutants: frozenset[str] = frozenset(),
    name: str | None = None,
    client: TxnClientConfig | None = None,
) -> ProtocolDef:
    """The definition of transactions in ``mode``; ``mutants`` (of :data:`MUTANTS`) break it."""
    unknown = sorted(mutants - MUTANTS)
    if unknown:
        raise KeyError(f"unknown percolator mutants {unknown}; valid: {', '.join(sorted(MUTANTS))}")
    if COMMIT_TS_BEFORE_PREWRITE in mutants and mode != PERCOLATOR:
        raise KeyError(
            f"mutant {COMMIT_TS_BEFORE_PREWRITE} breaks the percolator mode only (async "
            f"commit and 1PC take no commit timestamp), not {mode}"
        )
    if ACK_BEFORE_DURABLE in mutants and mode != TWO_PC:
        raise KeyError(f"mutant {ACK_BEFORE_DURABLE} breaks the 2pc mode only, not {mode}")
    base_client = client or TxnClientConfig()
    if SCAN_IGNORES_LOCK in mutants and base_client.scan_share == 0:
        # The mutant breaks scans: its definition's coordinators read by scan half the time
        # (as tests/txn/test_scan.py's scanning definitions do), else nothing would scan.
        base_client = dataclasses.replace(base_client, scan_share=SCAN_MUTANT_SHARE)
    client_cfg = dataclasses.replace(base_client, mode=mode, mutants=mutants & CLIENT_MUTANTS)
    machine_mutants = mutants & MACHINE_MUTANTS

    def make_machine(bounds: RangeBounds, mr_mutants: frozenset[str]) -> TxnRangeMachine:
        return TxnRangeMachine(bounds, mr_mutants, machine_mutants)

    node_config = dataclasses.replace(SIM_CONFIG, make_range_machine=make_machine)

    def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> Any:
        return MultiRaftNode(node_id, peers, rng, durable, node_config)

    def make_client(client_id: int, node_ids: tuple[int, ...], rng: Rng) -> Any:
        return TxnClient(client_id, node_ids, rng, client_cfg)

    def make_monitor(node_ids: tuple[int, ...]) -> TxnMonitor:
        return TxnMonitor(node_ids, client_cfg.bank, serializable=mode == TWO_PC)

    checked = "serializability" if mode == TWO_PC else "SI"
    return ProtocolDef(
        name=name or MODE_NAMES[mode],
        summary=f"{mode} transactions over multi-Raft (bank + list-append, {checked} checked)",
        make_node=make_node,
        make_client=make_client,
        make_monitor=make_monitor,
        default_nodes=5,
        default_clients=4,
        broken=bool(mutants),
    )


def txn_mutant_spec(mutants: frozenset[str], name: str) -> ProtocolDef:
    """``percolator+MUTANT`` (or ``percolator-async+``, ``percolator-1pc+``, ``txn-2pc+``) for
    ``pnyx sim`` (registered in the catalog's mutant table)."""
    base = name.partition("+")[0]
    modes = {v: k for k, v in MODE_NAMES.items()}
    if base not in modes or not mutants:
        raise KeyError(f"unknown protocol {name!r}: {'|'.join(modes)}+MUTANT needs a mutant")
    return txn_spec(modes[base], mutants, name)


PERCOLATOR_SPEC = txn_spec(PERCOLATOR)
PERCOLATOR_ASYNC = txn_spec(ASYNC_COMMIT)
PERCOLATOR_1PC = txn_spec(ONE_PC)
TXN_2PC = txn_spec(TWO_PC)
