"""Failure detection and membership: SWIM with Lifeguard, phi-accrual and fixed-timeout."""

from pnyx.protocols.membership.config import (
    FixedConfig,
    PhiConfig,
    SwimConfig,
    detection_bound_ticks,
    expected_confirmations,
    ms_to_ticks,
    push_pull_period_ticks,
    retransmit_limit,
    suspicion_max_ticks,
    suspicion_min_ticks,
    suspicion_timeout_ticks,
)
from pnyx.protocols.membership.fixed import FixedDetector
from pnyx.protocols.membership.heartbeat import HeartbeatNode
from pnyx.protocols.membership.messages import (
    HEARTBEAT_TYPES,
    SWIM_TYPES,
    WIRE_TYPES,
    Ack,
    Gossip,
    Heartbeat,
    MemberEvent,
    MemberStateName,
    MemberView,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Update,
)
from pnyx.protocols.membership.phi import PhiDetector, phi_of
from pnyx.protocols.membership.swim import SwimNode

__all__ = [
    "HEARTBEAT_TYPES",
    "SWIM_TYPES",
    "WIRE_TYPES",
    "Ack",
    "FixedConfig",
    "FixedDetector",
    "Gossip",
    "Heartbeat",
    "HeartbeatNode",
    "MemberEvent",
    "MemberStateName",
    "MemberView",
    "Nack",
    "PhiConfig",
    "PhiDetector",
    "Ping",
    "PingReq",
    "PushPull",
    "SwimConfig",
    "SwimNode",
    "Update",
    "detection_bound_ticks",
    "expected_confirmations",
    "ms_to_ticks",
    "phi_of",
    "push_pull_period_ticks",
    "retransmit_limit",
    "suspicion_max_ticks",
    "suspicion_min_ticks",
    "suspicion_timeout_ticks",
]
