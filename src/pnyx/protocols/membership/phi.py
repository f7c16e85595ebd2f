"""Phi-accrual failure detector (Hayashibara et al. 2004) as Akka computes it, in ticks.

The detector keeps a sliding window of heartbeat inter-arrival times and reports
``phi = -log10(1 - F(elapsed))`` where F is the CDF of a normal distribution with the
window's mean plus the acceptable heartbeat pause and the window's standard deviation
(floored at ``min_std_dev_ticks``).  Like Akka, F is the logistic approximation of the
normal CDF, ``F(y) ≈ 1 / (1 + exp(-y (1.5976 + 0.070566 y²)))`` for
``y = (elapsed - mean) / std``, which is within 1.4e-4 of the exact CDF; the first
heartbeat seeds the window with two samples, ``interval ± interval / 4``, and an
inter-arrival time is only added when the peer was still considered available.
"""

from __future__ import annotations

import math
from collections import deque

from pnyx.protocols.membership.config import PhiConfig

_A = 0.070566
_B = 1.5976
_LN10 = math.log(10.0)


def phi_of(elapsed: float, mean: float, std_dev: float) -> float:
    """Akka's phi for ``elapsed`` ticks since the last heartbeat, given mean and std-dev.

    ``mean`` already includes the acceptable pause; ``std_dev`` must be positive.
    """
    if std_dev <= 0:
        raise ValueError(f"std_dev must be positive, got {std_dev}")
    y = (elapsed - mean) / std_dev
    exponent = -y * (_B + _A * y * y)
    # ln(1 - F) = ln(e / (1 + e)) with e = exp(exponent), in a form that neither
    # overflows nor loses precision at either tail (Akka picks one of two forms by sign).
    if exponent <= 0:
        ln_tail = exponent - math.log1p(math.exp(exponent))
    else:
        ln_tail = -math.log1p(math.exp(-exponent))
    return -ln_tail / _LN10


def threshold_y(threshold: float) -> float:
    """The standardized elapsed time y at which Akka's phi reaches ``threshold``.

    Solves ``0.070566 y³ + 1.5976 y = -ln(p / (1 - p))`` with ``p = 10^-threshold``
    by bisection (the left side increases strictly, so the root is unique).
    """
    p = 10.0**-threshold
    target = -math.log(p / (1.0 - p))
    low, high = -100.0, 100.0
    for _ in range(200):
        mid = (low + high) / 2
        if _A * mid**3 + _B * mid < target:
            low = mid
        else:
            high = mid
    return high


class PhiDetector:
    """Phi-accrual detector of one peer; time is the caller's tick count."""

    def __init__(self, config: PhiConfig) -> None:
        self.config = config
        self._window: deque[float] = deque()
        self._sum = 0.0
        self._sum_squares = 0.0
        self._last_ticks: int | None = None
        self._y_threshold = threshold_y(config.threshold)

    # -- inputs ------------------------------------------------------------------------

    def heartbeat(self, now_ticks: int) -> None:
        """A heartbeat arrived at ``now_ticks`` (must not go back in time)."""
        last = self._last_ticks
        if last is not None and now_ticks < last:
            raise ValueError(f"heartbeat at tick {now_ticks} before the last one at {last}")
        if last is None:
            interval = float(self.config.heartbeat_interval_ticks)
            self._add(interval - interval / 4)
            self._add(interval + interval / 4)
        elif self.is_available(now_ticks):
            # Akka: an arrival after the peer was declared unavailable is not a sample,
            # so one long pause does not skew the window.
            self._add(float(now_ticks - last))
        self._last_ticks = now_ticks

    def _add(self, interval: float) -> None:
        if len(self._window) >= self.config.max_sample_size:
            old = self._window.popleft()
            self._sum -= old
            self._sum_squares -= old * old
        self._window.append(interval)
        self._sum += interval
        self._sum_squares += interval * interval

    # -- queries -----------------------------------------------------------------------

    @property
    def last_heartbeat_ticks(self) -> int | None:
        """Tick of the last heartbeat, None before the first."""
        return self._last_ticks

    @property
    def sample_count(self) -> int:
        """Inter-arrival samples in the window (at most ``max_sample_size``)."""
        return len(self._window)

    @property
    def mean_ticks(self) -> float:
        """Mean inter-arrival time of the window (without the acceptable pause)."""
        if not self._window:
            raise ValueError("no heartbeat yet: the window is empty")
        return self._sum / len(self._window)

    @property
    def std_dev_ticks(self) -> float:
        """Population standard deviation of the window, floored at ``min_std_dev_ticks``."""
        mean = self.mean_ticks
        variance = max(0.0, self._sum_squares / len(self._window) - mean * mean)
        return max(math.sqrt(variance), self.config.min_std_dev_ticks)

    def phi(self, now_ticks: int) -> float:
        """Suspicion level at ``now_ticks``; 0 before the first heartbeat (as in Akka)."""
        last = self._last_ticks
        if last is None:
            return 0.0
        mean = self.mean_ticks + self.config.acceptable_heartbeat_pause_ticks
        return phi_of(now_ticks - last, mean, self.std_dev_ticks)

    def is_available(self, now_ticks: int) -> bool:
        """True while phi is below the threshold."""
        return self.phi(now_ticks) < self.config.threshold

    def unavailable_at_ticks(self) -> int | None:
        """First tick at which :meth:`is_available` turns false if no heartbeat arrives.

        None before the first heartbeat.  Lets a node keep one deadline per peer
        instead of evaluating phi every tick.
        """
        last = self._last_ticks
        if last is None:
            return None
        mean = self.mean_ticks + self.config.acceptable_heartbeat_pause_ticks
        std = self.std_dev_ticks
        threshold = self.config.threshold
        elapsed = max(0, math.ceil(mean + self._y_threshold * std))
        # The closed form is exact up to rounding: settle the boundary on phi itself.
        for _ in range(64):
            if elapsed > 0 and phi_of(elapsed - 1, mean, std) >= threshold:
                elapsed -= 1
            elif phi_of(elapsed, mean, std) < threshold:
                elapsed += 1
            else:
                break
        return last + elapsed
