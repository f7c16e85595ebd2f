"""A Multi-Paxos replica (proposer, acceptor and learner in one) as a pure state machine.

Structure of van Renesse & Altinbuken, *Paxos Made Moderately Complex* (2015), over the
single-decree core of Lamport's *The Part-Time Parliament* (1998): a would-be leader runs
phase 1 once for every slot above its chosen prefix, adopts the highest-ballot value each
promise reports, fills the gaps with no-ops, then runs phase 2 per slot (batched, with a
window of slots in flight).  See README.md beside this file.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
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
    SnapshotSave,
    is_client,
)
from pnyx.core.node import StagedEffects
from pnyx.protocols.paxos import config as mut
from pnyx.protocols.paxos.config import PaxosConfig, quorum_sizes
from pnyx.protocols.paxos.messages import (
    HARD_STATE_KEY,
    HOLE,
    KIND_COMMAND,
    KIND_HOLE,
    KIND_NOOP,
    NO_BALLOT,
    PEER_MESSAGES,
    Accept,
    Accepted,
    Ballot,
    Commit,
    CommitAck,
    HardState,
    Learn,
    Nack,
    Prepare,
    Promise,
    ReadAck,
    ReadProbe,
    Slot,
    Snapshot,
    TakeSnapshot,
)
from pnyx.protocols.raft.messages import (
    READ_SERIALIZABLE,
    AdminRequest,
    ClientRequest,
    ReadRequest,
)
from pnyx.protocols.raft.node import ReadWaiter
from pnyx.protocols.raft.validate import MAX_WIRE_INT, check_client_message

FOLLOWER = "follower"
CANDIDATE = "candidate"
LEADER = "leader"

NOT_SUPPORTED = "not_supported"
"""Error of an ``AdminRequest``: this Multi-Paxos has a fixed set of acceptors."""

MAX_HOLE_SLOTS = 1 << 16
"""An acceptor further behind than this ignores accepts (it catches up by learning chosen
values or a snapshot first) rather than storing that many empty slots."""

ACCEPT_JOURNAL_SIZE = 4096
"""Durable acceptances kept in :attr:`PaxosNode.accept_journal` (for monitors)."""

_PEER_TYPES = frozenset(PEER_MESSAGES)


class PaxosNode(StagedEffects):
    """One Multi-Paxos replica (implements :class:`pnyx.core.Node`).

    Runtime hook beyond the node contract: answer a :class:`TakeSnapshot` found in
    ``Ready.services`` with :meth:`snapshot_taken`.
    """

    def __init__(
        self,
        node_id: int,
        peers: tuple[int, ...],
        rng: Rng,
        durable: DurableState,
        config: PaxosConfig | None = None,
    ) -> None:
        if node_id <= 0 or node_id not in peers:
            raise ValueError(f"node {node_id} not among peers {peers}")
        self.node_id = node_id
        self.peers = tuple(sorted(peers))
        self.others = tuple(p for p in self.peers if p != node_id)
        self.cfg = config or PaxosConfig()
        self._mutants = self.cfg.mutants
        self.q1, self.q2 = quorum_sizes(len(peers), self.cfg.phase1_quorum, self.cfg.phase2_quorum)
        self._rng = rng
        self.role = FOLLOWER
        self.promised: Ballot = NO_BALLOT
        self.ballot: Ballot = NO_BALLOT
        """Our own ballot while a candidate or leader."""
        self.leader = 0
        self.max_round_seen = 0
        self.offset = 0
        """Slots through this one are compacted into ``snapshot``."""
        self.log: list[Slot] = []
        """Slots ``offset + 1 ..``: what this acceptor accepted (``HOLE``: nothing)."""
        self.commit = 0
        self.applied = 0
        self.snapshot: SnapshotSave | None = None
        self.tick_now = 0
        self.election_elapsed_ticks = 0
        self.heartbeat_elapsed_ticks = 0
        self.timeout_ticks = 0
        self.failures = 0
        """Phase-1 attempts in a row that did not make us (or someone) leader: back-off."""
        self.accept_journal: deque[tuple[int, Ballot, Slot]] = deque(maxlen=ACCEPT_JOURNAL_SIZE)
        """(slot, ballot, value) of acceptances made durable, newest last (for monitors)."""
        self.journal_seq = 0
        """Acceptances ever journaled by this incarnation (monitors keep a cursor)."""
        self.recovered_through = 0
        self.next_slot = 1
        self._sent_through = 0
        self._acks: dict[int, set[int]] = {}
        self._promises: dict[int, tuple[int, tuple[tuple[int, Slot], ...]]] = {}
        self._replies: dict[int, tuple[int, int, Ballot]] = {}
        self._read_ctx = 0
        self._read_acks: dict[int, int] = {}
        self._read_round_due = False
        self._reads_confirming: deque[ReadWaiter] = deque()
        self._reads_ready: deque[ReadWaiter] = deque()
        self._reads_waiting: list[ReadWaiter] = []
        self._dirty_from = 0
        self._snapshot_requested = 0
        self._accepted_ballot: Ballot = NO_BALLOT
        StagedEffects.__init__(self)
        self._restore(durable)
        self._hs_saved = HardState(self.promised, self.commit)
        self._reset_timer()
        self._handlers: dict[type[Message], Callable[[Any, int], None]] = {
            Prepare: self._on_prepare,
            Promise: self._on_promise,
            Accept: self._on_accept,
            Accepted: self._on_accepted,
            Nack: self._on_nack,
            Commit: self._on_commit,
            CommitAck: self._on_commit_ack,
            Learn: self._on_learn,
            Snapshot: self._on_snapshot,
            ReadProbe: self._on_read_probe,
            ReadAck: self._on_read_ack,
        }

    def __repr__(self) -> str:
        return (
            f"PaxosNode({self.node_id} {self.role} ballot={self.ballot} promised={self.promised}"
            f" last={self.last_slot} commit={self.commit} applied={self.applied})"
        )

    # -- slots ------------------------------------------------------------------------------

    @property
    def last_slot(self) -> int:
        """The highest slot held (accepted, learned or a hole), or ``offset``."""
        return self.offset + len(self.log)

    def entry(self, slot: int) -> Slot | None:
        """What this node holds at ``slot`` (None: compacted or beyond the end)."""
        if self.offset < slot <= self.last_slot:
            return self.log[slot - self.offset - 1]
        return None

    def _write(self, slot: int, value: Slot) -> None:
        if slot <= self.offset:
            return
        changed_from = min(slot, self.last_slot + 1)
        if not self._dirty_from or changed_from < self._dirty_from:
            self._dirty_from = changed_from  # holes filled in below are new records too
        while self.last_slot < slot - 1:
            self.log.append(HOLE)
        if slot == self.last_slot + 1:
            self.log.append(value)
        else:
            self.log[slot - self.offset - 1] = value
        if value.ballot > self._accepted_ballot:
            self._accepted_ballot = value.ballot

    # -- restart ------------------------------------------------------------------------------

    def _restore(self, durable: DurableState) -> None:
        hs = msgspec.convert(durable.records.get(HARD_STATE_KEY, HardState()), HardState)
        self.promised = tuple(hs.promised)  # type: ignore[assignment]
        self.max_round_seen = self.promised[0]
        snap = durable.snapshot
        if snap is not None:
            self.offset = snap.index
            self.snapshot = snap
            self._applies.append(Restore(snap.index, snap.data))
        start = durable.log_start
        if start > self.offset + 1:
            raise ValueError(f"durable log starts at {start}, after snapshot {self.offset}: a gap")
        if durable.last_index > self.offset:
            kept = durable.log[self.offset + 1 - start :]
            self.log = [_convert_slot(raw) for raw in kept]
        self.commit = max(self.offset, min(hs.commit, self.last_slot))
        self.applied = self.offset
        self.next_slot = self.last_slot + 1

    # -- the node contract ----------------------------------------------------------------------

    def step(self, msg: Message, from_id: int) -> None:
        """Handle one message from a peer or a client (InvalidMessage, before any change,
        for a message no correct sender produces)."""
        if is_client(from_id):
            check_client_message(msg)
            self._on_client(msg, from_id)
            return
        if from_id == self.node_id or from_id not in self.peers:
            raise InvalidMessage(
                f"{type(msg).__name__} from node {from_id}, not a peer of {self.node_id} "
                f"(peers: {list(self.peers)})"
            )
        if type(msg) not in _PEER_TYPES:
            raise InvalidMessage(f"{type(msg).__name__} is not a paxos peer message")
        _check_peer(msg)
        ballot: Ballot = tuple(msg.ballot)  # type: ignore[attr-defined]
        if ballot[0] > self.max_round_seen:
            self.max_round_seen = ballot[0]
        self._handlers[type(msg)](msg, from_id)

    def tick(self) -> None:
        """One logical tick: heartbeats and retransmission when leading, else the timer."""
        self.tick_now += 1
        if self.role == LEADER:
            self.heartbeat_elapsed_ticks += 1
            if self.heartbeat_elapsed_ticks >= self.cfg.heartbeat_interval_ticks:
                self.heartbeat_elapsed_ticks = 0
                self._heartbeat()
            return
        self.election_elapsed_ticks += 1
        if self.election_elapsed_ticks >= self.timeout_ticks:
            self._start_phase1()

    def advance(self, ready: Ready) -> None:
        """The batch is durable: journal its acceptances; our own count toward the quorum."""
        for op in ready.persist:
            if type(op) is not LogAppend:
                continue
            for i, slot in enumerate(op.entries):
                if slot.kind == KIND_HOLE:
                    continue
                index = op.first_index + i
                self.journal_seq += 1
                self.accept_journal.append((index, slot.ballot, slot))
                if self.role == LEADER and slot.ballot == self.ballot and index > self.commit:
                    self._acks.setdefault(index, set()).add(self.node_id)
        if self.role == LEADER:
            self._advance_commit()

    def status(self) -> dict[str, Any]:
        """What runtimes show in health reports and metrics."""
        return {
            "role": self.role,
            "leader": self.leader or None,
            "term": self.promised[0],
            "ballot": list(self.promised),
            "commit_index": self.commit,
            "applied_index": self.applied,
            "last_index": self.last_slot,
            "quorums": [self.q1, self.q2],
            "members": {"voters": list(self.peers), "outgoing": [], "learners": []},
        }

    def invariants(self) -> list[str]:
        """Broken local invariants (empty when all hold)."""
        problems = []
        if not self.offset <= self.applied <= self.commit <= self.last_slot:
            problems.append(
                f"order: offset {self.offset} applied {self.applied} commit {self.commit} "
                f"last {self.last_slot}"
            )
        if self.role != FOLLOWER and self.ballot > self.promised:
            problems.append(f"own ballot {self.ballot} above promise {self.promised}")
        return problems

    def snapshot_taken(self, index: int, data: bytes) -> None:
        """The runtime's answer to :class:`TakeSnapshot`: the state machine at ``index``."""
        if self._snapshot_requested == index:
            self._snapshot_requested = 0
        if index <= self.offset:
            return
        if index > self.applied:
            raise ValueError(f"snapshot at {index} beyond applied slot {self.applied}")
        snap = SnapshotSave(index, 0, data)
        self._persist.append(snap)
        self._persist.append(LogCompact(index))
        self._compact(index)
        self.snapshot = snap

    def _compact(self, index: int) -> None:
        drop = min(index - self.offset, len(self.log))
        del self.log[:drop]
        self.offset = index
        if self._dirty_from and self._dirty_from <= index:
            self._dirty_from = index + 1 if self.last_slot > index else 0

    # -- timers and phase 1 ---------------------------------------------------------------------

    def _reset_timer(self) -> None:
        cfg = self.cfg
        spread = cfg.election_jitter_ticks << min(self.failures, cfg.max_backoff_doublings)
        self.timeout_ticks = cfg.election_timeout_ticks + self._rng.randrange(0, spread)
        self.election_elapsed_ticks = 0

    def _start_phase1(self) -> None:
        """Run phase 1 for every slot above our chosen prefix with a fresh, higher ballot."""
        self._drop_leader_state()
        round_ = max(self.promised[0], self.max_round_seen) + 1
        self.max_round_seen = round_
        self.ballot = (round_, self.node_id)
        self.promised = self.ballot
        self.role = CANDIDATE
        self.leader = 0
        self._reset_timer()
        self.failures += 1
        self._promises = {self.node_id: (self.offset, self._accepted_above(self.commit))}
        prepare = Prepare(self.ballot, self.commit)
        for peer in self.others:
            self._send(peer, prepare)
        self._check_promises()

    def _accepted_above(self, commit: int) -> tuple[tuple[int, Slot], ...]:
        first = max(commit, self.offset) + 1
        return tuple(
            (s, slot)
            for s, slot in enumerate(self.log[first - self.offset - 1 :], first)
            if slot.kind != KIND_HOLE
        )

    def _promise_or_nack(self, raw: Any, from_id: int, *, candidate: bool = False) -> Ballot | None:
        """A ballot from a (would-be) leader: below our promise, nack it and return None;
        else promise it (a ``candidate``'s ballot names no leader yet), restart the election
        timer and return it."""
        ballot: Ballot = tuple(raw)
        if ballot < self.promised:
            self._send(from_id, Nack(ballot, self.promised))
            return None
        self._raise_promise(ballot, leader=0 if candidate else ballot[1])
        self._reset_timer()
        return ballot

    def _on_prepare(self, m: Prepare, from_id: int) -> None:
        ballot = self._promise_or_nack(m.ballot, from_id, candidate=True)
        if ballot is None:
            return
        if m.commit < self.offset and self.snapshot is not None:
            self._send(from_id, Snapshot(ballot, self.offset, self.snapshot.data))
        accepted = self._accepted_above(m.commit)
        self._send(from_id, Promise(ballot, self.commit, self.offset, accepted))

    def _on_promise(self, m: Promise, from_id: int) -> None:
        if self.role != CANDIDATE or tuple(m.ballot) != self.ballot:
            return
        self._promises[from_id] = (m.offset, tuple(m.accepted))
        self._check_promises()

    def _check_promises(self) -> None:
        if len(self._promises) < self.q1:
            return
        if self.commit < max(offset for offset, _ in self._promises.values()):
            return  # a promiser compacted slots we lack: wait for its snapshot
        self._become_leader()

    def _adopted(self) -> dict[int, Slot]:
        """Per slot above our commit, the value of the highest ballot any promise reports."""
        adopted: dict[int, Slot] = {}
        lowest = mut.ADOPT_LOWEST_BALLOT in self._mutants
        for node in sorted(self._promises):
            for s, raw in self._promises[node][1]:
                slot = _convert_slot(raw)
                if s <= self.commit:
                    continue
                known = adopted.get(s)
                if known is None or (
                    slot.ballot < known.ballot if lowest else slot.ballot > known.ballot
                ):
                    adopted[s] = slot
        return adopted

    def _become_leader(self) -> None:
        adopted = self._adopted()
        end = max(adopted, default=self.commit)
        self.role = LEADER
        self.leader = self.node_id
        self.failures = 0
        self._promises = {}
        self._acks = {}
        for s in range(self.commit + 1, end + 1):
            slot = adopted.get(s)
            if slot is None:
                if mut.GAP_SKIPPED in self._mutants:
                    continue
                slot = Slot(self.ballot, KIND_NOOP, None)
            elif mut.IGNORE_PHASE1_VALUES in self._mutants:
                slot = Slot(self.ballot, KIND_NOOP, None)
            self._write(s, Slot(self.ballot, slot.kind, slot.value))
        self.recovered_through = end
        self.next_slot = max(end, self.last_slot) + 1
        self._sent_through = self.commit
        self._read_acks = {}
        self.heartbeat_elapsed_ticks = 0
        self._heartbeat()

    def _raise_promise(self, ballot: Ballot, leader: int) -> None:
        """Promise ``ballot`` (>= ours); a proposer with a lower ballot steps down."""
        if ballot > self.promised:
            self.promised = ballot
        if self.role != FOLLOWER and ballot > self.ballot:
            self._step_down()
        if leader:
            self.leader = leader
            self.failures = 0

    def _step_down(self) -> None:
        self._drop_leader_state()
        self.role = FOLLOWER
        self.leader = 0
        self._reset_timer()

    def _drop_leader_state(self) -> None:
        self._promises = {}
        self._acks = {}
        self._replies = {}
        self._reads_confirming.clear()
        self._reads_ready.clear()
        self._reads_waiting = []
        self._read_round_due = False

    def _on_nack(self, m: Nack, from_id: int) -> None:
        promised: Ballot = tuple(m.promised)  # type: ignore[assignment]
        if self.role == FOLLOWER or tuple(m.ballot) != self.ballot or promised <= self.ballot:
            return
        if promised > self.promised:
            self.promised = promised
        self._step_down()

    # -- phase 2 (acceptor) -------------------------------------------------------------------

    def _on_accept(self, m: Accept, from_id: int) -> None:
        ballot: Ballot = tuple(m.ballot)  # type: ignore[assignment]
        if ballot < self.promised and mut.ACCEPT_LOWER_BALLOT not in self._mutants:
            self._send(from_id, Nack(ballot, self.promised))
            return
        if ballot >= self.promised:
            self._raise_promise(ballot, leader=ballot[1])
            self._reset_timer()
        if m.first > self.last_slot + MAX_HOLE_SLOTS:
            self._learn_through(ballot, m.commit)
            return  # far behind: catch up first (the leader re-sends)
        for s, raw in enumerate(m.slots, m.first):
            if s > self.commit:
                slot = _convert_slot(raw)
                self._write(s, Slot(ballot, slot.kind, slot.value))
        last = m.first + len(m.slots) - 1
        if ballot == self.promised:
            self._learn_through(ballot, m.commit)
        self._send(from_id, Accepted(ballot, m.first, last, self.commit))

    # -- phase 2 (leader) ---------------------------------------------------------------------

    def _on_accepted(self, m: Accepted, from_id: int) -> None:
        if self.role != LEADER or tuple(m.ballot) != self.ballot:
            return
        for s in range(max(m.first, self.commit + 1), m.last + 1):
            slot = self.entry(s)
            if slot is not None and slot.ballot == self.ballot:
                self._acks.setdefault(s, set()).add(from_id)
        self._advance_commit()

    def _advance_commit(self) -> None:
        needed = self.q2 - 1 if mut.COMMIT_BEFORE_QUORUM in self._mutants else self.q2
        moved = False
        while self.commit < self.last_slot:
            s = self.commit + 1
            slot = self.entry(s)
            assert slot is not None
            if slot.kind == KIND_HOLE and mut.GAP_SKIPPED in self._mutants:
                pass  # the mutant treats a gap as nothing to wait for
            elif slot.ballot != self.ballot or len(self._acks.get(s, ())) < max(needed, 1):
                break
            self._acks.pop(s, None)
            self.commit = s
            moved = True
        if moved:
            self._on_commit_moved()

    def _on_commit_moved(self) -> None:
        notice = Commit(self.ballot, self.commit)
        for peer in self.others:
            self._send(peer, notice)
        if self.commit >= self.recovered_through and self._reads_waiting:
            waiting, self._reads_waiting = self._reads_waiting, []
            for read in waiting:
                self._start_read(read)

    def _send_accepts(self, peer: int, first: int, last: int) -> None:
        """Accept messages for slots ``first..last`` to ``peer``, in batches."""
        size = self.cfg.max_batch_slots
        for start in range(first, last + 1, size):
            end = min(last, start + size - 1)
            slots = tuple(self.log[start - self.offset - 1 : end - self.offset])
            self._send(peer, Accept(self.ballot, start, slots, self.commit))

    def _flush_proposals(self) -> None:
        """Send newly proposed slots, within the pipelining window."""
        first = max(self._sent_through, self.commit, self.offset) + 1
        last = min(self.last_slot, self.commit + self.cfg.max_inflight_slots)
        if first > last:
            return
        for peer in self.others:
            self._send_accepts(peer, first, last)
        self._sent_through = last

    def _heartbeat(self) -> None:
        """Commit notice to every learner; re-send what a peer has not acknowledged."""
        beat = Commit(self.ballot, self.commit, heartbeat=True)
        sent = min(self._sent_through, self.last_slot)
        size = self.cfg.max_batch_slots
        for peer in self.others:
            self._send(peer, beat)
            missing = [
                s for s in range(self.commit + 1, sent + 1) if peer not in self._acks.get(s, ())
            ]
            if missing:
                self._send_accepts(peer, missing[0], min(sent, missing[0] + size - 1))
        if self._reads_confirming:
            self._read_round_due = True

    # -- learners ----------------------------------------------------------------------------

    def _on_commit(self, m: Commit, from_id: int) -> None:
        ballot = self._promise_or_nack(m.ballot, from_id)
        if ballot is None:
            return
        self._learn_through(ballot, m.commit)
        if m.heartbeat:
            self._send(from_id, CommitAck(ballot, self.commit))

    def _learn_through(self, ballot: Ballot, commit: int) -> None:
        """Slots through ``commit`` are chosen; ours hold the chosen value where we accepted
        the announcing leader's own proposal (its ballot)."""
        skip_gaps = mut.GAP_SKIPPED in self._mutants
        while self.commit < commit:
            slot = self.entry(self.commit + 1)
            if slot is None:
                break
            if slot.ballot != ballot and not (skip_gaps and slot.kind == KIND_HOLE):
                break
            self.commit += 1

    def _on_commit_ack(self, m: CommitAck, from_id: int) -> None:
        if self.role != LEADER or tuple(m.ballot) != self.ballot or m.commit >= self.commit:
            return
        if m.commit < self.offset and self.snapshot is not None:
            self._send(from_id, Snapshot(self.ballot, self.offset, self.snapshot.data))
            return
        first = max(m.commit, self.offset) + 1
        last = min(self.commit, first + self.cfg.max_batch_slots - 1)
        slots = tuple(self.log[first - self.offset - 1 : last - self.offset])
        self._send(from_id, Learn(self.ballot, first, slots))

    def _on_learn(self, m: Learn, from_id: int) -> None:
        """Chosen values: safe to take whatever our promise (they can never change)."""
        for s, raw in enumerate(m.slots, m.first):
            if s <= self.commit:
                continue
            if s != self.commit + 1:
                break
            slot = _convert_slot(raw)
            if slot.kind == KIND_HOLE:
                break
            if self.entry(s) != slot:
                self._write(s, slot)
            self.commit = s

    def _on_snapshot(self, m: Snapshot, from_id: int) -> None:
        if m.index <= self.commit:
            return
        snap = SnapshotSave(m.index, 0, m.data)
        self._persist.append(snap)
        self._persist.append(LogCompact(m.index))
        self._compact(m.index)
        self.snapshot = snap
        self.commit = self.applied = m.index
        self._applies.append(Restore(m.index, m.data))
        for s in [s for s in self._replies if s <= m.index]:
            del self._replies[s]
        for s in [s for s in self._acks if s <= m.index]:
            del self._acks[s]
        self.next_slot = max(self.next_slot, self.last_slot + 1)
        if self.role == CANDIDATE:
            self._check_promises()

    # -- applying ----------------------------------------------------------------------------

    def _emit_applies(self) -> None:
        replies = self._replies
        for s in range(self.applied + 1, self.commit + 1):
            slot = self.entry(s)
            assert slot is not None
            if slot.kind != KIND_COMMAND:
                continue
            waiting = replies.pop(s, None) if replies else None
            if waiting is not None and waiting[2] == slot.ballot:
                self._applies.append(Apply(s, slot.value, waiting[0], waiting[1]))
            else:
                self._applies.append(Apply(s, slot.value))
        self.applied = max(self.applied, self.commit)
        reads = self._reads_ready
        while reads and reads[0].read_index <= self.applied:
            read = reads.popleft()
            self._applies.append(
                Apply(self.applied, read.query, read.client, read.request_id, True)
            )
        if self._snapshot_requested == 0 and (
            self.applied - self.offset >= self.cfg.snapshot_threshold_slots
        ):
            self._snapshot_requested = self.applied
            self._services.append(TakeSnapshot(self.applied))

    def _prepare(self) -> None:
        """Turn pending decisions into effects (batched once per ready)."""
        if self.role == LEADER:
            self._flush_proposals()
            if self._read_round_due:
                self._read_round_due = False
                probe = ReadProbe(self.ballot, self._read_ctx)
                for peer in self.others:
                    self._send(peer, probe)
        if self.applied < self.commit or self._reads_ready:
            self._emit_applies()
        if self._dirty_from:
            first = max(self._dirty_from, self.offset + 1)
            self._dirty_from = 0
            if first <= self.last_slot:
                entries = tuple(self.log[first - self.offset - 1 :])
                self._persist.append(LogAppend(first, entries))
        if self._hs_saved.promised != self.promised or self._hs_saved.commit != self.commit:
            self._hs_saved = HardState(self.promised, self.commit)
            promised = self.promised
            if mut.PROMISE_NOT_PERSISTED in self._mutants:
                # only ballots we accepted at or ran ourselves reach the disk
                promised = max(self._accepted_ballot, self.ballot)
            self._persist.append(PutRecord(HARD_STATE_KEY, HardState(promised, self.commit)))

    # -- clients ---------------------------------------------------------------------------

    def _on_client(self, msg: Message, client: int) -> None:
        if isinstance(msg, ClientRequest):
            self._on_client_request(msg, client)
        elif isinstance(msg, ReadRequest):
            self._on_read_request(msg, client)
        elif isinstance(msg, AdminRequest):
            error = f"{NOT_SUPPORTED}: paxos has a fixed set of acceptors ({msg.action!r} refused)"
            self._send(client, ClientReply(msg.request_id, False, None, self._hint(), error))
        else:
            raise InvalidMessage(f"{type(msg).__name__} is not a client request")

    def _hint(self) -> int | None:
        return self.leader if self.leader and self.leader != self.node_id else None

    def _reply_error(self, client: int, request_id: int, error: str) -> None:
        self._send(client, ClientReply(request_id, False, leader_hint=self._hint(), error=error))

    def _on_client_request(self, m: ClientRequest, client: int) -> None:
        if self.role != LEADER:
            self._reply_error(client, m.request_id, "not_leader")
            return
        if len(self._replies) >= self.cfg.max_pending_proposals:
            self._reply_error(client, m.request_id, "busy")
            return
        slot = self.next_slot
        self.next_slot += 1
        self._replies[slot] = (client, m.request_id, self.ballot)
        self._write(slot, Slot(self.ballot, KIND_COMMAND, m.command))

    def _on_read_request(self, m: ReadRequest, client: int) -> None:
        if m.consistency == READ_SERIALIZABLE:
            self._applies.append(Apply(self.applied, m.query, client, m.request_id, True))
            return
        if self.role != LEADER:
            self._reply_error(client, m.request_id, "not_leader")
            return
        pending = len(self._reads_confirming) + len(self._reads_ready) + len(self._reads_waiting)
        if pending >= self.cfg.max_pending_reads:
            self._reply_error(client, m.request_id, "busy")
            return
        read = ReadWaiter(client, m.request_id, m.query)
        if self.commit < self.recovered_through:
            self._reads_waiting.append(read)  # slots adopted in phase 1 are not chosen yet
            return
        self._start_read(read)

    def _start_read(self, read: ReadWaiter) -> None:
        read.read_index = self.commit
        if mut.READ_WITHOUT_QUORUM in self._mutants:
            self._reads_ready.append(read)
            return
        self._read_ctx += 1
        read.ctx = self._read_ctx
        self._reads_confirming.append(read)
        self._read_round_due = True
        self._confirm_reads()

    def _confirm_reads(self) -> None:
        """Reads whose probe round a phase-2 quorum answered are safe to serve: every
        phase-1 quorum of a higher ballot meets that quorum, so no later leader chose
        anything before the round."""
        acks = sorted((*self._read_acks.values(), self._read_ctx), reverse=True)
        confirmed = acks[self.q2 - 1] if len(acks) >= self.q2 else 0
        reads = self._reads_confirming
        while reads and reads[0].ctx <= confirmed:
            self._reads_ready.append(reads.popleft())

    def _on_read_probe(self, m: ReadProbe, from_id: int) -> None:
        ballot = self._promise_or_nack(m.ballot, from_id)
        if ballot is not None:
            self._send(from_id, ReadAck(ballot, m.ctx))

    def _on_read_ack(self, m: ReadAck, from_id: int) -> None:
        if self.role != LEADER or tuple(m.ballot) != self.ballot:
            return
        if m.ctx > self._read_acks.get(from_id, 0):
            self._read_acks[from_id] = m.ctx
            self._confirm_reads()


def _convert_slot(raw: Any) -> Slot:
    """A slot as stored or received (typed, or an untyped array after a wire or a WAL)."""
    if type(raw) is Slot:
        if type(raw.ballot) is tuple:
            return raw
        return Slot(tuple(raw.ballot), raw.kind, raw.value)  # type: ignore[arg-type]
    return msgspec.convert(raw, Slot)


def _check_peer(msg: Message) -> None:
    """Refuse fields no correct peer sends (negative slots, malformed ballots)."""
    ballot = msg.ballot  # type: ignore[attr-defined]
    if len(ballot) != 2 or not all(0 <= part <= MAX_WIRE_INT for part in ballot):
        raise InvalidMessage(f"{type(msg).__name__}: malformed ballot {ballot!r}")
    for name in ("commit", "first", "last", "index", "offset", "ctx"):
        value = getattr(msg, name, 0)
        if value < 0:
            raise InvalidMessage(f"{type(msg).__name__}: negative {name} {value}")
        if value > MAX_WIRE_INT:
            raise InvalidMessage(f"{type(msg).__name__}: {name} {value} out of range")
    first = getattr(msg, "first", 1)
    if isinstance(msg, (Accept, Accepted, Learn)) and first < 1:
        raise InvalidMessage(f"{type(msg).__name__}: slot {first} below 1")
