"""The commit monitor flags split decisions, changed decisions and unjustified commits, and
passes consistent ones."""

from __future__ import annotations

from typing import Any

from pnyx.core import Apply
from pnyx.protocols.commit.messages import Decided, Voted
from pnyx.protocols.commit.spec import CommitMonitor
from pnyx.sim.schedule import FaultEvent

NODES = (1, 2, 3, 4)


class _World:
    now_us = 1_000

    def stopped(self, node_id: int) -> bool:
        return False


def _feed(monitor: CommitMonitor, node: int, event: Any) -> Any:
    return monitor.on_apply(_World(), node, Apply(1, event), None)  # type: ignore[arg-type]


def _voted(monitor: CommitMonitor, *nodes: int) -> None:
    for n in nodes:
        assert _feed(monitor, n, Voted(7, n, True, (2, 3))) is None


def test_consistent_commit_passes() -> None:
    monitor = CommitMonitor(NODES, blocking_allowed=True)
    _voted(monitor, 2, 3)
    for node in (1, 2, 3):
        assert _feed(monitor, node, Decided(7, node, True, (2, 3), "x")) is None
    assert monitor.in_doubt() == []


def test_split_decision_is_an_atomicity_violation_with_the_partition_in_force() -> None:
    monitor = CommitMonitor(NODES, blocking_allowed=False)
    cut = FaultEvent("partition", 0, 5_000, shape="isolate", links=((1, 3), (3, 1)))
    monitor.on_fault(_World(), cut, True)  # type: ignore[arg-type]
    _voted(monitor, 2, 3)
    assert _feed(monitor, 2, Decided(7, 2, True, (2, 3), "decision")) is None
    violation = _feed(monitor, 3, Decided(7, 3, False, (2, 3), "termination"))
    assert violation is not None and violation.prop == "atomicity"
    assert "node 2: voted yes, committed" in violation.detail
    assert "node 3: voted yes, aborted" in violation.detail
    assert "blocks 1->3 3->1" in violation.detail


def test_commit_without_every_yes_vote_is_a_validity_violation() -> None:
    monitor = CommitMonitor(NODES, blocking_allowed=True)
    _voted(monitor, 2)
    violation = _feed(monitor, 1, Decided(7, 1, True, (2, 3), "coordinator"))
    assert violation is not None and violation.prop == "validity" and "[3]" in violation.detail


def test_a_node_changing_its_decision_is_caught() -> None:
    monitor = CommitMonitor(NODES, blocking_allowed=True)
    _voted(monitor, 2, 3)
    assert _feed(monitor, 2, Decided(7, 2, False, (2, 3), "decision")) is None
    violation = _feed(monitor, 2, Decided(7, 2, True, (2, 3), "recovery"))
    assert violation is not None and "changed its decision" in violation.detail


def test_liveness_reports_participants_in_doubt() -> None:
    monitor = CommitMonitor(NODES, blocking_allowed=False)
    _voted(monitor, 2, 3)
    _feed(monitor, 2, Decided(7, 2, False, (2, 3), "decision"))
    missing = monitor.liveness(_World())  # type: ignore[arg-type]
    assert missing is not None and "node 3 on txn 7" in missing
