"""Logical ticks for the runners: which ticks fell due on a clock, capped per round.

:class:`~pnyx.runtime.NodeRunner` and :class:`~pnyx.runtime.member_runner.MemberRunner`
turn their clock (seconds) into the node's ticks the same way: every ``tick_ms`` one tick
falls due; a round delivers what fell due, at most ``max_ticks_per_round`` — beyond that
the rest are dropped (like a paused clock) and the node's optional
``clock_stalled(missed_ticks)`` is told how many.
"""

from __future__ import annotations

import logging


class DueTicks:
    """The ticks of one node that fell due and are not delivered yet."""

    def __init__(
        self, node_id: int, tick_ms: int, max_ticks_per_round: int, log: logging.Logger
    ) -> None:
        if tick_ms < 1 or max_ticks_per_round < 1:
            raise ValueError(
                f"tick_ms={tick_ms} and max_ticks_per_round={max_ticks_per_round} "
                "must be at least 1"
            )
        self.node_id = node_id
        self.tick_ms = tick_ms
        self.max_ticks_per_round = max_ticks_per_round
        self._log = log
        self.pending = 0
        """Ticks due and not yet taken."""
        self.next_at_s: float | None = None
        """When the next tick falls due (None before :meth:`start`)."""

    def start(self, now_s: float) -> None:
        """The first tick falls due one period after ``now_s``."""
        self.next_at_s = now_s + self.tick_ms / 1000.0

    def until_next_s(self, now_s: float) -> float:
        """Seconds from ``now_s`` to the next tick (negative when overdue)."""
        if self.next_at_s is None:
            raise RuntimeError("DueTicks.until_next_s() before start()")
        return self.next_at_s - now_s

    def collect(self, now_s: float) -> None:
        """Add the ticks that fell due by ``now_s`` to :attr:`pending`."""
        if self.next_at_s is None or now_s < self.next_at_s:
            return
        period_s = self.tick_ms / 1000.0
        due = int((now_s - self.next_at_s) / period_s) + 1
        self.next_at_s += due * period_s
        self.pending += due

    def take(self, now_s: float, node: object) -> int:
        """The ticks to deliver this round (collected by ``now_s`` first); beyond
        ``max_ticks_per_round`` they are dropped and ``node.clock_stalled`` (if it has one)
        is told how many."""
        self.collect(now_s)
        pending, self.pending = self.pending, 0
        ticks = min(pending, self.max_ticks_per_round)
        if pending > ticks:
            self._log.warning(
                "clock_stalled node=%d missed_ticks=%d delivered_ticks=%d",
                self.node_id,
                pending - ticks,
                ticks,
            )
            stalled = getattr(node, "clock_stalled", None)
            if callable(stalled):
                stalled(pending - ticks)
        return ticks
