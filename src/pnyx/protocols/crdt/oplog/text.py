"""Op-based text: the Fugue sequence CRDT (:mod:`pnyx.protocols.crdt.text`) with its ops
disseminated by causal broadcast instead of state or delta exchange.

Fugue (Weidner and Kleppmann, 2023) is chosen by the text package because concurrent
inserts at one position do not interleave.  Fugue's ops name their causal predecessors
(parent characters, delete targets); causal broadcast delivers those first, so no op is
ever buffered inside the document.
"""

from __future__ import annotations

from typing import Any

from pnyx.core import DurableState, Rng
from pnyx.protocols.crdt.base import ReplicaId, WireError, check_replica, convert_wire
from pnyx.protocols.crdt.oplog.messages import CrdtEdit
from pnyx.protocols.crdt.oplog.node import OpCrdtNode
from pnyx.protocols.crdt.text import FugueText, TextOp
from pnyx.protocols.crdt.text.ops import check_op

MAX_OPS_PER_EDIT = 64
"""Bound on the ops one delivered edit may carry."""

TextOps = tuple[TextOp, ...]
"""The ops of one local edit (an insert run or a delete of a range)."""


class OpText:
    """A text replica whose updates are ops (CmRDT): ``insert``/``delete`` integrate the
    edit locally and return its ops; :meth:`effect` merges delivered ops.

    Fugue has no side-effect-free prepare, so the source integrates its edit at once and
    :meth:`effect` of ops already integrated is a no-op (ops are identified by their
    ``(replica, counter)`` ids); replaying a replica's own ops after a restart rebuilds it.
    """

    def __init__(self, replica: ReplicaId) -> None:
        self.replica = check_replica(replica)
        self.doc = FugueText(replica)

    def insert(self, pos: int, text: str) -> TextOps:
        """Insert ``text`` before code point ``pos``; the ops to broadcast."""
        before = self.doc.version()
        self.doc.splice(pos, 0, text)
        return tuple(self.doc.ops_since(before))

    def delete(self, pos: int, count: int) -> TextOps:
        """Delete ``count`` code points from ``pos``; the ops to broadcast."""
        before = self.doc.version()
        self.doc.splice(pos, count, "")
        return tuple(self.doc.ops_since(before))

    def effect(self, ops: TextOps) -> None:
        """Merge delivered ops (in causal order; already integrated ones are skipped)."""
        for op in ops:
            self.doc.apply_op(op)

    def text(self) -> str:
        """The visible text."""
        return self.doc.text()

    def __len__(self) -> int:
        return len(self.doc)

    @staticmethod
    def decode_ops(data: Any) -> TextOps:
        """Ops from their wire form; raises :class:`WireError` on malformed data."""
        if isinstance(data, tuple) and all(isinstance(op, TextOp) for op in data):
            ops: TextOps = data
        else:
            ops = convert_wire(data, TextOps, "text ops")
        if len(ops) > MAX_OPS_PER_EDIT:
            raise WireError(f"{len(ops)} text ops in one edit (max {MAX_OPS_PER_EDIT})")
        for op in ops:
            check_op(op)
        return ops


class TextReplica:
    """:class:`OpText` behind the edit interface of :class:`OpCrdtNode`.

    An ``insert`` goes at ``where`` modulo (length + 1), or at the typing cursor (just
    after this replica's previous insert) when ``at_cursor`` and nothing else happened
    since; a ``delete`` removes up to ``count`` characters from ``where`` modulo length.
    """

    kinds = frozenset({"insert", "delete"})

    def __init__(self, replica: str) -> None:
        self.crdt = OpText(replica)
        self.cursor: int | None = None

    def prepare(self, edit: CrdtEdit) -> TextOps:
        size = len(self.crdt)
        if edit.kind == "insert":
            cursor = self.cursor
            resume = edit.at_cursor and cursor is not None and cursor <= size
            at = cursor if resume and cursor is not None else edit.where % (size + 1)
            self.cursor = at + len(edit.text)
            return self.crdt.insert(at, edit.text)
        self.cursor = None
        if size == 0:
            return ()
        at = edit.where % size
        return self.crdt.delete(at, min(edit.count, size - at))

    def effect(self, op: Any, fresh: bool) -> None:
        if fresh:
            return  # integrated by prepare
        self.cursor = None
        self.crdt.effect(self.check_op(op))

    def check_op(self, op: Any) -> TextOps:
        return OpText.decode_ops(op)

    def value(self) -> str:
        return self.crdt.text()


def make_text_node(
    node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState
) -> OpCrdtNode:
    """Factory: an op-based text replica."""
    return OpCrdtNode(node_id, peers, rng, durable, make_replica=TextReplica)
