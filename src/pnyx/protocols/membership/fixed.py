"""Fixed-timeout failure detector: the baseline the adaptive detectors are measured against."""

from __future__ import annotations

from pnyx.protocols.membership.config import FixedConfig


class FixedDetector:
    """A peer is unavailable once ``timeout_ticks`` passed without a heartbeat.

    Same shape as :class:`pnyx.protocols.membership.phi.PhiDetector`: available before
    the first heartbeat, time is the caller's tick count.
    """

    def __init__(self, config: FixedConfig) -> None:
        self.config = config
        self._last_ticks: int | None = None

    def heartbeat(self, now_ticks: int) -> None:
        """A heartbeat arrived at ``now_ticks`` (must not go back in time)."""
        last = self._last_ticks
        if last is not None and now_ticks < last:
            raise ValueError(f"heartbeat at tick {now_ticks} before the last one at {last}")
        self._last_ticks = now_ticks

    @property
    def last_heartbeat_ticks(self) -> int | None:
        """Tick of the last heartbeat, None before the first."""
        return self._last_ticks

    def is_available(self, now_ticks: int) -> bool:
        """True while fewer than ``timeout_ticks`` passed since the last heartbeat."""
        last = self._last_ticks
        return last is None or now_ticks - last < self.config.timeout_ticks

    def unavailable_at_ticks(self) -> int | None:
        """First tick at which :meth:`is_available` turns false; None before a heartbeat."""
        last = self._last_ticks
        return None if last is None else last + self.config.timeout_ticks
