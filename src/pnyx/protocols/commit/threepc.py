"""Three-phase commit with Skeen's termination protocol (Skeen 1981, "Nonblocking commit
protocols"; Skeen and Stonebraker 1983).

Phases: :class:`CanCommit` (participants vote; a yes voter is *uncertain*), :class:`PreCommit`
(every vote was yes; participants become *precommitted* and acknowledge), DoCommit (a
:class:`Decision` with ``commit``).  No state that is adjacent to both commit and abort
exists, which lets the operational sites decide without the coordinator: a participant that
hears nothing on an undecided transaction for ``termination_timeout_ticks`` runs the
termination protocol.  It asks the other participants for their state; the lowest-id
participant that answered is the recovery coordinator and decides from the states it
collected: someone committed → commit; someone aborted or never voted → abort; someone
precommitted → PreCommit the uncertain ones, then commit; everyone uncertain → abort.

This is safe only when "no answer" means "crashed": under a network partition (or lost
messages, or a long pause) two sides decide from different states, and one commits while
the other aborts.  The simulator shows it (``pnyx sim 3pc``).
"""

from __future__ import annotations

from pnyx.core import DurableState, InvalidMessage, Message, Rng
from pnyx.protocols.commit.common import (
    MAX_RESENDS_PER_TICK,
    check_participants,
    put_state,
)
from pnyx.protocols.commit.engines import (
    CoordEntry,
    CoordinatorBase,
    EngineNode,
    PartEntry,
    ParticipantBase,
    txn_records,
)
from pnyx.protocols.commit.messages import (
    STATES,
    CanCommit,
    Decided,
    Decision,
    DecisionAck,
    PreCommit,
    PreCommitAck,
    StateReply,
    StateRequest,
    SubmitTxn,
    Vote,
)


class _CoordTxn(CoordEntry):
    """A transaction the 3PC coordinator has not finished."""

    __slots__ = ("phase", "votes")

    def __init__(self, participants: tuple[int, ...], client: int | None, request_id: int) -> None:
        super().__init__(participants, client, request_id)
        self.votes: set[int] = set()
        self.phase = "voting"
        """``voting`` → ``precommit`` → ``committed`` (waiting for acknowledgements)."""


class ThreePcCoordinator(CoordinatorBase[_CoordTxn]):
    """The coordinator's side of 3PC.  It logs only commit decisions; after a crash it
    forgets undecided transactions and leaves them to the participants' termination
    protocol (it never presumes abort: participants may have terminated with commit)."""

    LABEL = "3PC"

    def _recover(self, durable: DurableState) -> None:
        for txn, state, members in txn_records(durable):
            if state == "end":
                self.finished.add(txn)
            else:
                self._recover_commit(txn, members).phase = "committed"

    def _new_entry(
        self, participants: tuple[int, ...], client: int | None, request_id: int
    ) -> _CoordTxn:
        return _CoordTxn(participants, client, request_id)

    def _first_message(self, txn: int, participants: tuple[int, ...]) -> Message:
        return CanCommit(txn, participants)

    def step(self, msg: Message, from_id: int) -> bool:
        """Handle a client submission, a vote or an acknowledgement."""
        if isinstance(msg, SubmitTxn):
            self._on_submit(msg, from_id)
            return True
        if not isinstance(msg, Vote | PreCommitAck | DecisionAck):
            return False
        if from_id not in self.participants:
            raise InvalidMessage(f"3PC coordinator: {type(msg).__name__} from {from_id}")
        entry = self.active.get(msg.txn)
        if entry is None or from_id not in entry.participants:
            return True  # unknown: forgotten in a crash, or already finished (no presumption)
        if isinstance(msg, Vote):
            self._on_vote(msg.txn, entry, from_id, msg.yes)
        elif isinstance(msg, PreCommitAck) and entry.phase == "precommit":
            entry.acked.add(from_id)
            if len(entry.acked) == len(entry.participants):
                self._commit(msg.txn, entry)
        elif isinstance(msg, DecisionAck) and entry.phase == "committed":
            entry.acked.add(from_id)
            if len(entry.acked) == len(entry.participants):
                self._on_commit_ack(msg.txn, entry)
        return True

    def _on_vote(self, txn: int, entry: _CoordTxn, voter: int, yes: bool) -> None:
        if entry.phase != "voting":
            return
        if not yes:
            self._abort(txn, entry)
            return
        entry.votes.add(voter)
        if len(entry.votes) == len(entry.participants):
            self._precommit(txn, entry)

    def _precommit(self, txn: int, entry: _CoordTxn) -> None:
        """Every vote is yes: phase 2."""
        entry.phase = "precommit"
        entry.waited = 0
        for p in entry.participants:
            self.host.send(p, PreCommit(txn, entry.participants))

    def _abort(self, txn: int, entry: _CoordTxn) -> None:
        self._announce_abort(txn, entry, list(entry.participants))

    def _commit(self, txn: int, entry: _CoordTxn) -> None:
        entry.phase = "committed"
        entry.acked = set()
        self._announce_commit(txn, entry)

    def tick(self) -> None:
        """Vote time-out → abort; PreCommit-ack time-out → commit (Skeen: the sites that did
        not acknowledge learn it on recovery); resend commit decisions until acknowledged."""
        budget = MAX_RESENDS_PER_TICK
        cfg = self.config
        for txn, entry in list(self.active.items()):
            if budget <= 0:
                break
            entry.waited += 1
            if entry.phase == "voting" and entry.waited >= cfg.vote_timeout_ticks:
                budget -= 1
                self._abort(txn, entry)
            elif entry.phase == "precommit" and entry.waited >= cfg.ack_timeout_ticks:
                budget -= 1
                self._commit(txn, entry)
            elif entry.phase == "committed" and entry.waited % cfg.resend_ticks == 0:
                budget -= 1
                self._resend_commit(txn, entry)


class _Termination:
    """One run of the termination protocol, led by this participant."""

    __slots__ = ("phase", "states", "waited")

    def __init__(self, own_id: int, own_state: str) -> None:
        self.phase = "collect"
        """``collect`` states, then (as recovery coordinator) ``precommit`` the uncertain."""
        self.states: dict[int, str] = {own_id: own_state}
        self.waited = 0


class _PartTxn(PartEntry):
    __slots__ = ("idle", "term")

    def __init__(self, state: str, participants: tuple[int, ...]) -> None:
        super().__init__(state, participants)
        self.idle = 0
        self.term: _Termination | None = None


class ThreePcParticipant(ParticipantBase[_PartTxn]):
    """A participant's side of 3PC, with the termination protocol."""

    LABEL = "3PC"
    UNDECIDED = ("uncertain", "precommitted")

    def _new_entry(self, state: str, participants: tuple[int, ...]) -> _PartTxn:
        return _PartTxn(state, participants)

    def step(self, msg: Message, from_id: int) -> bool:
        """Handle coordinator and termination-protocol messages."""
        if isinstance(msg, CanCommit):
            self._check_sender(from_id, coordinator_only=True)
            check_participants(msg.txn, msg.participants, self.group)
            self._vote(msg.txn, msg.participants)
        elif isinstance(msg, PreCommit):
            self._check_sender(from_id)
            self._on_precommit(msg.txn, from_id)
        elif isinstance(msg, Decision):
            self._check_sender(from_id)
            self._on_decision(msg, from_id)
        elif isinstance(msg, StateRequest):
            self._check_sender(from_id, participant_only=True)
            check_participants(msg.txn, msg.participants, self.group)
            self._on_state_request(msg, from_id)
        elif isinstance(msg, StateReply):
            self._check_sender(from_id, participant_only=True)
            if msg.state not in STATES:
                raise InvalidMessage(f"StateReply state {msg.state!r} not one of {STATES}")
            self._on_state_reply(msg, from_id)
        elif isinstance(msg, PreCommitAck | DecisionAck):
            self._check_sender(from_id, participant_only=True)  # acks to a recovery coordinator
        else:
            return False
        return True

    def _check_sender(
        self, from_id: int, *, coordinator_only: bool = False, participant_only: bool = False
    ) -> None:
        ok = from_id == self.coordinator or from_id in self.group
        if coordinator_only:
            ok = from_id == self.coordinator
        elif participant_only:
            ok = from_id in self.group
        if not ok:
            raise InvalidMessage(
                f"3PC participant {self.host.node_id}: unexpected sender {from_id}"
            )

    # -- the coordinator's phases --------------------------------------------------------

    def _on_precommit(self, txn: int, sender: int) -> None:
        entry = self.txns.get(txn)
        if entry is None or entry.state == "aborted":
            return  # never voted yes here, or already aborted: no acknowledgement
        entry.idle = 0
        if entry.state == "uncertain":
            entry.state = "precommitted"
            put_state(self.host, txn, entry.state, entry.participants)
        self.host.send(sender, PreCommitAck(txn))

    def _on_decision(self, msg: Decision, sender: int) -> None:
        entry = self.txns.get(msg.txn)
        if entry is not None and msg.txn in self.undecided:
            self._decide(msg.txn, entry, msg.commit, "decision")
        if entry is not None or not msg.commit:
            self.host.send(sender, DecisionAck(msg.txn))

    def _decide(self, txn: int, entry: _PartTxn, commit: bool, by: str) -> None:
        entry.state = "committed" if commit else "aborted"
        entry.term = None
        self._track(txn, entry)
        put_state(self.host, txn, entry.state, entry.participants)
        self.host.record(Decided(txn, self.host.node_id, commit, entry.participants, by))

    # -- the termination protocol --------------------------------------------------------

    def _on_state_request(self, msg: StateRequest, asker: int) -> None:
        entry = self.txns.get(msg.txn)
        if entry is None:
            # Never voted: abort unilaterally, so a late CanCommit gets a no.
            entry = _PartTxn("aborted", msg.participants)
            self._track(msg.txn, entry)
            put_state(self.host, msg.txn, "aborted", msg.participants)
            node = self.host.node_id
            self.host.record(Decided(msg.txn, node, False, msg.participants, "unilateral"))
            self.host.send(asker, StateReply(msg.txn, "unknown"))
            return
        self.host.send(asker, StateReply(msg.txn, entry.state))

    def _on_state_reply(self, msg: StateReply, replier: int) -> None:
        entry = self.undecided.get(msg.txn)
        if entry is None or entry.term is None or entry.term.phase != "collect":
            return
        if replier in entry.participants:
            entry.term.states[replier] = msg.state

    def tick(self) -> None:
        """Count silence on undecided transactions; run the termination protocol."""
        budget = MAX_RESENDS_PER_TICK
        for txn, entry in list(self.undecided.items()):
            if budget <= 0:
                break
            term = entry.term
            if term is None:
                entry.idle += 1
                if entry.idle >= self.config.termination_timeout_ticks:
                    budget -= 1
                    self._start_termination(txn, entry)
                continue
            term.waited += 1
            everyone = len(term.states) == len(entry.participants)
            if term.phase == "collect" and (everyone or term.waited >= self.config.collect_ticks):
                budget -= 1
                self._resolve(txn, entry, term)
            elif term.phase == "precommit" and term.waited >= self.config.collect_ticks:
                budget -= 1
                self._lead_decision(txn, entry, True)

    def _start_termination(self, txn: int, entry: _PartTxn) -> None:
        entry.term = _Termination(self.host.node_id, entry.state)
        for p in entry.participants:
            if p != self.host.node_id:
                self.host.send(p, StateRequest(txn, entry.participants))

    def _resolve(self, txn: int, entry: _PartTxn, term: _Termination) -> None:
        """Skeen's decision rule over the states collected."""
        seen = set(term.states.values())
        if "committed" in seen:
            self._decide(txn, entry, True, "termination")
        elif seen & {"aborted", "unknown"}:
            self._decide(txn, entry, False, "termination")
        elif min(term.states) != self.host.node_id:
            entry.term = None  # a lower participant answered: it is the recovery coordinator
            entry.idle = 0
        elif "precommitted" in seen:
            term.phase = "precommit"
            term.waited = 0
            if entry.state == "uncertain":
                entry.state = "precommitted"
                put_state(self.host, txn, entry.state, entry.participants)
            for p, state in sorted(term.states.items()):
                if state == "uncertain" and p != self.host.node_id:
                    self.host.send(p, PreCommit(txn, entry.participants))
        else:
            self._lead_decision(txn, entry, False)

    def _lead_decision(self, txn: int, entry: _PartTxn, commit: bool) -> None:
        """As recovery coordinator: decide and tell every other participant."""
        self._decide(txn, entry, commit, "termination")
        for p in entry.participants:
            if p != self.host.node_id:
                self.host.send(p, Decision(txn, commit))


class ThreePcNode(EngineNode):
    """A 3PC process of the simulator: the coordinator (lowest id) or a participant."""

    COORDINATOR = ThreePcCoordinator
    PARTICIPANT = ThreePcParticipant


def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> ThreePcNode:
    """Factory for the simulator (default tuning)."""
    return ThreePcNode(node_id, peers, rng, durable)
