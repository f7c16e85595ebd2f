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

from pnyx.core import DurableState, InvalidMessage, Message, Rng, is_client
from pnyx.protocols.commit.common import (
    MAX_RESENDS_PER_TICK,
    CommitConfig,
    CommitNode,
    Host,
    check_participants,
    check_submit,
    decode_record,
    put_state,
    rerecord,
)
from pnyx.protocols.commit.messages import (
    Decided,
    Decision,
    DecisionAck,
    Inquire,
    Prepare,
    SubmitTxn,
    Vote,
    Voted,
)


class _CoordTxn:
    """A transaction the 2PC coordinator has not finished."""

    __slots__ = ("acked", "client", "committing", "participants", "request_id", "votes", "waited")

    def __init__(self, participants: tuple[int, ...], client: int | None, request_id: int) -> None:
        self.participants = participants
        self.client = client
        self.request_id = request_id
        self.votes: dict[int, bool] = {}
        self.committing = False
        self.acked: set[int] = set()
        self.waited = 0


class TwoPcCoordinator:
    """The coordinator's side of 2PC (presumed abort)."""

    def __init__(
        self, host: Host, participants: tuple[int, ...], config: CommitConfig, durable: DurableState
    ) -> None:
        self.host = host
        self.participants = participants
        self.config = config
        self.active: dict[int, _CoordTxn] = {}
        """Undecided transactions and commits not yet acknowledged by every participant."""
        self.finished: set[int] = set()
        """Committed transactions every participant acknowledged (logged as ``end``)."""
        self._recover(durable)

    def _recover(self, durable: DurableState) -> None:
        for key, value in durable.records.items():
            if not key.startswith("txn/"):
                continue
            txn = int(key[4:])
            state, participants = decode_record(value)
            if state == "end":
                self.finished.add(txn)
            elif state == "committed":
                entry = _CoordTxn(participants, None, 0)
                entry.committing = True
                self.active[txn] = entry
                self.host.record(Decided(txn, self.host.node_id, True, participants, "recovery"))
            else:
                raise ValueError(f"2PC coordinator record {key} has state {state!r}")

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

    def _on_submit(self, msg: SubmitTxn, client: int) -> None:
        if not is_client(client):
            raise InvalidMessage(f"SubmitTxn from non-client {client}")
        problem = check_submit(msg, self.participants)
        if problem:
            self.host.reply(client, msg.request_id, None, problem)
            return
        if msg.txn in self.active or msg.txn in self.finished:
            return  # a duplicate: the first copy is being (or was) answered
        self.active[msg.txn] = _CoordTxn(msg.participants, client, msg.request_id)
        for p in msg.participants:
            self.host.send(p, Prepare(msg.txn, msg.participants))

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
        entry.waited = 0
        put_state(self.host, txn, "committed", entry.participants)
        self.host.record(Decided(txn, self.host.node_id, True, entry.participants, "coordinator"))
        for p in entry.participants:
            self.host.send(p, Decision(txn, True))
        if entry.client is not None:
            self.host.reply(entry.client, entry.request_id, "commit")

    def _abort(self, txn: int, entry: _CoordTxn) -> None:
        """Presumed abort: nothing logged; participants that miss this will inquire."""
        del self.active[txn]
        self.host.record(Decided(txn, self.host.node_id, False, entry.participants, "coordinator"))
        for p in entry.participants:
            if entry.votes.get(p, True):
                self.host.send(p, Decision(txn, False))
        if entry.client is not None:
            self.host.reply(entry.client, entry.request_id, "abort")

    def _on_ack(self, txn: int, participant: int) -> None:
        entry = self.active.get(txn)
        if entry is None or not entry.committing:
            return
        entry.acked.add(participant)
        if entry.acked >= set(entry.participants):
            del self.active[txn]
            self.finished.add(txn)
            put_state(self.host, txn, "end", entry.participants)

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
                for p in entry.participants:
                    if p not in entry.acked:
                        self.host.send(p, Decision(txn, True))

    def invariants(self) -> list[str]:
        """A transaction is either active or finished, never both."""
        both = sorted(set(self.active) & self.finished)
        return [f"2PC coordinator: txns {both[:5]} both active and finished"] if both else []


class _PartTxn:
    """A participant's view of one transaction."""

    __slots__ = ("participants", "state", "waited")

    def __init__(self, state: str, participants: tuple[int, ...]) -> None:
        self.state = state
        self.participants = participants
        self.waited = 0


class TwoPcParticipant:
    """A participant's side of 2PC: votes, stays in doubt while prepared, asks when unsure."""

    def __init__(
        self,
        host: Host,
        coordinator: int,
        group: tuple[int, ...],
        config: CommitConfig,
        rng: Rng,
        durable: DurableState,
    ) -> None:
        self.host = host
        self.coordinator = coordinator
        self.group = group
        self.config = config
        self.rng = rng
        self.txns: dict[int, _PartTxn] = {}
        self.undecided: dict[int, _PartTxn] = {}
        """The in-doubt transactions (voted yes, no decision), oldest first."""
        for key, value in durable.records.items():
            if key.startswith("txn/"):
                state, participants = decode_record(value)
                self._track(int(key[4:]), _PartTxn(state, participants))
                rerecord(host, int(key[4:]), state, participants)

    def _track(self, txn: int, entry: _PartTxn) -> None:
        self.txns[txn] = entry
        if entry.state == "uncertain":
            self.undecided[txn] = entry
        else:
            self.undecided.pop(txn, None)

    def in_doubt(self) -> list[int]:
        """Transactions this participant voted yes on and has no decision for."""
        return list(self.undecided)

    def step(self, msg: Message, from_id: int) -> bool:
        """Handle a prepare or a decision from the coordinator."""
        if isinstance(msg, Prepare):
            self._check_coordinator(from_id)
            check_participants(msg.txn, msg.participants, self.group)
            self._on_prepare(msg)
        elif isinstance(msg, Decision):
            self._check_coordinator(from_id)
            self._on_decision(msg)
        else:
            return False
        return True

    def _check_coordinator(self, from_id: int) -> None:
        if from_id != self.coordinator:
            raise InvalidMessage(f"2PC participant: message from {from_id}, not the coordinator")

    def _on_prepare(self, msg: Prepare) -> None:
        known = self.txns.get(msg.txn)
        if known is not None:
            self.host.send(self.coordinator, Vote(msg.txn, known.state != "aborted"))
            return
        yes = self.rng.randrange(0, 1000) >= self.config.no_vote_per_mille
        state = "uncertain" if yes else "aborted"
        self._track(msg.txn, _PartTxn(state, msg.participants))
        put_state(self.host, msg.txn, state, msg.participants)
        node = self.host.node_id
        self.host.record(Voted(msg.txn, node, yes, msg.participants))
        if not yes:
            self.host.record(Decided(msg.txn, node, False, msg.participants, "vote"))
        self.host.send(self.coordinator, Vote(msg.txn, yes))

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

    def invariants(self) -> list[str]:
        """Every state is one of the 2PC participant states."""
        bad = [t for t, e in self.undecided.items() if e.state != "uncertain"]
        return [f"2PC participant: txns {bad[:5]} listed in doubt but decided"] if bad else []


class TwoPcNode(CommitNode):
    """A 2PC process of the simulator: the coordinator (lowest id) or a participant."""

    def __init__(
        self,
        node_id: int,
        group: tuple[int, ...],
        rng: Rng,
        durable: DurableState,
        config: CommitConfig | None = None,
    ) -> None:
        super().__init__(node_id, group)
        cfg = config or CommitConfig()
        if node_id == self.coordinator_id:
            self.engine = TwoPcCoordinator(self, self.participant_ids, cfg, durable)
        else:
            self.engine = TwoPcParticipant(
                self, self.coordinator_id, self.participant_ids, cfg, rng, durable
            )


def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> TwoPcNode:
    """Factory for the simulator (default tuning)."""
    return TwoPcNode(node_id, peers, rng, durable)
