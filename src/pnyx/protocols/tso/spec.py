"""Simulator spec ``tso``: the Raft-backed timestamp oracle under faults.

The monitor reads the clients' history as it grows and checks, at every answer:

- **uniqueness**: no timestamp is handed out twice (to any client, by any leader);
- **real-time order**: a batch requested after another batch was answered holds only
  larger timestamps (across leader changes, crashes and partitions).

Liveness (heal phase): a leader serves again (its window is committed).
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_left

from pnyx.core import HistoryEvent
from pnyx.protocols.raft import LEADER, RaftConfig
from pnyx.protocols.tso import TsoStateMachine, tso_node_factory
from pnyx.protocols.tso.client import make_client
from pnyx.protocols.tso.mutants import mutant_factory
from pnyx.protocols.tso.node import TsoNode
from pnyx.protocols.tso.runtime_def import TSO_RUNTIME
from pnyx.protocols.tso.services import serve
from pnyx.sim.spec import Monitor, ProtocolDef, Violation, World

SIM_RAFT = RaftConfig(
    election_jitter_ticks=4,
    max_entries_per_msg=8,
    max_inflight_msgs=4,
    snapshot_threshold_entries=16,
    snapshot_chunk_bytes=256,
)
"""Small batches and frequent snapshots (a mark also travels in snapshots)."""

SIM_WINDOW = 60
"""A small window, so that leaders extend it often (requests ask for at most 20)."""


class TsoMonitor(Monitor):
    """Uniqueness and real-time order of every answered batch."""

    def __init__(self, node_ids: tuple[int, ...]) -> None:
        self.node_ids = node_ids
        self._seen = 0
        self._max_answered = 0
        """The largest timestamp of any batch answered so far."""
        self._floor: dict[int, tuple[int, int]] = {}
        """process -> (largest answered timestamp when its request started, start ns)."""
        self._starts: list[int] = []
        self._batches: dict[int, tuple[int, int, int]] = {}
        """first -> (last, process, answer ns), kept sorted by ``_starts``."""
        self.answered = 0

    def after_event(self, world: World) -> Violation | None:
        history = world.history
        while self._seen < len(history):
            event = history[self._seen]
            self._seen += 1
            violation = self.observe(event)
            if violation is not None:
                return violation
        return None

    def observe(self, event: HistoryEvent) -> Violation | None:
        """Check one history event (public for tests)."""
        if event.type == "invoke":
            self._floor[event.process] = (self._max_answered, event.time)
            return None
        if event.type != "ok":
            return None
        first, last = int(event.value[0]), int(event.value[0]) + int(event.value[1]) - 1
        if last < first:
            return Violation(
                "tso-batch", f"process {event.process} got an empty batch {event.value}"
            )
        floor, started_ns = self._floor.get(event.process, (0, 0))
        if first <= floor:
            return Violation(
                "real-time-order",
                f"process {event.process} asked at {started_ns / 1e6:.1f} ms and got "
                f"{first}..{last}, but {floor} had already been handed out before it asked",
            )
        clash = self._overlap(first, last)
        if clash is not None:
            other_last, other_process, at_ns = self._batches[clash]
            return Violation(
                "uniqueness",
                f"process {event.process} got {first}..{last} at {event.time / 1e6:.1f} ms; "
                f"process {other_process} got {clash}..{other_last} at {at_ns / 1e6:.1f} ms",
            )
        at = bisect_left(self._starts, first)
        self._starts.insert(at, first)
        self._batches[first] = (last, event.process, event.time)
        self._max_answered = max(self._max_answered, last)
        self.answered += last - first + 1
        return None

    def _overlap(self, first: int, last: int) -> int | None:
        """The first timestamp of a known batch overlapping ``first..last``, if any."""
        at = bisect_left(self._starts, first)
        if at < len(self._starts) and self._starts[at] <= last:
            return self._starts[at]
        if at > 0:
            before = self._starts[at - 1]
            if self._batches[before][0] >= first:
                return before
        return None

    def liveness(self, world: World) -> str | None:
        for node_id in self.node_ids:
            node = world.node(node_id)
            if isinstance(node, TsoNode) and node.raft.role == LEADER:
                alloc = node.alloc
                if alloc is not None and alloc.started and alloc.limit >= alloc.next_ts:
                    return None
        return "no leader with a committed timestamp window"


def tso_spec(mutants: frozenset[str] = frozenset(), name: str = "tso") -> ProtocolDef:
    """The TSO spec; ``mutants`` (see :mod:`pnyx.protocols.tso.mutants`) break it on purpose."""
    if mutants:
        make_node = mutant_factory(mutants, SIM_RAFT, SIM_WINDOW)
    else:
        make_node = tso_node_factory(SIM_RAFT, SIM_WINDOW)
    return ProtocolDef(
        name=name,
        summary="timestamp oracle on Raft: batches served from a persisted high-water window",
        make_node=make_node,
        make_client=make_client,
        make_monitor=TsoMonitor,
        make_state_machine=TsoStateMachine,
        serve=serve,
        default_nodes=5,
        default_clients=4,
        broken=bool(mutants),
    )


def tso_mutant_spec(*, mutants: frozenset[str], name: str) -> ProtocolDef:
    """``tso+no_barrier`` / ``tso+stale_base`` (for ``pnyx sim``)."""
    return tso_spec(mutants, name)


TSO = tso_spec()


# -- as real processes (pnyx serve / cluster up --protocol): the runtime part ----------
TSO = dataclasses.replace(TSO, runtime=TSO_RUNTIME)
