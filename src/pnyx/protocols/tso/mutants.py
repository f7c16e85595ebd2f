"""Deliberately broken TSO leaders (test hooks): the simulator must catch each one.

- ``no_barrier``: answers without confirming leadership through ReadIndex, so a deposed
  leader can hand out a timestamp below one its successor already handed out.
- ``stale_base``: a new leader starts its window from the mark it has applied so far,
  without first committing an entry of its term (so without learning every committed
  mark): it hands out timestamps its predecessor already handed out.
"""

from __future__ import annotations

from pnyx.core import DurableState, NodeFactory, Rng
from pnyx.protocols.raft import RaftConfig
from pnyx.protocols.tso.node import TsoNode

MUTANTS: frozenset[str] = frozenset({"no_barrier", "stale_base"})


class NoBarrierTsoNode(TsoNode):
    """Serves queued requests without a ReadIndex round."""

    def _start_barrier(self) -> None:
        self._confirmed.extend(self._pending)
        self._pending = []


class StaleBaseTsoNode(TsoNode):
    """Starts its window at once, from whatever mark it has applied."""

    def _may_start(self) -> bool:
        return True


def mutant_factory(
    mutants: frozenset[str], raft_config: RaftConfig | None, window_size: int
) -> NodeFactory:
    """A node factory for exactly one mutant of :data:`MUTANTS`."""
    unknown = sorted(mutants - MUTANTS)
    if unknown or len(mutants) != 1:
        raise KeyError(f"one TSO mutant please; unknown {unknown}; valid: {sorted(MUTANTS)}")
    kind = NoBarrierTsoNode if "no_barrier" in mutants else StaleBaseTsoNode

    def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> TsoNode:
        return kind(node_id, peers, rng, durable, raft_config, window_size)

    return make_node
