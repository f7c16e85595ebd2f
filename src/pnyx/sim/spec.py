"""The one definition of a protocol: :class:`ProtocolDef`, read by the simulator, the real
runtime, the CLI and the benchmarks.

Each protocol package exports its definitions (``pnyx.protocols.<name>.spec``) and registers
each by name with one line in :mod:`pnyx.catalog`.  The simulator builds nodes and clients
(both follow the node contract of :mod:`pnyx.core.node`), carries out their ``Ready``
batches under faults, and consults the definition's :class:`Monitor` after every event
(safety), during the heal phase (liveness) and at the end (history checks).  The real
runtime (:meth:`pnyx.runtime.node_runner.NodeRunner.for_protocol`) runs the same node
factory and state machine over TCP with a WAL, accepting the definition's peer and client
message types.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pnyx.core import (
    Apply,
    DurableState,
    HistoryEvent,
    Message,
    Node,
    NodeFactory,
    Restore,
    Rng,
)
from pnyx.core.node import StateMachine
from pnyx.sim.schedule import FaultEvent, Schedule


@dataclass(frozen=True)
class Violation:
    """A property that does not hold: its name and a human-readable explanation."""

    prop: str
    detail: str

    def __str__(self) -> str:
        return f"{self.prop}: {self.detail}"


class World(Protocol):
    """What a monitor may look at.  Read-only by convention: monitors never mutate it."""

    @property
    def now_us(self) -> int:
        """Virtual time in microseconds."""
        ...

    @property
    def node_ids(self) -> tuple[int, ...]:
        """Every node of the run, live or crashed."""
        ...

    @property
    def healing(self) -> bool:
        """True once the fault phase is over (all faults healed, all nodes restarted)."""
        ...

    @property
    def client_ids(self) -> tuple[int, ...]:
        """Every client process of the run."""
        ...

    @property
    def tick_us(self) -> int:
        """Virtual microseconds per tick (nominal; each process drifts a little)."""
        ...

    @property
    def history(self) -> list[HistoryEvent]:
        """Client history events so far, stamped with virtual time (ns)."""
        ...

    @property
    def schedule(self) -> Schedule:
        """The run's fault schedule (drawn from the seed, or given)."""
        ...

    def node(self, node_id: int) -> Node | None:
        """The live node object, or None while it is crashed."""
        ...

    def durable(self, node_id: int) -> DurableState:
        """What is durable on the node's disk (synced writes only)."""
        ...

    def state_machine(self, node_id: int) -> StateMachine | None:
        """The node's state machine (rebuilt empty on restart), if the protocol has one."""
        ...

    def stopped(self, node_id: int) -> bool:
        """True once the node refused to recover from a damaged disk (down for good)."""
        ...


class Monitor:
    """A protocol's invariants and liveness conditions.  Override what applies."""

    def on_apply(
        self, world: World, node_id: int, item: Apply | Restore, result: Any
    ) -> Violation | None:
        """Called when a node's runtime applies a command or restores a snapshot."""
        return None

    def on_restart(self, world: World, node_id: int) -> None:
        """Called after a crashed node was rebuilt from its durable state."""

    def on_step(self, world: World, node_id: int, node: Node) -> None:
        """Called after each step or tick of a live node, before its batches are carried out
        (e.g. to collect what the node observed).  Only called when overridden."""

    def on_fault(self, world: World, event: FaultEvent, started: bool) -> None:
        """Called when a discrete fault starts (``started``) or ends.  Only called when
        overridden."""

    def finished(self, world: World) -> bool:
        """Polled every few ticks from the start when overridden: True ends the run at once
        (it showed all it can; :meth:`at_end` still runs)."""
        return False

    def after_event(self, world: World) -> Violation | None:
        """Safety invariants, checked after every simulator event."""
        return None

    def liveness(self, world: World) -> str | None:
        """During the heal phase: None once liveness is reached, else what is still missing."""
        return None

    def at_end(self, world: World) -> Violation | None:
        """Checks over the whole run (e.g. linearizability of the client history)."""
        return None

    def unknowns(self) -> list[str]:
        """Checks of this run that could not decide (e.g. a checker that timed out).

        Not a violation of the run, but counted: a seed set fails when too many are unknown.
        """
        return []


OUTSIDE_FAULT_MODEL = "outside fault model"
"""Start of an ``unknowns`` note saying the run left the protocol's fault model (e.g. more
than f disk-less VR replicas down at once): safety was still checked after every event,
liveness was not required.  Such a run is reported but is not an undecided check, so it does
not count against ``pnyx sim --max-unknown``."""


ServiceHandler = Callable[[Node, StateMachine | None, Any], None]
"""Carries out one protocol-specific ``Ready.services`` request ``(node, sm, request)``,
e.g. take a state-machine snapshot and hand it back to the node.  Runtimes call it after
applying the batch's ``apply`` items and before ``advance``."""

ClientFactory = Callable[[int, tuple[int, ...], Rng], Node]
"""Builds a client ``(client_id, node_ids, rng)``; it records history via ``Ready.record``."""


ConfigNodePosition = Literal["none", "lowest", "highest"]
"""Where a cluster's configuration process sits among its ids (:attr:`RuntimeDef.config_node`)."""
CONFIG_NODE_POSITIONS: tuple[ConfigNodePosition, ...] = ("none", "lowest", "highest")


@dataclass(frozen=True)
class RuntimeDef:
    """What the real runtime needs beyond the simulator's part of a :class:`ProtocolDef`:
    the wire message types by role and the WAL's types, and the node factory, state machine
    and service handler where real processes use other ones than the simulator."""

    peer_message_types: tuple[type[Message], ...]
    """Accepted on peer connections (node to node)."""
    client_message_types: tuple[type[Message], ...] = ()
    """Accepted on client connections; a client sends these and gets ``ClientReply``."""
    entry_type: Any = Any
    """Type of log entries, so the WAL decodes them back into protocol structs."""
    record_types: Mapping[str, Any] = field(default_factory=dict)
    """Types of the durable records by key (e.g. Raft's hard state)."""
    make_node: NodeFactory | None = None
    """Node factory of real processes (e.g. Raft with bigger batches for 10 ms ticks);
    None: the definition's ``make_node``."""
    make_state_machine: Callable[[], StateMachine] | None = None
    """None: the definition's ``make_state_machine``."""
    serve: ServiceHandler | None = None
    """None: the definition's ``serve``."""
    config_node: ConfigNodePosition = "none"
    """Where a cluster's configuration process sits among its process ids: ``"highest"``
    (chain and CRAQ: the master), ``"lowest"`` (primary-backup: the view manager) or
    ``"none"`` (no such process: every process holds data).  Read by the node factories
    and by the cluster layout (:mod:`pnyx.services.schemes`): a cluster of ``N`` data
    nodes runs one extra process for it."""

    def __post_init__(self) -> None:
        if self.config_node not in CONFIG_NODE_POSITIONS:
            raise ValueError(
                f"config_node={self.config_node!r}; valid: {', '.join(CONFIG_NODE_POSITIONS)}"
            )

    @property
    def message_types(self) -> tuple[type[Message], ...]:
        """Every wire message type of the protocol (peer and client), for codecs."""
        return tuple(dict.fromkeys((*self.peer_message_types, *self.client_message_types)))

    def config_id(self, ids: Iterable[int]) -> int | None:
        """The configuration process among ``ids`` (see :attr:`config_node`); None when the
        protocol has none or ``ids`` is empty."""
        listed = tuple(ids)
        if self.config_node == "none" or not listed:
            return None
        return max(listed) if self.config_node == "highest" else min(listed)


SimRandom = random.Random
"""The simulator's seeded RNG streams as protocol definitions see them (swarm draws,
nemesis rules); an alias, so protocol packages need not import :mod:`random`."""


@dataclass(frozen=True)
class ProtocolDef:
    """Everything the simulator and the real runtime need to run one protocol.

    The simulator reads the node and client factories, the monitor and the fault
    settings; the runtime reads the node factory (or :attr:`runtime_make_node`), the
    state machine, the wire message types and the WAL's entry and record types.  A
    definition without :attr:`runtime` is simulator-only (:attr:`runnable`).
    """

    name: str
    summary: str
    make_node: NodeFactory
    make_client: ClientFactory
    make_monitor: Callable[[tuple[int, ...]], Monitor]
    make_state_machine: Callable[[], StateMachine] | None = None
    serve: ServiceHandler | None = None
    default_nodes: int = 5
    default_clients: int = 3
    broken: bool = False
    """True for deliberately broken variants that the simulator is expected to catch."""
    draw_settings: Callable[[random.Random], dict[str, Any]] | None = None
    """Swarm testing: draw protocol settings for one seed (see :mod:`pnyx.sim.swarm`)."""
    configure: Callable[[Mapping[str, Any]], ProtocolDef] | None = None
    """This spec with drawn settings applied (required with ``draw_settings``)."""
    make_nemesis: Callable[[frozenset[str]], Any] | None = None
    """Builds the protocol-aware :class:`~pnyx.sim.nemesis.Nemesis` for the given rules."""
    nemesis_rules: tuple[str, ...] = ()
    """Names of the nemesis rules ``make_nemesis`` understands."""
    draw_stream_settings: Callable[[random.Random], dict[str, Any]] | None = None
    """Swarm testing: further settings, drawn from a stream of their own after
    ``draw_settings`` (they override its values).  Settings added after a seed table was
    measured go here, so that a seed that does not draw them replays as before."""
    stream_nemesis_rules: tuple[str, ...] = ()
    """Nemesis rules with RNG streams of their own (see :mod:`pnyx.sim.nemesis`): each is
    drawn by a swarm seed from its own stream, and proposes, fires and draws its strikes'
    parameters from its own stream, asked only when no rule of ``nemesis_rules`` proposed a
    strike.  A seed in which such a rule never fires replays byte for byte as without it."""
    swarm_nodes: tuple[int, ...] = ()
    """Cluster sizes a swarm seed draws from (empty: always ``default_nodes``)."""
    sim_tick_us: int | None = None
    """The nominal tick of this protocol's runs (None: ``SimConfig.tick_us``)."""
    tick_slots: int = 0
    """When > 0, processes tick in groups: each process's phase is rounded down to one of
    ``tick_slots`` slots of the period, and all processes of a slot (and period) tick in one
    event, in id order.  Far fewer heap events for large groups."""
    runtime: RuntimeDef | None = None
    """How real processes run it; None: simulator only."""

    @property
    def runnable(self) -> bool:
        """True if the protocol runs as real processes (``pnyx serve --protocol NAME``);
        deliberately broken variants never do."""
        return self.runtime is not None and not self.broken

    @property
    def message_types(self) -> tuple[type[Message], ...]:
        """Every wire message type of a runnable protocol (peer and client), for codecs."""
        return self.runtime.message_types if self.runtime is not None else ()

    def draw_schedule(
        self, seed: int, nodes: int, fault_ms: int, faults: frozenset[str]
    ) -> Schedule | None:
        """The protocol's own fault schedule for ``seed`` (e.g. crash-stop members, slow
        members), overriding :func:`pnyx.sim.schedule.generate`; None: no schedule of its
        own (subclasses that draw one override this, and swarm testing does not apply)."""
        return None

    @property
    def draws_schedule(self) -> bool:
        """True if this spec draws its own fault schedule (:meth:`draw_schedule`)."""
        return type(self).draw_schedule is not ProtocolDef.draw_schedule
