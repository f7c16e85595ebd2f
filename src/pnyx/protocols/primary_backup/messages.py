"""Wire messages of primary-backup replication (servers, view manager)."""

from __future__ import annotations

from typing import Any

from pnyx.core import Message

NO_SERVER = 0
"""A view slot with no server in it."""


class View(Message, frozen=True):
    """View ``num``: ``primary`` serves, ``backup`` (or ``NO_SERVER``) mirrors it."""

    num: int
    primary: int
    backup: int


class Ping(Message, frozen=True):
    """Server → view manager, every few ticks: alive, at ``view_num`` (0 after a restart).

    ``ready_view`` is the view this server, as its primary, acknowledges: its backup (if
    any) holds the whole state.  0 when it acknowledges nothing."""

    view_num: int
    ready_view: int = 0


class ViewReply(Message, frozen=True):
    """View manager → server: the current view."""

    view: View


class StateTransfer(Message, frozen=True):
    """Primary → new backup of ``view``: the whole state after op ``applied_index``."""

    view: View
    applied_index: int
    image: bytes


class TransferAck(Message, frozen=True):
    """Backup → primary: installed the state of ``view_num``."""

    view_num: int


class Forward(Message, frozen=True):
    """Primary → backup: apply operation ``index`` of ``view_num`` (a write or a read)."""

    view_num: int
    index: int
    op: Any


class ForwardAck(Message, frozen=True):
    """Backup → primary: applied every operation through ``index`` in ``view_num``."""

    view_num: int
    index: int


WIRE_TYPES: tuple[type[Message], ...] = (
    View,
    Ping,
    ViewReply,
    StateTransfer,
    TransferAck,
    Forward,
    ForwardAck,
)
