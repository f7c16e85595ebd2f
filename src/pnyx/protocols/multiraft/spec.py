"""Multi-Raft in the simulator: clients route a KV workload by key across splitting ranges.

Monitors, after every event: per-group Raft safety (the checks of
:class:`pnyx.protocols.raft.spec.RaftMonitor`, one instance per group: election safety, log
matching, leader completeness, monotone commit, snapshot terms), state-machine safety per
group (one command per applied index), the range map of every process's meta replica (a
partition of the keyspace: disjoint, covering; ``version`` and ``conf_ver`` of a range
never go back in one replica's life) and ``lost-write``: no range holds a key outside its
bounds (a write applied where no reader will look).  Liveness in the heal phase: the meta
range has a leader; every range of its map has a leader that applied its commit index and
whose version the map records.  At the end: every key with an acknowledged write is held
by the range that owns it (``lost-write``), and the history is linearizable per key
(``linearizability``; a checker time-out counts as unknown).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from pnyx.core import CLIENT_ID_BASE, DurableState, Node, Rng
from pnyx.protocols.multiraft.client import RoutingKvClient
from pnyx.protocols.multiraft.machines import MUTANTS, check_range_map
from pnyx.protocols.multiraft.messages import META_GROUP, RangeDesc
from pnyx.protocols.multiraft.node import MultiRaftConfig, MultiRaftNode
from pnyx.protocols.multiraft.runtime_def import (
    MULTIRAFT_RUNTIME,
    multiraft_runtime,
    runtime_config,
)
from pnyx.protocols.raft.config import MUTANTS as RAFT_MUTANTS
from pnyx.protocols.raft.config import RaftConfig
from pnyx.protocols.raft.node import LEADER, RaftNode
from pnyx.protocols.raft.spec import KvHistoryMonitor, RaftMonitor
from pnyx.sim.spec import ProtocolDef, Violation, World

SIM_RAFT = RaftConfig(
    election_jitter_ticks=4,
    max_entries_per_msg=8,
    max_inflight_msgs=4,
    snapshot_threshold_entries=32,
    snapshot_chunk_bytes=256,
)
SIM_CONFIG = MultiRaftConfig(raft=SIM_RAFT, split_threshold_keys=3, checkpoint_entries=64)
"""Small ranges (split above 3 keys), frequent snapshots and checkpoints: every mechanism
runs in a short run."""
SIM_KEYS = tuple(f"k{i:02d}" for i in range(12))
"""Few keys for five clients: concurrent operations on one key are common."""


_GroupMark = tuple[RaftNode, Any, int, int, int, str, int, int, int, int]
"""A group, its state machine (or None) and what they looked like (see
:meth:`MultiRaftMonitor._changed_groups`)."""


class MultiRaftMonitor(KvHistoryMonitor):
    """The invariants of the module docstring, checked incrementally.

    With ``only_stepped`` (the simulator's definitions) a process is checked after an event
    only if the simulator stepped, ticked or restarted it since the last check (the
    simulator calls :meth:`on_step` before every batch it drains, in the event that carries
    it out, so nothing else changes a process); without it (a test that changes processes
    by hand) every process is checked after every event.  Within a process, only the groups
    whose state changed are checked again (:meth:`_changed_groups`).
    """

    def __init__(self, node_ids: tuple[int, ...], only_stepped: bool = False) -> None:
        self.node_ids = node_ids
        self.only_stepped = only_stepped
        self._raft: dict[int, RaftMonitor] = {}
        self._applied: dict[tuple[int, int], Any] = {}
        self._apply_seen: dict[int, tuple[int, int]] = {}
        self._machine_seen: dict[tuple[int, int], tuple[int, int]] = {}
        self._epochs: dict[tuple[int, int], tuple[int, int, int]] = {}
        """(process, range) -> (id of the meta replica, version, conf_ver) last seen."""
        self._marks: dict[int, dict[int, _GroupMark]] = {pid: {} for pid in node_ids}
        """process -> group -> what the group and its state machine looked like when they
        last passed every check (see :meth:`_changed_groups`)."""
        self._nodes = frozenset(node_ids)
        self._dirty: set[int] = set(node_ids)
        """With ``only_stepped``: the processes stepped, ticked or restarted since the last
        check."""
        self.unknown: list[str] = []

    def on_step(self, world: World, node_id: int, node: Node) -> None:
        if node_id in self._nodes:
            self._dirty.add(node_id)

    def on_restart(self, world: World, node_id: int) -> None:
        for mon in self._raft.values():
            mon.on_restart(world, node_id)
        self._apply_seen.pop(node_id, None)
        self._dirty.add(node_id)

    def after_event(self, world: World) -> Violation | None:
        """Multi-Raft's invariants, on every process whose state may have changed."""
        if not self.only_stepped:
            pids: Iterable[int] = self.node_ids
        elif not self._dirty:
            return None
        else:
            pids = sorted(self._dirty) if len(self._dirty) > 1 else tuple(self._dirty)
            self._dirty = set()
        for pid in pids:
            node = world.node(pid)
            if isinstance(node, MultiRaftNode):
                violation = self._check_process(node)
                if violation is not None:
                    return violation
        return None

    def _check_process(self, node: MultiRaftNode) -> Violation | None:
        """Every check of one process, in a fixed order (the first violation is reported):
        Raft safety of each group, state-machine safety, its range map, its ranges' keys.
        The checks of groups whose mark did not change are left out: they would return at
        once (see :meth:`_changed_groups`)."""
        changed = self._changed_groups(node)
        if not changed:
            seen = self._apply_seen.get(node.node_id)
            end = node.applied_base + len(node.applied_events)
            if seen is not None and seen[1] == end and seen[0] == id(node):
                return None  # nothing changed, nothing applied since the last check
            return self._check_applied(node)
        meta_changed = any(gid == META_GROUP for gid, _ in changed)
        violation = (
            self._check_groups(changed)
            or self._check_applied(node)
            or (self._check_meta(node) if meta_changed else None)
            or self._check_ranges(node, changed)
        )
        if violation is None:
            marks = self._marks.setdefault(node.node_id, {})
            for gid, mark in changed:
                marks[gid] = mark
        return violation

    def _changed_groups(self, node: MultiRaftNode) -> list[tuple[int, _GroupMark]]:
        """The groups of ``node`` (in its ``groups`` order) whose mark differs from the one
        recorded when they last passed every check.

        A group left out cannot change the outcome of a check, because each check keeps its
        own record of what it saw and returns at once when that did not change: the Raft
        checks (``RaftMonitor._check_node``) are a function of the group object, its term,
        leader, commit index, role and its log's last index (offset plus length),
        generation and offset, all in the mark; the key and range-map checks
        (:meth:`_check_ranges`, :meth:`_check_meta`) of the state machine object and its
        ``mutations`` counter, which every change of its data bumps, also in the mark.
        (Groups and machines compare by identity: neither class defines equality.)
        """
        marks = self._marks.get(node.node_id)
        if marks is None:
            marks = self._marks[node.node_id] = {}
        machines = node.machines
        changed: list[tuple[int, _GroupMark]] = []
        for gid, group in node.groups.items():
            log = group.log
            sm = machines.get(gid)
            mark = (
                group,
                sm,
                group.term,
                group.leader,
                group.commit,
                group.role,
                len(log.entries),
                log.generation,
                log.offset,
                -1 if sm is None else sm.mutations,
            )
            if marks.get(gid) != mark:
                changed.append((gid, mark))
        return changed

    # -- per-group Raft safety -----------------------------------------------------------------

    def _check_groups(self, changed: list[tuple[int, _GroupMark]]) -> Violation | None:
        for gid, mark in changed:
            group = mark[0]
            mon = self._raft.get(gid)
            if mon is None:
                mon = self._raft[gid] = RaftMonitor(self.node_ids)
            violation = mon._check_node(group)
            if violation is not None:
                return Violation(violation.prop, f"group {gid}: {violation.detail}")
        return None

    def _check_applied(self, node: MultiRaftNode) -> Violation | None:
        pid = node.node_id
        seen = self._apply_seen.get(pid)
        events = node.applied_events
        end = node.applied_base + len(events)
        if seen is not None and seen[1] == end and seen[0] == id(node):
            return None  # nothing applied since the last check
        position = seen[1] if seen is not None and seen[0] == id(node) else 0
        start = max(0, position - node.applied_base)
        for gid, index, command in events[start:]:
            before = self._applied.setdefault((gid, index), command)
            if before != command:
                return Violation(
                    "state-machine-safety",
                    f"group {gid} index {index}: process {pid} applied {command!r}, "
                    f"another applied {before!r}",
                )
        self._apply_seen[pid] = (id(node), end)
        return None

    # -- the range map and the ranges ------------------------------------------------------------

    def _changed(self, pid: int, gid: int, sm: Any) -> bool:
        mark = (id(sm), sm.mutations)
        if self._machine_seen.get((pid, gid)) == mark:
            return False
        self._machine_seen[(pid, gid)] = mark
        return True

    def _check_meta(self, node: MultiRaftNode) -> Violation | None:
        meta = node.meta
        pid = node.node_id
        if meta.mutations == 0 or not self._changed(pid, META_GROUP, meta):
            return None
        problem = check_range_map(list(meta.ranges.values()))
        if problem:
            return Violation("range-map", f"process {pid}: {problem}")
        for rid, desc in meta.ranges.items():
            before = self._epochs.get((pid, rid))
            went_back = (
                before is not None
                and before[0] == id(meta)
                and (desc.version < before[1] or desc.conf_ver < before[2])
            )
            if went_back and before is not None:
                return Violation(
                    "range-map",
                    f"process {pid}: range {rid} went from version {before[1]} conf_ver "
                    f"{before[2]} to version {desc.version} conf_ver {desc.conf_ver}",
                )
            self._epochs[(pid, rid)] = (id(meta), desc.version, desc.conf_ver)
        return None

    def _check_ranges(
        self, node: MultiRaftNode, changed: list[tuple[int, _GroupMark]]
    ) -> Violation | None:
        pid = node.node_id
        for gid, _ in changed:
            sm = node.range_machine(gid)
            if sm is None or not self._changed(pid, gid, sm):
                continue
            for key in sm.data:
                if not sm.bounds.contains(key):
                    return Violation(
                        "lost-write",
                        f"process {pid} range {gid} {_span(sm.bounds)} holds key {key!r}: a "
                        f"write applied after the key left the range (no reader looks there)",
                    )
        return None

    # -- heal phase and end -----------------------------------------------------------------------

    def liveness(self, world: World) -> str | None:
        nodes = [n for i in self.node_ids if isinstance(n := world.node(i), MultiRaftNode)]
        metas = [n for n in nodes if n.groups[META_GROUP].role == LEADER]
        if not metas:
            return "no meta leader"
        meta_node = max(metas, key=lambda n: n.groups[META_GROUP].term)
        ranges = list(meta_node.meta.ranges.values())
        problem = check_range_map(ranges)
        if problem:
            return f"range map of meta leader {meta_node.node_id}: {problem}"
        for desc in sorted(ranges, key=lambda d: d.range_id):
            missing = _range_not_live(nodes, desc)
            if missing:
                return missing
        return None

    def at_end(self, world: World) -> Violation | None:
        violation = self._lost_at_end(world)
        if violation is not None:
            return violation
        return super().at_end(world)

    def _lost_at_end(self, world: World) -> Violation | None:
        """Every key with an acknowledged write is held by the range that owns it now."""
        if self.liveness(world) is not None:
            return None  # not settled: the runner reports liveness
        nodes = [n for i in self.node_ids if isinstance(n := world.node(i), MultiRaftNode)]
        written = sorted({e.key for e in world.history if e.type == "ok" and e.f == "put"})
        leaders = {
            gid: n
            for n in nodes
            for gid, g in n.groups.items()
            if gid != META_GROUP and g.role == LEADER
        }
        for key in written:
            owners = [
                (gid, sm)
                for gid, n in sorted(leaders.items())
                if (sm := n.range_machine(gid)) is not None and sm.bounds.contains(key)
            ]
            if len(owners) != 1:
                ids = [gid for gid, _ in owners]
                return Violation("lost-write", f"key {key!r} is owned by ranges {ids}")
            gid, sm = owners[0]
            if key not in sm.data:
                return Violation(
                    "lost-write",
                    f"key {key!r} had acknowledged writes; its range {gid} {_span(sm.bounds)} "
                    "does not hold it",
                )
        return None


def _range_not_live(nodes: list[MultiRaftNode], desc: RangeDesc) -> str:
    leaders: list[RaftNode] = []
    for n in nodes:
        g = n.groups.get(desc.range_id)
        sm = n.range_machine(desc.range_id)
        if g is None or sm is None or g.role != LEADER:
            continue
        if sm.bounds.version != desc.version:
            return (
                f"range {desc.range_id}: leader at version {sm.bounds.version}, map {desc.version}"
            )
        leaders.append(g)
    if not leaders:
        return f"range {desc.range_id} has no leader"
    g = max(leaders, key=lambda x: x.term)
    if g.log.term(g.commit) != g.term or g.applied < g.commit:
        return f"range {desc.range_id}: leader has not committed/applied in its term"
    return ""


def _span(bounds: Any) -> str:
    end = "end" if bounds.end is None else repr(bounds.end)
    return f"[{bounds.start!r}, {end}) v{bounds.version}"


def _stepped_monitor(node_ids: tuple[int, ...]) -> MultiRaftMonitor:
    return MultiRaftMonitor(node_ids, only_stepped=True)


def multiraft_spec(
    mutants: frozenset[str] = frozenset(),
    name: str = "multiraft",
    config: MultiRaftConfig | None = None,
) -> ProtocolDef:
    """The multi-Raft spec; ``mutants`` breaks it: names from ``machines.MUTANTS`` break the
    multi-Raft layer, names of Raft's mutants (``pnyx.protocols.raft.MUTANTS``) every group."""
    unknown = sorted(mutants - MUTANTS - RAFT_MUTANTS)
    if unknown:
        valid = ", ".join(sorted(MUTANTS | RAFT_MUTANTS))
        raise KeyError(f"unknown multiraft mutants {unknown}; valid: {valid}")
    base = config or SIM_CONFIG
    raft = dataclasses.replace(base.raft, mutants=mutants & RAFT_MUTANTS)
    node_config = dataclasses.replace(base, raft=raft, mutants=mutants & MUTANTS)

    def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> Any:
        return MultiRaftNode(node_id, peers, rng, durable, node_config)

    def make_client(client_id: int, node_ids: tuple[int, ...], rng: Rng) -> Any:
        admin = client_id == CLIENT_ID_BASE
        return RoutingKvClient(client_id, node_ids, rng, admin=admin, keys=SIM_KEYS)

    return ProtocolDef(
        name=name,
        summary="multi-Raft KV: ranges as Raft groups, meta range, splits, replica moves",
        make_node=make_node,
        make_client=make_client,
        make_monitor=_stepped_monitor,
        default_nodes=5,
        default_clients=5,
        broken=bool(mutants),
    )


def multiraft_mutant_spec(mutants: frozenset[str], name: str) -> ProtocolDef:
    """``multiraft+MUTANT`` for ``pnyx sim`` (registered in the catalog's mutant table)."""
    if not mutants:
        raise KeyError(f"unknown protocol {name!r}: multiraft+MUTANT needs a mutant")
    return multiraft_spec(mutants, name)


MULTIRAFT = multiraft_spec()

# -- as real processes (pnyx serve / cluster up --protocol multiraft): the runtime part ------
MULTIRAFT = dataclasses.replace(MULTIRAFT, runtime=MULTIRAFT_RUNTIME)


def multiraft_with_ranges(ranges: int) -> ProtocolDef:
    """``multiraft`` whose fresh clusters start with ``ranges`` data ranges
    (``pnyx serve --protocol multiraft --ranges N``; see ``runtime_def.split_keys``)."""
    return dataclasses.replace(MULTIRAFT, runtime=multiraft_runtime(runtime_config(ranges)))
