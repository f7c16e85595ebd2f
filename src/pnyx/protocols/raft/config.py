"""Tuning knobs of a Raft node, and the names of the deliberately broken variants."""

from __future__ import annotations

from dataclasses import dataclass, field

# Mutants: deliberately broken variants, selectable by name in tests only (bug catalogue).
VOTE_NOT_PERSISTED = "vote_not_persisted"
NO_NOOP_ON_ELECTION = "no_noop_on_election"
COUNT_PREVIOUS_TERM_ENTRIES = "count_previous_term_entries"
READ_INDEX_NO_HEARTBEAT = "read_index_no_heartbeat"
SNAPSHOT_DROPS_TERM = "snapshot_drops_term"
TRUNCATE_MATCHING_SUFFIX = "truncate_matching_suffix"
LEADER_APPLY_BEFORE_QUORUM = "leader_apply_before_quorum"
JOINT_COUNTS_NEW_ONLY = "joint_counts_new_only"
SESSION_NO_DEDUP = "session_no_dedup"
LEARNER_IN_QUORUM = "learner_in_quorum"
VOTE_IGNORES_LOG = "vote_ignores_log"
HEARTBEAT_COMMIT_UNCLAMPED = "heartbeat_commit_unclamped"
STALE_TERM_ACCEPTED = "stale_term_accepted"
APPEND_SKIPS_TERM_CHECK = "append_skips_term_check"
RESTART_VOTES_AT_ONCE = "restart_votes_at_once"
LEASE_IGNORES_STALL = "lease_ignores_stall"
SNAPSHOT_OFFSET_OF_OTHER = "snapshot_offset_of_other"
JOINT_LEAVE_DROPPED = "joint_leave_dropped"
TRANSFER_TO_OUTGOING = "transfer_to_outgoing"

MUTANTS: frozenset[str] = frozenset(
    {
        VOTE_NOT_PERSISTED,
        NO_NOOP_ON_ELECTION,
        COUNT_PREVIOUS_TERM_ENTRIES,
        READ_INDEX_NO_HEARTBEAT,
        SNAPSHOT_DROPS_TERM,
        TRUNCATE_MATCHING_SUFFIX,
        LEADER_APPLY_BEFORE_QUORUM,
        JOINT_COUNTS_NEW_ONLY,
        SESSION_NO_DEDUP,
        LEARNER_IN_QUORUM,
        VOTE_IGNORES_LOG,
        HEARTBEAT_COMMIT_UNCLAMPED,
        STALE_TERM_ACCEPTED,
        APPEND_SKIPS_TERM_CHECK,
        RESTART_VOTES_AT_ONCE,
        LEASE_IGNORES_STALL,
        SNAPSHOT_OFFSET_OF_OTHER,
        JOINT_LEAVE_DROPPED,
        TRANSFER_TO_OUTGOING,
    }
)

MUTANT_PROPERTIES: dict[str, str] = {
    LEADER_APPLY_BEFORE_QUORUM: "leader-completeness",
    SNAPSHOT_DROPS_TERM: "snapshot-term",
    SESSION_NO_DEDUP: "linearizability",
    HEARTBEAT_COMMIT_UNCLAMPED: "state-machine-safety",
    STALE_TERM_ACCEPTED: "exception",
    TRUNCATE_MATCHING_SUFFIX: "liveness",
    LEARNER_IN_QUORUM: "leader-completeness",
    VOTE_IGNORES_LOG: "leader-completeness",
    APPEND_SKIPS_TERM_CHECK: "log-matching",
    NO_NOOP_ON_ELECTION: "liveness",
    COUNT_PREVIOUS_TERM_ENTRIES: "leader-completeness",
    JOINT_COUNTS_NEW_ONLY: "leader-completeness",
    VOTE_NOT_PERSISTED: "election-safety",
    READ_INDEX_NO_HEARTBEAT: "linearizability",
    RESTART_VOTES_AT_ONCE: "linearizability",
    LEASE_IGNORES_STALL: "linearizability",
    SNAPSHOT_OFFSET_OF_OTHER: "liveness",
    JOINT_LEAVE_DROPPED: "invariant",
    TRANSFER_TO_OUTGOING: "invariant",
}
"""Mutant -> the violation name the simulator reports when it catches it (the names of
``pnyx.protocols.raft.spec.RaftMonitor``, plus the runner's ``liveness``, ``exception`` and
``invariant``).  README's bug catalogue explains each.  ``stale_term_accepted`` is caught
by the follower's own guard against truncating a committed entry (``exception``); the two
``invariant`` ones by :meth:`RaftNode.invariants` (see :data:`MUTANT_INVARIANTS`)."""

MUTANT_ALSO_CAUGHT_AS: dict[str, frozenset[str]] = {
    TRUNCATE_MATCHING_SUFFIX: frozenset({"leader-completeness"}),
}
"""Mutant -> further violations its one defect is known to cause (a swarm seed may show
either first).  ``truncate_matching_suffix``: the leader's match for the follower that
dropped acknowledged entries is too high, so the follower may be counted toward committing
an entry it no longer holds, and a later leader lacks that committed entry (swarm seed 9
showed it already in the table of 2026-12-02; seed 0 since the stream draws)."""

MUTANT_INVARIANTS: dict[str, str] = {
    JOINT_LEAVE_DROPPED: "joint-config-not-left",
    TRANSFER_TO_OUTGOING: "transfer-target-not-incoming-voter",
}
"""For mutants caught as ``invariant``: the tag that starts the invariant's description."""

if set(MUTANT_PROPERTIES) != MUTANTS:  # a new mutant needs its property
    raise RuntimeError(
        f"MUTANT_PROPERTIES does not cover {sorted(MUTANTS ^ set(MUTANT_PROPERTIES))}"
    )


@dataclass(frozen=True)
class RaftConfig:
    """Timeouts are in ticks; sizes carry their unit.  Defaults suit the simulator (10 ms ticks).

    ``initial_voters``: the configuration a node with an empty disk starts from (None: every
    node of the run is a voter).  ``mutants`` breaks the protocol on purpose (tests only).
    """

    election_timeout_ticks: int = 10
    """Minimum; each election timer is drawn from [this, this + election_jitter_ticks)."""
    election_jitter_ticks: int = 10
    heartbeat_interval_ticks: int = 2
    max_entries_per_msg: int = 64
    max_inflight_msgs: int = 8
    snapshot_threshold_entries: int = 200
    snapshot_chunk_bytes: int = 2048
    pre_vote: bool = True
    check_quorum: bool = True
    lease_reads: bool = False
    """Serve linearizable reads from a check-quorum lease (unsafe under process pauses)."""
    lease_drift_ticks: int = 2
    """How much shorter than the election timeout the leader's lease is (clock drift bound)."""
    learner_catch_up_entries: int = 16
    """A learner is promotable once it is within this many entries of the commit index."""
    max_pending_proposals: int = 4096
    max_pending_reads: int = 1024
    initial_voters: tuple[int, ...] | None = None
    """Voters of a fresh group; the other nodes of the run start as learners."""
    buggify: bool = False
    """Deterministic fault points (FoundationDB's BUGGIFY): driven by the node's injected
    Rng, they pick legal but unusual behaviour (README: BUGGIFY).  For testing only."""
    buggify_probability: float = 0.05
    """Chance that an enabled fault point fires each time it is reached."""
    mutants: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        assert self.heartbeat_interval_ticks < self.election_timeout_ticks, (
            f"heartbeat interval {self.heartbeat_interval_ticks} must be below the election "
            f"timeout {self.election_timeout_ticks}"
        )
        assert self.lease_drift_ticks < self.election_timeout_ticks
        assert self.election_jitter_ticks >= 1
        unknown = self.mutants - MUTANTS
        assert not unknown, f"unknown mutants {sorted(unknown)}; valid: {sorted(MUTANTS)}"
        assert not self.lease_reads or self.check_quorum, "lease reads require check-quorum"
        assert 0.0 <= self.buggify_probability <= 1.0
