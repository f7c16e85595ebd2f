"""Two-phase commit with presumed abort (Gray 1978; Mohan, Lindsay and Obermarck 1986).

Phase 1: the coordinator sends :class:`Prepare`; a participant that votes yes first makes
its *prepared* state durable (it may no longer abort on its own: it is in doubt).  Phase 2:
when every vote is yes the coordinator makes the *commit* decision durable, then tells the
participants and the client; any no vote or a vote time-out aborts.  Presumed abort: an
abort is never logged by the coordinator, and a coordinator that has no record of a
transaction answers an inquiry with abort.  After a crash the coordinator re-reads its
commit records and resends them until acknowledged; an in-doubt participant re-reads its
prepared records and keeps asking the coordinator.  With the coordinator down for good,
participants that voted yes stay in doubt: 2PC blocks.
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
    Decided,
    Decision,
    DecisionAck,
    Inquire,
    Prepare,
    SubmitTxn,
    Vote,
)


class _CoordTxn(CoordEntry):
    """A transaction the 2PC coordinator has not finished."""

    __slots__ = ("committing", "votes")

    def __init__(self, participants: tuple[int, ...], client: int | None, request_id: int) -> None:
        super().__init__(participants, client, request_id)
        self.votes: dict[int, bool] = {}
        self.committing = False


class TwoPcCoordinator(CoordinatorBase[_CoordTxn]):
    """The coordinator's side of 2PC (presumed abort)."""

    LABEL = "2PC"

    def _new_entry(
        self, participants: tuple[int, ...], client: int | None, request_id: int
    ) -> _CoordTxn:
        return _CoordTxn(participants, client, request_id)

    def _first_message(self, txn: int, participants: tuple[int, ...]) -> Message:
        return Prepare(txn, participants)

    def _recover(self, durable: DurableState) -> None:
        for txn, state, participants in txn_records(durable):
            if state == "end":
                self.finished.add(txn)
            elif state == "committed":
                self._recover_commit(txn, participants).committing = True
            else:
                raise ValueError(f"2PC coordinator record txn/{txn} has state {state!r}")

    def step(self, msg: Message, from_id: int) -> bool:
        """Handle a client submission, a vote, an acknowledgement or an inquiry."""
        if isinstance(msg, SubmitTxn):
            self._on_submit(msg, from_id)
        elif isinstance(msg, Vote):
            self._check_peer(from_id)
            self._on_vote(msg, from_id)
        elif isinstance(msg, DecisionAck):
            self._check_peer(from_id)
            self._on_ack(msg.txn, from_id)
        elif isinstance(msg, Inquire):
            self._check_peer(from_id)
            self._on_inquire(msg.txn, from_id)
        else:
            return False
        return True

    def _check_peer(self, from_id: int) -> None:
        if from_id not in self.participants:
            raise InvalidMessage(f"2PC coordinator: message from {from_id}, not a participant")

    def _on_vote(self, msg: Vote, voter: int) -> None:
        entry = self.active.get(msg.txn)
        if entry is None:
            if msg.yes and msg.txn not in self.finished:
                # No record: presumed abort (the vote outlived a crash or the abort).
                self.host.send(voter, Decision(msg.txn, False))
            return
        if entry.committing or voter not in entry.participants:
            return
        entry.votes[voter] = msg.yes
        if not msg.yes:
            self._abort(msg.txn, entry)
        elif len(entry.votes) == len(entry.participants):
            self._commit(msg.txn, entry)

    def _commit(self, txn: int, entry: _CoordTxn) -> None:
        """The decision is durable before anyone hears of it (same batch: persist first)."""
        entry.committing = True
        self._announce_commit(txn, entry)

    def _abort(self, txn: int, entry: _CoordTxn) -> None:
        """Presumed abort: nothing logged; participants that miss this will inquire."""
        told = [p for p in entry.participants if entry.votes.get(p, True)]
        self._announce_abort(txn, entry, told)

    def _on_ack(self, txn: int, participant: int) -> None:
        entry = self.active.get(txn)
        if entry is None or not entry.committing:
            return
        entry.acked.add(participant)
        if entry.acked >= set(entry.participants):
            self._on_commit_ack(txn, entry)

    def _on_inquire(self, txn: int, participant: int) -> None:
        entry = self.active.get(txn)
        if txn in self.finished or (entry is not None and entry.committing):
            self.host.send(participant, Decision(txn, True))
        elif entry is None:
            self.host.send(participant, Decision(txn, False))  # presumed abort
        # else: still collecting votes; the vote time-out decides

    def tick(self) -> None:
        """Time out votes (abort) and resend unacknowledged commit decisions."""
        budget = MAX_RESENDS_PER_TICK
        for txn, entry in list(self.active.items()):
            if budget <= 0:
                break
            entry.waited += 1
            if not entry.committing and entry.waited >= self.config.vote_timeout_ticks:
                budget -= 1
                self._abort(txn, entry)
            elif entry.committing and entry.waited % self.config.resend_ticks == 0:
                budget -= 1
                self._resend_commit(txn, entry)


class _PartTxn(PartEntry):
    """A participant's view of one transaction."""

    __slots__ = ("waited",)

    def __init__(self, state: str, participants: tuple[int, ...]) -> None:
        super().__init__(state, participants)
        self.waited = 0


class TwoPcParticipant(ParticipantBase[_PartTxn]):
    """A participant's side of 2PC: votes, stays in doubt while prepared, asks when unsure."""

    LABEL = "2PC"

    def _new_entry(self, state: str, participants: tuple[int, ...]) -> _PartTxn:
        return _PartTxn(state, participants)

    def in_doubt(self) -> list[int]:
        """Transactions this participant voted yes on and has no decision for."""
        return list(self.undecided)

    def step(self, msg: Message, from_id: int) -> bool:
        """Handle a prepare or a decision from the coordinator."""
        if isinstance(msg, Prepare):
            self._check_coordinator(from_id)
            check_participants(msg.txn, msg.participants, self.group)
            self._vote(msg.txn, msg.participants)
        elif isinstance(msg, Decision):
            self._check_coordinator(from_id)
            self._on_decision(msg)
        else:
            return False
        return True

    def _check_coordinator(self, from_id: int) -> None:
        if from_id != self.coordinator:
            raise InvalidMessage(f"2PC participant: message from {from_id}, not the coordinator")

    def _on_decision(self, msg: Decision) -> None:
        entry = self.txns.get(msg.txn)
        if entry is not None and entry.state == "uncertain":
            entry.state = "committed" if msg.commit else "aborted"
            self._track(msg.txn, entry)
            put_state(self.host, msg.txn, entry.state, entry.participants)
            node = self.host.node_id
            self.host.record(Decided(msg.txn, node, msg.commit, entry.participants, "decision"))
        if msg.commit or entry is not None:
            self.host.send(self.coordinator, DecisionAck(msg.txn))

    def tick(self) -> None:
        """In doubt: keep asking the coordinator (it may have crashed and forgotten)."""
        budget = MAX_RESENDS_PER_TICK
        for txn, entry in self.undecided.items():
            entry.waited += 1
            if entry.waited % self.config.resend_ticks == 0:
                self.host.send(self.coordinator, Inquire(txn))
                budget -= 1
                if budget <= 0:
                    break


class TwoPcNode(EngineNode):
    """A 2PC process of the simulator: the coordinator (lowest id) or a participant."""

    COORDINATOR = TwoPcCoordinator
    PARTICIPANT = TwoPcParticipant


def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> TwoPcNode:
    """Factory for the simulator (default tuning)."""
    return TwoPcNode(node_id, peers, rng, durable)
