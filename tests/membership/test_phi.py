"""Phi-accrual and fixed-timeout detectors against values computed independently here."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pnyx.protocols.membership import FixedConfig, FixedDetector, PhiConfig, PhiDetector

TICK_MS = 10
"""Ticks of 10 ms: Akka's defaults become 100 (interval), 300 (pause) and 10 (std floor)."""


def logistic_phi(elapsed: float, mean: float, std: float) -> float:
    """Akka's formula, written out independently: -log10(1 - F(y)), F logistic."""
    y = (elapsed - mean) / std
    z = y * (1.5976 + 0.070566 * y * y)
    # 1 - F = 1 / (1 + exp(z)); its log is -softplus(z), computed without overflow
    softplus = max(z, 0.0) + math.log(1.0 + math.exp(-abs(z)))
    return softplus / math.log(10.0)


def window_stats(samples: list[float], min_std: float) -> tuple[float, float]:
    mean = sum(samples) / len(samples)
    variance = sum((s - mean) ** 2 for s in samples) / len(samples)
    return mean, max(math.sqrt(variance), min_std)


def feed(detector: PhiDetector, intervals: list[int]) -> int:
    now = 1_000
    detector.heartbeat(now)
    for interval in intervals:
        now += interval
        detector.heartbeat(now)
    return now


arrivals = st.lists(st.integers(min_value=1, max_value=300), min_size=0, max_size=60)


@settings(max_examples=150, deadline=None)
@given(
    intervals=arrivals,
    max_samples=st.integers(min_value=2, max_value=40),
    elapsed=st.integers(min_value=0, max_value=900),
)
def test_phi_matches_the_closed_form(intervals: list[int], max_samples: int, elapsed: int) -> None:
    config = PhiConfig(
        heartbeat_interval_ticks=100,
        acceptable_heartbeat_pause_ticks=300,
        min_std_dev_ticks=10.0,
        max_sample_size=max_samples,
    )
    detector = PhiDetector(config)
    last = feed(detector, intervals)
    # Every arrival here comes while the peer is available (elapsed ≤ 300 < mean + pause),
    # so the window is the seed samples followed by every interval, last max_samples kept.
    samples = ([75.0, 125.0] + [float(i) for i in intervals])[-max_samples:]
    mean, std = window_stats(samples, 10.0)
    assert detector.sample_count == len(samples)
    assert detector.mean_ticks == pytest.approx(mean, rel=1e-9)
    assert detector.std_dev_ticks == pytest.approx(std, rel=1e-6, abs=1e-6)
    expected = logistic_phi(elapsed, mean + 300, std)
    assert detector.phi(last + elapsed) == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert detector.is_available(last + elapsed) == (expected < 8.0)


@settings(max_examples=100, deadline=None)
@given(intervals=arrivals, start=st.integers(min_value=0, max_value=2_000))
def test_phi_is_monotone_in_elapsed_time(intervals: list[int], start: int) -> None:
    detector = PhiDetector(PhiConfig.akka(TICK_MS))
    last = feed(detector, intervals)
    values = [detector.phi(last + start + step * 7) for step in range(60)]
    assert all(a <= b for a, b in itertools.pairwise(values)), values


@settings(max_examples=100, deadline=None)
@given(intervals=arrivals, threshold=st.floats(min_value=0.5, max_value=16.0))
def test_unavailable_at_is_the_first_tick_phi_reaches_the_threshold(
    intervals: list[int], threshold: float
) -> None:
    detector = PhiDetector(PhiConfig.akka(TICK_MS, threshold=threshold))
    feed(detector, intervals)
    when = detector.unavailable_at_ticks()
    assert when is not None
    assert detector.phi(when) >= threshold
    assert detector.phi(when - 1) < threshold
    assert detector.is_available(when - 1) and not detector.is_available(when)


@given(y=st.floats(min_value=-8.0, max_value=8.0))
def test_logistic_cdf_stays_close_to_the_normal_cdf(y: float) -> None:
    """The approximation Akka uses (and pnyx states) is within 2e-4 of Φ everywhere."""
    logistic_cdf = 1.0 - 10 ** -logistic_phi(y, 0.0, 1.0)
    normal_cdf = 0.5 * math.erfc(-y / math.sqrt(2))
    assert abs(logistic_cdf - normal_cdf) < 2e-4


def test_first_heartbeat_seeds_mean_interval_and_quarter_std() -> None:
    config = PhiConfig.akka(TICK_MS)
    detector = PhiDetector(config)
    assert detector.phi(50) == 0.0 and detector.unavailable_at_ticks() is None
    detector.heartbeat(50)
    assert detector.mean_ticks == pytest.approx(100.0)
    assert detector.std_dev_ticks == pytest.approx(25.0)
    # Akka's example: about 3.3 s after the last of steady 1 s heartbeats phi is still low
    assert detector.is_available(50 + 330)


def test_arrival_after_unavailability_is_not_a_sample() -> None:
    detector = PhiDetector(PhiConfig.akka(TICK_MS))
    last = feed(detector, [100] * 20)
    count, mean = detector.sample_count, detector.mean_ticks
    gone = detector.unavailable_at_ticks()
    assert gone is not None and not detector.is_available(gone)
    detector.heartbeat(gone + 5_000)
    assert detector.sample_count == count and detector.mean_ticks == mean
    assert detector.is_available(gone + 5_000)
    assert detector.last_heartbeat_ticks == gone + 5_000 > last


def test_akka_defaults_in_ticks() -> None:
    config = PhiConfig.akka(100)
    assert config.heartbeat_interval_ticks == 10
    assert config.acceptable_heartbeat_pause_ticks == 30
    assert config.min_std_dev_ticks == pytest.approx(1.0)
    assert config.threshold == 8.0 and config.max_sample_size == 1000
    with pytest.raises(ValueError, match="tick_ms"):
        PhiConfig.akka(0)
    with pytest.raises(ValueError, match="threshold"):
        PhiConfig(10, 30, 1.0, threshold=-1.0)


def test_heartbeat_back_in_time_is_refused() -> None:
    detector = PhiDetector(PhiConfig.akka(TICK_MS))
    detector.heartbeat(10)
    with pytest.raises(ValueError, match="before the last"):
        detector.heartbeat(9)


def test_fixed_detector_times_out_exactly() -> None:
    detector = FixedDetector(FixedConfig(timeout_ticks=30))
    assert detector.is_available(10_000) and detector.unavailable_at_ticks() is None
    detector.heartbeat(100)
    assert detector.is_available(129) and not detector.is_available(130)
    assert detector.unavailable_at_ticks() == 130
    detector.heartbeat(200)
    assert detector.is_available(229)
    with pytest.raises(ValueError, match="timeout_ticks"):
        FixedConfig(timeout_ticks=0)
