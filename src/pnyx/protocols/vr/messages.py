"""Viewstamped Replication wire vocabulary: log entries, peer messages, durable records.

Names follow Liskov & Cowling, "Viewstamped Replication Revisited" (2012): a replica's
*view-number* is ``view``, its *op-number* is the length of its log, its *commit-number*
is ``commit``.  The sender of a peer message is the runtime's ``from_id`` (the paper's
``i``).  Clients speak Raft's client vocabulary (``ClientRequest``, ``ReadRequest``,
``AdminRequest``), so every KV client of pnyx talks to a VR group unchanged.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pnyx.core import Message

# -- log entries -------------------------------------------------------------------------

ENTRY_COMMAND = 0
"""A client command for the state machine (``data`` is the command)."""
ENTRY_READ = 1
"""A linearizable read ordered through the log (``data`` is the query); only the primary
that received it evaluates it, to answer its client."""
ENTRY_RECONFIG = 2
"""A reconfiguration (``data`` is a :class:`Reconfig`): once committed, the group moves to
the next epoch with the new members (section 7)."""


class Reconfig(msgspec.Struct, frozen=True, array_like=True):
    """The members of epoch ``epoch`` (the one this op starts)."""

    epoch: int
    members: tuple[int, ...]


class VrEntry(msgspec.Struct, frozen=True, array_like=True):
    """One operation of the log; its op-number is its position (1-based, not stored).

    ``view`` is the view in which a primary first assigned it an op-number: two proposals
    of the same command in different views are different entries.
    """

    view: int
    kind: int = ENTRY_COMMAND
    data: Any = None


class Checkpoint(msgspec.Struct, frozen=True, array_like=True):
    """The state machine after executing ops 1..``op`` (VRR section 5.1's checkpoint): the
    log prefix through ``op`` is dropped once a replica holds this.  ``epoch`` and
    ``epoch_op`` are the epoch in force after ``op`` and the op-number of the
    reconfiguration that started it (the log that held that op may be gone)."""

    op: int
    data: bytes
    epoch: int = 0
    epoch_op: int = 0


class TakeCheckpoint(msgspec.Struct, frozen=True, array_like=True):
    """A service request in ``Ready.services``: snapshot the state machine, which has
    executed exactly the ops through ``op`` once this batch's applies are done, and hand
    it to :meth:`~pnyx.protocols.vr.node.VrNode.checkpoint_taken`."""

    op: int


class VrHard(msgspec.Struct, frozen=True, array_like=True):
    """Durable mode only: the view promised, the last view in which status was normal, and
    the epoch with its members."""

    view: int = 0
    last_normal_view: int = 0
    epoch: int = 0
    members: tuple[int, ...] = ()
    old_members: tuple[int, ...] = ()
    epoch_op: int = 0
    """Op-number of the reconfiguration that started ``epoch`` (committed)."""


BOOT_KEY = "vr.boot"
"""Disk-less mode: a record written once at first start, so a restarted process knows it
lost its state and must run the recovery protocol.  It holds no protocol state."""
HARD_KEY = "vr.hard"
"""Durable mode: the :class:`VrHard` record."""

# -- normal operation ------------------------------------------------------------------


class Prepare(Message, frozen=True):
    """``<PREPARE v, m, n, k>``: entries from op-number ``first_op`` on, and the primary's
    commit-number.  One entry normally; a retransmission to a lagging backup may carry
    several."""

    view: int
    first_op: int
    entries: tuple[VrEntry, ...]
    commit: int
    epoch: int = 0


class PrepareOK(Message, frozen=True):
    """``<PREPAREOK v, n, i>``: the backup holds every op through ``op`` in view ``view``."""

    view: int
    op: int
    epoch: int = 0


class Commit(Message, frozen=True):
    """``<COMMIT v, k>``: the primary's commit-number, sent when it has nothing to prepare."""

    view: int
    commit: int
    epoch: int = 0


# -- view change -----------------------------------------------------------------------


class StartViewChange(Message, frozen=True):
    """``<STARTVIEWCHANGE v, i>``."""

    view: int
    epoch: int = 0


class DoViewChange(Message, frozen=True):
    """``<DOVIEWCHANGE v, l, v', n, k, i>``: to the primary of view ``view``.  ``log`` holds
    the ops after ``checkpoint`` (all ops when there is none) through op-number ``op``."""

    view: int
    log: tuple[VrEntry, ...]
    last_normal_view: int
    op: int
    commit: int
    epoch: int = 0
    checkpoint: Checkpoint | None = None


class StartView(Message, frozen=True):
    """``<STARTVIEW v, l, n, k>``: the new primary's log (the ops after ``checkpoint``) and
    commit-number."""

    view: int
    log: tuple[VrEntry, ...]
    op: int
    commit: int
    epoch: int = 0
    checkpoint: Checkpoint | None = None


# -- recovery and state transfer ---------------------------------------------------------


class Recovery(Message, frozen=True):
    """``<RECOVERY i, x>``: a restarted replica asks for state; ``nonce`` is fresh per life."""

    nonce: int


class RecoveryResponse(Message, frozen=True):
    """``<RECOVERYRESPONSE v, x, l, n, k, j>``; ``log`` is None unless from the primary (then
    the ops after ``checkpoint``)."""

    view: int
    nonce: int
    log: tuple[VrEntry, ...] | None
    op: int
    commit: int
    epoch: int = 0
    members: tuple[int, ...] = ()
    checkpoint: Checkpoint | None = None


class GetState(Message, frozen=True):
    """``<GETSTATE v, n', i>``: send me the ops after ``op`` of view ``view``."""

    view: int
    op: int
    epoch: int = 0


class NewState(Message, frozen=True):
    """``<NEWSTATE v, l, n, k>``: ``entries`` from op-number ``first_op`` on."""

    view: int
    first_op: int
    entries: tuple[VrEntry, ...]
    commit: int
    epoch: int = 0
    members: tuple[int, ...] = ()
    old_members: tuple[int, ...] = ()
    normal: bool = True
    """False from a replica in a view change: ``entries`` end at its commit-number (all
    committed), for a new member to join that view change with."""
    checkpoint: Checkpoint | None = None
    """The sender's checkpoint when the asker needs ops it has compacted (``first_op`` is
    then ``checkpoint.op + 1``)."""


# -- reconfiguration (section 7) -----------------------------------------------------------


class StartEpoch(Message, frozen=True):
    """``<STARTEPOCH e, n, old-config, new-config>``: epoch ``epoch`` starts after op ``op``
    (the committed reconfiguration); the receiver fetches the log with GetState."""

    epoch: int
    op: int
    old_members: tuple[int, ...]
    new_members: tuple[int, ...]


class EpochStarted(Message, frozen=True):
    """``<EPOCHSTARTED e, i>``: a member of epoch ``epoch`` has its state; a replica that
    left the group stops once a quorum of the new members said so."""

    epoch: int


PEER_MESSAGES: tuple[type[Message], ...] = (
    Prepare,
    PrepareOK,
    Commit,
    StartViewChange,
    DoViewChange,
    StartView,
    Recovery,
    RecoveryResponse,
    GetState,
    NewState,
    StartEpoch,
    EpochStarted,
)
