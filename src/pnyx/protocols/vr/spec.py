"""Viewstamped Replication in the simulator: Raft's KV clients, VR's monitor, swarm, nemesis.

Safety, after every event: view numbers never go back on a replica (``view-monotone``);
every op committed in a view is in the log of the primary of every later view, checked
when a primary enters normal status and when an op is first seen committed
(``committed-lost``: committed ops never lost across view changes); one entry per
committed op-number and one command per applied op-number across all replicas and lives
(``state-machine-safety``); ops applied in order (``apply-order``); a replica that
recovered holds every op that was committed when it restarted (``recovery-state``).
Checkpoints (log compaction, section 5.1): a replica's checkpoint covers only committed
ops and equals the state a reference state machine reaches by executing the committed ops
through it (``checkpoint-state``); the ops a checkpoint covers count as held by its
replica, so ``committed-lost`` still binds every op of every later primary.  At
the end the clients' history must be linearizable (``linearizability``); in the heal phase
a primary in normal status whose view every replica shares, with everything committed
and applied everywhere (``liveness``).

The fault model.  Disk-less VR (the default) is safe while at most f replicas are crashed
or recovering at once; it cannot make progress (but stays safe) beyond that.  The random
fault schedule does not know this, so the monitor counts the replicas down (crashed,
stopped or recovering) after every event: a run in which more than f were down at once is
*outside the fault model*.  Its safety is still checked after every event, but liveness is
not required: the run is reported in ``SimResult.unknown`` (``outside fault model: ...``)
and tests bound how many seeds that may happen to.  The nemesis's own crashes keep within
f.  With ``durable`` (a swarm setting) there is no such bound.  Views are ordered by
(epoch, view); with reconfiguration (a swarm stream setting) f is that of the latest
epoch's members.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from pnyx.core import CLIENT_ID_BASE, Apply, DurableState, Ready, Restore, Rng
from pnyx.core.node import StateMachine
from pnyx.protocols.raft.client import KvClient
from pnyx.protocols.raft.kv import KvStateMachine
from pnyx.protocols.raft.spec import KvHistoryMonitor, split_settings
from pnyx.protocols.vr import config as mut
from pnyx.protocols.vr.checkpoints import serve_checkpoint
from pnyx.protocols.vr.config import MUTANTS, VrConfig
from pnyx.protocols.vr.messages import (
    ENTRY_COMMAND,
    DoViewChange,
    NewState,
    Prepare,
    PrepareOK,
    Recovery,
    RecoveryResponse,
    StartView,
    StartViewChange,
    TakeCheckpoint,
    VrEntry,
)
from pnyx.protocols.vr.node import NORMAL, RECOVERING, VrNode
from pnyx.protocols.vr.runtime_def import VR_RUNTIME, vr_node_factory
from pnyx.sim.nemesis import Strike
from pnyx.sim.spec import OUTSIDE_FAULT_MODEL, Monitor, ProtocolDef, SimRandom, Violation, World

SIM_CONFIG = VrConfig(max_prepare_entries=4, checkpoint_interval_ops=8)
"""Small retransmission batches, so that lagging backups take several rounds; a checkpoint
every 8 ops, so that view changes, recoveries and state transfers meet compacted logs."""



class VrMonitor(KvHistoryMonitor):
    """VR's invariants, checked incrementally (each committed op is looked at once)."""

    def __init__(
        self,
        node_ids: tuple[int, ...],
        durable: bool = False,
        make_sm: Callable[[], StateMachine] | None = None,
        checkpoint_interval_ops: int = 0,
    ) -> None:
        self.node_ids = node_ids
        self.f = len(node_ids) - (len(node_ids) // 2 + 1)
        self.durable = durable
        self.committed: dict[int, VrEntry] = {}
        """op-number -> the entry some replica committed there."""
        self.commit_view: dict[int, tuple[int, int]] = {}
        """op-number -> lowest (epoch, view) of a replica seen holding it committed: the op
        was committed then or earlier, so every primary of a later view must hold it."""
        self.applied: dict[int, Any] = {}
        self.max_down = 0
        self.outside: str = ""
        """Why the run left the fault model (empty while inside)."""
        self.unknown: list[str] = []
        self._seen: dict[int, tuple[int, tuple[int, int], int]] = {}
        """node -> (object id, (epoch, view), commit checked through) of its current life."""
        self._primaries: dict[tuple[int, int, int], int] = {}
        """(node, object id, view) of a primary -> committed ops checked against its log."""
        self._restart_commit: dict[int, int] = {}
        """node -> ops committed (as far as the monitor saw) when it last restarted."""
        self._recovery_checked: set[int] = set()
        self._last_apply: dict[int, int] = {}
        self._reference = (make_sm or KvStateMachine)()
        """Executes the committed ops in order: what every checkpoint must equal."""
        self._reference_op = 0
        self._interval = checkpoint_interval_ops
        self._images: dict[int, bytes] = {}
        """op-number (a multiple of the interval) -> the reference state after it."""
        self._checkpoints_checked: set[tuple[int, int, int]] = set()
        """(node, object id, op) of checkpoints already compared."""

    # -- hooks -----------------------------------------------------------------------------

    def on_restart(self, world: World, node_id: int) -> None:
        self._restart_commit[node_id] = len(self.committed)
        self._last_apply.pop(node_id, None)

    def on_apply(
        self, world: World, node_id: int, item: Apply | Restore, result: Any
    ) -> Violation | None:
        if isinstance(item, Restore):
            self._last_apply[node_id] = item.index
            return None
        if item.read_only:
            return None
        last = self._last_apply.get(node_id, 0)
        if item.index <= last:  # gaps are reads (evaluated by one primary only)
            return Violation(
                "apply-order", f"node {node_id} applied op {item.index} right after {last}"
            )
        self._last_apply[node_id] = item.index
        before = self.applied.setdefault(item.index, item.command)
        if before != item.command:
            return Violation(
                "state-machine-safety",
                f"op {item.index}: node {node_id} applied {item.command!r}, "
                f"another replica applied {before!r}",
            )
        return None

    def after_event(self, world: World) -> Violation | None:
        nodes = [n for i in self.node_ids if isinstance(n := world.node(i), VrNode)]
        self._count_down(world, nodes)
        for node in nodes:
            violation = self._check_node(node)
            if violation is not None:
                return violation
        return None

    def liveness(self, world: World) -> str | None:
        if self.outside:
            note = f"{OUTSIDE_FAULT_MODEL}: {self.outside}; liveness not required"
            if note not in self.unknown:
                self.unknown.append(note)
            return None
        nodes = [n for i in self.node_ids if isinstance(n := world.node(i), VrNode)]
        primaries = [n for n in nodes if n.is_primary]
        if not primaries:
            return "no primary in normal status"
        primary = max(primaries, key=lambda n: (n.epoch, n.view))
        if primary.commit != primary.op_number:
            return f"primary {primary.node_id} committed {primary.commit} of {primary.op_number}"
        where = (primary.epoch, primary.view)
        behind = [
            f"{n.node_id} ({n.state}, epoch {n.epoch}, view {n.view}, applied {n.applied})"
            for n in nodes
            if n.node_id in primary.members
            and (n.state != NORMAL or (n.epoch, n.view) != where or n.applied < primary.commit)
        ]
        if behind:
            return f"replicas behind primary {primary.node_id} of view {primary.view}: " + (
                ", ".join(behind)
            )
        return None

    # -- invariants --------------------------------------------------------------------------

    def _count_down(self, world: World, nodes: list[VrNode]) -> None:
        if self.durable or not nodes:
            return
        members = max(nodes, key=lambda n: (n.epoch, n.view)).members
        f = len(members) - (len(members) // 2 + 1)
        down = [
            i
            for i in members
            if world.stopped(i)
            or not isinstance(n := world.node(i), VrNode)
            or n.state == RECOVERING
        ]
        if len(down) > self.max_down:
            self.max_down = len(down)
            if len(down) > f and not self.outside:
                self.outside = (
                    f"{len(down)} replicas {down} crashed or recovering at "
                    f"{world.now_us / 1000:.1f} ms (VR assumes at most f={f} of "
                    f"{len(members)})"
                )

    def _check_node(self, node: VrNode) -> Violation | None:
        node_id = node.node_id
        seen = self._seen.get(node_id)
        where = (node.epoch, node.view)
        if seen is None or seen[0] != id(node):
            seen = (id(node), where, 0)
        _, before, checked = seen
        if where < before:
            return Violation(
                "view-monotone",
                f"node {node_id} went from (epoch, view) {before} back to {where}",
            )
        violation = self._check_commits(node, checked + 1)
        self._seen[node_id] = (id(node), where, max(checked, node.commit))
        if violation is None and node.checkpoint is not None:
            violation = self._check_checkpoint(node)
        if violation is None and node.is_primary:
            violation = self._check_primary(node)
        if violation is None and node.recoveries and node_id not in self._recovery_checked:
            self._recovery_checked.add(node_id)
            violation = self._check_recovered(node)
        if node.recoveries == 0:
            self._recovery_checked.discard(node_id)
        return violation

    def _check_commits(self, node: VrNode, start: int) -> Violation | None:
        log = node.log
        offset = node.offset
        top = min(node.commit, node.op_number)
        for op in range(max(start, offset + 1), top + 1):
            entry = log[op - offset - 1]
            known = self.committed.setdefault(op, entry)
            if known != entry:
                return Violation(
                    "state-machine-safety",
                    f"node {node.node_id} committed {entry!r} at op {op}; "
                    f"{known!r} was committed there before",
                )
            first_view = self.commit_view.get(op)
            if first_view is None or (node.epoch, node.view) < first_view:
                self.commit_view[op] = (node.epoch, node.view)
        return None

    def _check_primary(self, node: VrNode) -> Violation | None:
        """Every op committed in an earlier view is in this primary's log (each op is
        checked once per primary and view, when first seen committed or at view start)."""
        key = (node.node_id, id(node), node.view)
        checked = self._primaries.get(key, 0)
        top = len(self.committed)
        if checked >= top:
            return None
        self._primaries[key] = top
        log = node.log
        offset = node.offset
        views = self.commit_view
        where = (node.epoch, node.view)
        for op in range(max(checked, offset) + 1, top + 1):  # the checkpoint holds the rest
            if views[op] >= where:
                continue
            entry = self.committed[op]
            if op > node.op_number or log[op - offset - 1] != entry:
                have = log[op - offset - 1] if op <= node.op_number else "nothing"
                return Violation(
                    "committed-lost",
                    f"primary {node.node_id} of (epoch, view) {where} holds {have!r} at op "
                    f"{op}, where {entry!r} was committed in {views[op]} or earlier",
                )
        return None

    def _check_recovered(self, node: VrNode) -> Violation | None:
        need = self._restart_commit.get(node.node_id, 0)
        log = node.log
        offset = node.offset
        for op in range(offset + 1, need + 1):  # the checkpoint (checked itself) holds the rest
            if op > node.op_number or log[op - offset - 1] != self.committed[op]:
                have = log[op - offset - 1] if op <= node.op_number else "nothing"
                return Violation(
                    "recovery-state",
                    f"node {node.node_id} recovered in view {node.view} with {have!r} at op "
                    f"{op}, committed as {self.committed[op]!r} before it restarted",
                )
        return None

    def _check_checkpoint(self, node: VrNode) -> Violation | None:
        """A checkpoint covers committed ops only and equals the reference state there."""
        checkpoint = node.checkpoint
        assert checkpoint is not None
        key = (node.node_id, id(node), checkpoint.op)
        if key in self._checkpoints_checked:
            return None
        self._checkpoints_checked.add(key)
        op = checkpoint.op
        if op > len(self.committed):
            return Violation(
                "checkpoint-state",
                f"node {node.node_id} holds a checkpoint at op {op}; only ops through "
                f"{len(self.committed)} were committed",
            )
        image = self._reference_image(op)
        if image is not None and image != checkpoint.data:
            return Violation(
                "checkpoint-state",
                f"node {node.node_id}'s checkpoint at op {op} differs from the state after "
                f"executing the committed ops through {op}",
            )
        return None

    def _reference_image(self, op: int) -> bytes | None:
        """The reference state after committed op ``op`` (None: not a kept op-number)."""
        interval = self._interval
        while self._reference_op < op:
            self._reference_op += 1
            entry = self.committed[self._reference_op]
            if entry.kind == ENTRY_COMMAND:
                self._reference.apply(entry.data)
            if interval and self._reference_op % interval == 0:
                self._images[self._reference_op] = self._reference.snapshot()
        if self._reference_op == op and op not in self._images:
            self._images[op] = self._reference.snapshot()
        return self._images.get(op)


# -- swarm settings and the protocol-aware nemesis -------------------------------------------

CLIENT_SETTINGS = ("max_think_ticks", "retry_ticks")
"""Swarm settings that shape the client mix (``KvClient`` arguments)."""

DURABLE_P = 0.2
"""Share of swarm seeds that run VR with durable state instead of the recovery protocol."""


def draw_vr_settings(rng: SimRandom) -> dict[str, Any]:
    """One swarm seed's VR settings: timers, batch size, durable mode, client mix."""
    return {
        "durable": rng.random() < DURABLE_P,
        "commit_interval_ticks": rng.choice((1, 2, 3)),
        "view_change_timeout_ticks": rng.choice((6, 10, 16)),
        "view_change_jitter_ticks": rng.choice((1, 4, 8)),
        "resend_ticks": rng.choice((2, 4, 8)),
        "max_prepare_entries": rng.choice((1, 4, 16)),
        "max_think_ticks": rng.choice((0, 3, 10)),
        "retry_ticks": rng.choice((4, 8, 16)),
    }


RECONFIGURE_P = 0.35
"""Share of swarm seeds that start with members 1-3 (the others on standby) and whose admin
client asks for reconfigurations (epochs, section 7)."""
RECONFIGURE_MEMBERS = (1, 2, 3)
ADMIN_PROBABILITY = 0.1
"""Share of the admin client's operations that are reconfigurations."""


CHECKPOINT_INTERVALS = (0, 4, 8, 8, 32)
"""Swarm choices of ``checkpoint_interval_ops`` (0: no compaction)."""


def draw_vr_stream_settings(rng: SimRandom) -> dict[str, Any]:
    """Settings drawn from their own stream (added after the mutant table was measured, see
    ``ProtocolDef.draw_stream_settings``): reconfiguration by epochs, checkpoint interval."""
    settings: dict[str, Any] = {"reconfigure": True} if rng.random() < RECONFIGURE_P else {}
    settings["checkpoint_interval_ops"] = rng.choice(CHECKPOINT_INTERVALS)
    return settings


NEMESIS_RULES: tuple[str, ...] = (
    "start-view-isolate",
    "view-change-crash",
    "prepare-crash",
    "prepare-isolate",
    "ack-crash",
    "recovery-echo",
    "recovered-crash",
    "recovery-view-change",
)
"""``start-view-isolate``: cut a new primary off from the others as it sends StartView
(nobody learns the new view; they must move on to the next);
``view-change-crash``: crash a replica right after it sends StartViewChange or
DoViewChange (it forgets it took part);
``prepare-crash``: crash the primary right after it sends a Prepare (the op reaches only
the backups the network lets through);
``prepare-isolate``: isolate the primary as it sends a Prepare (the op stays on it);
``ack-crash``: crash a backup right after it sends PrepareOK (its acknowledgement counts,
its copy is lost);
``recovery-echo``: deliver a RecoveryResponse again much later (a stale answer);
``recovered-crash``: crash a replica right after it completed recovery (its next recovery
must not take stale answers);
``recovery-view-change``: as a restarted replica asks for recovery, cut the primary off so
that a view change runs during the recovery.
Crashes are proposed only while fewer than f replicas are down (disk-less mode)."""


STREAM_NEMESIS_RULES: tuple[str, ...] = ("checkpoint-crash", "install-crash", "checkpoint-echo")
"""Rules with RNG streams of their own (added after the mutant table was first measured):
``checkpoint-crash``: crash a replica right after it asked for a checkpoint (the log is not
yet dropped; a durable replica may not have saved it);
``install-crash``: crash a replica right after it took another's checkpoint (state
transfer or recovery) into its state machine;
``checkpoint-echo``: deliver a NewState that carries a checkpoint again much later (a stale
state transfer reaches a replica that has moved on).
Crashes keep within f, as the main rules' do."""


class VrNemesis:
    """Proposes strikes at the moments VR is vulnerable (see :data:`NEMESIS_RULES`)."""

    def __init__(self, rules: frozenset[str]) -> None:
        unknown = rules - set(NEMESIS_RULES) - set(STREAM_NEMESIS_RULES)
        if unknown:
            raise ValueError(f"unknown vr nemesis rules {sorted(unknown)}")
        self.rules = rules
        self._recovered_struck: set[int] = set()
        """Object ids of recovered replicas already proposed for ``recovered-crash``."""

    def on_batch(self, world: World, node_id: int, ready: Ready, rng: SimRandom) -> Strike | None:
        node = world.node(node_id)
        if not isinstance(node, VrNode):
            return None
        kinds = {type(s.msg) for s in ready.send}
        can_crash = _may_crash(world, node)
        hit = self._view_change_strike(world, node, kinds, can_crash, rng)
        if hit is None:
            hit = self._normal_strike(node, kinds, can_crash, rng)
        if hit is None:
            hit = self._recovery_strike(world, node, kinds, can_crash, rng)
        return hit

    def stream_strike(
        self, world: World, node_id: int, ready: Ready, rngs: Mapping[str, SimRandom]
    ) -> Strike | None:
        """Strikes of :data:`STREAM_NEMESIS_RULES` (each draws from its own stream)."""
        node = world.node(node_id)
        if not isinstance(node, VrNode):
            return None
        can_crash = _may_crash(world, node)
        rng = rngs.get("checkpoint-crash")
        if rng is not None and can_crash and any(type(r) is TakeCheckpoint for r in ready.services):
            return Strike("crash", node_id, rng.randrange(1_000, 100_000), "checkpoint-crash")
        rng = rngs.get("install-crash")
        if rng is not None and can_crash and any(type(a) is Restore for a in ready.apply):
            return Strike("crash", node_id, rng.randrange(1_000, 100_000), "install-crash")
        rng = rngs.get("checkpoint-echo")
        if rng is not None and any(
            type(s.msg) is NewState and s.msg.checkpoint is not None for s in ready.send
        ):
            return Strike("echo", node_id, rng.randrange(100_000, 1_500_000), "checkpoint-echo")
        return None

    def stream_struck(self, hit: Strike) -> None:
        """Nothing to remember: each stream rule strikes at one batch."""

    def _view_change_strike(
        self, world: World, node: VrNode, kinds: set[type], can_crash: bool, rng: SimRandom
    ) -> Strike | None:
        rules = self.rules
        node_id = node.node_id
        if "start-view-isolate" in rules and StartView in kinds and node.is_primary:
            return Strike("isolate", node_id, rng.randrange(30_000, 300_000), "start-view-isolate")
        changing = StartViewChange in kinds or DoViewChange in kinds
        if "view-change-crash" in rules and changing and can_crash:
            return Strike("crash", node_id, rng.randrange(1_000, 100_000), "view-change-crash")
        return None

    def _normal_strike(
        self, node: VrNode, kinds: set[type], can_crash: bool, rng: SimRandom
    ) -> Strike | None:
        rules = self.rules
        node_id = node.node_id
        if node.is_primary and Prepare in kinds:
            if "prepare-crash" in rules and can_crash and rng.random() < 0.5:
                return Strike("crash", node_id, rng.randrange(5_000, 150_000), "prepare-crash")
            if "prepare-isolate" in rules:
                return Strike("isolate", node_id, rng.randrange(50_000, 300_000), "prepare-isolate")
        if "ack-crash" in rules and PrepareOK in kinds and not node.is_primary and can_crash:
            return Strike("crash", node_id, rng.randrange(1_000, 50_000), "ack-crash")
        return None

    def _recovery_strike(
        self, world: World, node: VrNode, kinds: set[type], can_crash: bool, rng: SimRandom
    ) -> Strike | None:
        rules = self.rules
        node_id = node.node_id
        if "recovery-echo" in rules and RecoveryResponse in kinds:
            return Strike("echo", node_id, rng.randrange(100_000, 1_500_000), "recovery-echo")
        fresh = id(node) not in self._recovered_struck
        if "recovered-crash" in rules and node.recoveries and can_crash and fresh:
            self._recovered_struck.add(id(node))
            return Strike("crash", node_id, rng.randrange(1_000, 50_000), "recovered-crash")
        if "recovery-view-change" in rules and Recovery in kinds:
            primaries = [
                n.node_id
                for i in world.node_ids
                if isinstance(n := world.node(i), VrNode) and n.is_primary
            ]
            if primaries:
                cut_us = rng.randrange(100_000, 600_000)
                return Strike("isolate", primaries[0], cut_us, "recovery-view-change")
        return None


def _may_crash(world: World, node: VrNode) -> bool:
    """May the nemesis crash ``node`` without leaving VR's fault model?"""
    if node.cfg.durable:
        return True
    down = sum(
        1
        for i in node.members
        if world.stopped(i) or not isinstance(n := world.node(i), VrNode) or n.state == RECOVERING
    )
    if node.node_id not in node.members:
        return True
    own = 1 if node.state != RECOVERING else 0
    return down + own <= node.f


def vr_spec(
    mutants: frozenset[str] = frozenset(),
    config: VrConfig | None = None,
    name: str = "vr",
    client_options: Mapping[str, Any] | None = None,
    reconfigure: bool = False,
) -> ProtocolDef:
    """The VR spec; ``mutants`` (names from ``MUTANTS``) breaks it on purpose (tests and
    ``pnyx sim vr+NAME``); raises KeyError naming the valid mutants for an unknown one.
    ``reconfigure``: start with members 1-3 and let the admin client reconfigure."""
    unknown = mutants - MUTANTS
    if unknown:
        raise KeyError(f"unknown vr mutants {sorted(unknown)}; valid: {', '.join(sorted(MUTANTS))}")
    base = config or SIM_CONFIG
    node_config = dataclasses.replace(base, mutants=mutants)
    if reconfigure:
        node_config = dataclasses.replace(node_config, initial_members=RECONFIGURE_MEMBERS)
    dedup = mut.CLIENT_TABLE_IGNORED not in mutants
    client_kwargs = dict(client_options or {})

    def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> Any:
        return VrNode(node_id, peers, rng, durable, node_config)

    def make_client(client_id: int, node_ids: tuple[int, ...], rng: Rng) -> Any:
        if reconfigure and client_id == CLIENT_ID_BASE:
            return KvClient(
                client_id,
                node_ids,
                rng,
                admin=True,
                admin_probability=ADMIN_PROBABILITY,
                **client_kwargs,
            )
        return KvClient(client_id, node_ids, rng, **client_kwargs)

    def make_sm() -> StateMachine:
        return KvStateMachine(dedup=dedup)

    def make_monitor(node_ids: tuple[int, ...]) -> Monitor:
        interval = node_config.checkpoint_interval_ops
        return VrMonitor(node_ids, node_config.durable, make_sm, interval)

    def configure(settings: Mapping[str, Any]) -> ProtocolDef:
        clients, protocol = split_settings(settings, CLIENT_SETTINGS, ("reconfigure",))
        return vr_spec(
            mutants,
            dataclasses.replace(base, **protocol),
            name,
            {**client_kwargs, **clients},
            reconfigure or bool(settings.get("reconfigure")),
        )

    return ProtocolDef(
        name=name,
        summary="Viewstamped Replication Revisited KV: view change, nonce recovery, "
        "state transfer, client table",
        make_node=make_node,
        make_client=make_client,
        make_monitor=make_monitor,
        make_state_machine=make_sm,
        serve=serve_checkpoint,
        default_nodes=5,
        default_clients=3,
        broken=bool(mutants),
        draw_settings=draw_vr_settings,
        draw_stream_settings=draw_vr_stream_settings,
        configure=configure,
        make_nemesis=VrNemesis,
        nemesis_rules=NEMESIS_RULES,
        stream_nemesis_rules=STREAM_NEMESIS_RULES,
        swarm_nodes=(3, 5, 5, 7),
    )


def vr_mutant_spec(mutants: frozenset[str], name: str) -> ProtocolDef:
    """``pnyx sim vr+NAME[,NAME]``: VR broken by the named mutants (KeyError if unknown)."""
    return vr_spec(mutants=mutants, name=name)


VR = vr_spec()


# -- as real processes (pnyx serve / cluster up --protocol): the runtime part ----------
VR = dataclasses.replace(VR, runtime=VR_RUNTIME)
VR_DURABLE = dataclasses.replace(
    vr_spec(config=dataclasses.replace(SIM_CONFIG, durable=True), name="vr-durable"),
    runtime=dataclasses.replace(VR_RUNTIME, make_node=vr_node_factory(durable=True)),
)
"""``vr-durable``: VR with view and log written (and synced) before a replica acts on them,
instead of the disk-less nonce recovery; a restarted replica rejoins through a view change.
As real processes it pays an fsync per batch, like Raft and Multi-Paxos."""
