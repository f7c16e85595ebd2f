"""Multi-Paxos wire vocabulary: slots of the log, peer messages and runtime services.

A ballot is ``(round, node id)``, compared lexicographically, so two proposers never share
one.  Client requests are Raft's (``pnyx.protocols.raft`` ClientRequest / ReadRequest /
AdminRequest), answered with ``pnyx.core.ClientReply``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pnyx.core import Message

Ballot = tuple[int, int]
"""``(round, node id)``; ``(0, 0)`` is below every real ballot."""
NO_BALLOT: Ballot = (0, 0)

KIND_COMMAND = 0
"""A client command for the state machine."""
KIND_NOOP = 1
"""Fills a slot a new leader found no value for (a gap), so learners can pass it."""
KIND_HOLE = 2
"""Nothing accepted at this slot yet (a placeholder keeping the stored log contiguous)."""


class Slot(msgspec.Struct, frozen=True, array_like=True):
    """What an acceptor holds for one slot: the value accepted at ``ballot``."""

    ballot: Ballot
    kind: int = KIND_COMMAND
    value: Any = None


HOLE = Slot(NO_BALLOT, KIND_HOLE, None)


class HardState(msgspec.Struct, frozen=True, array_like=True):
    """What survives a crash besides the slots: the promise, and the commit index (a hint:
    every slot through it holds its chosen value)."""

    promised: Ballot = NO_BALLOT
    commit: int = 0


HARD_STATE_KEY = "paxos.hs"
"""The :class:`pnyx.core.PutRecord` key of the hard state."""


# -- peer messages ---------------------------------------------------------------------


class Prepare(Message, frozen=True):
    """Phase 1a for every slot above ``commit`` (the proposer's chosen prefix) at once."""

    ballot: Ballot
    commit: int


class Promise(Message, frozen=True):
    """Phase 1b: no ballot below ``ballot`` will be accepted; ``accepted`` holds what this
    acceptor accepted above ``max(prepare commit, offset)``.  ``offset``: slots through it
    are compacted into a snapshot (chosen; sent along as :class:`Snapshot` when needed)."""

    ballot: Ballot
    commit: int
    offset: int
    accepted: tuple[tuple[int, Slot], ...]


class Accept(Message, frozen=True):
    """Phase 2a for slots ``first, first + 1, ...``; ``commit`` piggybacks the leader's
    chosen prefix (a commit notification)."""

    ballot: Ballot
    first: int
    slots: tuple[Slot, ...]
    commit: int


class Accepted(Message, frozen=True):
    """Phase 2b for slots ``first..last``; ``commit`` is the acceptor's chosen prefix."""

    ballot: Ballot
    first: int
    last: int
    commit: int


class Nack(Message, frozen=True):
    """Refusal of a message of ``ballot``: the sender has promised ``promised``, higher."""

    ballot: Ballot
    promised: Ballot


class Commit(Message, frozen=True):
    """Commit notification (and leader heartbeat): every slot through ``commit`` is chosen."""

    ballot: Ballot
    commit: int
    heartbeat: bool = False


class CommitAck(Message, frozen=True):
    """Answer to a heartbeat: the learner's chosen prefix, so a leader can catch it up."""

    ballot: Ballot
    commit: int


class Learn(Message, frozen=True):
    """Catch-up: chosen values of slots ``first, first + 1, ...`` (each with its ballot)."""

    ballot: Ballot
    first: int
    slots: tuple[Slot, ...]


class Snapshot(Message, frozen=True):
    """Catch-up past compacted slots: the state machine through slot ``index``."""

    ballot: Ballot
    index: int
    data: bytes


class ReadProbe(Message, frozen=True):
    """Read confirmation round ``ctx``: is ``ballot`` still the highest promise?"""

    ballot: Ballot
    ctx: int


class ReadAck(Message, frozen=True):
    """Yes to :class:`ReadProbe` ``ctx`` (a refusal is a :class:`Nack`)."""

    ballot: Ballot
    ctx: int


PEER_MESSAGES: tuple[type[Message], ...] = (
    Prepare,
    Promise,
    Accept,
    Accepted,
    Nack,
    Commit,
    CommitAck,
    Learn,
    Snapshot,
    ReadProbe,
    ReadAck,
)


# -- runtime services ---------------------------------------------------------------------


class TakeSnapshot(msgspec.Struct, frozen=True, array_like=True):
    """``Ready.services`` request: snapshot the state machine as it is after this batch's
    applies (slot ``index``) and hand the bytes to ``node.snapshot_taken(index, data)``."""

    index: int
