"""Configuration of the membership protocols, in ticks, with memberlist's and Akka's defaults.

Every duration is a count of ticks.  ``SwimConfig.lan(tick_ms)`` and
``PhiConfig.akka(tick_ms)`` convert the published defaults (milliseconds) to ticks,
rounding up and never below one tick.  The bound helpers at the end are what a test
(or a user) computes from a configuration: suspicion timeouts and the worst-case
detection time of a crashed member (see the package README for what they guarantee).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def ms_to_ticks(duration_ms: int, tick_ms: int) -> int:
    """``duration_ms`` in ticks of ``tick_ms``, rounded up, at least 1."""
    if tick_ms <= 0:
        raise ValueError(f"tick_ms must be positive, got {tick_ms}")
    if duration_ms < 0:
        raise ValueError(f"duration must not be negative, got {duration_ms} ms")
    return max(1, -(-duration_ms // tick_ms))


def _check_positive(owner: str, **values: int | float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{owner}.{name} must be positive, got {value!r}")


def _check_non_negative(owner: str, **values: int | float) -> None:
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{owner}.{name} must not be negative, got {value!r}")


@dataclass(frozen=True)
class SwimConfig:
    """SWIM (+ Lifeguard) parameters; durations in ticks.

    Defaults of the counts are HashiCorp memberlist's ``DefaultLANConfig``; use
    :meth:`lan` to get its durations converted to ticks.
    """

    probe_interval_ticks: int
    """Length of one protocol period (memberlist ProbeInterval, 1 s)."""
    probe_timeout_ticks: int
    """Wait for a direct ack before asking for indirect probes (ProbeTimeout, 500 ms)."""
    gossip_interval_ticks: int
    """Period of the gossip messages to ``gossip_nodes`` random members (200 ms)."""
    push_pull_interval_ticks: int
    """Period of the full-state push/pull with one random member (30 s), scaled up above
    32 members like memberlist (``push_pull_period_ticks``)."""
    dead_reap_ticks: int
    """A dead or left member is forgotten this long after it was declared so (pnyx: 60 s)."""
    join_retry_ticks: int
    """Until a seed answers, the join push/pull is re-sent to every seed this often (1 s)."""
    indirect_checks: int = 3
    """k: members asked to probe a target that missed its direct ack (IndirectChecks)."""
    suspicion_mult: int = 4
    """Multiplier of the suspicion timeout (SuspicionMult)."""
    suspicion_max_timeout_mult: int = 6
    """Lifeguard: the suspicion timeout starts at this multiple of its minimum."""
    gossip_nodes: int = 3
    """Members each gossip message goes to (GossipNodes)."""
    retransmit_mult: int = 4
    """λ: an update is sent ``retransmit_mult * ceil(log10(n + 1))`` times (RetransmitMult)."""
    awareness_max_multiplier: int = 8
    """Lifeguard: the local health score ranges over 0 .. this - 1 (AwarenessMaxMultiplier)."""
    lifeguard: bool = True
    """Lifeguard on (local health, nacks, dynamic suspicion timeout, buddy system)."""
    max_piggyback_updates: int = 16
    """Bound on membership updates carried by one ping, ack, nack or gossip message."""
    max_queued_updates: int = 4096
    """Bound on the dissemination queue (one entry per member; oldest dropped beyond)."""
    push_pull_chunk_states: int = 64
    """Member states per push/pull message (full state goes out in several messages)."""
    max_pending_relays: int = 64
    """Bound on indirect probes this member runs for others at the same time."""
    max_members: int = 100_000
    """Bound on the membership table; news of further members is ignored (counted)."""
    max_events: int = 10_000
    """Bound on undrained :class:`MemberEvent` s; the oldest are dropped (counted)."""

    def __post_init__(self) -> None:
        _check_positive(
            "SwimConfig",
            probe_interval_ticks=self.probe_interval_ticks,
            probe_timeout_ticks=self.probe_timeout_ticks,
            gossip_interval_ticks=self.gossip_interval_ticks,
            push_pull_interval_ticks=self.push_pull_interval_ticks,
            dead_reap_ticks=self.dead_reap_ticks,
            join_retry_ticks=self.join_retry_ticks,
            suspicion_mult=self.suspicion_mult,
            suspicion_max_timeout_mult=self.suspicion_max_timeout_mult,
            retransmit_mult=self.retransmit_mult,
            awareness_max_multiplier=self.awareness_max_multiplier,
            max_piggyback_updates=self.max_piggyback_updates,
            max_queued_updates=self.max_queued_updates,
            push_pull_chunk_states=self.push_pull_chunk_states,
            max_pending_relays=self.max_pending_relays,
            max_members=self.max_members,
            max_events=self.max_events,
        )
        _check_non_negative(
            "SwimConfig", indirect_checks=self.indirect_checks, gossip_nodes=self.gossip_nodes
        )
        if self.probe_timeout_ticks > self.probe_interval_ticks:
            raise ValueError(
                f"SwimConfig.probe_timeout_ticks={self.probe_timeout_ticks} exceeds "
                f"probe_interval_ticks={self.probe_interval_ticks}; the indirect probes "
                "need the rest of the protocol period"
            )

    @classmethod
    def lan(cls, tick_ms: int, *, lifeguard: bool = True) -> SwimConfig:
        """memberlist's LAN profile with durations converted to ticks of ``tick_ms``."""
        return cls(
            probe_interval_ticks=ms_to_ticks(1_000, tick_ms),
            probe_timeout_ticks=ms_to_ticks(500, tick_ms),
            gossip_interval_ticks=ms_to_ticks(200, tick_ms),
            push_pull_interval_ticks=ms_to_ticks(30_000, tick_ms),
            dead_reap_ticks=ms_to_ticks(60_000, tick_ms),
            join_retry_ticks=ms_to_ticks(1_000, tick_ms),
            lifeguard=lifeguard,
        )

    def awareness_scale_max(self) -> int:
        """Largest factor by which local health stretches the probe interval and timeout."""
        return self.awareness_max_multiplier if self.lifeguard else 1


@dataclass(frozen=True)
class PhiConfig:
    """Phi-accrual detector parameters (Akka's ``akka.cluster.failure-detector``) in ticks."""

    heartbeat_interval_ticks: int
    """How often heartbeats are sent; also the first-heartbeat estimate of the mean."""
    acceptable_heartbeat_pause_ticks: int
    """Added to the mean inter-arrival time (Akka: 3 s)."""
    min_std_dev_ticks: float
    """Floor of the standard deviation (Akka: 100 ms; kept fractional, not rounded)."""
    threshold: float = 8.0
    """A peer is suspected dead once phi reaches this."""
    max_sample_size: int = 1000
    """Inter-arrival times kept in the sliding window."""

    def __post_init__(self) -> None:
        _check_positive(
            "PhiConfig",
            heartbeat_interval_ticks=self.heartbeat_interval_ticks,
            min_std_dev_ticks=self.min_std_dev_ticks,
            threshold=self.threshold,
            max_sample_size=self.max_sample_size,
        )
        _check_non_negative(
            "PhiConfig", acceptable_heartbeat_pause_ticks=self.acceptable_heartbeat_pause_ticks
        )
        if not math.isfinite(self.threshold) or not math.isfinite(self.min_std_dev_ticks):
            raise ValueError(f"PhiConfig values must be finite, got {self!r}")

    @classmethod
    def akka(cls, tick_ms: int, *, threshold: float = 8.0) -> PhiConfig:
        """Akka's defaults (interval 1 s, pause 3 s, min std-dev 100 ms, 1,000 samples)."""
        if tick_ms <= 0:
            raise ValueError(f"tick_ms must be positive, got {tick_ms}")
        return cls(
            heartbeat_interval_ticks=ms_to_ticks(1_000, tick_ms),
            acceptable_heartbeat_pause_ticks=ms_to_ticks(3_000, tick_ms),
            min_std_dev_ticks=100 / tick_ms,
            threshold=threshold,
        )


@dataclass(frozen=True)
class FixedConfig:
    """Fixed-timeout detector: a peer is dead once no heartbeat came for ``timeout_ticks``."""

    timeout_ticks: int

    def __post_init__(self) -> None:
        _check_positive("FixedConfig", timeout_ticks=self.timeout_ticks)

    @classmethod
    def default(cls, tick_ms: int, *, timeout_ms: int = 5_000) -> FixedConfig:
        """A baseline matching phi's budget: 5 s without a heartbeat (1 s interval)."""
        return cls(timeout_ticks=ms_to_ticks(timeout_ms, tick_ms))


# -- bounds computed from a configuration --------------------------------------------------


def retransmit_limit(config: SwimConfig, n: int) -> int:
    """Times an update is sent: ``retransmit_mult * ceil(log10(n + 1))`` (memberlist)."""
    return config.retransmit_mult * max(1, math.ceil(math.log10(max(n, 1) + 1)))


def suspicion_min_ticks(config: SwimConfig, n: int) -> int:
    """``suspicion_mult * max(1, log10(n)) * probe_interval``, rounded up (memberlist)."""
    node_scale = max(1.0, math.log10(max(n, 1)))
    return math.ceil(config.suspicion_mult * node_scale * config.probe_interval_ticks)


def suspicion_max_ticks(config: SwimConfig, n: int) -> int:
    """Longest suspicion timeout: ``suspicion_max_timeout_mult`` times min with Lifeguard,
    the (fixed) minimum without it."""
    low = suspicion_min_ticks(config, n)
    return low * config.suspicion_max_timeout_mult if config.lifeguard else low


def expected_confirmations(config: SwimConfig, n: int) -> int:
    """K: independent suspicions that bring the timeout down to its minimum."""
    if not config.lifeguard:
        return 0
    return max(0, min(config.indirect_checks, n - 2))


def suspicion_timeout_ticks(config: SwimConfig, n: int, confirmations: int) -> int:
    """Suspicion timeout after ``confirmations`` independent confirmations.

    Lifeguard (memberlist's formula): ``max - (max - min) * log(C + 1) / log(K + 1)``,
    floored at min; with K = 0 or Lifeguard off, the minimum.
    """
    low = suspicion_min_ticks(config, n)
    k = expected_confirmations(config, n)
    if k < 1:
        return low
    high = suspicion_max_ticks(config, n)
    c = min(max(confirmations, 0), k)
    raw = high - (high - low) * math.log(c + 1) / math.log(k + 1)
    return max(low, math.ceil(raw))


def push_pull_period_ticks(config: SwimConfig, n: int) -> int:
    """Push/pull period, scaled like memberlist's ``pushPullScale`` above 32 members."""
    if n <= 32:
        return config.push_pull_interval_ticks
    multiplier = math.ceil(math.log2(n) - math.log2(32)) + 1
    return config.push_pull_interval_ticks * multiplier


def detection_bound_ticks(config: SwimConfig, n: int) -> int:
    """Worst-case ticks from a member's crash until a live member declares it dead.

    Holds for every live member that keeps running (is not paused) and knew the crashed
    member as alive or suspect, whatever the message loss, in a group of at most ``n``
    members: the member probes the crashed one within ``2 * (n - 1)`` protocol periods
    (round-robin over a shuffled list), each at most ``probe_interval * A`` long
    (A = awareness_max_multiplier with Lifeguard, 1 without), then declares it dead when
    its suspicion timeout (at most :func:`suspicion_max_ticks`) runs out.  Two ticks cover
    the rounding of deadlines to ticks.  See the README for the assumptions.
    """
    if n < 2:
        raise ValueError(f"a detection bound needs at least 2 members, got n={n}")
    period = config.probe_interval_ticks * config.awareness_scale_max()
    return 2 * (n - 1) * period + suspicion_max_ticks(config, n) + 2
