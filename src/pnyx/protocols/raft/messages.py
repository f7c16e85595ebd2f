"""Raft wire vocabulary: log entries, peer messages, client requests and runtime services."""

from __future__ import annotations

from typing import Any

import msgspec

from pnyx.core import Message

# -- log entries -----------------------------------------------------------------------

ENTRY_COMMAND = 0
"""A client command for the state machine (``data`` is the command)."""
ENTRY_NOOP = 1
"""The empty entry a new leader appends to commit entries of earlier terms."""
ENTRY_CONFIG = 2
"""A membership configuration (``data`` is a :class:`ConfigData`); takes effect on append."""


class ConfigData(msgspec.Struct, frozen=True, array_like=True):
    """A membership configuration as stored in the log and in snapshot metadata.

    ``outgoing`` is non-empty only in the joint configuration C_old,new, where it holds
    C_old's voters and ``voters`` holds C_new's.
    """

    voters: tuple[int, ...]
    outgoing: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()


class Entry(msgspec.Struct, frozen=True, array_like=True):
    """One log entry.  Its index is its position in the log (not stored)."""

    term: int
    kind: int = ENTRY_COMMAND
    data: Any = None


class HardState(msgspec.Struct, frozen=True, array_like=True):
    """What must survive a crash besides the log: term, vote and (as a hint) commit index."""

    term: int = 0
    vote: int = 0
    commit: int = 0


HARD_STATE_KEY = "raft.hs"
"""The :class:`pnyx.core.PutRecord` key under which the hard state is persisted."""


class SnapshotMeta(msgspec.Struct, frozen=True, array_like=True):
    """``SnapshotSave.meta`` of a Raft snapshot: the configuration as of its last index."""

    config: ConfigData


# -- peer messages ---------------------------------------------------------------------


class RequestVote(Message, frozen=True):
    """A (pre-)vote request.  A pre-vote carries the term the candidate *would* use.

    ``transfer`` is set when the election was started by :class:`TimeoutNow`: receivers then
    ignore their leader lease (leadership transfer must be able to win).
    """

    term: int
    last_index: int
    last_term: int
    pre_vote: bool = False
    transfer: bool = False


class VoteResponse(Message, frozen=True):
    """Answer to :class:`RequestVote`; a granted pre-vote echoes the requested term."""

    term: int
    granted: bool
    pre_vote: bool = False


class AppendEntries(Message, frozen=True):
    """Replicate ``entries`` after (``prev_index``, ``prev_term``); carries the commit index."""

    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


class AppendResponse(Message, frozen=True):
    """Success: the follower's log matches the leader's through ``index``.

    Rejection: ``index`` is the rejected ``prev_index``; ``hint_index``/``hint_term`` let the
    leader skip a whole conflicting term at once (the follower's term at ``prev_index`` and
    the first index it holds of that term, or its last index + 1 and term 0 when short).
    """

    term: int
    index: int
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0


class Heartbeat(Message, frozen=True):
    """Leader liveness; ``commit`` is clamped to the follower's known match.

    ``ctx`` numbers ReadIndex rounds; ``sent_tick`` is the leader's clock when sent, echoed
    back so that a lease is measured from the send, not the receipt.
    """

    term: int
    commit: int
    ctx: int = 0
    sent_tick: int = 0


class HeartbeatResponse(Message, frozen=True):
    """Echo of a heartbeat; ``last_index`` lets the leader notice lost appends."""

    term: int
    ctx: int = 0
    sent_tick: int = 0
    last_index: int = 0


class InstallSnapshot(Message, frozen=True):
    """One chunk of a snapshot covering the log through (``index``, ``snap_term``)."""

    term: int
    index: int
    snap_term: int
    config: ConfigData
    offset: int
    data: bytes
    done: bool


class SnapshotResponse(Message, frozen=True):
    """Acknowledges snapshot bytes up to ``next_offset``; ``done`` once it is installed."""

    term: int
    index: int
    next_offset: int
    done: bool = False
    reject: bool = False


class TimeoutNow(Message, frozen=True):
    """Leadership transfer: start an election right away (skipping pre-vote and lease)."""

    term: int


PEER_MESSAGES: tuple[type[Message], ...] = (
    RequestVote,
    VoteResponse,
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    SnapshotResponse,
    TimeoutNow,
)

# -- client requests (answered with pnyx.core.ClientReply) ------------------------------


class ClientRequest(Message, frozen=True):
    """Propose ``command`` to the replicated log.

    Exactly-once is the state machine's job: the command carries the client's session id
    and sequence number (see :class:`pnyx.protocols.raft.kv.Command`).  The leader replies
    with the state machine's result once the entry is applied; other nodes reply
    ``ok=False, error="not_leader", leader_hint=...``.
    """

    request_id: int
    command: Any


READ_LINEARIZABLE = "linearizable"
READ_SERIALIZABLE = "serializable"


class ReadRequest(Message, frozen=True):
    """Evaluate the read-only ``query`` without writing to the log.

    ``linearizable``: ReadIndex (or a lease when enabled) on the leader.  ``serializable``:
    served from the receiving node's applied state at once (may be stale).
    """

    request_id: int
    query: Any
    consistency: str = READ_LINEARIZABLE


ADD_LEARNER = "add_learner"
PROMOTE = "promote"
REMOVE = "remove"
REPLACE = "replace"
TRANSFER = "transfer"


class AdminRequest(Message, frozen=True):
    """Membership and leadership administration, validated by the leader.

    ``add_learner``: a non-member joins as a learner.  ``promote``: a caught-up learner
    becomes a voter (joint consensus).  ``remove``: a voter (joint consensus) or learner
    leaves, refused when fewer than ``min_voters`` voters would remain.  ``replace``: voter
    ``node`` leaves and learner ``other`` becomes a voter in one joint change.
    ``transfer``: hand leadership to voter ``node`` (TimeoutNow).
    """

    request_id: int
    action: str
    node: int
    min_voters: int = 1
    other: int = 0


# -- runtime services ---------------------------------------------------------------------


class TakeSnapshot(msgspec.Struct, frozen=True, array_like=True):
    """``Ready.services`` request: snapshot the state machine as it is after this batch's
    ``apply`` items (which leave it at log ``index``) and hand the bytes back with
    ``node.snapshot_taken(index, data)``."""

    index: int
