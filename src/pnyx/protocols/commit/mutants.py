"""Fault injection for directed demonstrations: a coordinator that stops for good at the
worst moment (all votes yes, no decision made), as a crash-stop that no restart undoes.

With it, 2PC blocks (participants that voted yes stay in doubt) and 3PC terminates (the
participants abort among themselves).  Test hooks live here, not in the engines.
"""

from __future__ import annotations

from pnyx.core import DurableState, Message, PutRecord, Rng
from pnyx.protocols.commit.common import CommitConfig, Host
from pnyx.protocols.commit.engines import C, CoordinatorBase
from pnyx.protocols.commit.threepc import ThreePcCoordinator, ThreePcNode
from pnyx.protocols.commit.threepc import _CoordTxn as _Coord3Txn
from pnyx.protocols.commit.twopc import TwoPcCoordinator, TwoPcNode, _CoordTxn

MUTANTS: frozenset[str] = frozenset({"coordinator_halts"})
"""``coordinator_halts``: the coordinator stops for good once every vote of a transaction
is yes (after ``HALT_AFTER_TICKS``), before it decides."""

HALT_AFTER_TICKS = 50
"""Ticks of normal operation before the coordinator looks for its moment to halt."""

HALTED_KEY = "halted"
"""Durable mark of the halt, so that a simulator restart does not revive the coordinator."""


class _Halting(CoordinatorBase[C]):
    """A coordinator that, once halted, ignores every message and tick (a crash-stop)."""

    halted: bool
    ticks: int

    def __init__(
        self, host: Host, participants: tuple[int, ...], config: CommitConfig, durable: DurableState
    ) -> None:
        self.halted = bool(durable.records.get(HALTED_KEY, False))
        self.ticks = 0
        super().__init__(host, participants, config, durable)

    def step(self, msg: Message, from_id: int) -> bool:
        return True if self.halted else super().step(msg, from_id)

    def tick(self) -> None:
        self.ticks += 1
        if not self.halted:
            super().tick()

    def _halt(self) -> None:
        """Stop for good (durably, so that a restart does not revive the coordinator)."""
        self.halted = True
        self.host.persist(PutRecord(HALTED_KEY, True))


class HaltingTwoPcCoordinator(_Halting[_CoordTxn], TwoPcCoordinator):
    """A 2PC coordinator that halts instead of making its commit decision."""

    def _commit(self, txn: int, entry: _CoordTxn) -> None:
        if self.ticks >= HALT_AFTER_TICKS and entry.client is not None:
            self._halt()
            return
        super()._commit(txn, entry)


class HaltingThreePcCoordinator(_Halting[_Coord3Txn], ThreePcCoordinator):
    """A 3PC coordinator that halts instead of sending PreCommit."""

    def _precommit(self, txn: int, entry: _Coord3Txn) -> None:
        if self.ticks >= HALT_AFTER_TICKS:
            self._halt()
            return
        super()._precommit(txn, entry)


def make_halting_2pc_node(
    node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState
) -> TwoPcNode:
    """A 2PC node whose coordinator halts (participants are unchanged)."""
    node = TwoPcNode(node_id, peers, rng, durable)
    if node_id == node.coordinator_id:
        node.engine = HaltingTwoPcCoordinator(node, node.participant_ids, CommitConfig(), durable)
    return node


def make_halting_3pc_node(
    node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState
) -> ThreePcNode:
    """A 3PC node whose coordinator halts (participants are unchanged)."""
    node = ThreePcNode(node_id, peers, rng, durable)
    if node_id == node.coordinator_id:
        node.engine = HaltingThreePcCoordinator(node, node.participant_ids, CommitConfig(), durable)
    return node
