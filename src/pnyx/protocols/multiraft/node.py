"""The multi-Raft process: many Raft groups (one per range replica) behind one node contract.

One :class:`MultiRaftNode` per process, as the runtime expects one node per process:

- **one connection per peer pair**: every group's messages to a peer in one ready batch
  travel as one :class:`Batch` envelope (coalesced, as CockroachDB coalesces heartbeats);
- **one write-ahead log**: every group's durable writes become entries of the process's
  journal (``GroupOp(group, op)``), so a batch is one fsync for all groups (group commit
  across groups, as TiKV's raft-engine and CockroachDB's shared engine do); every
  ``checkpoint_entries`` journal entries the fold of the journal is saved as the
  journal's snapshot and the entries it covers are compacted;
- **ticks fan out** to every group;
- **state machines inside**: each group's committed commands are applied here, after the
  runtime persisted the batch (``advance``), because a split must hand the right half's
  data to a new group on the same process; replies to clients go out in the next batch.

The ranges: group 0 is the metadata range (the range map, a replica on every process);
a fresh cluster has one data range covering the keyspace.  A range's leader reports
changes of its range (splits, replica sets) to the meta range, splits its range when it
holds more than ``split_threshold_keys`` keys or more than ``split_threshold_bytes`` bytes
(the new range id reserved in the meta range first), and carries out replica moves (learner
first, then a joint-consensus swap).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
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
    PersistOp,
    PutRecord,
    Ready,
    Restore,
    Rng,
    Send,
    SnapshotSave,
    is_client,
)
from pnyx.protocols.multiraft.machines import (
    KEY_NOT_IN_RANGE,
    MUTANTS,
    MetaStateMachine,
    RangeStateMachine,
    convert_command,
)
from pnyx.protocols.multiraft.messages import (
    FIRST_RANGE,
    INIT_INDEX,
    INIT_TERM,
    META_GROUP,
    MOVE_REFUSED,
    MOVE_STARTED,
    Batch,
    Checkpoint,
    GroupImage,
    GroupMsg,
    GroupOp,
    GroupRequest,
    LeadersQuery,
    MetaCommand,
    MetaPropose,
    MetaQuery,
    MetaReplicas,
    MetaSplit,
    MoveReplica,
    MoveReplicaExplained,
    RangeBounds,
    RangeDesc,
    RangeWrite,
    ReserveSplit,
    SplitCmd,
    SplitDone,
)
from pnyx.protocols.raft.config import RaftConfig
from pnyx.protocols.raft.messages import (
    ADD_LEARNER,
    ENTRY_COMMAND,
    ENTRY_CONFIG,
    HARD_STATE_KEY,
    REPLACE,
    AdminRequest,
    AppendEntries,
    ClientRequest,
    ConfigData,
    Entry,
    HardState,
    ReadRequest,
    SnapshotMeta,
    TakeSnapshot,
)
from pnyx.protocols.raft.node import LEADER, NO_NODE, RaftNode

LEADERSHIP_LOST = "leadership_lost"
"""Answer to a write the range's leader had appended to its log before it lost leadership:
it may still commit (Raft answers ``not_leader``, which a client could take for a
refusal).  Clients must treat it as indeterminate."""
INTERNAL_CLIENT = 2**31 - 1
"""The client address a process uses for its own admin requests to its groups (replies to
it are dropped: the process watches the configuration instead)."""
MAX_GROUP_ID = 2**62
APPLIED_EVENTS_KEPT = 4096
"""Applied writes a node keeps for monitors (older ones are dropped in halves)."""


@dataclass(frozen=True)
class MultiRaftConfig:
    """Knobs of a multi-Raft process; times in ticks."""

    raft: RaftConfig = field(default_factory=RaftConfig)
    """Every group's Raft settings (``initial_voters`` is ignored: groups start from a
    snapshot that names their voters)."""
    replicas_per_range: int = 3
    split_threshold_keys: int = 8
    """A range holding more keys than this is split at its median key."""
    split_threshold_bytes: int = 0
    """A range whose records take more bytes than this (keys plus encoded records,
    ``RangeStateMachine.size_bytes``) is split at the key that halves its bytes; 0: off
    (splits by key count only)."""
    sync_interval_ticks: int = 5
    """How often a range leader compares its range with the meta range's view of it."""
    split_retry_ticks: int = 20
    move_interval_ticks: int = 3
    move_timeout_ticks: int = 400
    checkpoint_entries: int = 512
    """Journal entries between two checkpoints of the process's durable state."""
    mutants: frozenset[str] = frozenset()
    make_range_machine: Callable[[RangeBounds, frozenset[str]], RangeStateMachine] = field(
        default=RangeStateMachine
    )
    """Factory of every data range's state machine (bounds, mutants): bootstrap, a split's
    right half, replicas created by a message, recovery.  A subclass of
    :class:`RangeStateMachine` with more commands thus runs in every group."""
    replies_first: bool = False
    """Hand out what applying produced (client replies, meta proposals) as a batch of its
    own, before the next batch's journal append: a reply then does not wait for the fsync
    of later, unrelated writes.  Safe (it answers committed, applied entries and needs
    nothing durable); off in the simulator (its batches, hence its trace hashes, stay as
    they were), on for real processes."""
    initial_split_keys: tuple[str, ...] = ()
    """A fresh cluster starts with ``len + 1`` data ranges split at these keys (strictly
    increasing, non-empty), range ``i`` (from 1) on ``replicas_per_range`` processes
    starting at the ``i``-th (round-robin); the meta range records all of them."""

    def __post_init__(self) -> None:
        unknown = self.mutants - MUTANTS
        if unknown:
            raise ValueError(f"unknown mutants {sorted(unknown)}; valid: {sorted(MUTANTS)}")
        if self.replicas_per_range < 1 or self.split_threshold_keys < 2:
            raise ValueError(
                f"replicas_per_range {self.replicas_per_range} must be >= 1 and "
                f"split_threshold_keys {self.split_threshold_keys} >= 2"
            )
        if self.split_threshold_bytes < 0:
            raise ValueError(
                f"split_threshold_bytes must be >= 0 (0: off), got {self.split_threshold_bytes}"
            )
        keys = self.initial_split_keys
        for i, key in enumerate(keys):
            if type(key) is not str or key == "" or (i > 0 and key <= keys[i - 1]):
                raise ValueError(
                    f"initial_split_keys must be non-empty strings in increasing order; "
                    f"{key!r} at position {i} is not"
                )
        for name in (
            "sync_interval_ticks",
            "split_retry_ticks",
            "move_interval_ticks",
            "move_timeout_ticks",
            "checkpoint_entries",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class _Move:
    from_node: int
    to_node: int
    deadline_tick: int


Machine = RangeStateMachine | MetaStateMachine


class MultiRaftNode:
    """A process hosting many Raft groups (implements :class:`pnyx.core.Node`)."""

    def __init__(
        self,
        node_id: int,
        peers: tuple[int, ...],
        rng: Rng,
        durable: DurableState,
        config: MultiRaftConfig | None = None,
    ) -> None:
        if node_id not in peers or node_id <= 0:
            raise ValueError(f"node {node_id} not among peers {peers}")
        self.node_id = node_id
        self.peers = tuple(sorted(peers))
        self._peer_set = frozenset(peers)
        self.cfg = config or MultiRaftConfig()
        self._raft_cfg = dataclasses.replace(self.cfg.raft, initial_voters=None)
        others = [p for p in self.peers if p != node_id]
        # An uninitialised replica (created by a message, before its snapshot) must never
        # campaign: it starts as a learner of a configuration whose only voter is another
        # process.  Its snapshot brings the real configuration.
        self._uninit_cfg = dataclasses.replace(
            self.cfg.raft, initial_voters=(others[0],) if others else None
        )
        self._rng = rng
        self._probe = self.cfg.make_range_machine(RangeBounds(0, "", "", 0), self.cfg.mutants)
        """A machine of the configured type, to type commands that crossed a wire or disk."""
        self.groups: dict[int, RaftNode] = {}
        self.machines: dict[int, Machine] = {}
        self._order: list[int] = []
        self._mirrors: dict[int, DurableState] = {}
        self._journal: list[GroupOp] = []
        self._out = Ready()
        self._pending: list[tuple[int, Ready]] = []
        self._idle: dict[int, RaftNode] = {}
        """Groups found with nothing ready and not called since (see :meth:`_has_work`)."""
        self._split_confs: dict[tuple[int, int], ConfigData] = {}
        self._moves: dict[int, _Move] = {}
        self._split_asked: dict[int, int] = {}
        self._admin_seq = 0
        self._appended: set[tuple[int, int]] = set()
        """(client, request id) of writes a group leader here appended, not yet answered."""
        self.tick_now = 0
        self.dropped_messages = 0
        """Peer messages a group refused (e.g. from a node its uninitialised replica does
        not know yet); the rest of their batch is still delivered."""
        self.applied_events: list[tuple[int, int, Any]] = []
        """(group, index, command) of recently applied commands, for monitors."""
        self.applied_base = 0
        """How many applied events were dropped from the front of ``applied_events``."""
        self.group_messages_sent = 0
        self.batches_sent = 0
        """Raft messages of all groups, and the envelopes (one per peer and ready batch)
        that carried them."""
        self.group_ops_persisted = 0
        self.journal_appends = 0
        """Durable writes of all groups, and the journal appends (one per ready batch, one
        fsync) that carried them."""
        self._journal_next, self._since_checkpoint = self._recover(durable)

    def __repr__(self) -> str:
        return f"MultiRaftNode({self.node_id} groups={self._order})"

    # -- recovery and group creation ----------------------------------------------------------

    def _recover(self, durable: DurableState) -> tuple[int, int]:
        """Rebuild every group from the journal (checkpoint + entries); bootstrap when empty."""
        if durable.snapshot is None and not durable.log:
            self._bootstrap()
            return 1, 0
        if durable.snapshot is not None:
            image = msgspec.msgpack.decode(durable.snapshot.data, type=Checkpoint)
            for g in image.groups:
                ds = DurableState()
                ds.records = dict(g.records)
                ds.log = [_typed_entry(g.group, e, self._probe) for e in g.log]
                ds.log_start = g.log_start
                ds.snapshot = g.snapshot
                self._mirrors[g.group] = ds
        for raw in durable.log:
            op = raw if type(raw) is GroupOp else msgspec.convert(raw, GroupOp)
            entry = _typed_op(op, self._probe)
            self._mirrors.setdefault(entry.group, DurableState()).apply(entry.op)
        for gid in sorted(self._mirrors):
            self._start_group(gid, self._mirrors[gid])
        return durable.last_index + 1, len(durable.log)

    def _bootstrap(self) -> None:
        """A fresh cluster: the meta range on every process, the initial ranges
        (:meth:`initial_ranges`) on their replicas (every process derives the same)."""
        ranges = self.initial_ranges()
        meta = MetaStateMachine(ranges, next_id=FIRST_RANGE + len(ranges))
        self._create_group(META_GROUP, ConfigData(self.peers), meta.snapshot())
        for desc in ranges:
            if self.node_id in desc.replicas:
                sm = self.cfg.make_range_machine(desc.bounds, self.cfg.mutants)
                self._create_group(desc.range_id, ConfigData(desc.replicas), sm.snapshot())

    def initial_ranges(self) -> tuple[RangeDesc, ...]:
        """The data ranges of a fresh cluster: split at ``initial_split_keys``, range ``i``
        on ``replicas_per_range`` processes from the ``i``-th on (round-robin)."""
        starts = ("", *self.cfg.initial_split_keys)
        ends = (*self.cfg.initial_split_keys, None)
        count = min(self.cfg.replicas_per_range, len(self.peers))
        ranges = []
        for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
            chosen = sorted(self.peers[(i + j) % len(self.peers)] for j in range(count))
            ranges.append(RangeDesc(FIRST_RANGE + i, start, end, 1, INIT_INDEX, tuple(chosen)))
        return tuple(ranges)

    def _create_group(self, gid: int, conf: ConfigData, data: bytes) -> None:
        """A new initialised group: a synthesized snapshot at INIT_INDEX, made durable."""
        self._mirrors[gid] = ds = DurableState()
        self._log_op(gid, PutRecord(HARD_STATE_KEY, HardState(INIT_TERM, 0, INIT_INDEX)))
        self._log_op(gid, SnapshotSave(INIT_INDEX, INIT_TERM, data, SnapshotMeta(conf)))
        self._log_op(gid, LogCompact(INIT_INDEX))
        self._start_group(gid, ds)

    def _start_group(self, gid: int, ds: DurableState) -> None:
        cfg = self._raft_cfg if ds.snapshot is not None else self._uninit_cfg
        self.groups[gid] = RaftNode(self.node_id, self.peers, self._rng, ds, cfg)
        if gid == META_GROUP:
            self.machines[gid] = MetaStateMachine()
        else:
            self.machines[gid] = self.cfg.make_range_machine(
                RangeBounds(gid, "", "", 0), self.cfg.mutants
            )
        self._order = sorted(self.groups)

    def _log_op(self, gid: int, op: PersistOp) -> None:
        if not isinstance(op, PutRecord | LogAppend | LogCompact | SnapshotSave):
            raise TypeError(f"group {gid} asked to persist {op!r}")
        self._journal.append(GroupOp(gid, op))
        self._mirrors[gid].apply(op)

    # -- the node contract --------------------------------------------------------------------

    def step(self, msg: Message, from_id: int) -> None:
        """A peer's batch or meta proposal, or a client's request (see ``messages.py``)."""
        self._wake_groups(msg)
        if is_client(from_id):
            self._on_client(msg, from_id)
            return
        if from_id not in self._peer_set or from_id == self.node_id:
            raise InvalidMessage(
                f"{type(msg).__name__} from {from_id}, not a peer of process {self.node_id}"
            )
        if type(msg) is Batch:
            for gm in msg.msgs:
                if not 0 <= gm.group <= MAX_GROUP_ID:
                    raise InvalidMessage(f"Batch: group id {gm.group} out of range")
            for gm in msg.msgs:
                self._step_group(gm.group, gm.msg, from_id)
        elif type(msg) is MetaPropose:
            if type(msg.command) not in (ReserveSplit, MetaSplit, MetaReplicas):
                raise InvalidMessage(f"MetaPropose: {msg.command!r} is not a meta command")
            meta = self.groups[META_GROUP]
            if meta.role == LEADER:
                meta.propose([msg.command])
        else:
            raise InvalidMessage(f"unexpected peer message {type(msg).__name__}")

    def _step_group(self, gid: int, msg: Message, from_id: int) -> None:
        if type(msg) is AppendEntries and msg.entries:
            msg = _typed_append(gid, msg, self._probe)
        group = self.groups.get(gid)
        if group is None:  # a replica being added here, or a split not applied here yet
            self._mirrors[gid] = ds = DurableState()
            self._start_group(gid, ds)
            group = self.groups[gid]
        try:
            group.step(msg, from_id)
        except InvalidMessage:
            self.dropped_messages += 1

    def tick(self) -> None:
        """Tick every group; leader duties every few ticks."""
        self.tick_now += 1
        self._idle.clear()
        for gid in self._order:
            self.groups[gid].tick()
        if self.tick_now % self.cfg.sync_interval_ticks == 0:
            self._leader_duties()
        if self.tick_now % self.cfg.move_interval_ticks == 0 and self._moves:
            self._drive_moves()

    def has_ready(self) -> bool:
        return not self._out.is_empty() or self._has_work()

    def _has_work(self) -> bool:
        """Journal entries to write or a group with a batch.

        A group whose ``has_ready()`` said no is remembered as idle and not asked again
        until something calls it: ``step`` wakes the groups its message is for
        (:meth:`_wake_groups`), ``tick`` and ``clock_stalled`` all of them, and a group
        with a batch stays awake until asked again after its ``advance``.  Asking an idle
        group again would change nothing: ``has_ready()`` turns pending decisions into
        effects and answers whether there are any, so when it says no it has reached a
        state where it would say no again, and only a call into the group leaves that
        state.  (Callers that call a group directly, as some tests do, are seen at the next
        tick.)
        """
        if self._journal:
            return True
        idle = self._idle
        groups = self.groups
        for gid in self._order:
            group = groups[gid]
            if idle.get(gid) is group:
                continue
            if group.has_ready():
                return True
            idle[gid] = group
        return False

    def _wake_groups(self, msg: Message) -> None:
        """Forget that the groups ``msg`` will call were idle: a batch's groups, a client
        request's group, the meta group for a proposal; every group for other messages."""
        idle = self._idle
        if type(msg) is Batch:
            for gm in msg.msgs:
                idle.pop(gm.group, None)
        elif type(msg) is GroupRequest:
            idle.pop(msg.group, None)
        elif type(msg) is MetaPropose:
            idle.pop(META_GROUP, None)
        elif type(msg) is not LeadersQuery:
            idle.clear()

    def ready(self) -> Ready:
        """All groups' effects as one batch: one journal append, one envelope per peer
        (with ``replies_first``, pending replies first go out alone)."""
        if self.cfg.replies_first and self._out.send and self._has_work():
            batch, self._out = self._out, Ready()
            return batch
        batch, self._out = self._out, Ready()
        by_peer: dict[int, list[GroupMsg]] = {}
        idle = self._idle
        for gid in self._order:
            group = self.groups[gid]
            if idle.get(gid) is group:
                continue  # would say no again (see _has_work)
            if not group.has_ready():
                idle[gid] = group
                continue
            r = group.ready()
            self._pending.append((gid, r))
            for op in r.persist:
                self._log_op(gid, op)
            for item in r.apply:
                if isinstance(item, Apply) and type(item.command) is SplitCmd:
                    conf = group.log.config_at(item.index).to_data()
                    self._split_confs[(gid, item.index)] = conf
            for s in r.send:
                if s.to == INTERNAL_CLIENT:
                    continue
                if is_client(s.to):
                    batch.send.append(self._client_send(s))
                else:
                    by_peer.setdefault(s.to, []).append(GroupMsg(gid, s.msg))  # type: ignore[arg-type]
        self._flush_journal(batch)
        for peer in sorted(by_peer):
            msgs = by_peer[peer]
            batch.send.append(Send(peer, Batch(tuple(msgs))))
            self.group_messages_sent += len(msgs)
            self.batches_sent += 1
        return batch

    def advance(self, ready: Ready) -> None:
        """The batch is durable and sent: apply the groups' committed commands, answer
        snapshot requests, and acknowledge each group's batch."""
        pending, self._pending = self._pending, []
        for gid, r in pending:
            group = self.groups[gid]
            sm = self.machines[gid]
            for item in r.apply:
                self._apply(gid, sm, item)
            for request in r.services:
                if not isinstance(request, TakeSnapshot):
                    raise TypeError(f"group {gid} asked for unknown service {request!r}")
                group.snapshot_taken(request.index, sm.snapshot())
            group.advance(r)

    # -- optional runtime hooks ------------------------------------------------------------

    def clock_stalled(self, missed_ticks: int) -> None:
        """Forwarded to every group (their leases end)."""
        self._idle.clear()
        for gid in self._order:
            self.groups[gid].clock_stalled(missed_ticks)

    def status(self) -> dict[str, Any]:
        """The meta group's status, plus how many groups and led ranges this process has
        and the coalescing counters (group writes / journal appends, Raft messages /
        envelopes)."""
        status = self.groups[META_GROUP].status()
        status["groups"] = len(self.groups)
        status["leading"] = [g for g in self._order if self.groups[g].role == LEADER]
        status["group_ops_persisted"] = self.group_ops_persisted
        status["journal_appends"] = self.journal_appends
        status["group_messages_sent"] = self.group_messages_sent
        status["batches_sent"] = self.batches_sent
        return status

    # -- journal ---------------------------------------------------------------------------

    def _flush_journal(self, batch: Ready) -> None:
        if not self._journal:
            return
        entries, self._journal = tuple(self._journal), []
        batch.persist.append(LogAppend(self._journal_next, entries))
        self.group_ops_persisted += len(entries)
        self.journal_appends += 1
        self._journal_next += len(entries)
        self._since_checkpoint += len(entries)
        if self._since_checkpoint >= self.cfg.checkpoint_entries:
            last = self._journal_next - 1
            image = Checkpoint(
                [
                    GroupImage(gid, dict(ds.records), ds.log_start, list(ds.log), ds.snapshot)
                    for gid, ds in sorted(self._mirrors.items())
                ]
            )
            batch.persist.append(SnapshotSave(last, 0, msgspec.msgpack.encode(image)))
            batch.persist.append(LogCompact(last))
            self._since_checkpoint = 0

    # -- applying ----------------------------------------------------------------------------

    def _apply(self, gid: int, sm: Machine, item: Apply | Restore) -> None:
        if isinstance(item, Restore):
            sm.restore(item.data)
            return
        result = sm.apply(item.command)
        if not item.read_only:
            self._note_applied(gid, item.index, item.command)
        if type(result) is SplitDone:
            conf = self._split_confs.pop((gid, item.index), None)
            if result.right.range_id not in self.groups:
                if conf is None:
                    conf = self.groups[gid].log.config_at(item.index).to_data()
                self._create_group(result.right.range_id, conf, result.right_data)
        elif type(item.command) is SplitCmd:
            self._split_confs.pop((gid, item.index), None)
        if item.reply_to is not None and item.reply_to != INTERNAL_CLIENT:
            self._appended.discard((item.reply_to, item.request_id))
            self._out.send.append(Send(item.reply_to, _reply(item.request_id, result)))

    def _client_send(self, send: Send) -> Send:
        """A group's answer to a client; ``not_leader`` for a write it had appended becomes
        :data:`LEADERSHIP_LOST` (the write may still commit)."""
        msg = send.msg
        if type(msg) is not ClientReply or (send.to, msg.request_id) not in self._appended:
            return send
        self._appended.discard((send.to, msg.request_id))
        if msg.ok or msg.error != "not_leader":
            return send
        lost = ClientReply(
            msg.request_id, False, leader_hint=msg.leader_hint, error=LEADERSHIP_LOST
        )
        return Send(send.to, lost)

    def _note_applied(self, gid: int, index: int, command: Any) -> None:
        events = self.applied_events
        events.append((gid, index, command))
        if len(events) > APPLIED_EVENTS_KEPT:
            half = len(events) // 2
            del events[:half]
            self.applied_base += half

    # -- clients -------------------------------------------------------------------------------

    def _on_client(self, msg: Message, client: int) -> None:
        if type(msg) is MoveReplica or type(msg) is MoveReplicaExplained:
            self._on_move(msg, client)
            return
        if type(msg) is LeadersQuery:
            led = [(g, self.groups[g].term) for g in self._order if self.groups[g].role == LEADER]
            self._out.send.append(Send(client, ClientReply(msg.request_id, True, led)))
            return
        if type(msg) is not GroupRequest:
            raise InvalidMessage(f"unexpected client message {type(msg).__name__}")
        group = self.groups.get(msg.group)
        if group is None:
            self._answer(client, msg.request.request_id, "range_not_found")
            return
        if type(msg.request) is ClientRequest and msg.group == META_GROUP:
            self._answer(client, msg.request.request_id, "meta_is_read_only")
            return
        request = self._typed_request(msg.group, msg.request)
        sm = self.machines[msg.group]
        if isinstance(sm, RangeStateMachine) and isinstance(request, ClientRequest):
            command = request.command
            if type(command) is RangeWrite:
                command = command.op
            # Bounds only shrink over versions: a key outside any replica's view of the range
            # is outside its latest bounds too (a definite, early answer).
            if any(not sm.bounds.contains(k) for k in sm.op_keys(command)):
                reply = ClientReply(
                    request.request_id, False, result=sm.bounds, error=KEY_NOT_IN_RANGE
                )
                self._out.send.append(Send(client, reply))
                return
        before = group.log.last_index
        group.step(request, client)
        if type(request) is ClientRequest and group.log.last_index > before:
            self._appended.add((client, request.request_id))

    def _typed_request(
        self, gid: int, request: ClientRequest | ReadRequest
    ) -> ClientRequest | ReadRequest:
        """``request`` with its command typed (it may have crossed a wire untyped); a
        command of no known type, or a client's split, is refused (InvalidMessage)."""
        raw = request.command if isinstance(request, ClientRequest) else request.query
        try:
            if gid == META_GROUP:
                typed: Any = msgspec.convert(raw, MetaQuery)
            else:
                sm = self.machines[gid]
                assert isinstance(sm, RangeStateMachine)
                typed = sm.convert_command(raw)
        except msgspec.ValidationError as exc:
            raise InvalidMessage(
                f"group {gid}: request {request.request_id} carries no valid command "
                f"({exc}): {raw!r:.200}"
            ) from None
        if type(typed) is SplitCmd:
            raise InvalidMessage(f"group {gid}: a client may not propose {typed!r}")
        if typed is raw:
            return request
        if isinstance(request, ClientRequest):
            return ClientRequest(request.request_id, typed)
        return ReadRequest(request.request_id, typed, request.consistency)

    def _answer(self, client: int, request_id: int, error: str) -> None:
        self._out.send.append(Send(client, ClientReply(request_id, False, error=error)))

    # -- range leader duties ----------------------------------------------------------------

    def _leader_duties(self) -> None:
        meta = self.machines[META_GROUP]
        assert isinstance(meta, MetaStateMachine)
        for gid in self._order:
            group = self.groups[gid]
            if gid == META_GROUP or group.role != LEADER:
                continue
            sm = self.machines[gid]
            assert isinstance(sm, RangeStateMachine)
            known = meta.ranges.get(gid)
            if known is None:
                continue  # a fresh right half: the left half reports the split
            if known.version < sm.bounds.version:
                self._report_split(group, sm)
            elif known.version == sm.bounds.version:
                replicas, conf_ver = _replica_view(group)
                if replicas != known.replicas and conf_ver > known.conf_ver:
                    self._propose_meta(MetaReplicas(gid, known.version, conf_ver, replicas))
                self._maybe_split(gid, group, sm, meta)

    def _report_split(self, group: RaftNode, sm: RangeStateMachine) -> None:
        done = sm.last_split
        b = sm.bounds
        if done is None or done.left.version != b.version:
            return
        replicas, conf_ver = _replica_view(group)
        left = RangeDesc(b.range_id, b.start, b.end, b.version, conf_ver, replicas)
        r = done.right
        right = RangeDesc(r.range_id, r.start, r.end, r.version, INIT_INDEX, replicas)
        self._propose_meta(MetaSplit(left, right))

    def _maybe_split(
        self, gid: int, group: RaftNode, sm: RangeStateMachine, meta: MetaStateMachine
    ) -> None:
        b = sm.bounds
        if gid in self._moves or group.log.config().outgoing:
            return
        split_key = self._split_key(sm)
        if split_key is None:
            return
        new_id = meta.reserved.get((gid, b.version))
        if new_id is None:
            self._propose_meta(ReserveSplit(gid, b.version))
            return
        asked = self._split_asked.get(gid)
        if asked is not None and self.tick_now - asked < self.cfg.split_retry_ticks:
            return
        self._split_asked[gid] = self.tick_now
        group.propose([SplitCmd(gid, b.version, split_key, new_id)])

    def _split_key(self, sm: RangeStateMachine) -> str | None:
        """Where to split a range that is too large: the median key when it holds more than
        ``split_threshold_keys`` keys, else the key halving its bytes when they exceed
        ``split_threshold_bytes``; None when it is small enough."""
        b = sm.bounds
        count = sum(1 for k in sm.data if b.contains(k))
        if count > self.cfg.split_threshold_keys:
            keys = sorted(k for k in sm.data if b.contains(k))
            return keys[len(keys) // 2]
        limit = self.cfg.split_threshold_bytes
        if limit > 0 and sm.size_bytes() > limit:
            return sm.byte_split_key()
        return None

    def _propose_meta(self, command: MetaCommand) -> None:
        meta = self.groups[META_GROUP]
        if meta.role == LEADER:
            meta.propose([command])
        elif meta.leader not in (NO_NODE, self.node_id):
            self._out.send.append(Send(meta.leader, MetaPropose(command)))

    # -- replica moves ------------------------------------------------------------------------

    def _on_move(self, m: MoveReplica, client: int) -> None:
        """Start a replica move at the range's leader, or answer why not (always an answer:
        ``not_leader`` with a hint, ``range_not_found``, ``move_refused`` or ``started``)."""
        explain = type(m) is MoveReplicaExplained
        group = self.groups.get(m.range_id)
        if m.range_id == META_GROUP or group is None:
            reason = (
                "the meta range (0) is never moved"
                if m.range_id == META_GROUP
                else f"process {self.node_id} has no replica of range {m.range_id}"
            )
            self._refuse(client, m.request_id, "range_not_found", reason if explain else None)
            return
        if group.role != LEADER:
            hint = group.leader if group.leader != NO_NODE else None
            reply = ClientReply(m.request_id, False, leader_hint=hint, error="not_leader")
            self._out.send.append(Send(client, reply))
            return
        current = self._moves.get(m.range_id)
        same = current is not None and current.from_node == m.from_node
        if explain and same and current is not None and current.to_node == m.to_node:
            self._out.send.append(Send(client, ClientReply(m.request_id, True, MOVE_STARTED)))
            return
        reason = self._move_refusal(m, group)
        if reason:
            self._refuse(client, m.request_id, MOVE_REFUSED, reason if explain else None)
            return
        deadline = self.tick_now + self.cfg.move_timeout_ticks
        self._moves[m.range_id] = _Move(m.from_node, m.to_node, deadline)
        self._out.send.append(Send(client, ClientReply(m.request_id, True, MOVE_STARTED)))

    def _move_refusal(self, m: MoveReplica, group: RaftNode) -> str:
        """Why the leader of range ``m.range_id`` will not start move ``m`` ("" if it will)."""
        conf = group.log.config()
        rid = m.range_id
        if m.to_node not in self._peer_set:
            return f"process {m.to_node} is not a process of the cluster {list(self.peers)}"
        if m.from_node not in conf.voters:
            return f"process {m.from_node} is not a voter of range {rid} " + _members(conf)
        if m.to_node in conf.members:
            return f"process {m.to_node} already holds a replica of range {rid} " + _members(conf)
        moving = self._moves.get(rid)
        if moving is not None:
            return (
                f"range {rid} is already moving a replica from process {moving.from_node} "
                f"to process {moving.to_node}"
            )
        return ""

    def _refuse(self, client: int, request_id: int, error: str, reason: str | None) -> None:
        reply = ClientReply(request_id, False, result=reason, error=error)
        self._out.send.append(Send(client, reply))

    def _drive_moves(self) -> None:
        for gid in sorted(self._moves):
            mv = self._moves[gid]
            group = self.groups[gid]
            if group.role != LEADER or self.tick_now > mv.deadline_tick:
                del self._moves[gid]
                continue
            conf = group.log.config()
            if conf.outgoing:
                continue  # joint: Raft leaves it by itself
            if mv.to_node in conf.voters and mv.from_node not in conf.voters:
                del self._moves[gid]
            elif mv.to_node not in conf.members:
                self._admin(group, ADD_LEARNER, mv.to_node)
            elif mv.to_node in conf.learners and mv.from_node in conf.voters:
                self._admin(group, REPLACE, mv.from_node, mv.to_node)
            else:
                del self._moves[gid]  # someone else changed the replicas

    def _admin(self, group: RaftNode, action: str, node: int, other: int = 0) -> None:
        self._admin_seq += 1
        group.step(AdminRequest(self._admin_seq, action, node, 1, other), INTERNAL_CLIENT)

    # -- views for monitors and tests ------------------------------------------------------------

    def range_machine(self, gid: int) -> RangeStateMachine | None:
        """The state machine of data range ``gid`` on this process, if it has a replica."""
        sm = self.machines.get(gid)
        return sm if isinstance(sm, RangeStateMachine) else None

    @property
    def meta(self) -> MetaStateMachine:
        """This process's replica of the range map (as far as it has applied)."""
        sm = self.machines[META_GROUP]
        assert isinstance(sm, MetaStateMachine)
        return sm


def _typed_entry(group: int, raw: Any, machine: RangeStateMachine) -> Entry:
    """A log entry read back from a checkpoint or a decoded journal, or received from a
    peer, with its command (or configuration) typed again, so every replica holds equal
    entries.  A command of no known type stays raw (the machine answers it an error, the
    same on every replica)."""
    entry = raw if type(raw) is Entry else msgspec.convert(raw, Entry)
    if entry.kind == ENTRY_COMMAND and entry.data is not None:
        data = convert_command(group, entry.data, machine)
        return entry if data is entry.data else Entry(entry.term, entry.kind, data)
    if entry.kind == ENTRY_CONFIG and type(entry.data) is not ConfigData:
        return Entry(entry.term, entry.kind, msgspec.convert(entry.data, ConfigData))
    return entry


def _typed_op(op: GroupOp, machine: RangeStateMachine) -> GroupOp:
    """A journal entry decoded from bytes, its log entries typed again."""
    inner = op.op
    if type(inner) is LogAppend:
        entries = tuple(_typed_entry(op.group, e, machine) for e in inner.entries)
        return GroupOp(op.group, LogAppend(inner.first_index, entries))
    return op


def _typed_append(group: int, msg: AppendEntries, machine: RangeStateMachine) -> AppendEntries:
    """A peer's AppendEntries with its entries typed (they cross the wire untyped)."""
    entries = tuple(_typed_entry(group, e, machine) for e in msg.entries)
    if all(a is b for a, b in zip(entries, msg.entries, strict=True)):
        return msg
    return msgspec.structs.replace(msg, entries=entries)


def _members(conf: Any) -> str:
    """A configuration's voters and learners, for refusals."""
    return f"(voters {sorted(conf.voters)}, learners {sorted(conf.learners)})"


def _replica_view(group: RaftNode) -> tuple[tuple[int, ...], int]:
    """The voters of the configuration in force at the commit index, and that index."""
    conf = group.log.config_at(group.commit)
    return tuple(sorted(conf.voters | conf.outgoing)), group.commit


def _reply(request_id: int, result: Any) -> ClientReply:
    if isinstance(result, dict) and "error" in result:
        bounds = result.get("bounds")
        return ClientReply(request_id, False, result=bounds, error=str(result["error"]))
    return ClientReply(request_id, True, result)
