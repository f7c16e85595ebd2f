"""A Viewstamped Replication replica (Liskov & Cowling 2012) as a pure state machine.

Normal operation (section 4.1): the primary of view ``v`` is ``members[v mod n]``; it
assigns each client request the next op-number, sends it in a Prepare, commits it once f
backups have acknowledged it (PrepareOK: "I hold every op through n"), executes it and
replies.  Backups accept Prepares in op order only and learn the commit-number from
Prepare and Commit.

View change (4.2): a backup that hears nothing from its primary starts view ``v+1``
(StartViewChange to all); after f others agree it sends DoViewChange with its log to the
new primary, which takes the log with the highest last-normal view, then the highest
op-number, from f+1 of them and announces it in StartView.

Recovery (4.3), disk-less: a restarted replica sends Recovery with a fresh nonce and
waits for f+1 RecoveryResponses carrying that nonce, one of them from the primary of the
latest view they report, whose log it adopts.  Safe while at most f replicas are crashed
or recovering at once.  ``VrConfig.durable`` instead writes view and log before acting on
them and rejoins through a view change.

State transfer (5.2): a replica that misses ops or a whole view asks with GetState and
catches up from NewState.  Exactly-once (4.1's client table): the primary keeps each
client session's latest request number and op-number (rebuilt from the log at each view
start), does not assign a retried request a second op-number while the first is pending,
and the replicated :class:`~pnyx.protocols.raft.kv.KvStateMachine` keeps the latest
result of each session, so a retry of an executed request gets that result again.

Reconfiguration (7): an admin request appends a reconfiguration op; the replicas that
execute it move to the next epoch with the new members (view 0), new members fetch the
log with GetState (StartEpoch tells them), members that left retire once a quorum of the
new members sent EpochStarted.  Every peer message carries its epoch.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pnyx.core import (
    Apply,
    ClientReply,
    DurableState,
    InvalidMessage,
    LogAppend,
    LogCompact,
    Message,
    PutRecord,
    Ready,
    Restore,
    Rng,
    Send,
    SnapshotSave,
    is_client,
)
from pnyx.core.node import StagedEffects
from pnyx.protocols.raft.messages import (
    ADD_LEARNER,
    READ_SERIALIZABLE,
    REMOVE,
    REPLACE,
    AdminRequest,
    ClientRequest,
    ConfigData,
    ReadRequest,
)
from pnyx.protocols.raft.sessions import SessionCommand
from pnyx.protocols.raft.validate import check_client_message
from pnyx.protocols.vr import config as mut
from pnyx.protocols.vr.config import VrConfig
from pnyx.protocols.vr.messages import (
    BOOT_KEY,
    ENTRY_COMMAND,
    ENTRY_READ,
    ENTRY_RECONFIG,
    HARD_KEY,
    Checkpoint,
    Commit,
    DoViewChange,
    EpochStarted,
    GetState,
    NewState,
    Prepare,
    PrepareOK,
    Reconfig,
    Recovery,
    RecoveryResponse,
    StartEpoch,
    StartView,
    StartViewChange,
    TakeCheckpoint,
    VrEntry,
    VrHard,
)
from pnyx.protocols.vr.validate import check_peer_message

NORMAL = "normal"
VIEW_CHANGE = "view-change"
RECOVERING = "recovering"
STANDBY = "standby"
"""Not a member of the epoch this replica knows: it waits for a StartEpoch."""
TRANSITIONING = "transitioning"
"""A member of a new epoch fetching the log through the reconfiguration op (section 7)."""
RETIRED = "retired"
"""Left the group at a reconfiguration: answers GetState until a quorum of the new members
said EpochStarted, then stops (``SHUT_DOWN``)."""
SHUT_DOWN = "shut-down"

_STAMPED = (Prepare, PrepareOK, Commit, StartViewChange, DoViewChange, StartView, GetState)
"""Messages stamped with the sender's epoch on the way out."""

NONCE_LIMIT = 1 << 62


def primary_of(view: int, members: tuple[int, ...]) -> int:
    """The primary of ``view``: members sorted by id, round robin."""
    return members[view % len(members)]


class VrNode(StagedEffects):
    """One VR replica (implements :class:`pnyx.core.Node`)."""

    def __init__(
        self,
        node_id: int,
        peers: tuple[int, ...],
        rng: Rng,
        durable: DurableState,
        config: VrConfig | None = None,
    ) -> None:
        everyone = tuple(sorted(set(peers)))
        if node_id not in everyone:
            raise ValueError(f"node {node_id} is not among the peers {everyone}")
        self.node_id = node_id
        self.cfg = config or VrConfig()
        self.peers = everyone
        """Every replica of the deployment (members of any epoch come from these)."""
        self._peer_ids = frozenset(everyone) - {node_id}
        initial = self.cfg.initial_members
        members = tuple(sorted(set(initial) & set(everyone))) if initial else everyone
        if not members:
            raise ValueError(f"initial members {initial} share no node with peers {everyone}")
        self.epoch = 0
        self.old_members: tuple[int, ...] = ()
        self.epoch_op = 0
        """Op-number of the reconfiguration that started this epoch (0 in epoch 0)."""
        self._set_members(members)
        self._rng = rng
        self._mutants = self.cfg.mutants
        self.view = 0
        self.state = NORMAL if node_id in members else STANDBY
        self.last_normal_view = 0
        self.log: list[VrEntry] = []
        """Ops ``offset + 1 ..`` (the ones before are in ``checkpoint``)."""
        self.offset = 0
        """Op-number of ``checkpoint``: the log prefix through it is dropped."""
        self.checkpoint: Checkpoint | None = None
        self.commit = 0
        self.applied = 0
        self._checkpoint_asked: tuple[int, int, int] | None = None
        """(op, epoch, epoch_op) of a TakeCheckpoint not yet answered: no op past it is
        executed until the answer comes (the snapshot must be of exactly that op)."""
        self._checkpoint_due: Checkpoint | None = None
        """A checkpoint taken but not yet used to drop the log: that happens at the next
        step or tick, so the ops it covers are seen in the log once they are committed."""
        self.nonce = 0
        self.recoveries = 0
        """Recoveries this life completed (0 or 1)."""
        self.installs = 0
        """Checkpoints of other replicas taken this life (state transfer, recovery)."""
        self.tick_now = 0
        self._idle_ticks = 0
        self._timeout_ticks = self._draw_timeout()
        self._acked: dict[int, int] = {}
        self._waiters: dict[int, tuple[int, int]] = {}
        """op-number -> (client, request id) the primary answers when it executes the op."""
        self._client_table: dict[int, tuple[int, int]] = {}
        """session -> (latest request number, its op-number)."""
        self._svc: set[int] = set()
        self._dvc: dict[int, DoViewChange] = {}
        self._dvc_sent: DoViewChange | None = None
        self._responses: dict[int, RecoveryResponse] = {}
        self._log_generation = 0
        """Bumped whenever the log is replaced rather than appended to."""
        self._pending_key = (-1, -1)
        self._pending_scanned = 0
        self._pending_op = 0
        """Op-number of a reconfiguration to the next epoch in the log (0: none)."""
        self._started: set[int] = set()
        """New members that said EpochStarted (while retired)."""
        StagedEffects.__init__(self)
        self._handlers: dict[type[Message], Any] = {
            Prepare: self._on_prepare,
            PrepareOK: self._on_prepare_ok,
            Commit: self._on_commit,
            StartViewChange: self._on_start_view_change,
            DoViewChange: self._on_do_view_change,
            StartView: self._on_start_view,
            Recovery: self._on_recovery,
            RecoveryResponse: self._on_recovery_response,
            GetState: self._on_get_state,
            NewState: self._on_new_state,
            StartEpoch: self._on_start_epoch,
            EpochStarted: self._on_epoch_started,
        }
        self._boot(durable)

    def _set_members(self, members: tuple[int, ...]) -> None:
        self.members = members
        self.quorum = len(members) // 2 + 1
        """Replicas that make a quorum: a majority (f+1 for n = 2f+1; safe for even n)."""
        self.f = len(members) - self.quorum
        """Replicas that may fail at once."""
        self._others = tuple(m for m in members if m != self.node_id)

    # -- start ---------------------------------------------------------------------------

    def _boot(self, durable: DurableState) -> None:
        if self.cfg.durable:
            hard = durable.records.get(HARD_KEY)
            if hard is None:
                self._save_hard()
                return
            hard = msgspec.convert(hard, VrHard) if type(hard) is not VrHard else hard
            self.view = hard.view
            self.last_normal_view = hard.last_normal_view
            if hard.members:
                self.epoch = hard.epoch
                self.old_members = hard.old_members
                self.epoch_op = hard.epoch_op
                self._set_members(hard.members)
            self._load_log(durable)
            if self.node_id not in self.members:
                self.state = STANDBY
                return
            # an epoch starts committed
            self.commit = max(self.offset, min(self.epoch_op, self.op_number))
            self._rebuild_client_table()
            self._start_view_change(self.view + 1)
            return
        if BOOT_KEY not in durable.records:
            self._persist.append(PutRecord(BOOT_KEY, 1))
            return
        self._start_recovery()

    def _load_log(self, durable: DurableState) -> None:
        """Durable mode: the checkpoint (restored into the state machine) and the log."""
        snap = durable.snapshot
        if snap is not None and snap.index > 0:
            epoch, epoch_op = snap.meta if snap.meta else (0, 0)
            self.checkpoint = Checkpoint(snap.index, snap.data, int(epoch), int(epoch_op))
            self.offset = self.applied = self.commit = snap.index
            self._applies.append(Restore(snap.index, snap.data))
        start = durable.log_start
        if start > self.offset + 1:
            raise ValueError(f"durable log starts at op {start}, after checkpoint {self.offset}")
        self.log = [_entry(e) for e in durable.log[self.offset + 1 - start :]]

    def _start_recovery(self) -> None:
        self.state = RECOVERING
        self.nonce = self._rng.randrange(1, NONCE_LIMIT)
        self._responses = {}
        self._tell_everyone(Recovery(self.nonce))

    # -- the node contract ----------------------------------------------------------------

    @property
    def op_number(self) -> int:
        """The paper's op-number: ops in the checkpoint and the log."""
        return self.offset + len(self.log)

    @property
    def primary(self) -> int:
        """The primary of this replica's view."""
        return primary_of(self.view, self.members)

    @property
    def is_primary(self) -> bool:
        """True while this replica is the primary of its view in normal status."""
        return self.state == NORMAL and self.primary == self.node_id

    def step(self, msg: Message, from_id: int) -> None:
        """Handle one message; InvalidMessage (nothing changed) for one no correct sender
        produces: a client request from a node id, a peer message from an unknown node,
        negative or inconsistent fields."""
        if is_client(from_id):
            check_client_message(msg)
            self._drop_checkpointed()
            self._on_client(msg, from_id)
            return
        if from_id not in self._peer_ids:
            raise InvalidMessage(
                f"{type(msg).__name__} from node {from_id}, which is not a peer of node "
                f"{self.node_id} (peers: {list(self.peers)})"
            )
        handler = self._handlers.get(type(msg))
        if handler is None:
            raise InvalidMessage(f"{type(msg).__name__} is not a VR peer message")
        check_peer_message(msg)
        self._drop_checkpointed()
        if self.state == RECOVERING:
            if type(msg) is RecoveryResponse:
                handler(msg, from_id)
            return  # a recovering replica takes part in nothing (4.3)
        if self._epoch_gate(msg, from_id):
            handler(msg, from_id)

    def _epoch_gate(self, msg: Message, source: int) -> bool:
        """Should ``msg`` reach its handler?  Messages of another epoch lead to state
        transfer (section 7): the one behind asks, the one ahead says which epoch runs."""
        kind = type(msg)
        if kind in (StartEpoch, Recovery, RecoveryResponse):
            return True
        epoch: int = msg.epoch  # type: ignore[attr-defined]
        if epoch > self.epoch:
            if kind is NewState:
                return True
            self._send(source, GetState(0, self.commit))
            return False
        if epoch < self.epoch:
            if kind is GetState:
                return True
            if self.epoch_op:
                start = StartEpoch(self.epoch, self.epoch_op, self.old_members, self.members)
                self._send(source, start)
            return False
        if self.state in (NORMAL, VIEW_CHANGE):
            return True
        if self.state == RETIRED:
            return kind in (GetState, EpochStarted)
        return kind is NewState

    def tick(self) -> None:
        """One tick: the primary's Commit/retransmission timer, the backups' view-change
        timer, resends of view-change and recovery messages."""
        self.tick_now += 1
        self._idle_ticks += 1
        self._drop_checkpointed()
        resend = self._idle_ticks % self.cfg.resend_ticks == 0
        if self.state == RECOVERING:
            if resend:
                self._tell_everyone(Recovery(self.nonce))
        elif self.state == TRANSITIONING:
            if resend:
                self._ask_state(tuple(sorted(set(self.old_members) | set(self._others))))
        elif self.state not in (NORMAL, VIEW_CHANGE):
            return
        elif self.is_primary:
            if self._idle_ticks >= self.cfg.commit_interval_ticks:
                self._idle_ticks = 0
                self._heartbeat()
        elif self._idle_ticks >= self._timeout_ticks:
            self._start_view_change(self.view + 1)
        elif self.state == VIEW_CHANGE and self._idle_ticks % self.cfg.resend_ticks == 0:
            self._resend_view_change()

    def advance(self, ready: Ready) -> None:
        """Nothing to acknowledge: persists come first in their batch."""

    def invariants(self) -> list[str]:
        """Broken local invariants (empty when all hold)."""
        problems = []
        if not self.offset <= self.applied <= self.commit:
            problems.append(
                f"order: checkpoint {self.offset} applied {self.applied} commit {self.commit}"
            )
        held = self.checkpoint.op if self.checkpoint is not None else 0
        if held != self.offset:
            problems.append(f"checkpoint at op {held} but the log starts after {self.offset}")
        return problems

    # -- checkpoints (section 5.1) ----------------------------------------------------------

    def checkpoint_taken(self, op: int, data: bytes) -> None:
        """The runtime's answer to :class:`TakeCheckpoint`: the state machine after op ``op``.
        The log through ``op`` is dropped at the next step or tick."""
        asked = self._checkpoint_asked
        if asked is None or asked[0] != op:
            return  # superseded: a checkpoint from elsewhere was installed meanwhile
        self._checkpoint_asked = None
        if op <= self.offset:
            return
        if op > self.applied:
            raise ValueError(f"checkpoint at op {op} beyond the executed op {self.applied}")
        self._checkpoint_due = Checkpoint(op, data, asked[1], asked[2])

    def _drop_checkpointed(self) -> None:
        """Drop the log through a checkpoint taken since the last input."""
        due = self._checkpoint_due
        if due is None:
            return
        self._checkpoint_due = None
        if not self.offset < due.op <= min(self.applied, self.op_number):
            return
        del self.log[: due.op - self.offset]
        self.offset = due.op
        self.checkpoint = due
        if self.cfg.durable:
            self._persist.append(SnapshotSave(due.op, 0, due.data, (due.epoch, due.epoch_op)))
            self._persist.append(LogCompact(due.op))

    def _ask_checkpoint(self, op: int) -> None:
        """Ask the runtime for the state machine after ``op`` (executed in this batch)."""
        epoch, epoch_op = self._epoch_at(op)
        self._checkpoint_asked = (op, epoch, epoch_op)
        self._services.append(TakeCheckpoint(op))

    def _epoch_at(self, op: int) -> tuple[int, int]:
        """(epoch, op-number of the reconfiguration that started it) in force after ``op``."""
        for index in range(min(op, self.op_number), self.offset, -1):
            entry = self.log[index - self.offset - 1]
            if entry.kind == ENTRY_RECONFIG:
                return _reconfig(entry.data).epoch, index
        held = self.checkpoint
        return (held.epoch, held.epoch_op) if held is not None else (0, 0)

    def _install(self, checkpoint: Checkpoint, entries: list[VrEntry]) -> None:
        """Take ``checkpoint`` (from another replica) and ``entries`` after it as our state."""
        self.offset = checkpoint.op
        self.checkpoint = checkpoint
        self._checkpoint_asked = None
        self._checkpoint_due = None
        self.log = list(entries)
        self._log_generation += 1
        self._rebuild_client_table()
        self.applied = checkpoint.op
        self.commit = max(self.commit, checkpoint.op)
        if mut.CHECKPOINT_NO_RESTORE not in self._mutants:
            self._applies.append(Restore(checkpoint.op, checkpoint.data))
        self.installs += 1
        if self.cfg.durable:
            meta = (checkpoint.epoch, checkpoint.epoch_op)
            self._persist.append(SnapshotSave(checkpoint.op, 0, checkpoint.data, meta))
            self._persist.append(LogCompact(checkpoint.op))
            self._persist.append(LogAppend(checkpoint.op + 1, tuple(entries)))

    def _take_image(
        self, checkpoint: Checkpoint | None, first_op: int, entries: tuple[VrEntry, ...]
    ) -> bool:
        """Make our log the ops before ``first_op`` and then ``entries``.  The ops before
        come from our own log when we hold them committed (so every replica's are the same),
        else from ``checkpoint``; False, with nothing changed, when neither has them."""
        keep = first_op - 1
        if keep <= min(self.commit, self.op_number):
            if keep >= self.offset:
                self._replace_log(self.log[: keep - self.offset] + list(entries))
            else:
                self._replace_log(list(entries[self.offset - keep :]))
            return True
        if checkpoint is None or checkpoint.op != keep:
            return False
        self._install(checkpoint, list(entries))
        return True

    def _image_of(self, upto: int) -> tuple[Checkpoint | None, int, tuple[VrEntry, ...]]:
        """What to send a replica that holds ops through ``upto`` (committed): (our
        checkpoint when it lacks ops we dropped, first op-number sent, the ops)."""
        if upto >= self.offset:
            return None, upto + 1, tuple(self.log[upto - self.offset :])
        return self.checkpoint, self.offset + 1, tuple(self.log)

    def status(self) -> dict[str, Any]:
        """What health reports show (``leader`` is the primary while the state is normal)."""
        return {
            "leader": self.primary if self.state == NORMAL else None,
            "view": self.view,
            "epoch": self.epoch,
            "term": self.view,
            "role": self._role(),
            "vr_state": self.state,
            "commit_index": self.commit,
            "op_number": self.op_number,
            "checkpoint_op": self.offset,
            "members": list(self.members),
        }

    def _role(self) -> str:
        if self.state != NORMAL:
            return self.state
        return "primary" if self.primary == self.node_id else "backup"

    # -- effects ---------------------------------------------------------------------------

    def _send(self, to: int, msg: Message) -> None:
        if self.epoch and type(msg) in _STAMPED:
            msg = msgspec.structs.replace(msg, epoch=self.epoch)
        self._sends.append(Send(to, msg))

    def _broadcast(self, msg: Message) -> None:
        for other in self._others:
            self._send(other, msg)

    def _tell_everyone(self, msg: Message) -> None:
        for other in sorted(self._peer_ids):
            self._send(other, msg)

    def _ask_state(self, sources: tuple[int, ...]) -> None:
        for source in sources:
            if source != self.node_id:
                self._send(source, GetState(self.view, self.commit))

    def _save_hard(self) -> None:
        if self.cfg.durable:
            hard = VrHard(
                self.view,
                self.last_normal_view,
                self.epoch,
                self.members,
                self.old_members,
                self.epoch_op,
            )
            self._persist.append(PutRecord(HARD_KEY, hard))

    def _append(self, entries: tuple[VrEntry, ...] | list[VrEntry]) -> None:
        if not entries:
            return
        first = self.op_number + 1
        self.log.extend(entries)
        for offset, entry in enumerate(entries):
            self._note_client_op(entry, first + offset)
        if self.cfg.durable:
            self._persist.append(LogAppend(first, tuple(entries)))

    def _replace_log(self, new: list[VrEntry]) -> None:
        """Replace the ops after ``offset`` by ``new``."""
        old = self.log
        common = 0
        limit = min(len(old), len(new))
        while common < limit and old[common] == new[common]:
            common += 1
        self.log = new
        self._log_generation += 1
        if self.cfg.durable and (common < len(old) or common < len(new)):
            self._persist.append(LogAppend(self.offset + common + 1, tuple(new[common:])))
        self._rebuild_client_table()

    def _prepare(self) -> None:
        if self.applied < self.commit:
            self._emit_applies()

    def _emit_applies(self) -> None:
        top = min(self.commit, self.op_number)
        interval = self.cfg.checkpoint_interval_ops
        due = 0
        if self._checkpoint_asked is not None:
            top = min(top, self._checkpoint_asked[0])  # nothing past an unanswered request
        elif interval and (self.applied // interval + 1) * interval <= top:
            due = top = (self.applied // interval + 1) * interval
        for index in range(self.applied + 1, top + 1):
            entry = self.log[index - self.offset - 1]
            waiter = self._waiters.pop(index, None)
            if entry.kind == ENTRY_COMMAND:
                if waiter is None:
                    self._applies.append(Apply(index, entry.data))
                else:
                    self._applies.append(Apply(index, entry.data, waiter[0], waiter[1]))
            elif entry.kind == ENTRY_RECONFIG:
                reconfig = _reconfig(entry.data)
                if reconfig.epoch == self.epoch + 1:
                    self.applied = index
                    self._enter_epoch(reconfig, index)
                    return
            elif waiter is not None:
                self._applies.append(Apply(index, entry.data, waiter[0], waiter[1], True))
        self.applied = max(self.applied, top)
        if due and self.applied == due:
            self._ask_checkpoint(due)

    # -- normal operation --------------------------------------------------------------------

    def _heartbeat(self) -> None:
        """Commit to caught-up backups, the next Prepares to lagging ones."""
        log = self.log
        offset = self.offset
        batch = self.cfg.max_prepare_entries
        for other in self._others:
            acked = self._acked.get(other, 0)
            if acked < offset:
                self._send_checkpoint(other)
            elif acked < self.op_number:
                entries = tuple(log[acked - offset : acked - offset + batch])
                self._send(other, Prepare(self.view, acked + 1, entries, self.commit))
            else:
                self._send(other, Commit(self.view, self.commit))

    def _send_checkpoint(self, backup: int) -> None:
        """A backup lacks ops we dropped: our checkpoint and every op after it (a NewState
        is a whole log: a receiver outside normal status takes it as its log)."""
        state = NewState(
            self.view,
            self.offset + 1,
            tuple(self.log),
            self.commit,
            self.epoch,
            self.members,
            self.old_members,
            checkpoint=self.checkpoint,
        )
        self._send(backup, state)

    def _propose(self, entry: VrEntry, client: int, request_id: int) -> None:
        self._append([entry])
        op = self.op_number
        self._waiters[op] = (client, request_id)
        self._broadcast(Prepare(self.view, op, (entry,), self.commit))
        self._try_commit()

    def _try_commit(self) -> None:
        if mut.COMMIT_BEFORE_QUORUM in self._mutants:
            self.commit = self.op_number
            return
        held = sorted((self._acked.get(o, 0) for o in self._others), reverse=True)
        held.insert(0, self.op_number)
        candidate = min(held[self.quorum - 1], self.op_number)
        if candidate > self.commit:
            self.commit = candidate

    def _advance_commit(self, commit: int) -> None:
        commit = min(commit, self.op_number)
        if commit > self.commit:
            self.commit = commit

    def _behind(self, view: int, source: int) -> None:
        """A message of a later view: ask its sender for state (5.2), from our commit on."""
        self._send(source, GetState(view, self.commit))

    def _on_prepare(self, m: Prepare, source: int) -> None:
        if m.view < self.view:
            old_ok = mut.ACCEPT_OLD_VIEW_PREPARE in self._mutants and self.state == NORMAL
            if not (old_ok and not self.is_primary):
                return
        elif m.view > self.view or self.state != NORMAL:
            self._behind(m.view, source)
            return
        if self.is_primary:
            return
        self._idle_ticks = 0
        op = self.op_number
        if m.first_op > op + 1:
            self._send(source, GetState(self.view, op))
            return
        fresh = m.entries[op + 1 - m.first_op :]
        self._append(fresh)
        self._advance_commit(m.commit)
        self._send(source, PrepareOK(self.view, self.op_number))

    def _on_prepare_ok(self, m: PrepareOK, source: int) -> None:
        if m.view != self.view or not self.is_primary:
            return
        op = min(m.op, self.op_number)
        if op > self._acked.get(source, 0):
            self._acked[source] = op
            self._try_commit()

    def _on_commit(self, m: Commit, source: int) -> None:
        if m.view > self.view or (m.view == self.view and self.state != NORMAL):
            self._behind(m.view, source)
            return
        if m.view < self.view or self.is_primary:
            return
        self._idle_ticks = 0
        if m.commit > self.op_number:
            self._send(source, GetState(self.view, self.op_number))
        self._advance_commit(m.commit)

    # -- view change ---------------------------------------------------------------------------

    def _draw_timeout(self) -> int:
        jitter = self.cfg.view_change_jitter_ticks
        extra = self._rng.randrange(0, jitter + 1) if jitter else 0
        return self.cfg.view_change_timeout_ticks + extra

    def _start_view_change(self, view: int) -> None:
        self.view = view
        self.state = VIEW_CHANGE
        self._svc = {self.node_id}
        self._reset_view_round()
        self._save_hard()
        self._broadcast(StartViewChange(view))
        if mut.NO_DVC_QUORUM in self._mutants and self.primary == self.node_id:
            self._send_do_view_change()
            return
        self._check_start_view_change()

    def _resend_view_change(self) -> None:
        self._broadcast(StartViewChange(self.view))
        sent = self._dvc_sent
        if sent is not None and self.primary != self.node_id:
            self._send(self.primary, sent)

    def _on_start_view_change(self, m: StartViewChange, source: int) -> None:
        if m.view > self.view:
            self._start_view_change(m.view)
        if m.view == self.view and self.state == VIEW_CHANGE:
            self._svc.add(source)
            self._check_start_view_change()

    def _check_start_view_change(self) -> None:
        if self._dvc_sent is None and len(self._svc) >= self.quorum:
            self._send_do_view_change()

    def _send_do_view_change(self) -> None:
        dvc = DoViewChange(
            self.view,
            tuple(self.log),
            self.last_normal_view,
            self.op_number,
            self.commit,
            checkpoint=self.checkpoint,
        )
        self._dvc_sent = dvc
        if self.primary == self.node_id:
            self._dvc[self.node_id] = dvc
            self._check_do_view_change()
        else:
            self._send(self.primary, dvc)

    def _on_do_view_change(self, m: DoViewChange, source: int) -> None:
        if m.view > self.view:
            self._start_view_change(m.view)
        if m.view != self.view or self.state != VIEW_CHANGE or self.primary != self.node_id:
            return
        self._dvc[source] = m
        self._check_do_view_change()

    def _check_do_view_change(self) -> None:
        dvcs = self._dvc
        need = 1 if mut.NO_DVC_QUORUM in self._mutants else self.quorum
        if len(dvcs) < need:
            return
        if mut.DVC_BY_OP_NUMBER in self._mutants:
            best = max(sorted(dvcs.items()), key=lambda kv: kv[1].op)[1]
        else:
            best = max(sorted(dvcs.items()), key=lambda kv: (kv[1].last_normal_view, kv[1].op))[1]
        commit = max(d.commit for d in dvcs.values())
        if not self._take_image(best.checkpoint, best.op - len(best.log) + 1, best.log):
            return  # cannot happen: its start is its checkpoint (ours or taken) or op 1
        self._enter_normal()
        self._advance_commit(max(commit, self.commit))
        start = StartView(
            self.view, tuple(self.log), self.op_number, self.commit, checkpoint=self.checkpoint
        )
        self._broadcast(start)

    def _enter_normal(self, log: list[VrEntry] | None = None) -> None:
        """Normal status in our view, with ``log`` as the ops after ``offset`` (if given)."""
        self.state = NORMAL
        self.last_normal_view = self.view
        if log is not None:
            self._replace_log(log)
        self._save_hard()
        self._reset_view_round()

    def _reset_view_round(self) -> None:
        """Forget the round of the view before (view-change votes, acks, waiting replies)
        and restart the timer with a fresh draw."""
        self._dvc = {}
        self._dvc_sent = None
        self._acked = {}
        self._waiters = {}
        self._idle_ticks = 0
        self._timeout_ticks = self._draw_timeout()

    def _on_start_view(self, m: StartView, source: int) -> None:
        if source != primary_of(m.view, self.members):
            return
        if m.view < self.view and mut.OLD_START_VIEW not in self._mutants:
            return
        if m.view == self.view and self.state == NORMAL:
            return
        if not self._take_image(m.checkpoint, m.op - len(m.log) + 1, m.log):
            return  # cannot happen: the start of a StartView is its checkpoint or op 1
        self.view = m.view
        self._enter_normal()
        self._advance_commit(m.commit)
        self._send(source, PrepareOK(self.view, self.op_number))

    # -- state transfer and recovery --------------------------------------------------------

    def _on_get_state(self, m: GetState, source: int) -> None:
        if self.state == VIEW_CHANGE:
            self._committed_state(m, source)
            return
        if self.state not in (NORMAL, RETIRED) or m.op > self.op_number:
            return
        if (m.epoch, m.view) > (self.epoch, self.view):
            return  # the asker is ahead of us: nothing to give
        checkpoint, first, entries = self._image_of(m.op)
        reply = NewState(
            self.view,
            first,
            entries,
            self.commit,
            self.epoch,
            self.members,
            self.old_members,
            checkpoint=checkpoint,
        )
        self._send(source, reply)

    def _committed_state(self, m: GetState, source: int) -> None:
        """In a view change, a new member of this epoch gets our committed ops, so that it
        can take part (with last-normal view 0: it never acknowledged anything here)."""
        top = min(self.commit, self.op_number)
        if m.epoch > self.epoch or m.op > top or top < self.epoch_op:
            return
        checkpoint, first, entries = self._image_of(m.op)
        entries = entries[: top - first + 1]
        reply = NewState(
            self.view,
            first,
            entries,
            top,
            self.epoch,
            self.members,
            self.old_members,
            False,
            checkpoint,
        )
        self._send(source, reply)

    def _on_new_state(self, m: NewState, source: int) -> None:
        keep = m.first_op - 1
        if (m.epoch, m.view) < (self.epoch, self.view):
            return
        if keep > self.op_number and m.checkpoint is None:
            return
        if m.epoch > self.epoch or self.state in (STANDBY, TRANSITIONING):
            self._new_epoch_state(m, keep)
            return
        if not m.normal:
            return  # from a replica in a view change: only for new members to join it
        if m.view == self.view and self.state == NORMAL:
            if self.is_primary:
                return
            if keep + len(m.entries) <= self.op_number:
                pass  # nothing new: acknowledge what we hold
            elif keep <= self.op_number:
                self._append(m.entries[self.op_number - keep :])
            elif m.checkpoint is not None:  # its op is keep (validated)
                self._install(m.checkpoint, list(m.entries))
        else:
            if not self._take_image(m.checkpoint, m.first_op, m.entries):
                return  # our ops past the commit-number may be from a discarded view
            self.view = m.view
            self._enter_normal()
        self._advance_commit(m.commit)
        self._idle_ticks = 0
        if self.primary != self.node_id:
            self._send(self.primary, PrepareOK(self.view, self.op_number))

    def _can_take_image(self, checkpoint: Checkpoint | None, keep: int) -> bool:
        """Would :meth:`_take_image` of ops after ``keep`` succeed?"""
        if keep <= min(self.commit, self.op_number):
            return True
        return checkpoint is not None and checkpoint.op == keep

    def _new_epoch_state(self, m: NewState, keep: int) -> None:
        """Adopt the state of a later epoch (or our first state in this one)."""
        if not self._can_take_image(m.checkpoint, keep):
            return  # our ops past the commit-number may be from a discarded view
        arriving = self.state in (STANDBY, TRANSITIONING)
        if not m.normal:
            self._join_view_change(m, keep, arriving)
            return
        if m.epoch > self.epoch and m.members:
            self.epoch = m.epoch
            self.old_members = m.old_members
            self._set_members(m.members)
        self.view = m.view
        self._take_image(m.checkpoint, m.first_op, m.entries)
        if self.node_id in self.members:
            self._enter_normal()
            self.epoch_op = self._reconfig_op(self.epoch)
            self._advance_commit(m.commit)
            if self.primary != self.node_id:
                self._send(self.primary, PrepareOK(self.view, self.op_number))
            if arriving:
                for old in self.old_members:
                    if old not in self.members:
                        self._send(old, EpochStarted(self.epoch))
        else:
            self.epoch_op = self._reconfig_op(self.epoch)
            self.state = RETIRED if self.node_id in self.old_members else STANDBY
            self._advance_commit(m.commit)

    def _reaches_epoch(self, m: NewState, keep: int) -> bool:
        """Do the ops of ``m`` (with what we keep before them) reach the start of its epoch?"""
        if any(_starts(e, m.epoch) for e in m.entries):
            return True
        if keep <= min(self.commit, self.op_number):
            mine = self.log[: max(0, keep - self.offset)]
            held = self.checkpoint
            return any(_starts(e, m.epoch) for e in mine) or (
                held is not None and held.epoch >= m.epoch
            )
        return m.checkpoint is not None and m.checkpoint.epoch >= m.epoch

    def _join_view_change(self, m: NewState, keep: int, arriving: bool) -> None:
        """A new member takes the committed ops of a replica in a view change and joins it."""
        newer = m.epoch > self.epoch and bool(m.members)
        members = m.members if newer else self.members
        if m.epoch < self.epoch or self.node_id not in members:
            return
        if m.epoch and not self._reaches_epoch(m, keep):
            return  # the ops do not reach the start of that epoch
        if newer:
            self.epoch = m.epoch
            self.old_members = m.old_members
            self._set_members(members)
        self._take_image(m.checkpoint, m.first_op, m.entries)
        self.epoch_op = self._reconfig_op(self.epoch)
        self._advance_commit(m.commit)
        self.last_normal_view = 0
        self._start_view_change(m.view)
        if arriving:
            for old in self.old_members:
                if old not in self.members:
                    self._send(old, EpochStarted(self.epoch))

    def _on_recovery(self, m: Recovery, source: int) -> None:
        if self.state != NORMAL:
            return
        self._acked.pop(source, None)
        checkpoint = None
        if self.is_primary:
            log: tuple[VrEntry, ...] | None = tuple(self.log)
            op, commit, checkpoint = self.op_number, self.commit, self.checkpoint
        else:
            log, op, commit = None, 0, 0
        reply = RecoveryResponse(
            self.view, m.nonce, log, op, commit, self.epoch, self.members, checkpoint
        )
        self._send(source, reply)

    def _on_recovery_response(self, m: RecoveryResponse, source: int) -> None:
        if self.state != RECOVERING:
            return
        if m.nonce != self.nonce and mut.RECOVERY_NO_NONCE not in self._mutants:
            return
        self._responses[source] = m
        responses = self._responses
        latest = max((r.epoch, r.view) for r in responses.values())
        members = next(
            (r.members for r in responses.values() if (r.epoch, r.view) == latest and r.members),
            self.members,
        )
        agree = [i for i, r in responses.items() if r.epoch == latest[0] and i in members]
        if len(agree) < len(members) // 2 + 1:
            return
        primary = primary_of(latest[1], members)
        answer = responses.get(primary)
        if answer is None or (answer.epoch, answer.view) != latest or answer.log is None:
            return
        self._responses = {}
        self.recoveries += 1
        if latest[0] > self.epoch:
            self.epoch = latest[0]
            self._set_members(members)
        self.view = latest[1]
        if not self._take_image(answer.checkpoint, answer.op - len(answer.log) + 1, answer.log):
            return  # cannot happen: a recovering replica holds nothing, the answer all ops
        if self.node_id not in self.members:
            self.state = STANDBY
        else:
            self._enter_normal()
            self._send(primary, PrepareOK(self.view, self.op_number))
        self.epoch_op = self._reconfig_op(self.epoch)
        self._advance_commit(answer.commit)

    # -- reconfiguration (section 7) ----------------------------------------------------------

    def _enter_epoch(self, reconfig: Reconfig, op: int) -> None:
        """The reconfiguration at ``op`` is committed and executed: move to its epoch."""
        old = self.members
        self.epoch = reconfig.epoch
        self.old_members = old
        self.epoch_op = op
        self._set_members(reconfig.members)
        self.view = 0
        start = StartEpoch(self.epoch, op, old, self.members)
        for other in sorted(set(old) | set(self.members)):
            if other != self.node_id:
                self._send(other, start)
        if self.node_id in self.members:
            self._enter_normal(self.log[: op - self.offset])
            for gone in old:
                if gone not in self.members:
                    self._send(gone, EpochStarted(self.epoch))
            return
        self.state = RETIRED
        self._started = set()
        self._replace_log(self.log[: op - self.offset])
        self._save_hard()

    def _on_start_epoch(self, m: StartEpoch, source: int) -> None:
        if m.epoch <= self.epoch:
            if m.epoch == self.epoch and self.state == TRANSITIONING:
                self._ask_state((source,))
            return
        self.epoch = m.epoch
        self.old_members = m.old_members
        self.epoch_op = m.op
        self._set_members(m.new_members)
        self.view = 0
        self.last_normal_view = 0
        self.state = TRANSITIONING
        self._acked = {}
        self._waiters = {}
        self._idle_ticks = 0
        self._ask_state((source,))

    def _on_epoch_started(self, m: EpochStarted, source: int) -> None:
        if self.state != RETIRED or m.epoch != self.epoch or source not in self.members:
            return
        self._started.add(source)
        if len(self._started) >= self.quorum:
            self.state = SHUT_DOWN

    def _reconfig_op(self, epoch: int) -> int:
        """Op-number of the reconfiguration that started ``epoch`` in our log or checkpoint
        (0: none)."""
        for index in range(self.op_number, self.offset, -1):
            if _starts(self.log[index - self.offset - 1], epoch):
                return index
        held = self.checkpoint
        return held.epoch_op if held is not None and held.epoch == epoch else 0

    def _reconfig_pending(self) -> bool:
        """Is a reconfiguration to the next epoch in the log (no more ops until it runs)?

        The log changes only by appends or by being replaced (which bumps its generation),
        so the scan goes on from where it stopped: each entry is looked at once."""
        key = (self._log_generation, self.epoch)
        if self._pending_key != key:
            self._pending_key = key
            self._pending_scanned = self.epoch_op
            self._pending_op = 0
        if not self._pending_op:
            for index in range(max(self._pending_scanned, self.offset) + 1, self.op_number + 1):
                entry = self.log[index - self.offset - 1]
                if entry.kind == ENTRY_RECONFIG and _reconfig(entry.data).epoch > self.epoch:
                    self._pending_op = index
                    break
            self._pending_scanned = self.op_number
        return self._pending_op > 0

    def _on_admin(self, m: AdminRequest, client: int) -> None:
        conf = ConfigData(voters=self.members)
        if not self.is_primary:
            hint = self.primary if self.state == NORMAL else None
            self._send(client, ClientReply(m.request_id, False, conf, hint, "not_leader"))
            return
        target = self._admin_target(m)
        if isinstance(target, str):
            self._send(client, ClientReply(m.request_id, False, conf, self.node_id, target))
            return
        self._append([VrEntry(self.view, ENTRY_RECONFIG, Reconfig(self.epoch + 1, target))])
        self._broadcast(Prepare(self.view, self.op_number, (self.log[-1],), self.commit))
        self._try_commit()
        self._send(client, ClientReply(m.request_id, True, conf, self.node_id))

    def _admin_target(self, m: AdminRequest) -> tuple[int, ...] | str:
        """The members ``m`` asks for, or why not."""
        if self._reconfig_pending():
            return "reconfiguring: the previous reconfiguration has not run yet"
        members = set(self.members)
        if m.action == ADD_LEARNER and m.node in self.peers and m.node not in members:
            members.add(m.node)
        elif m.action == REMOVE and m.node in members:
            members.discard(m.node)
        elif m.action == REPLACE and m.node in members and m.other in self.peers:
            members.discard(m.node)
            members.add(m.other)
        else:
            return (
                f"unsupported: {m.action!r} of node {m.node} (VR reconfigures with "
                f"{ADD_LEARNER}, {REMOVE} or {REPLACE} of peers {list(self.peers)})"
            )
        if len(members) < max(1, m.min_voters) or members == set(self.members):
            return f"refused: {sorted(members)} would leave fewer than {m.min_voters} members"
        return tuple(sorted(members))

    # -- clients ------------------------------------------------------------------------------

    def _on_client(self, msg: Message, client: int) -> None:
        if isinstance(msg, ReadRequest):
            if msg.consistency == READ_SERIALIZABLE:
                self._applies.append(Apply(self.applied, msg.query, client, msg.request_id, True))
                return
            self._on_request(VrEntry(self.view, ENTRY_READ, msg.query), client, msg.request_id)
        elif isinstance(msg, ClientRequest):
            entry = VrEntry(self.view, ENTRY_COMMAND, msg.command)
            self._on_request(entry, client, msg.request_id)
        elif isinstance(msg, AdminRequest):
            self._on_admin(msg, client)

    def _on_request(self, entry: VrEntry, client: int, request_id: int) -> None:
        if not self.is_primary:
            hint = self.primary if self.state == NORMAL else None
            reply = ClientReply(request_id, False, leader_hint=hint, error="not_leader")
            self._send(client, reply)
            return
        if self.op_number - self.commit >= self.cfg.max_pending_ops or self._reconfig_pending():
            self._send(
                client, ClientReply(request_id, False, leader_hint=self.node_id, error="busy")
            )
            return
        if entry.kind == ENTRY_COMMAND and self._answer_from_table(entry, client, request_id):
            return
        self._propose(entry, client, request_id)

    def _answer_from_table(self, entry: VrEntry, client: int, request_id: int) -> bool:
        """True when the client table settles the request: an older request number is
        dropped; the latest one, still being prepared, is answered when it executes."""
        if mut.CLIENT_TABLE_IGNORED in self._mutants:
            return False
        key = _session_key(entry.data)
        if key is None:
            return False
        known = self._client_table.get(key[0])
        if known is None or key[1] > known[0]:
            return False
        if key[1] < known[0]:
            return True  # nobody waits for an older request of this session
        if known[1] > self.commit:
            self._waiters[known[1]] = (client, request_id)
            return True
        return False  # executed: proposing it again returns the state machine's cached result

    def _note_client_op(self, entry: VrEntry, op: int) -> None:
        key = _session_key(entry.data) if entry.kind == ENTRY_COMMAND else None
        if key is None:
            return
        known = self._client_table.get(key[0])
        if known is None or key[1] >= known[0]:
            self._client_table[key[0]] = (key[1], op)

    def _rebuild_client_table(self) -> None:
        self._client_table = {}
        for op, entry in enumerate(self.log, start=self.offset + 1):
            self._note_client_op(entry, op)


def _session_key(data: Any) -> tuple[int, int] | None:
    """(session, request number) of a session command, None for anything else."""
    if type(data) is SessionCommand:
        session, seq = data.session, data.seq
    elif isinstance(data, (list, tuple)) and len(data) == 3:
        session, seq = data[0], data[1]
        if type(session) is not int or type(seq) is not int:
            return None
    else:
        return None
    return (session, seq) if session > 0 else None


def _starts(entry: VrEntry, epoch: int) -> bool:
    """Is ``entry`` the reconfiguration that starts ``epoch``?"""
    return entry.kind == ENTRY_RECONFIG and _reconfig(entry.data).epoch == epoch


def _reconfig(data: Any) -> Reconfig:
    return data if type(data) is Reconfig else msgspec.convert(data, Reconfig)


def _entry(raw: Any) -> VrEntry:
    return raw if type(raw) is VrEntry else msgspec.convert(raw, VrEntry)
