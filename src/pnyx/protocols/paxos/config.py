"""Tuning knobs of a Multi-Paxos node, quorum sizes (Flexible Paxos) and the bug catalogue."""

from __future__ import annotations

from dataclasses import dataclass, field

# Mutants: deliberately broken variants, selectable by name in tests only (README: bugs).
ACCEPT_LOWER_BALLOT = "accept_lower_ballot"
IGNORE_PHASE1_VALUES = "ignore_phase1_values"
ADOPT_LOWEST_BALLOT = "adopt_lowest_ballot"
PROMISE_NOT_PERSISTED = "promise_not_persisted"
COMMIT_BEFORE_QUORUM = "commit_before_quorum"
GAP_SKIPPED = "gap_skipped"
READ_WITHOUT_QUORUM = "read_without_quorum"
SESSION_NO_DEDUP = "session_no_dedup"

MUTANTS: frozenset[str] = frozenset(
    {
        ACCEPT_LOWER_BALLOT,
        IGNORE_PHASE1_VALUES,
        ADOPT_LOWEST_BALLOT,
        PROMISE_NOT_PERSISTED,
        COMMIT_BEFORE_QUORUM,
        GAP_SKIPPED,
        READ_WITHOUT_QUORUM,
        SESSION_NO_DEDUP,
    }
)

MUTANT_PROPERTIES: dict[str, str] = {
    ACCEPT_LOWER_BALLOT: "accepted-above-chosen",
    IGNORE_PHASE1_VALUES: "accepted-above-chosen",
    ADOPT_LOWEST_BALLOT: "accepted-above-chosen",
    PROMISE_NOT_PERSISTED: "accepted-above-chosen",
    COMMIT_BEFORE_QUORUM: "state-machine-safety",
    GAP_SKIPPED: "state-machine-safety",
    READ_WITHOUT_QUORUM: "linearizability",
    SESSION_NO_DEDUP: "linearizability",
}
"""Mutant -> the violation name (of ``pnyx.protocols.paxos.spec.PaxosMonitor``) that must
catch it."""

MUTANT_ALSO_CAUGHT_AS: dict[str, frozenset[str]] = {
    ACCEPT_LOWER_BALLOT: frozenset({"chosen-unique", "state-machine-safety"}),
    IGNORE_PHASE1_VALUES: frozenset({"chosen-unique", "state-machine-safety"}),
    ADOPT_LOWEST_BALLOT: frozenset({"chosen-unique", "state-machine-safety"}),
    PROMISE_NOT_PERSISTED: frozenset({"chosen-unique", "state-machine-safety"}),
}
"""Mutant -> further violations its one defect causes (a seed may show either first): a
second value accepted above a chosen one and that value chosen and applied are one bug."""

if set(MUTANT_PROPERTIES) != MUTANTS:  # a new mutant needs its property
    raise RuntimeError(
        f"MUTANT_PROPERTIES does not cover {sorted(MUTANTS ^ set(MUTANT_PROPERTIES))}"
    )


def quorum_sizes(nodes: int, phase1: int | None, phase2: int | None) -> tuple[int, int]:
    """Phase-1 and phase-2 quorum sizes for ``nodes`` acceptors (Flexible Paxos).

    ``None`` derives a size: both None gives majorities; one given, the other is the
    smallest size that still intersects it (``nodes - given + 1``).  Raises ValueError
    naming the values when a size is out of range or |Q1| + |Q2| <= N (two quorums of the
    two phases could then miss each other and two values be chosen for one slot).
    """
    if nodes < 1:
        raise ValueError(f"need at least one acceptor, got {nodes}")
    if phase1 is None and phase2 is None:
        majority = nodes // 2 + 1
        return majority, majority
    q1 = phase1 if phase1 is not None else nodes - phase2 + 1  # type: ignore[operator]
    q2 = phase2 if phase2 is not None else nodes - q1 + 1
    for name, size in (("phase-1", q1), ("phase-2", q2)):
        if not 1 <= size <= nodes:
            raise ValueError(f"{name} quorum {size} must be between 1 and {nodes} acceptors")
    if q1 + q2 <= nodes:
        raise ValueError(
            f"phase-1 quorum {q1} + phase-2 quorum {q2} = {q1 + q2} must exceed the "
            f"{nodes} acceptors (|Q1| + |Q2| > N), or two values may be chosen for one slot"
        )
    return q1, q2


@dataclass(frozen=True)
class PaxosConfig:
    """Timeouts in ticks, sizes with their unit.  Defaults suit the simulator (10 ms ticks).

    ``mutants`` breaks the protocol on purpose (tests only).
    """

    election_timeout_ticks: int = 10
    """Minimum silence from a leader before a node runs phase 1 itself."""
    election_jitter_ticks: int = 10
    """Each timeout adds a draw from [0, jitter * 2**failures) (randomized back-off)."""
    max_backoff_doublings: int = 4
    """How often the jitter range doubles after failed phase-1 attempts in a row."""
    heartbeat_interval_ticks: int = 2
    max_batch_slots: int = 16
    """Slots per Accept / Learn message (batching)."""
    max_inflight_slots: int = 64
    """Proposed slots beyond the commit index before new ones wait (pipelining window)."""
    snapshot_threshold_slots: int = 200
    max_pending_proposals: int = 4096
    max_pending_reads: int = 1024
    phase1_quorum: int | None = None
    """Promises needed for phase 1 (None: majority, or derived from ``phase2_quorum``)."""
    phase2_quorum: int | None = None
    """Accepts needed to choose a value (None: majority, or derived from ``phase1_quorum``)."""
    mutants: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.heartbeat_interval_ticks >= self.election_timeout_ticks:
            raise ValueError(
                f"heartbeat interval {self.heartbeat_interval_ticks} must be below the "
                f"election timeout {self.election_timeout_ticks}"
            )
        if self.election_jitter_ticks < 1 or self.max_batch_slots < 1:
            raise ValueError(f"jitter and batch size must be >= 1: {self!r}")
        if self.max_inflight_slots < 1 or self.snapshot_threshold_slots < 1:
            raise ValueError(f"window and snapshot threshold must be >= 1: {self!r}")
        unknown = self.mutants - MUTANTS
        if unknown:
            raise ValueError(f"unknown paxos mutants {sorted(unknown)}; valid: {sorted(MUTANTS)}")
