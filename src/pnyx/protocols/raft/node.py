"""The Raft node: a pure state machine (Ongaro & Ousterhout 2014; Ongaro's thesis 2014).

Roles switch through ``_become_follower`` / ``_become_pre_candidate`` /
``_become_candidate`` / ``_become_leader``.  Everything the runtime must do comes out of
:meth:`RaftNode.ready` in one batch: persist (term, vote, log, snapshots) before send.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
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
from pnyx.protocols.raft import config as mut
from pnyx.protocols.raft.config import RaftConfig
from pnyx.protocols.raft.log import RaftLog
from pnyx.protocols.raft.membership import VOTE_LOST, VOTE_WON, Membership
from pnyx.protocols.raft.messages import (
    ADD_LEARNER,
    ENTRY_COMMAND,
    ENTRY_CONFIG,
    ENTRY_NOOP,
    HARD_STATE_KEY,
    PROMOTE,
    READ_SERIALIZABLE,
    REMOVE,
    REPLACE,
    TRANSFER,
    AdminRequest,
    AppendEntries,
    AppendResponse,
    ClientRequest,
    ConfigData,
    Entry,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    ReadRequest,
    RequestVote,
    SnapshotMeta,
    SnapshotResponse,
    TakeSnapshot,
    TimeoutNow,
    VoteResponse,
)
from pnyx.protocols.raft.progress import PROBE, REPLICATE, SNAPSHOT, Progress
from pnyx.protocols.raft.validate import check_client_message, check_peer_message

FOLLOWER = "follower"
PRE_CANDIDATE = "pre-candidate"
CANDIDATE = "candidate"
LEADER = "leader"

NO_NODE = 0
"""Node ids are positive; 0 means "nobody" (no vote, no known leader)."""

# BUGGIFY fault points (RaftConfig.buggify; README: BUGGIFY).  Each picks a behaviour that
# Raft allows but that a calm run rarely shows.
BUGGIFY_EARLY_ELECTION = "early-election"
"""An election timer set to the minimum of its range (split votes, duelling candidates)."""
BUGGIFY_STEP_DOWN = "step-down"
"""A leader steps down voluntarily (keeps its term and vote; someone else must take over)."""
BUGGIFY_LATE_HEARTBEAT = "late-heartbeat"
"""A heartbeat round goes out one tick late (still well within the election timeout)."""
BUGGIFY_NO_HINT = "no-hint"
"""A follower rejects an append without the skip-a-term hint (the leader backs off by one)."""
BUGGIFY_SMALL_BATCH = "small-batch"
"""An append carries fewer entries than allowed (previous-term entries travel separately)."""
BUGGIFY_TINY_CHUNK = "tiny-chunk"
"""A snapshot chunk of 1-16 bytes (long streams, many offsets, late duplicates)."""
BUGGIFY_EARLY_SNAPSHOT = "early-snapshot"
"""A snapshot as soon as one entry is applied past the last one (compaction races)."""
BUGGIFY_SNAPSHOT_RESTART = "snapshot-restart"
"""A leader gives up a snapshot stream and starts over (with its latest snapshot)."""
BUGGIFY_POINTS = (
    BUGGIFY_EARLY_ELECTION,
    BUGGIFY_STEP_DOWN,
    BUGGIFY_LATE_HEARTBEAT,
    BUGGIFY_NO_HINT,
    BUGGIFY_SMALL_BATCH,
    BUGGIFY_TINY_CHUNK,
    BUGGIFY_EARLY_SNAPSHOT,
    BUGGIFY_SNAPSHOT_RESTART,
)
STEP_DOWN_SCALE = 0.02
"""Step-down is drawn every leader tick: scaled down so leaders still get work done."""


class ReadWaiter(msgspec.Struct, array_like=True):
    """A linearizable read between its arrival and its answer."""

    client: int
    request_id: int
    query: Any
    ctx: int = 0
    read_index: int = 0


class RaftNode(StagedEffects):
    """One Raft server (implements :class:`pnyx.core.Node`).

    Runtime hooks beyond the node contract: ``Ready.services`` may hold a
    :class:`~pnyx.protocols.raft.messages.TakeSnapshot`; answer it with
    :meth:`snapshot_taken`.
    """

    def __init__(
        self,
        node_id: int,
        peers: tuple[int, ...],
        rng: Rng,
        durable: DurableState,
        config: RaftConfig | None = None,
    ) -> None:
        assert node_id > 0 and node_id in peers, f"node {node_id} not among peers {peers}"
        self.node_id = node_id
        self._peer_ids = frozenset(peers)
        self.cfg = config or RaftConfig()
        self._mutants = self.cfg.mutants
        self._rng = rng
        self._buggify_probability = self.cfg.buggify_probability if self.cfg.buggify else 0.0
        self.buggify_fired: dict[str, int] = {}
        """How often each BUGGIFY point fired (README: BUGGIFY)."""
        self.role = FOLLOWER
        self.elections_started = 0
        self.term = 0
        self.vote = NO_NODE
        self.leader = NO_NODE
        self.commit = 0
        self.applied = 0
        self.persisted_index = 0
        self.snapshot: SnapshotSave | None = None
        self.tick_now = 0
        self.election_elapsed_ticks = 0
        self.heartbeat_elapsed_ticks = 0
        self.randomized_timeout_ticks = 0
        self.votes: dict[int, bool] = {}
        self.progress: dict[int, Progress] = {}
        self.pending_conf_index = 0
        self.transfer_target = NO_NODE
        self.transfer_elapsed_ticks = 0
        self._lease_forbidden = False
        self._ack_ticks: dict[int, int] = {}
        self._lease_floor_tick = 0
        """Heartbeats sent before this tick of ours do not count toward the lease (a stall)."""
        self.vote_quiet_ticks = 0
        """A restarted node grants no (pre-)vote until this reaches 0 (see ``_restore``)."""
        self._read_acks: dict[int, int] = {}
        self._read_ctx = 0
        self._read_round_due = False
        self._reads_confirming: deque[ReadWaiter] = deque()
        self._reads_ready: deque[ReadWaiter] = deque()
        self._reads_waiting_commit: list[ReadWaiter] = []
        self._replies: dict[int, tuple[int, int, int]] = {}
        self._broadcast_due = False
        self._snapshot_requested = 0
        self._incoming: tuple[int, int, bytearray] | None = None
        self._hs_saved = HardState()
        StagedEffects.__init__(self)
        self.log = self._restore(durable, peers)
        self._reset_election_timer()
        self._handlers: dict[type[Message], Callable[[Any, int], None]] = {
            RequestVote: self._on_request_vote,
            VoteResponse: self._on_vote_response,
            AppendEntries: self._on_append,
            AppendResponse: self._on_append_response,
            Heartbeat: self._on_heartbeat,
            HeartbeatResponse: self._on_heartbeat_response,
            InstallSnapshot: self._on_install_snapshot,
            SnapshotResponse: self._on_snapshot_response,
            TimeoutNow: self._on_timeout_now,
        }

    def __repr__(self) -> str:
        return (
            f"RaftNode({self.node_id} {self.role} term={self.term} vote={self.vote} "
            f"last={self.log.last_index} commit={self.commit} applied={self.applied})"
        )

    # -- restart ----------------------------------------------------------------------------

    def _restore(self, durable: DurableState, peers: tuple[int, ...]) -> RaftLog:
        voters = [v for v in self.cfg.initial_voters or () if v in peers] or peers
        initial = Membership(voters, (), [p for p in peers if p not in voters])
        hs = msgspec.convert(durable.records.get(HARD_STATE_KEY, HardState()), HardState)
        self.term, self.vote = hs.term, hs.vote
        if hs.term > 0 and self.cfg.check_quorum and mut.RESTART_VOTES_AT_ONCE not in self._mutants:
            # A restart, not a fresh boot: before the crash we may have acknowledged a leader
            # whose lease still counts on us.  Its lease is shorter than an election timeout
            # from the acknowledgement, so staying out of elections that long keeps it safe.
            # (Leases and leader stickiness exist only with check-quorum.)
            self.vote_quiet_ticks = self.cfg.election_timeout_ticks
        snap = durable.snapshot
        if snap is None:
            log = RaftLog(0, 0, initial)
        else:
            meta = msgspec.convert(snap.meta, SnapshotMeta)
            log = RaftLog(snap.index, snap.term, Membership.from_data(meta.config))
            self.snapshot = snap
            self._applies.append(Restore(snap.index, snap.data))
        start = durable.log_start
        assert start <= log.offset + 1, (
            f"durable log starts at {start}, after snapshot index {log.offset}: a gap"
        )
        last = durable.last_index
        if last > log.offset:
            anchor_ok = log.offset < start or (
                _convert_entry(durable.entry(log.offset)).term == log.offset_term
            )
            if anchor_ok:
                kept = durable.log[log.offset + 1 - start :]
                log.append([_convert_entry(e) for e in kept])
        self.commit = max(log.offset, min(hs.commit, log.last_index))
        self.applied = log.offset
        self.persisted_index = log.last_index
        self._hs_saved = HardState(self.term, self.vote, self.commit)
        return log

    # -- the node contract --------------------------------------------------------------------

    def step(self, msg: Message, from_id: int) -> None:
        """Handle one message from a peer or a client.

        Raises :class:`pnyx.core.InvalidMessage`, before changing any state, for a message
        no correct sender produces: a client request from a node id, a peer message from a
        client id or from an unknown node, nonsense fields (see ``validate.py``).
        """
        if is_client(from_id):
            check_client_message(msg)
            self._on_client(msg, from_id)
            return
        msg = self._admit_peer(msg, from_id)
        term: int = msg.term  # type: ignore[attr-defined]
        if term > self.term:
            if not self._accept_higher_term(msg, from_id):
                return
        elif term < self.term and not self._answer_lower_term(msg, from_id):
            return
        self._handlers[type(msg)](msg, from_id)

    def _admit_peer(self, msg: Message, from_id: int) -> Message:
        """``msg`` checked and normalised, or InvalidMessage (nothing changed yet)."""
        if from_id == self.node_id or not self._known_node(from_id):
            raise InvalidMessage(
                f"{type(msg).__name__} from node {from_id}, which is not a peer of node "
                f"{self.node_id} (known: {sorted(self._peer_ids)})"
            )
        return check_peer_message(msg)

    def _known_node(self, node: int) -> bool:
        """Among the run's peers or a member of some configuration this node has seen."""
        if node in self._peer_ids:
            return True
        log = self.log
        if node in log.snapshot_config.members:
            return True
        return any(node in conf.members for _, conf in log.configs)

    def tick(self) -> None:
        """One logical tick: election timer, or heartbeats and check-quorum when leading."""
        self.tick_now += 1
        if self.vote_quiet_ticks:
            self.vote_quiet_ticks -= 1
        if self.role == LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def advance(self, ready: Ready) -> None:
        """The batch was carried out: entries it persisted now count toward our own match."""
        moved = False
        for op in ready.persist:
            if type(op) is LogAppend and op.entries:
                last = op.first_index + len(op.entries) - 1
                if last > self.persisted_index and self.log.term(last) == op.entries[-1].term:
                    self.persisted_index = last
                    moved = True
        if moved and self.role == LEADER:
            self._maybe_commit()

    # -- runtime feedback -------------------------------------------------------------------

    def clock_stalled(self, missed_ticks: int) -> None:
        """The runtime dropped ``missed_ticks`` ticks after a stall (the process or its event
        loop was held up): our tick count fell behind real time, so a lease measured in
        delivered ticks would last too long.  End the lease: only acknowledgements of
        heartbeats sent from now on count toward a new one."""
        if missed_ticks <= 0 or mut.LEASE_IGNORES_STALL in self._mutants:
            return
        self.tick_now += missed_ticks
        self._lease_floor_tick = self.tick_now
        self._ack_ticks = {}

    def status(self) -> dict[str, Any]:
        """What runtimes show in health reports and metrics (see :class:`pnyx.core.Node`)."""
        conf = self.log.config()
        return {
            "role": self.role,
            "leader": self.leader if self.leader != NO_NODE else None,
            "term": self.term,
            "commit_index": self.commit,
            "applied_index": self.applied,
            "last_index": self.log.last_index,
            "elections_started": self.elections_started,
            "members": {
                "voters": sorted(conf.voters),
                "outgoing": sorted(conf.outgoing),
                "learners": sorted(conf.learners),
            },
        }

    def snapshot_taken(self, index: int, data: bytes) -> None:
        """The runtime's answer to ``TakeSnapshot(index)``: the state machine's bytes at index."""
        if self._snapshot_requested == index:
            self._snapshot_requested = 0
        log = self.log
        if index <= log.offset:
            return  # overtaken by a snapshot installed from the leader meanwhile
        assert index <= self.applied, f"snapshot at {index} beyond applied {self.applied}"
        term = log.term(index)
        assert term is not None
        conf = log.config_at(index)
        recorded = 0 if mut.SNAPSHOT_DROPS_TERM in self._mutants else term
        snap = SnapshotSave(index, recorded, data, SnapshotMeta(conf.to_data()))
        self._persist.append(snap)
        self._persist.append(LogCompact(index))
        log.compact_through(index, term, conf)
        log.offset_term = recorded
        self.snapshot = snap

    def propose(self, commands: Sequence[Any]) -> int:
        """Leader only: append ``commands`` as one batch; the last index, or 0 if not leader."""
        if self.role != LEADER or self.transfer_target != NO_NODE:
            return 0
        self._append_as_leader([Entry(self.term, ENTRY_COMMAND, c) for c in commands])
        return self.log.last_index

    # -- terms -----------------------------------------------------------------------------

    def _in_lease(self) -> bool:
        """Heard from a live leader within the minimum election timeout (check-quorum)."""
        return (
            self.cfg.check_quorum
            and self.leader != NO_NODE
            and self.election_elapsed_ticks < self.cfg.election_timeout_ticks
        )

    def _accept_higher_term(self, msg: Message, from_id: int) -> bool:
        """A message from a later term; False when it must be ignored."""
        term: int = msg.term  # type: ignore[attr-defined]
        if isinstance(msg, RequestVote):
            if not msg.transfer and (self._in_lease() or self.vote_quiet_ticks):
                return False  # a live leader (maybe) exists: do not let this candidate disrupt it
            if self._removed_and_behind(msg, from_id):
                return False  # it could not get our vote; its term would only disrupt us
            if not msg.pre_vote:
                self._become_follower(term, NO_NODE)
            return True
        if isinstance(msg, VoteResponse) and msg.pre_vote and msg.granted:
            return True  # a granted pre-vote carries the term we would campaign in
        leader = from_id if isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot) else 0
        self._become_follower(term, leader)
        return True

    def _removed_and_behind(self, m: RequestVote, from_id: int) -> bool:
        """A candidate that is no voter of our latest configuration, which is committed in
        our view (so it was removed for good), with a log behind ours.  Such a node (an
        ex-leader that appended the C_new removing it and never learnt it committed) keeps
        campaigning; dropping its request is like losing the message, and saves the
        cluster from adopting its term over and over when pre-vote and check-quorum are off.
        """
        log = self.log
        if log.config().is_voter(from_id) or (log.configs and log.configs[-1][0] > self.commit):
            return False
        return not log.is_up_to_date(m.last_index, m.last_term)

    def _answer_lower_term(self, msg: Message, from_id: int) -> bool:
        """A message from an earlier term; True only under the stale-term mutant."""
        if isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot):
            if mut.STALE_TERM_ACCEPTED in self._mutants and isinstance(msg, AppendEntries):
                return True
            # Tell the stale leader about the new term so it steps down.
            self._send(from_id, AppendResponse(self.term, 0, reject=True))
        elif isinstance(msg, RequestVote) and msg.pre_vote:
            self._send(from_id, VoteResponse(self.term, False, pre_vote=True))
        return False

    # -- role switches ------------------------------------------------------------------------

    def _become_follower(self, term: int, leader: int) -> None:
        assert term >= self.term, f"term going back from {self.term} to {term}"
        was_leader = self.role == LEADER
        if term > self.term:
            self.term = term
            self.vote = NO_NODE
        self.role = FOLLOWER
        self.leader = leader
        self.election_elapsed_ticks = 0
        self._reset_election_timer()
        if was_leader:
            self._drop_leader_state()

    def _become_pre_candidate(self) -> None:
        assert self.role != LEADER, "a leader does not pre-campaign"
        self.role = PRE_CANDIDATE
        self.leader = NO_NODE
        self.votes = {self.node_id: True}
        last_index, last_term = self.log.last_index, self.log.last_term
        request = RequestVote(self.term + 1, last_index, last_term, pre_vote=True)
        for peer in self.log.config().all_voters():
            if peer != self.node_id:
                self._send(peer, request)
        self._tally()

    def _become_candidate(self, transfer: bool) -> None:
        assert self.role != LEADER, "a leader does not campaign"
        self.role = CANDIDATE
        self.elections_started += 1
        self.term += 1
        self.vote = self.node_id
        self.leader = NO_NODE
        self.votes = {self.node_id: True}
        last_index, last_term = self.log.last_index, self.log.last_term
        request = RequestVote(self.term, last_index, last_term, transfer=transfer)
        for peer in self.log.config().all_voters():
            if peer != self.node_id:
                self._send(peer, request)
        self._tally()

    def _become_leader(self) -> None:
        assert self.role == CANDIDATE, f"only a candidate becomes leader, not a {self.role}"
        self.role = LEADER
        self.leader = self.node_id
        self.election_elapsed_ticks = 0
        self.heartbeat_elapsed_ticks = 0
        self.transfer_target = NO_NODE
        self._lease_forbidden = False
        self._ack_ticks = {}
        self._read_acks = {}
        self.progress = {}
        self._sync_progress()
        self.pending_conf_index = self.log.last_index
        if mut.NO_NOOP_ON_ELECTION not in self._mutants:
            self._append_as_leader([Entry(self.term, ENTRY_NOOP)])
        self._broadcast_due = True
        self._maybe_commit()

    def _drop_leader_state(self) -> None:
        """Leadership lost: answer everyone waiting so they retry at the new leader."""
        for index, (client, request_id, _term) in sorted(self._replies.items()):
            del index
            self._reply_not_leader(client, request_id)
        self._replies = {}
        waiting = [*self._reads_waiting_commit, *self._reads_confirming, *self._reads_ready]
        for read in waiting:
            self._reply_not_leader(read.client, read.request_id)
        self._reads_waiting_commit = []
        self._reads_confirming.clear()
        self._reads_ready.clear()
        self.progress = {}
        self.transfer_target = NO_NODE
        self._read_round_due = False
        self._broadcast_due = False

    def _reset_election_timer(self) -> None:
        timeout = self.cfg.election_timeout_ticks
        jitter = self.cfg.election_jitter_ticks
        self.randomized_timeout_ticks = self._rng.randrange(timeout, timeout + jitter)
        if self._buggify(BUGGIFY_EARLY_ELECTION):
            self.randomized_timeout_ticks = timeout  # the earliest time the range allows

    def _buggify(self, point: str, scale: float = 1.0) -> bool:
        """Does fault point ``point`` fire now?  Never draws from the Rng when BUGGIFY is off
        (same seed, same trace as without the feature)."""
        p = self._buggify_probability
        if not p or self._rng.random() >= p * scale:
            return False
        self.buggify_fired[point] = self.buggify_fired.get(point, 0) + 1
        return True

    def _promotable(self) -> bool:
        """May this node campaign?  A voter of its latest configuration may; so may a voter
        of a configuration that is not yet committed in its view (the one in force at its
        commit index, or a later one): a change that removes it may still be undone or
        need it (thesis §4.2.2).  Votes are still counted by the latest configuration, so
        a removed candidate needs a quorum of C_new (not counting itself); as leader it
        steps down once C_new commits (``_after_commit``)."""
        log = self.log
        if log.config().is_voter(self.node_id):
            return True
        if not log.configs or log.configs[-1][0] <= self.commit:
            return False  # the latest configuration is committed: we are out for good
        if log.config_at(self.commit).is_voter(self.node_id):
            return True
        return any(conf.is_voter(self.node_id) for at, conf in log.configs if at > self.commit)

    def _campaign(self, transfer: bool) -> None:
        if not self._promotable():
            return
        self.election_elapsed_ticks = 0
        self._reset_election_timer()
        if self.cfg.pre_vote and not transfer:
            self._become_pre_candidate()
        else:
            self._become_candidate(transfer)

    # -- ticks ------------------------------------------------------------------------------

    def _tick_election(self) -> None:
        self.election_elapsed_ticks += 1
        if self.election_elapsed_ticks >= self.randomized_timeout_ticks:
            self.election_elapsed_ticks = 0
            self._reset_election_timer()
            if not self._promotable():
                # A learner (in its own, maybe stale, view) cannot campaign, but it has not
                # heard from its leader for a timeout: forget it, or the lease check would
                # make it ignore every candidate for ever — and C_new may need its vote.
                self.leader = NO_NODE
            self._campaign(transfer=False)

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed_ticks += 1
        self.election_elapsed_ticks += 1
        if self.election_elapsed_ticks >= self.cfg.election_timeout_ticks:
            self.election_elapsed_ticks = 0
            if self.cfg.check_quorum and not self._quorum_active():
                self._become_follower(self.term, NO_NODE)
                return
            if self.transfer_target != NO_NODE:
                self.transfer_target = NO_NODE  # the transfer timed out: lead on
        if mut.JOINT_LEAVE_DROPPED not in self._mutants:
            self._maybe_leave_joint()  # deferred while a transfer was pending
        for pr in self.progress.values():
            if pr.state == SNAPSHOT:
                pr.snapshot_idle_ticks += 1
                if pr.snapshot_idle_ticks > self.cfg.election_timeout_ticks or self._buggify(
                    BUGGIFY_SNAPSHOT_RESTART
                ):
                    pr.become_probe()  # the stream stalled: start over
        if self._buggify(BUGGIFY_STEP_DOWN, STEP_DOWN_SCALE):
            self._become_follower(self.term, NO_NODE)
            return
        interval = self.cfg.heartbeat_interval_ticks
        if self.heartbeat_elapsed_ticks >= interval:
            late_ok = self.heartbeat_elapsed_ticks == interval
            late_ok = late_ok and interval + 1 < self.cfg.election_timeout_ticks
            if not (late_ok and self._buggify(BUGGIFY_LATE_HEARTBEAT)):
                self._read_round_due = True

    def _quorum_active(self) -> bool:
        active = {p: pr.recent_active for p, pr in self.progress.items()}
        active[self.node_id] = True
        for pr in self.progress.values():
            pr.recent_active = False
        return self.log.config().vote_result(active) == VOTE_WON

    # -- elections --------------------------------------------------------------------------

    def _on_request_vote(self, m: RequestVote, from_id: int) -> None:
        if self.vote_quiet_ticks and not m.transfer:
            self._send(from_id, VoteResponse(self.term, False, pre_vote=m.pre_vote))
            return
        if m.pre_vote:
            can_vote = m.term > self.term or self.vote == from_id
        else:
            can_vote = self.vote == from_id or (self.vote == NO_NODE and self.leader == NO_NODE)
        log_ok = self.log.is_up_to_date(m.last_index, m.last_term)
        if mut.VOTE_IGNORES_LOG in self._mutants:
            log_ok = True
        if not (can_vote and log_ok):
            self._send(from_id, VoteResponse(self.term, False, pre_vote=m.pre_vote))
            return
        if m.pre_vote:
            self._send(from_id, VoteResponse(m.term, True, pre_vote=True))
            return
        self.vote = from_id
        self.election_elapsed_ticks = 0
        self._send(from_id, VoteResponse(self.term, True))

    def _on_vote_response(self, m: VoteResponse, from_id: int) -> None:
        if m.pre_vote:
            if self.role != PRE_CANDIDATE or (m.granted and m.term != self.term + 1):
                return
        elif self.role != CANDIDATE or m.term != self.term:
            return
        self.votes[from_id] = m.granted
        self._tally()

    def _tally(self) -> None:
        result = self.log.config().vote_result(self.votes)
        if mut.JOINT_COUNTS_NEW_ONLY in self._mutants:
            result = Membership(self.log.config().voters).vote_result(self.votes)
        if result == VOTE_WON:
            if self.role == PRE_CANDIDATE:
                self._become_candidate(transfer=False)
            else:
                self._become_leader()
        elif result == VOTE_LOST:
            self._become_follower(self.term, NO_NODE)

    def _on_timeout_now(self, m: TimeoutNow, from_id: int) -> None:
        if self.role == LEADER:
            return
        self._campaign(transfer=True)

    # -- replication: follower side ------------------------------------------------------------

    def _follow(self, leader: int) -> None:
        """A message from this term's leader: be its follower and reset the election timer."""
        if self.role != FOLLOWER:
            self._become_follower(self.term, leader)
        self.leader = leader
        self.election_elapsed_ticks = 0

    def _on_append(self, m: AppendEntries, from_id: int) -> None:
        if m.term < self.term:  # only under the stale-term mutant: obey a deposed leader
            if self.role != LEADER and self.log.term(m.prev_index) == m.prev_term:
                self._accept_entries(m)
                self._advance_commit_to(min(m.commit, m.prev_index + len(m.entries)))
            return
        assert self.role != LEADER, f"two leaders in term {self.term}: {self.node_id}, {from_id}"
        self._follow(from_id)
        if m.prev_index < self.commit:
            self._send(from_id, AppendResponse(self.term, self.commit))
            return
        if self.log.term(m.prev_index) != m.prev_term and not self._skips_term_check(m):
            self._reject_append(m, from_id)
            return
        self._accept_entries(m)
        last_new = m.prev_index + len(m.entries)
        self._advance_commit_to(min(m.commit, last_new))
        self._send(from_id, AppendResponse(self.term, last_new))

    def _skips_term_check(self, m: AppendEntries) -> bool:
        """Mutant: accept an append whose previous entry exists but has another term."""
        return (
            mut.APPEND_SKIPS_TERM_CHECK in self._mutants and self.log.term(m.prev_index) is not None
        )

    def _reject_append(self, m: AppendEntries, from_id: int) -> None:
        log = self.log
        conflict_term = log.term(m.prev_index)
        if conflict_term is None:
            hint_index, hint_term = log.last_index + 1, 0
        else:
            hint_index = m.prev_index
            while hint_index - 1 > max(log.offset, self.commit) and (
                log.term(hint_index - 1) == conflict_term
            ):
                hint_index -= 1
            hint_term = conflict_term
        if self._buggify(BUGGIFY_NO_HINT):
            hint_index, hint_term = m.prev_index, 0  # back off one entry (basic Raft)
        reply = AppendResponse(self.term, m.prev_index, True, hint_index, hint_term)
        self._send(from_id, reply)

    def _accept_entries(self, m: AppendEntries) -> None:
        """Append what is new; truncate only from the first entry whose term conflicts."""
        log = self.log
        entries = m.entries
        first = m.prev_index + 1
        last = log.last_index
        k = 0
        n = len(entries)
        while k < n and first + k <= last and log.term(first + k) == entries[k].term:
            k += 1
        if mut.TRUNCATE_MATCHING_SUFFIX in self._mutants and k == n and last >= first + n:
            self._truncate(first + n)
            self.commit = min(self.commit, log.last_index)
            self._persist.append(LogAppend(first + n, ()))
            return
        if k == n:
            return
        at = first + k
        if at <= last:
            assert at > self.commit, f"truncating committed entry {at} (commit {self.commit})"
            self._truncate(at)
        new = entries[k:]
        log.append(new)
        self._persist.append(LogAppend(at, new))

    def _truncate(self, index: int) -> None:
        self.log.truncate_from(index)
        self.persisted_index = min(self.persisted_index, index - 1)

    def _on_heartbeat(self, m: Heartbeat, from_id: int) -> None:
        self._follow(from_id)
        self._advance_commit_to(min(m.commit, self.log.last_index))
        reply = HeartbeatResponse(self.term, m.ctx, m.sent_tick, self.log.last_index)
        self._send(from_id, reply)

    def _advance_commit_to(self, index: int) -> None:
        if index > self.commit:
            self.commit = index
            self._after_commit()

    # -- snapshots: follower side ------------------------------------------------------------

    def _on_install_snapshot(self, m: InstallSnapshot, from_id: int) -> None:
        self._follow(from_id)
        if m.index <= self.commit:
            self._incoming = None
            self._send(from_id, AppendResponse(self.term, self.commit))
            return
        if mut.SNAPSHOT_OFFSET_OF_OTHER in self._mutants:
            buf = self._take_chunk_mutant(m)
            if buf is None:
                expected = len(self._incoming[2]) if self._incoming else 0
                self._send(from_id, SnapshotResponse(self.term, m.index, expected))
                return
        else:
            buf = self._take_chunk(m)
            if buf is None:
                self._answer_out_of_order_chunk(m, from_id)
                return
        if not m.done:
            self._send(from_id, SnapshotResponse(self.term, m.index, len(buf)))
            return
        self._incoming = None
        self._install(m, bytes(buf))
        self._send(from_id, SnapshotResponse(self.term, m.index, len(buf), done=True))

    def _take_chunk(self, m: InstallSnapshot) -> bytearray | None:
        """Add one chunk to the snapshot being received; None when it is out of order.

        The buffer is keyed by (leader term, snapshot index).  Chunk 0 starts a buffer only
        for a newer snapshot than the one held (a late duplicate of an older snapshot's
        first chunk must not throw away the newer one's bytes).
        """
        incoming = self._incoming
        key = (m.term, m.index)
        if m.offset == 0 and (incoming is None or incoming[:2] < key):
            self._incoming = incoming = (m.term, m.index, bytearray())
        if incoming is None or incoming[:2] != key or len(incoming[2]) != m.offset:
            return None
        incoming[2].extend(m.data)
        return incoming[2]

    def _answer_out_of_order_chunk(self, m: InstallSnapshot, from_id: int) -> None:
        """Tell the leader where to resume *this* snapshot: the buffer's length when it holds
        this snapshot, else 0 (start over).  A chunk of an older snapshot than the buffer's
        is stale (its leader has moved on): ignore it."""
        incoming = self._incoming
        key = (m.term, m.index)
        if incoming is not None and incoming[:2] > key:
            return
        resume = len(incoming[2]) if incoming is not None and incoming[:2] == key else 0
        self._send(from_id, SnapshotResponse(self.term, m.index, resume))

    def _take_chunk_mutant(self, m: InstallSnapshot) -> bytearray | None:
        """Mutant: any chunk 0 restarts the buffer; out-of-order chunks of another snapshot
        are answered with the other buffer's length (the livelock of issue 16, item 13)."""
        if m.offset == 0:
            self._incoming = (m.term, m.index, bytearray())
        incoming = self._incoming
        if incoming is None or incoming[:2] != (m.term, m.index) or len(incoming[2]) != m.offset:
            return None
        incoming[2].extend(m.data)
        return incoming[2]

    def _install(self, m: InstallSnapshot, data: bytes) -> None:
        log = self.log
        snap = SnapshotSave(m.index, m.snap_term, data, SnapshotMeta(m.config))
        self._persist.append(snap)
        if log.last_index > m.index and log.term(m.index) != m.snap_term:
            self._persist.append(LogAppend(m.index + 1, ()))
        self._persist.append(LogCompact(m.index))
        log.compact_through(m.index, m.snap_term, Membership.from_data(m.config))
        self.persisted_index = min(self.persisted_index, log.last_index)
        self.snapshot = snap
        self.commit = m.index
        self.applied = m.index
        self._applies.append(Restore(m.index, data))

    # -- leader: proposing -------------------------------------------------------------------

    def _append_as_leader(self, entries: list[Entry]) -> None:
        assert self.role == LEADER
        log = self.log
        first = log.last_index + 1
        log.append(entries)
        self._persist.append(LogAppend(first, tuple(entries)))
        self._broadcast_due = True
        if any(e.kind == ENTRY_CONFIG for e in entries):
            self._sync_progress()
        if mut.LEADER_APPLY_BEFORE_QUORUM in self._mutants:
            self.commit = log.last_index
            self._after_commit()

    def _sync_progress(self) -> None:
        """Track exactly the members of the configuration in force (besides ourselves)."""
        members = self.log.config().members
        for peer in list(self.progress):
            if peer not in members:
                del self.progress[peer]
        for peer in sorted(members):
            if peer != self.node_id and peer not in self.progress:
                pr = Progress(self.log.last_index + 1, self.cfg.max_inflight_msgs)
                pr.recent_active = True
                self.progress[peer] = pr

    # -- leader: replication ---------------------------------------------------------------------

    def _broadcast_append(self) -> None:
        for peer, pr in self.progress.items():
            self._send_append(peer, pr, allow_empty=pr.state == PROBE)

    def _send_append(self, peer: int, pr: Progress, allow_empty: bool) -> None:
        log = self.log
        max_entries = self.cfg.max_entries_per_msg
        if max_entries > 1 and self._buggify(BUGGIFY_SMALL_BATCH):
            max_entries = self._rng.randrange(1, max_entries)
        while pr.can_send():
            prev = pr.next - 1
            prev_term = log.term(prev)
            if prev_term is None:
                assert prev < log.offset, f"next index {pr.next} beyond last {log.last_index}"
                self._send_snapshot(peer, pr)
                return
            hi = min(log.last_index, prev + max_entries)
            if hi <= prev and not allow_empty:
                return
            entries = log.slice(prev + 1, hi + 1)
            self._send(peer, AppendEntries(self.term, prev, prev_term, entries, self.commit))
            pr.sent(hi, len(entries))
            allow_empty = False
            if pr.state != REPLICATE:
                return

    def _on_append_response(self, m: AppendResponse, from_id: int) -> None:
        pr = self.progress.get(from_id)
        if self.role != LEADER or pr is None:
            return
        pr.recent_active = True
        if m.reject:
            if pr.rejected(m.index, self._next_guess(m)):
                self._send_append(from_id, pr, allow_empty=True)
            return
        if pr.acked(m.index):
            if pr.state == PROBE or (
                pr.state == SNAPSHOT and pr.snapshot and pr.match >= pr.snapshot.index
            ):
                pr.become_replicate()
            self._maybe_commit()
            if self.transfer_target == from_id and pr.match == self.log.last_index:
                self._send(from_id, TimeoutNow(self.term))
        if self.role == LEADER:
            self._send_append(from_id, pr, allow_empty=False)

    def _next_guess(self, m: AppendResponse) -> int:
        """Where to probe next, skipping the follower's whole conflicting term (§5.3)."""
        if m.hint_term == 0:
            return m.hint_index
        log = self.log
        index = min(m.index, log.last_index)
        while index > log.offset:
            term = log.term(index)
            assert term is not None
            if term <= m.hint_term:
                return index + 1 if term == m.hint_term else m.hint_index
            index -= 1
        return m.hint_index

    def _on_heartbeat_response(self, m: HeartbeatResponse, from_id: int) -> None:
        pr = self.progress.get(from_id)
        if self.role != LEADER or pr is None:
            return
        pr.recent_active = True
        pr.probe_sent = False
        if m.sent_tick >= self._lease_floor_tick and m.sent_tick > self._ack_ticks.get(from_id, -1):
            self._ack_ticks[from_id] = m.sent_tick
        if m.ctx > self._read_acks.get(from_id, 0):
            self._read_acks[from_id] = m.ctx
            self._confirm_reads()
        if pr.match >= self.log.last_index:
            return
        if pr.state == REPLICATE:
            if m.last_index < pr.next - 1:
                pr.become_probe()  # appends were lost: find the follower's end again
            else:
                self._resync(from_id, pr)  # maybe only the acknowledgement was lost
                if not pr.can_send():
                    pr.free_one()
        self._send_append(from_id, pr, allow_empty=pr.state == PROBE)

    def _resync(self, peer: int, pr: Progress) -> None:
        """An empty append at the replication point: the answer restates the follower's match."""
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        if prev_term is not None:
            self._send(peer, AppendEntries(self.term, prev, prev_term, (), self.commit))

    def _broadcast_heartbeat(self) -> None:
        self.heartbeat_elapsed_ticks = 0
        for peer, pr in self.progress.items():
            commit = self.commit
            if mut.HEARTBEAT_COMMIT_UNCLAMPED not in self._mutants:
                commit = min(pr.match, commit)
            self._send(peer, Heartbeat(self.term, commit, self._read_ctx, self.tick_now))

    # -- leader: snapshots -----------------------------------------------------------------------

    def _send_snapshot(self, peer: int, pr: Progress) -> None:
        if pr.state != SNAPSHOT or pr.snapshot is None:
            snap = self.snapshot
            assert snap is not None, f"log compacted to {self.log.offset} without a snapshot"
            pr.become_snapshot(snap)
        snap = pr.snapshot
        assert snap is not None
        size = self.cfg.snapshot_chunk_bytes
        if self._buggify(BUGGIFY_TINY_CHUNK):
            size = self._rng.randrange(1, 17)
        offset = pr.snapshot_offset
        chunk = snap.data[offset : offset + size]
        done = offset + len(chunk) >= len(snap.data)
        meta = msgspec.convert(snap.meta, SnapshotMeta)
        msg = InstallSnapshot(self.term, snap.index, snap.term, meta.config, offset, chunk, done)
        self._send(peer, msg)

    def _on_snapshot_response(self, m: SnapshotResponse, from_id: int) -> None:
        pr = self.progress.get(from_id)
        if self.role != LEADER or pr is None:
            return
        pr.recent_active = True
        if pr.state != SNAPSHOT or pr.snapshot is None or pr.snapshot.index != m.index:
            return
        if m.done:
            pr.acked(m.index)
            pr.become_probe()
            self._send_append(from_id, pr, allow_empty=True)
            return
        if mut.SNAPSHOT_OFFSET_OF_OTHER in self._mutants:
            pr.snapshot_idle_ticks = 0
        elif m.next_offset > len(pr.snapshot.data):
            return  # not an offset of our snapshot
        elif m.next_offset > pr.snapshot_offset:
            pr.snapshot_idle_ticks = 0  # only real progress postpones the stall detector
        pr.snapshot_offset = m.next_offset
        self._send_snapshot(from_id, pr)

    # -- commit and apply --------------------------------------------------------------------

    def _maybe_commit(self) -> None:
        """Commit the largest index a quorum holds, if it is from our term (Figure 8)."""
        match = {peer: pr.match for peer, pr in self.progress.items()}
        match[self.node_id] = self.persisted_index
        conf = self.log.config()
        if mut.LEARNER_IN_QUORUM in self._mutants:
            conf = Membership(conf.voters | conf.learners, conf.outgoing)
        index = conf.committed_index(match, mut.JOINT_COUNTS_NEW_ONLY in self._mutants)
        if index <= self.commit:
            return
        if self.log.term(index) != self.term and (
            mut.COUNT_PREVIOUS_TERM_ENTRIES not in self._mutants
        ):
            return  # counting replicas commits only entries of our own term (§5.4.2)
        self.commit = index
        self._after_commit()

    def _after_commit(self) -> None:
        if self.role != LEADER:
            return
        if self._reads_waiting_commit and self.log.term(self.commit) == self.term:
            waiting, self._reads_waiting_commit = self._reads_waiting_commit, []
            for read in waiting:
                self._start_read(read)
        if self.pending_conf_index > self.commit:
            return
        if self.log.config().joint:
            self._maybe_leave_joint()
        elif not self.log.config().is_voter(self.node_id):
            self._become_follower(self.term, NO_NODE)  # removed: hand over to the rest

    def _maybe_leave_joint(self) -> None:
        """Once C_old,new is committed, propose C_new (§4.3).  A pending leadership transfer
        defers this (no proposals while the target catches up) until it ends: the transfer
        either hands over (the new leader leaves the joint configuration after its no-op
        commits) or times out (the next tick proposes)."""
        conf = self.log.config()
        if (
            self.role != LEADER
            or not conf.joint
            or self.pending_conf_index > self.commit
            or self.transfer_target != NO_NODE
        ):
            return
        self._propose_config(Membership(conf.voters, (), conf.learners))

    def _emit_applies(self) -> None:
        log = self.log
        replies = self._replies
        applies = self._applies
        index = self.applied
        for entry in log.slice(index + 1, self.commit + 1):
            index += 1
            if entry.kind != ENTRY_COMMAND:
                continue
            waiting = replies.pop(index, None) if replies else None
            if waiting is not None and waiting[2] == entry.term:
                applies.append(Apply(index, entry.data, waiting[0], waiting[1]))
            else:
                applies.append(Apply(index, entry.data))
        self.applied = index
        reads = self._reads_ready
        while reads and reads[0].read_index <= self.applied:
            read = reads.popleft()
            applies.append(Apply(read.read_index, read.query, read.client, read.request_id, True))
        self._maybe_request_snapshot()

    def _maybe_request_snapshot(self) -> None:
        if self._snapshot_requested or self.applied <= self.log.offset:
            return
        threshold = self.cfg.snapshot_threshold_entries
        if self._buggify(BUGGIFY_EARLY_SNAPSHOT):
            threshold = 1
        if self.applied - self.log.offset >= threshold:
            self._snapshot_requested = self.applied
            self._services.append(TakeSnapshot(self.applied))

    def _prepare(self) -> None:
        """Turn pending decisions into effects (batched once per ready)."""
        if self.role == LEADER:
            if self._broadcast_due:
                self._broadcast_due = False
                self._broadcast_append()
            if self._read_round_due:
                self._read_round_due = False
                self._broadcast_heartbeat()
        if self.applied < self.commit or self._reads_ready:
            self._emit_applies()
        vote = self.vote
        hs = self._hs_saved
        if hs.term != self.term or hs.vote != vote or hs.commit != self.commit:
            self._hs_saved = HardState(self.term, vote, self.commit)
            if mut.VOTE_NOT_PERSISTED in self._mutants:
                vote = NO_NODE
            self._persist.append(PutRecord(HARD_STATE_KEY, HardState(self.term, vote, self.commit)))

    # -- clients --------------------------------------------------------------------------------

    def _on_client(self, msg: Message, client: int) -> None:
        if isinstance(msg, ClientRequest):
            self._on_client_request(msg, client)
        elif isinstance(msg, ReadRequest):
            self._on_read_request(msg, client)
        elif isinstance(msg, AdminRequest):
            self._on_admin(msg, client)

    def _reply_not_leader(self, client: int, request_id: int) -> None:
        hint = self.leader if self.leader != self.node_id else None
        self._send(client, ClientReply(request_id, False, leader_hint=hint, error="not_leader"))

    def _reply_error(self, client: int, request_id: int, error: str) -> None:
        self._send(client, ClientReply(request_id, False, leader_hint=self.leader, error=error))

    def _on_client_request(self, m: ClientRequest, client: int) -> None:
        if self.role != LEADER:
            self._reply_not_leader(client, m.request_id)
            return
        if self.transfer_target != NO_NODE:
            self._reply_error(client, m.request_id, "transferring")
            return
        if len(self._replies) >= self.cfg.max_pending_proposals:
            self._reply_error(client, m.request_id, "busy")
            return
        self._replies[self.log.last_index + 1] = (client, m.request_id, self.term)
        self._append_as_leader([Entry(self.term, ENTRY_COMMAND, m.command)])

    def _on_read_request(self, m: ReadRequest, client: int) -> None:
        read = ReadWaiter(client, m.request_id, m.query)
        if m.consistency == READ_SERIALIZABLE:
            self._applies.append(Apply(self.applied, m.query, client, m.request_id, True))
            return
        if self.role != LEADER:
            self._reply_not_leader(client, m.request_id)
            return
        pending = len(self._reads_confirming) + len(self._reads_ready)
        if pending + len(self._reads_waiting_commit) >= self.cfg.max_pending_reads:
            self._reply_error(client, m.request_id, "busy")
            return
        if self.log.term(self.commit) != self.term:
            self._reads_waiting_commit.append(read)  # our no-op is not committed yet
            return
        self._start_read(read)

    def _start_read(self, read: ReadWaiter) -> None:
        read.read_index = self.commit
        if self._lease_valid() or mut.READ_INDEX_NO_HEARTBEAT in self._mutants:
            self._reads_ready.append(read)
            return
        self._read_ctx += 1
        read.ctx = self._read_ctx
        self._reads_confirming.append(read)
        self._read_round_due = True
        self._confirm_reads()

    def _confirm_reads(self) -> None:
        """Reads whose heartbeat round a quorum answered are safe to serve (ReadIndex)."""
        acks = dict(self._read_acks)
        acks[self.node_id] = self._read_ctx
        confirmed = self.log.config().committed_index(acks)
        reads = self._reads_confirming
        while reads and reads[0].ctx <= confirmed:
            self._reads_ready.append(reads.popleft())

    def _lease_valid(self) -> bool:
        if not self.cfg.lease_reads or self._lease_forbidden or self.transfer_target != NO_NODE:
            return False
        acks = dict(self._ack_ticks)
        acks[self.node_id] = self.tick_now
        start = self.log.config().committed_index(acks)
        lease_ticks = self.cfg.election_timeout_ticks - self.cfg.lease_drift_ticks
        return self.tick_now < start + lease_ticks

    # -- membership and leadership transfer ---------------------------------------------------

    def _on_admin(self, m: AdminRequest, client: int) -> None:
        if self.role != LEADER:
            self._reply_not_leader(client, m.request_id)
            return
        if m.action == TRANSFER:
            error = self._start_transfer(m.node)
        else:
            target = self._admin_target(m)
            error = target if isinstance(target, str) else self._propose_config(target)
        conf = self.log.config().to_data()  # lets an admin pick a sensible next change
        reply = ClientReply(m.request_id, not error, conf, self.leader, error)
        self._send(client, reply)

    def _admin_target(self, m: AdminRequest) -> Membership | str:
        """The configuration ``m`` asks for, or why it cannot be had now."""
        conf = self.log.config()
        node = m.node
        if conf.joint:
            return "config_change_pending"
        if m.action == ADD_LEARNER:
            if node in conf.members:
                return "already_member"
            return Membership(conf.voters, (), conf.learners | {node})
        if m.action == PROMOTE:
            pr = self.progress.get(node)
            if node not in conf.learners or pr is None:
                return "not_learner"
            if pr.match + self.cfg.learner_catch_up_entries < self.commit:
                return "learner_behind"
            return Membership(conf.voters | {node}, conf.voters, conf.learners - {node})
        if m.action == REPLACE:
            other = m.other
            pr = self.progress.get(other)
            if node not in conf.voters or other not in conf.learners or pr is None:
                return "not_replaceable"
            if pr.match + self.cfg.learner_catch_up_entries < self.commit:
                return "learner_behind"
            voters = (conf.voters - {node}) | {other}
            return Membership(voters, conf.voters, conf.learners - {other})
        if m.action == REMOVE:
            if node in conf.learners:
                return Membership(conf.voters, (), conf.learners - {node})
            if node not in conf.voters:
                return "not_member"
            if len(conf.voters) - 1 < max(1, m.min_voters):
                return "too_few_voters"
            return Membership(conf.voters - {node}, conf.voters, conf.learners)
        return f"unknown action {m.action!r}"

    def _propose_config(self, target: Membership) -> str:
        if self.pending_conf_index > self.commit:
            return "config_change_pending"
        if self.transfer_target != NO_NODE:
            return "transferring"
        self._append_as_leader([Entry(self.term, ENTRY_CONFIG, target.to_data())])
        self.pending_conf_index = self.log.last_index
        return ""

    def _start_transfer(self, target: int) -> str:
        if target == self.node_id:
            return ""
        pr = self.progress.get(target)
        conf = self.log.config()
        # Only a voter of the incoming configuration (C_new when joint) may take over: an
        # outgoing-only voter would lead a configuration it is about to leave.
        voter = (
            conf.is_voter(target)
            if mut.TRANSFER_TO_OUTGOING in self._mutants
            else (target in conf.voters)
        )
        if pr is None or not voter:
            return "not_voter"
        self.transfer_target = target
        self._lease_forbidden = True  # the successor's election ignores our lease
        self.election_elapsed_ticks = 0
        if pr.match == self.log.last_index:
            self._send(target, TimeoutNow(self.term))
        else:
            self._send_append(target, pr, allow_empty=True)
        return ""

    # -- plumbing ------------------------------------------------------------------------------

    # -- views for monitors and tests ------------------------------------------------------------

    def invariants(self) -> list[str]:
        """Broken local invariants, described (empty when all hold).  Cheap: O(members).

        Checked with ``if``, independent of ``assert``; the simulator calls this after every
        step of the node.  Each description starts with a short tag.
        """
        problems: list[str] = []
        log = self.log
        last = log.last_index
        if not self.applied <= self.commit <= last:
            problems.append(
                f"commit-order: applied {self.applied} <= commit {self.commit} <= "
                f"last index {last} broken"
            )
        if self.persisted_index > last:
            problems.append(f"persisted-beyond-log: persisted {self.persisted_index} > last {last}")
        if log.offset > self.commit:
            problems.append(f"snapshot-uncommitted: snapshot {log.offset} > commit {self.commit}")
        if self.snapshot is not None and self.snapshot.index != log.offset:
            problems.append(
                f"snapshot-offset: snapshot at {self.snapshot.index}, log offset {log.offset}"
            )
        if log.entries and log.entries[-1].term > self.term:
            problems.append(f"log-term-ahead: last entry term {log.last_term} > term {self.term}")
        problems += self._role_invariants()
        return problems

    def _role_invariants(self) -> list[str]:
        problems: list[str] = []
        role = self.role
        if role == LEADER:
            if self.leader != self.node_id or self.vote != self.node_id:
                problems.append(
                    f"leader-fields: leader of term {self.term} with leader={self.leader} "
                    f"vote={self.vote}"
                )
            problems += self._leader_invariants()
        elif role in (CANDIDATE, PRE_CANDIDATE):
            if self.leader != NO_NODE:
                problems.append(f"candidate-knows-leader: {role} with leader {self.leader}")
            if role == CANDIDATE and self.vote != self.node_id:
                problems.append(f"candidate-vote: candidate voted for {self.vote}")
        elif self.leader == self.node_id:
            problems.append(f"follower-leads: a {role} names itself leader")
        if role != LEADER and (self.progress or self.transfer_target != NO_NODE):
            problems.append(f"leader-state: a {role} keeps leader progress or a transfer")
        return problems

    def _leader_invariants(self) -> list[str]:
        problems: list[str] = []
        last = self.log.last_index
        conf = self.log.config()
        for peer, pr in self.progress.items():
            if pr.match > last or pr.next > last + 1:
                problems.append(
                    f"progress-beyond-log: {peer} match {pr.match} next {pr.next}, last {last}"
                )
        if self.persisted_index > last:
            problems.append(f"own-match-beyond-log: {self.persisted_index} > {last}")
        target = self.transfer_target
        if target != NO_NODE and target not in conf.voters:
            problems.append(
                f"transfer-target-not-incoming-voter: transfer to {target}, C_new voters "
                f"{sorted(conf.voters)}"
            )
        committed_in_term = self.log.term(self.commit) == self.term
        if (
            conf.joint
            and committed_in_term
            and self.pending_conf_index <= self.commit
            and (target == NO_NODE)
        ):
            problems.append(
                f"joint-config-not-left: C_old,new committed (through {self.commit}) and no "
                "transfer pending, but C_new was not proposed"
            )
        return problems

    @property
    def config(self) -> Membership:
        """The configuration in force (the latest in the log)."""
        return self.log.config()

    def config_data(self) -> ConfigData:
        return self.log.config().to_data()


def _convert_entry(raw: Any) -> Entry:
    """Entries come back from disk as Structs (simulator) or decoded msgpack (real runtime);
    a configuration entry's data then is an array too and becomes a ConfigData again."""
    entry = raw if type(raw) is Entry else msgspec.convert(raw, Entry)
    if entry.kind == ENTRY_CONFIG and type(entry.data) is not ConfigData:
        entry = Entry(entry.term, ENTRY_CONFIG, msgspec.convert(entry.data, ConfigData))
    return entry


NodeBuilder = Callable[[int, tuple[int, ...], Rng, DurableState], "RaftNode"]


def make_raft_node(config: RaftConfig) -> NodeBuilder:
    """A node factory (the :class:`pnyx.core.NodeFactory` shape) bound to ``config``."""

    def factory(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> RaftNode:
        return RaftNode(node_id, peers, rng, durable, config)

    return factory
