"""Wire messages of two- and three-phase commit, and the records nodes apply for monitors."""

from __future__ import annotations

from typing import Literal

import msgspec

from pnyx.core import Message

ParticipantState = Literal["unknown", "uncertain", "precommitted", "committed", "aborted"]
"""A participant's state for one transaction (Skeen's q, w, p, c, a; ``uncertain`` = voted
yes and waiting, ``unknown`` = never voted)."""

STATES: tuple[str, ...] = ("unknown", "uncertain", "precommitted", "committed", "aborted")


class SubmitTxn(Message, frozen=True):
    """Client → coordinator: run transaction ``txn`` over ``participants`` (node ids)."""

    request_id: int
    txn: int
    participants: tuple[int, ...]


class Prepare(Message, frozen=True):
    """2PC coordinator → participant: vote on ``txn`` (phase 1)."""

    txn: int
    participants: tuple[int, ...]


class CanCommit(Message, frozen=True):
    """3PC coordinator → participant: vote on ``txn`` (phase 1)."""

    txn: int
    participants: tuple[int, ...]


class Vote(Message, frozen=True):
    """Participant → coordinator: yes or no on ``txn``."""

    txn: int
    yes: bool


class PreCommit(Message, frozen=True):
    """3PC (recovery) coordinator → participant: everyone voted yes; move to precommitted."""

    txn: int
    participants: tuple[int, ...]


class PreCommitAck(Message, frozen=True):
    """3PC participant → (recovery) coordinator: ``txn`` is durably precommitted here."""

    txn: int


class Decision(Message, frozen=True):
    """(Recovery) coordinator → participant: the outcome of ``txn`` (DoCommit or Abort)."""

    txn: int
    commit: bool


class DecisionAck(Message, frozen=True):
    """Participant → coordinator: the decision on ``txn`` is durable here."""

    txn: int


class Inquire(Message, frozen=True):
    """2PC in-doubt participant → coordinator: what became of ``txn``?"""

    txn: int


class StateRequest(Message, frozen=True):
    """3PC termination protocol: a timed-out participant asks the others for their state."""

    txn: int
    participants: tuple[int, ...]


class StateReply(Message, frozen=True):
    """3PC termination protocol: the replying participant's state for ``txn``."""

    txn: int
    state: str


class Voted(msgspec.Struct, frozen=True, array_like=True):
    """Applied when a participant casts its vote (for the simulator's monitor)."""

    txn: int
    node: int
    yes: bool
    participants: tuple[int, ...]


class Decided(msgspec.Struct, frozen=True, array_like=True):
    """Applied when a node learns or makes the decision on ``txn``; ``by`` says how
    (``coordinator``, ``decision`` message, ``termination`` protocol, ``recovery``)."""

    txn: int
    node: int
    commit: bool
    participants: tuple[int, ...]
    by: str


TWO_PC_PEER_TYPES: tuple[type[Message], ...] = (Prepare, Vote, Decision, DecisionAck, Inquire)
THREE_PC_PEER_TYPES: tuple[type[Message], ...] = (
    CanCommit,
    Vote,
    PreCommit,
    PreCommitAck,
    Decision,
    DecisionAck,
    StateRequest,
    StateReply,
)
CLIENT_TYPES: tuple[type[Message], ...] = (SubmitTxn,)
