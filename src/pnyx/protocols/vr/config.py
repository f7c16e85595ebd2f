"""VR tuning, the durable-state option and the bug catalogue (mutants)."""

from __future__ import annotations

from dataclasses import dataclass, field

DVC_BY_OP_NUMBER = "dvc_by_op_number"
"""The new primary picks the DoViewChange log with the highest op-number only, ignoring
the last normal view (a long stale log beats a shorter newer one)."""
RECOVERY_NO_NONCE = "recovery_no_nonce"
"""A recovering replica accepts RecoveryResponses whatever their nonce (stale answers to an
earlier life's recovery count)."""
COMMIT_BEFORE_QUORUM = "commit_before_quorum"
"""The primary commits (executes and replies) an op as soon as it assigns it."""
ACCEPT_OLD_VIEW_PREPARE = "accept_old_view_prepare"
"""A backup appends Prepares of an older view's primary and acknowledges them in its view."""
NO_DVC_QUORUM = "no_dvc_quorum"
"""The new primary starts the view on its own DoViewChange, without waiting for f+1."""
CLIENT_TABLE_IGNORED = "client_table_ignored"
"""Neither the primary nor the state machine looks up the client table: a retried request
is executed again."""
OLD_START_VIEW = "old_start_view"
"""A replica adopts a StartView of a lower view than its own (its view goes back)."""
CHECKPOINT_NO_RESTORE = "checkpoint_no_restore"
"""A replica that takes another's checkpoint (state transfer, recovery) drops its log
through it but does not restore its state machine from it."""

MUTANTS: frozenset[str] = frozenset(
    {
        DVC_BY_OP_NUMBER,
        RECOVERY_NO_NONCE,
        COMMIT_BEFORE_QUORUM,
        ACCEPT_OLD_VIEW_PREPARE,
        NO_DVC_QUORUM,
        CLIENT_TABLE_IGNORED,
        OLD_START_VIEW,
        CHECKPOINT_NO_RESTORE,
    }
)

MUTANT_PROPERTIES: dict[str, str] = {
    DVC_BY_OP_NUMBER: "committed-lost",
    RECOVERY_NO_NONCE: "recovery-state",
    COMMIT_BEFORE_QUORUM: "committed-lost",
    ACCEPT_OLD_VIEW_PREPARE: "state-machine-safety",
    NO_DVC_QUORUM: "committed-lost",
    CLIENT_TABLE_IGNORED: "linearizability",
    OLD_START_VIEW: "view-monotone",
    CHECKPOINT_NO_RESTORE: "checkpoint-state",
}
"""mutant -> the monitor property (violation name) it is meant to break."""

MUTANT_ALSO_CAUGHT_AS: dict[str, frozenset[str]] = {
    DVC_BY_OP_NUMBER: frozenset({"state-machine-safety"}),
    COMMIT_BEFORE_QUORUM: frozenset({"state-machine-safety", "linearizability"}),
    ACCEPT_OLD_VIEW_PREPARE: frozenset({"committed-lost"}),
    NO_DVC_QUORUM: frozenset({"state-machine-safety"}),
    RECOVERY_NO_NONCE: frozenset({"committed-lost", "state-machine-safety"}),
    CHECKPOINT_NO_RESTORE: frozenset({"linearizability"}),
}
"""mutant -> further violations its defect is known to cause first on some seeds."""

if set(MUTANT_PROPERTIES) != MUTANTS:  # a new mutant needs its property
    raise AssertionError(
        f"MUTANT_PROPERTIES does not cover {sorted(MUTANTS ^ set(MUTANT_PROPERTIES))}"
    )


@dataclass(frozen=True)
class VrConfig:
    """Timers (in ticks) and options of a VR replica.

    ``durable=False`` (the paper's model): nothing of the protocol is written to disk; a
    restarted replica recovers its state from the others with the nonce protocol, which
    is safe while at most f replicas are crashed or recovering at once.  ``durable=True``:
    the view and the log are written before the replica acts on them, and a restarted
    replica rejoins through a view change (safe under any number of crashes).
    """

    commit_interval_ticks: int = 2
    """The primary sends Commit (and retransmits unacknowledged Prepares) this often."""
    view_change_timeout_ticks: int = 12
    """A backup that hears nothing from its primary this long starts a view change."""
    view_change_jitter_ticks: int = 6
    """Random extra on each view-change timer (drawn from the node's RNG)."""
    resend_ticks: int = 4
    """StartViewChange, DoViewChange and Recovery are sent again this often until answered."""
    max_prepare_entries: int = 16
    """Entries per retransmitted Prepare or NewState."""
    max_pending_ops: int = 256
    """Uncommitted ops the primary accepts before answering ``busy``."""
    checkpoint_interval_ops: int = 0
    """Take a checkpoint (snapshot of the state machine, section 5.1) every this many
    executed ops and drop the log through it; 0: never (the log grows for ever).  Needs a
    runtime that answers :class:`~pnyx.protocols.vr.messages.TakeCheckpoint` (the
    simulator's spec does)."""
    durable: bool = False
    initial_members: tuple[int, ...] | None = None
    """The members of epoch 0 (None: every peer); the other peers wait on standby until a
    reconfiguration (``AdminRequest`` add_learner / remove / replace) brings them in."""
    mutants: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.commit_interval_ticks < 1 or self.resend_ticks < 1:
            raise ValueError(f"intervals must be at least one tick: {self!r}")
        if self.view_change_timeout_ticks <= self.commit_interval_ticks:
            raise ValueError(
                f"view_change_timeout_ticks {self.view_change_timeout_ticks} must exceed "
                f"commit_interval_ticks {self.commit_interval_ticks}"
            )
        if self.checkpoint_interval_ops < 0:
            raise ValueError(
                f"checkpoint_interval_ops must be >= 0, not {self.checkpoint_interval_ops}"
            )
        if self.view_change_jitter_ticks < 0 or self.max_prepare_entries < 1:
            raise ValueError(f"bad jitter or batch size: {self!r}")
        unknown = self.mutants - MUTANTS
        if unknown:
            raise ValueError(f"unknown mutants {sorted(unknown)}; valid: {sorted(MUTANTS)}")
