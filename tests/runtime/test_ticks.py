"""DueTicks: ticks fall due every tick_ms; a round takes at most max_ticks_per_round."""

from __future__ import annotations

import logging

import pytest

from pnyx.runtime.ticks import DueTicks

_LOG = logging.getLogger("test.ticks")


class _Stallable:
    """Stands for a node: only records what ``clock_stalled`` told it."""

    def __init__(self) -> None:
        self.missed: list[int] = []

    def clock_stalled(self, missed_ticks: int) -> None:
        self.missed.append(missed_ticks)


def test_ticks_fall_due_per_period_and_are_taken_once() -> None:
    due = DueTicks(1, tick_ms=10, max_ticks_per_round=16, log=_LOG)
    node = _Stallable()
    assert due.take(5.0, node) == 0, "nothing is due before start()"
    due.start(5.0)
    assert due.until_next_s(5.0) == pytest.approx(0.01)
    assert due.take(5.009, node) == 0
    assert due.take(5.0101, node) == 1
    assert due.take(5.0455, node) == 3  # the ticks of 5.02, 5.03 and 5.04
    assert due.take(5.0455, node) == 0
    assert due.take(5.0501, node) == 1
    assert node.missed == []


def test_a_stall_delivers_at_most_the_cap_and_tells_the_node_what_was_dropped() -> None:
    due = DueTicks(1, tick_ms=10, max_ticks_per_round=3, log=_LOG)
    node = _Stallable()
    due.start(0.0)
    due.collect(0.0505)  # 5 ticks due
    assert due.pending == 5
    assert due.take(0.0505, node) == 3
    assert node.missed == [2]
    assert due.pending == 0 and due.take(0.0505, node) == 0


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_ticks_per_round=0"):
        DueTicks(1, tick_ms=10, max_ticks_per_round=0, log=_LOG)
    with pytest.raises(RuntimeError, match="before start"):
        DueTicks(1, tick_ms=10, max_ticks_per_round=1, log=_LOG).until_next_s(0.0)
