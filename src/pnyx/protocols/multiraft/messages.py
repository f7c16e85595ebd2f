"""Multi-Raft vocabulary: range descriptors, commands of the range and meta logs, the
envelopes that carry many groups' messages over one peer connection, and journal records.

Group ids are range ids; group :data:`META_GROUP` (0) is the metadata range.  Keys are
strings; a range covers ``[start, end)`` with ``end`` None meaning "to the end of the
keyspace" and ``start`` "" the beginning.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pnyx.core import LogAppend, LogCompact, Message, PutRecord, SnapshotSave
from pnyx.protocols.raft.messages import (
    AppendEntries,
    AppendResponse,
    ClientRequest,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    ReadRequest,
    RequestVote,
    SnapshotResponse,
    TimeoutNow,
    VoteResponse,
)

META_GROUP = 0
"""The Raft group of the metadata range (the range map); it has a replica on every process."""
FIRST_RANGE = 1
"""The data range a fresh cluster starts with: the whole keyspace."""

INIT_INDEX = 10
"""Log index of the synthesized snapshot a new group starts from (bootstrap or split).
Every replica of a new group derives the same snapshot, so none of them needs the other's
log before it; a replica created empty by a message (uninitialised) is behind it and gets
it by InstallSnapshot.  CockroachDB starts a split's right-hand side the same way."""
INIT_TERM = 5
"""Term of that snapshot and the first term of a new group's hard state."""


class RangeBounds(msgspec.Struct, frozen=True, array_like=True):
    """What a range's own state machine knows of itself: id, key span, split version."""

    range_id: int
    start: str
    end: str | None
    version: int

    def contains(self, key: str) -> bool:
        """True when ``key`` lies in ``[start, end)``."""
        return self.start <= key and (self.end is None or key < self.end)


class RangeDesc(msgspec.Struct, frozen=True, array_like=True):
    """A range as the range map records it (TiKV's region epoch: ``version`` counts splits,
    ``conf_ver`` orders replica-set observations; both only grow)."""

    range_id: int
    start: str
    end: str | None
    version: int
    conf_ver: int
    replicas: tuple[int, ...]

    def contains(self, key: str) -> bool:
        """True when ``key`` lies in ``[start, end)``."""
        return self.start <= key and (self.end is None or key < self.end)

    @property
    def bounds(self) -> RangeBounds:
        """The range's own view of itself (without replicas)."""
        return RangeBounds(self.range_id, self.start, self.end, self.version)


# -- commands of a data range's log ---------------------------------------------------------


class SplitCmd(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """Split range ``range_id`` (at ``version``) at ``split_key``; the right half becomes
    range ``new_range_id``.  Applied only if the range is still at ``version``."""

    range_id: int
    version: int
    split_key: str
    new_range_id: int


class RangeWrite(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """A client's write with its identity: ``op_seq`` numbers the client's operations
    (every attempt of one operation carries the same number).  A range applies each
    (client, op_seq) at most once, whatever the network duplicates or delays: a copy of
    the last applied operation is answered ok again, an older one is refused.

    ``op`` is a :class:`~pnyx.protocols.raft.kv.KvOp` or a command type a range machine
    subclass adds (``RangeStateMachine.op_types``); it crosses a wire untyped and the
    receiving node types it with its range machine (``convert_command``): an operation of
    no known type is refused (a client's: its connection is closed)."""

    client: int
    op_seq: int
    op: Any


class SplitDone(msgspec.Struct, frozen=True, array_like=True):
    """The result of an applied split: both halves' bounds and the right half's data."""

    left: RangeBounds
    right: RangeBounds
    right_data: bytes


# -- commands of the meta range's log -------------------------------------------------------


class ReserveSplit(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """Allocate the id of the range that splitting ``range_id`` at ``version`` will create
    (once per (range, version): a retried reservation returns the same id)."""

    range_id: int
    version: int


class MetaSplit(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """Record a split that range ``left.range_id`` applied: its predecessor (one version
    older, spanning both halves) is replaced by the two halves in one command."""

    left: RangeDesc
    right: RangeDesc


class MetaReplicas(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """Record the replica set a range's leader saw committed at its log index ``conf_ver``."""

    range_id: int
    version: int
    conf_ver: int
    replicas: tuple[int, ...]


MetaCommand = ReserveSplit | MetaSplit | MetaReplicas


class MetaQuery(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """Read-only query of the meta range: the whole range map (a tuple of RangeDesc)."""


# -- peer messages --------------------------------------------------------------------------

RaftPeerMessage = (
    RequestVote
    | VoteResponse
    | AppendEntries
    | AppendResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | SnapshotResponse
    | TimeoutNow
)


class GroupMsg(msgspec.Struct, frozen=True, array_like=True):
    """One Raft message of group ``group``."""

    group: int
    msg: RaftPeerMessage


class Batch(Message, frozen=True):
    """Everything one process sends another in one ready batch, over their one connection:
    the messages of every group (heartbeats of all groups coalesced, as CockroachDB does)."""

    msgs: tuple[GroupMsg, ...]


class MetaPropose(Message, frozen=True):
    """Ask the meta range's leader to propose ``command`` (fire and forget: the sender
    watches its own meta replica and asks again until the command took effect)."""

    command: MetaCommand


PEER_MESSAGES: tuple[type[Message], ...] = (Batch, MetaPropose)

# -- client messages ------------------------------------------------------------------------


class GroupRequest(Message, frozen=True):
    """A client's request for group ``group``: a write (ClientRequest) or a read."""

    group: int
    request: ClientRequest | ReadRequest


class MoveReplica(Message, frozen=True):
    """Move range ``range_id``'s replica from process ``from_node`` to ``to_node`` (sent to
    the range's leader, which adds ``to_node`` as a learner, then swaps it in for
    ``from_node`` in one joint-consensus change)."""

    request_id: int
    range_id: int
    from_node: int
    to_node: int


class MoveReplicaExplained(MoveReplica, frozen=True):
    """:class:`MoveReplica` whose answers say why: a refusal ``move_refused`` (or
    ``range_not_found``) carries its reason in ``result`` (a string), and a copy of the move
    the leader is already carrying out is answered ``started`` again (a client's retry).
    The plain :class:`MoveReplica` keeps its bare answers (the simulator's admin client,
    whose traces are pinned)."""


MOVE_REFUSED = "move_refused"
"""Error of a move the range's leader will not start (definite: nothing changed)."""
MOVE_STARTED = "started"
"""Result of a move the range's leader started (it ends when the map shows it)."""


class LeadersQuery(Message, frozen=True):
    """Which groups does this process lead?  Answered at once (no log) with
    ``ClientReply(result=[(group, term), ...])``, for range-map displays (a process may
    still believe it leads a group a newer term took over: keep the highest term)."""

    request_id: int


CLIENT_MESSAGES: tuple[type[Message], ...] = (
    GroupRequest,
    MoveReplica,
    MoveReplicaExplained,
    LeadersQuery,
)

# -- the journal (the process's one write-ahead log) ---------------------------------------

GroupPersist = PutRecord | LogAppend | LogCompact | SnapshotSave


class GroupOp(msgspec.Struct, frozen=True, array_like=True):
    """One durable write of group ``group``: an entry of the process's journal."""

    group: int
    op: GroupPersist


class GroupImage(msgspec.Struct, frozen=True, array_like=True):
    """A group's whole durable state in a checkpoint."""

    group: int
    records: dict[str, Any]
    log_start: int
    log: list[Any]
    snapshot: SnapshotSave | None


class Checkpoint(msgspec.Struct, frozen=True, array_like=True):
    """The fold of the journal through some index, for every group (the journal's
    snapshot: the entries it covers are compacted away)."""

    groups: list[GroupImage]
