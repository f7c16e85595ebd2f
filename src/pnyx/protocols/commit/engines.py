"""What the 2PC and 3PC engines have in common: the coordinator's bookkeeping (admitting a
client's transaction, announcing a decision, resending a commit until acknowledged) and the
participant's (recovery from its records, its single vote per transaction).

The protocol-specific steps stay in :mod:`pnyx.protocols.commit.twopc` and
:mod:`pnyx.protocols.commit.threepc`; these bases only hold what is the same in both.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from pnyx.core import DurableState, InvalidMessage, Message, Rng, is_client
from pnyx.protocols.commit.common import (
    CommitConfig,
    CommitNode,
    Host,
    check_submit,
    decode_record,
    put_state,
    rerecord,
)
from pnyx.protocols.commit.messages import Decided, Decision, SubmitTxn, Vote, Voted


def txn_records(durable: DurableState) -> Iterator[tuple[int, str, tuple[int, ...]]]:
    """The transaction records ``(txn, state, participants)`` of ``durable``, in its order."""
    for key, value in durable.records.items():
        if key.startswith("txn/"):
            state, participants = decode_record(value)
            yield int(key[4:]), state, participants


class EngineBase:
    """The engine interface (:class:`~pnyx.protocols.commit.common.Engine`) that the
    coordinator and participant bases leave to the protocols."""

    def step(self, msg: Message, from_id: int) -> bool:
        """Handle ``msg``; False when it is not for this engine."""
        raise NotImplementedError

    def tick(self) -> None:
        """One tick."""
        raise NotImplementedError


class CoordEntry:
    """What a coordinator keeps of a transaction it has not finished."""

    __slots__ = ("acked", "client", "participants", "request_id", "waited")

    def __init__(self, participants: tuple[int, ...], client: int | None, request_id: int) -> None:
        self.participants = participants
        self.client = client
        self.request_id = request_id
        self.acked: set[int] = set()
        self.waited = 0


C = TypeVar("C", bound=CoordEntry)


class CoordinatorBase(EngineBase, Generic[C]):
    """A coordinator's state and the steps 2PC and 3PC take alike.  Subclasses name the
    protocol (``LABEL``), build their entries (``_new_entry``) and the first message of a
    transaction (``_first_message``)."""

    LABEL = "commit"

    def __init__(
        self, host: Host, participants: tuple[int, ...], config: CommitConfig, durable: DurableState
    ) -> None:
        self.host = host
        self.participants = participants
        self.config = config
        self.active: dict[int, C] = {}
        """Undecided transactions and commits not yet acknowledged by every participant."""
        self.finished: set[int] = set()
        """Committed transactions every participant acknowledged (logged as ``end``)."""
        self._recover(durable)

    def _recover(self, durable: DurableState) -> None:
        """Rebuild the state from the records of ``durable`` (at construction)."""
        raise NotImplementedError

    def _new_entry(self, participants: tuple[int, ...], client: int | None, request_id: int) -> C:
        raise NotImplementedError

    def _first_message(self, txn: int, participants: tuple[int, ...]) -> Message:
        raise NotImplementedError

    def _recover_commit(self, txn: int, participants: tuple[int, ...]) -> C:
        """A logged commit found on restart: track it again and hand it to the monitor."""
        entry = self._new_entry(participants, None, 0)
        self.active[txn] = entry
        self.host.record(Decided(txn, self.host.node_id, True, participants, "recovery"))
        return entry

    def _on_submit(self, msg: SubmitTxn, client: int) -> None:
        if not is_client(client):
            raise InvalidMessage(f"SubmitTxn from non-client {client}")
        problem = check_submit(msg, self.participants)
        if problem:
            self.host.reply(client, msg.request_id, None, problem)
            return
        if msg.txn in self.active or msg.txn in self.finished:
            return  # a duplicate: the first copy is being (or was) answered
        self.active[msg.txn] = self._new_entry(msg.participants, client, msg.request_id)
        for p in msg.participants:
            self.host.send(p, self._first_message(msg.txn, msg.participants))

    def _announce_commit(self, txn: int, entry: C) -> None:
        """Log the commit, then tell the monitor, the participants and the client (the
        decision is durable before anyone hears of it: same batch, persist first)."""
        entry.waited = 0
        put_state(self.host, txn, "committed", entry.participants)
        self.host.record(Decided(txn, self.host.node_id, True, entry.participants, "coordinator"))
        for p in entry.participants:
            self.host.send(p, Decision(txn, True))
        if entry.client is not None:
            self.host.reply(entry.client, entry.request_id, "commit")

    def _announce_abort(self, txn: int, entry: C, told: list[int]) -> None:
        """Drop ``txn`` (an abort is not logged) and tell the monitor, ``told`` and the client."""
        del self.active[txn]
        self.host.record(Decided(txn, self.host.node_id, False, entry.participants, "coordinator"))
        for p in told:
            self.host.send(p, Decision(txn, False))
        if entry.client is not None:
            self.host.reply(entry.client, entry.request_id, "abort")

    def _on_commit_ack(self, txn: int, entry: C) -> None:
        """Every participant acknowledged the commit of ``txn``: log its end."""
        del self.active[txn]
        self.finished.add(txn)
        put_state(self.host, txn, "end", entry.participants)

    def _resend_commit(self, txn: int, entry: C) -> None:
        for p in entry.participants:
            if p not in entry.acked:
                self.host.send(p, Decision(txn, True))

    def invariants(self) -> list[str]:
        """A transaction is either active or finished, never both."""
        both = sorted(set(self.active) & self.finished)
        if not both:
            return []
        return [f"{self.LABEL} coordinator: txns {both[:5]} both active and finished"]


class PartEntry:
    """What a participant keeps of one transaction."""

    __slots__ = ("participants", "state")

    def __init__(self, state: str, participants: tuple[int, ...]) -> None:
        self.state = state
        self.participants = participants


P = TypeVar("P", bound=PartEntry)


class ParticipantBase(EngineBase, Generic[P]):
    """A participant's state, its recovery and its vote.  Subclasses build their entries
    (``_new_entry``) and name the states in which a transaction is undecided."""

    LABEL = "commit"
    UNDECIDED: tuple[str, ...] = ("uncertain",)

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
        self.txns: dict[int, P] = {}
        self.undecided: dict[int, P] = {}
        """The undecided transactions (voted yes, no decision), oldest first."""
        for txn, state, participants in txn_records(durable):
            self._track(txn, self._new_entry(state, participants))
            rerecord(host, txn, state, participants)

    def _new_entry(self, state: str, participants: tuple[int, ...]) -> P:
        raise NotImplementedError

    def _track(self, txn: int, entry: P) -> None:
        self.txns[txn] = entry
        if entry.state in self.UNDECIDED:
            self.undecided[txn] = entry
        else:
            self.undecided.pop(txn, None)

    def _vote(self, txn: int, participants: tuple[int, ...]) -> None:
        """Answer the coordinator's first message: once (a repeat gets the same answer),
        with the vote made durable before it is sent."""
        known = self.txns.get(txn)
        if known is not None:
            self.host.send(self.coordinator, Vote(txn, known.state != "aborted"))
            return
        yes = self.rng.randrange(0, 1000) >= self.config.no_vote_per_mille
        state = "uncertain" if yes else "aborted"
        self._track(txn, self._new_entry(state, participants))
        put_state(self.host, txn, state, participants)
        node = self.host.node_id
        self.host.record(Voted(txn, node, yes, participants))
        if not yes:
            self.host.record(Decided(txn, node, False, participants, "vote"))
        self.host.send(self.coordinator, Vote(txn, yes))

    def invariants(self) -> list[str]:
        """Undecided means in one of the ``UNDECIDED`` states."""
        bad = [t for t, e in self.undecided.items() if e.state not in self.UNDECIDED]
        if not bad:
            return []
        return [f"{self.LABEL} participant: txns {bad[:5]} listed undecided but decided"]


class EngineNode(CommitNode):
    """A process of the simulator: the coordinator (lowest id) or a participant.  Subclasses
    name the protocol's two engines (``COORDINATOR``, ``PARTICIPANT``)."""

    COORDINATOR: type[CoordinatorBase[Any]]
    PARTICIPANT: type[ParticipantBase[Any]]

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
        ids = self.participant_ids
        if node_id == self.coordinator_id:
            self.engine = self.COORDINATOR(self, ids, cfg, durable)
        else:
            self.engine = self.PARTICIPANT(self, self.coordinator_id, ids, cfg, rng, durable)
