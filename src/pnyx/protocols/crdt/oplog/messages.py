"""Client requests of the op-based CRDT nodes, and the payload they broadcast."""

from __future__ import annotations

from typing import Any

import msgspec

from pnyx.core import Message

EDIT_KINDS: frozenset[str] = frozenset({"increment", "add", "remove", "insert", "delete"})
"""Every ``CrdtEdit.kind``; each replica type accepts its own subset."""


class CrdtEdit(Message, frozen=True):
    """Client → node: one local update of the node's replica, named ``edit_id``.

    ``increment``: ``amount``; ``add``/``remove``: ``element``; ``insert``: ``text`` at
    ``where`` modulo (length + 1), or at the node's typing cursor when ``at_cursor`` and
    the cursor is still valid; ``delete``: ``count`` characters from ``where`` modulo length.
    """

    request_id: int
    edit_id: str
    kind: str
    amount: int = 0
    element: str = ""
    text: str = ""
    where: int = 0
    count: int = 0
    at_cursor: bool = False


class OpPayload(msgspec.Struct, frozen=True, array_like=True):
    """What a node broadcasts for one edit: the edit's name and the replica type's op."""

    edit_id: str
    op: Any = None
