"""What the commit engines share: tuning, the host interface, and input validation.

The coordinator and participant engines of 2PC and 3PC are pure objects that write their
effects through a :class:`Host`.  :class:`CommitNode` is the host of the simulator (one
process, a local disk); a host that replicates ``persist`` through a Raft group instead
(so that a coordinator's log survives the loss of its process) can drive the same engines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pnyx.core import (
    Apply,
    ClientReply,
    InvalidMessage,
    Message,
    Outbox,
    PersistOp,
    PutRecord,
    Send,
    is_client,
)
from pnyx.protocols.commit.messages import Decided, SubmitTxn, Voted

MAX_PARTICIPANTS = 64
"""Bound on the participants of one transaction."""

MAX_TXN_ID = 2**62
"""Largest transaction id accepted from the wire."""

MAX_RESENDS_PER_TICK = 64
"""Bound on transactions one engine retransmits or times out in one tick."""


@dataclass(frozen=True)
class CommitConfig:
    """Timeouts (in ticks) and the participants' vote behaviour."""

    vote_timeout_ticks: int = 10
    """Coordinator: votes not all in after this long → abort."""
    ack_timeout_ticks: int = 10
    """3PC coordinator: PreCommit acks not all in after this long → commit anyway (Skeen)."""
    resend_ticks: int = 5
    """Retransmission period of decisions and inquiries."""
    termination_timeout_ticks: int = 20
    """3PC participant: no word on an undecided transaction for this long → termination."""
    collect_ticks: int = 4
    """3PC termination: how long a recovery coordinator collects states (and PreCommit acks)."""
    no_vote_per_mille: int = 100
    """Participants vote no with this probability (per mille)."""

    def __post_init__(self) -> None:
        for name in (
            "vote_timeout_ticks",
            "ack_timeout_ticks",
            "resend_ticks",
            "termination_timeout_ticks",
            "collect_ticks",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.no_vote_per_mille <= 1000:
            raise ValueError(
                f"no_vote_per_mille must be in [0, 1000], got {self.no_vote_per_mille}"
            )


class Host(Protocol):
    """Where an engine's effects go.  Persisted writes are durable before the sends of the
    same batch leave (the node contract's ``Ready`` order)."""

    node_id: int

    def send(self, to: int, msg: Message) -> None:
        """Queue ``msg`` for ``to``."""
        ...

    def persist(self, op: PersistOp) -> None:
        """Make ``op`` durable before this batch's sends."""
        ...

    def record(self, event: Voted | Decided) -> None:
        """Hand a vote or decision to the runtime as an applied command (monitors read it)."""
        ...

    def reply(self, client: int, request_id: int, result: Any, error: str = "") -> None:
        """Answer a client's :class:`SubmitTxn` (refuse it when ``error`` is set)."""
        ...


def txn_key(txn: int) -> str:
    """The durable record that holds one transaction's state."""
    return f"txn/{txn}"


def check_submit(msg: SubmitTxn, participants: tuple[int, ...]) -> str:
    """Why ``msg`` cannot run over the group's ``participants`` ('' when it can)."""
    if not 0 <= msg.txn <= MAX_TXN_ID:
        return f"txn id {msg.txn} outside [0, 2**62]"
    wanted = msg.participants
    if not 1 <= len(wanted) <= MAX_PARTICIPANTS:
        return f"a transaction needs 1..{MAX_PARTICIPANTS} participants, got {len(wanted)}"
    if list(wanted) != sorted(set(wanted)):
        return f"participants {wanted!r} must be sorted and distinct"
    strangers = [p for p in wanted if p not in participants]
    if strangers:
        return f"participants {strangers} are not participants of this group {participants}"
    return ""


def check_participants(txn: int, wanted: tuple[int, ...], group: tuple[int, ...]) -> None:
    """Raise :class:`InvalidMessage` for a peer message naming impossible participants."""
    if not 0 <= txn <= MAX_TXN_ID or not 1 <= len(wanted) <= MAX_PARTICIPANTS:
        raise InvalidMessage(f"txn {txn} with {len(wanted)} participants is out of range")
    if any(p not in group for p in wanted):
        raise InvalidMessage(f"txn {txn}: participants {wanted!r} outside group {group}")


def decode_record(value: Any) -> tuple[str, tuple[int, ...]]:
    """A transaction record ``(state, participants)`` as stored (a list after a WAL round
    trip); raises ValueError for anything else."""
    try:
        state, participants = value
        return str(state), tuple(int(p) for p in participants)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"malformed transaction record {value!r}") from exc


class Engine(Protocol):
    """A coordinator or participant engine."""

    def step(self, msg: Message, from_id: int) -> bool:
        """Handle ``msg``; False when it is not for this engine."""
        ...

    def tick(self) -> None:
        """One tick."""
        ...

    def invariants(self) -> list[str]:
        """Broken local invariants."""
        ...


class CommitNode(Outbox):
    """The simulator's host of one engine: node ``min(group)`` coordinates, the others take
    part.  Implements :class:`pnyx.core.Node`; ``status()`` names the coordinator as leader
    (so leader-targeted faults hit it)."""

    def __init__(self, node_id: int, group: tuple[int, ...]) -> None:
        if node_id not in group:
            raise ValueError(f"node {node_id} missing from its group {group}")
        super().__init__()
        self.node_id = node_id
        self.coordinator_id = min(group)
        self.participant_ids = tuple(sorted(p for p in group if p != self.coordinator_id))
        self.engine: Engine | None = None
        self._applied = 0

    # -- Host --------------------------------------------------------------------------

    def send(self, to: int, msg: Message) -> None:
        self._ready.send.append(Send(to, msg))

    def persist(self, op: PersistOp) -> None:
        self._ready.persist.append(op)

    def record(self, event: Voted | Decided) -> None:
        self._applied += 1
        self._ready.apply.append(Apply(self._applied, event))

    def reply(self, client: int, request_id: int, result: Any, error: str = "") -> None:
        if error:
            self.reply_error(client, request_id, error)
        else:
            self.send(client, ClientReply(request_id, True, result))

    # -- node contract -------------------------------------------------------------------

    def step(self, msg: Message, from_id: int) -> None:
        """Hand ``msg`` to the engine; refuse what it does not take."""
        engine = self.engine
        if engine is None:
            raise RuntimeError(f"node {self.node_id} has no engine")
        if isinstance(msg, SubmitTxn) and self.node_id != self.coordinator_id:
            self.reply_error(from_id, msg.request_id, f"node {self.node_id} does not coordinate")
            return
        if not engine.step(msg, from_id):
            raise InvalidMessage(f"node {self.node_id} got unexpected {type(msg).__name__}")

    def reply_error(self, client: int, request_id: int, error: str) -> None:
        """Refuse a client request with a message saying why."""
        if is_client(client):
            hint = self.coordinator_id
            self.send(client, ClientReply(request_id, False, None, leader_hint=hint, error=error))

    def tick(self) -> None:
        """One tick of the engine."""
        if self.engine is not None:
            self.engine.tick()

    def status(self) -> dict[str, Any]:
        """The coordinator is this group's leader."""
        return {"leader": self.coordinator_id}

    def invariants(self) -> list[str]:
        """The engine's broken invariants."""
        return self.engine.invariants() if self.engine is not None else []


def rerecord(host: Host, txn: int, state: str, participants: tuple[int, ...]) -> None:
    """After a restart, hand the monitor again what a durable record says: a crash may have
    made a vote or decision durable before the runtime applied it (repeats are harmless)."""
    if state in ("uncertain", "precommitted", "committed"):
        host.record(Voted(txn, host.node_id, True, participants))
    if state in ("committed", "aborted"):
        host.record(Decided(txn, host.node_id, state == "committed", participants, "recovery"))


def put_state(host: Host, txn: int, state: str, participants: tuple[int, ...]) -> None:
    """Persist one transaction's state record."""
    host.persist(PutRecord(txn_key(txn), (state, participants)))
