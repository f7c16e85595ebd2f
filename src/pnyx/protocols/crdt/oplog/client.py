"""Simulated clients of the op-based CRDT nodes: random edits, one at a time, recorded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pnyx.core import CLIENT_ID_BASE, EventType, HistoryEvent, OneAtATimeClient, Rng
from pnyx.protocols.crdt.oplog.messages import CrdtEdit

TIMEOUT_TICKS = 30
"""Ticks without a reply after which an edit is recorded as ``info``."""

MAX_THINK_TICKS = 6
"""Upper bound on idle ticks between two edits."""

SET_ELEMENTS = ("a", "b", "c", "d", "e")
"""A small universe, so that adds and removes of one element are often concurrent."""

TEXT_PLANE_BASE = 0x10000
"""Inserted characters are non-BMP code points (planes 1-16, no surrogates there), each
client its own block, so every inserted character is unique."""
TEXT_BLOCK = 0x4000
"""Characters per client block (64 clients fit below U+10FFFF)."""

Draw = Callable[["OpClient", Rng], dict[str, Any]]
"""Draws the fields of the next edit (``kind`` and its arguments)."""


class OpClient(OneAtATimeClient[CrdtEdit]):
    """Sends one edit at a time to a node (implements :class:`pnyx.core.Node`)."""

    def __init__(self, client_id: int, node_ids: tuple[int, ...], rng: Rng, draw: Draw) -> None:
        super().__init__(
            client_id, node_ids, rng, timeout_ticks=TIMEOUT_TICKS, max_think_ticks=MAX_THINK_TICKS
        )
        self.index = client_id - CLIENT_ID_BASE
        self.chars_used = 0
        self.last_target: int | None = None
        self.last_kind = ""
        self._draw = draw

    def _begin_op(self, request_id: int) -> tuple[int, CrdtEdit, HistoryEvent]:
        fields = self._draw(self, self._rng)
        target = fields.pop("target", None) or self.pick_node()
        edit = CrdtEdit(request_id, f"{self.node_id}-{request_id}", **fields)
        self.last_target, self.last_kind = target, edit.kind
        return target, edit, HistoryEvent(self.node_id, "invoke", edit.kind, edit.edit_id)

    def _completion(self, outcome: EventType, edit: CrdtEdit, result: Any) -> HistoryEvent:
        return HistoryEvent(self.node_id, outcome, edit.kind, edit.edit_id)


def draw_counter(client: OpClient, rng: Rng) -> dict[str, Any]:
    """An increment by -3..5."""
    return {"kind": "increment", "amount": rng.randrange(-3, 6)}


def draw_set(client: OpClient, rng: Rng) -> dict[str, Any]:
    """Add (60%) or remove an element of :data:`SET_ELEMENTS`."""
    kind = "add" if rng.random() < 0.6 else "remove"
    return {"kind": kind, "element": SET_ELEMENTS[rng.randrange(0, len(SET_ELEMENTS))]}


def draw_text(client: OpClient, rng: Rng) -> dict[str, Any]:
    """Inserts (runs of 1-5 unique characters; often at the start, so concurrent inserts
    share a position; often continuing at the cursor of the previous insert, i.e. typing)
    and deletes of 1-3 characters."""
    if rng.random() < 0.25:
        return {"kind": "delete", "where": rng.randrange(0, 1 << 30), "count": rng.randrange(1, 4)}
    length = 1 if rng.random() < 0.5 else rng.randrange(2, 6)
    if client.chars_used + length > TEXT_BLOCK:
        raise RuntimeError(f"client {client.node_id} used its {TEXT_BLOCK} unique characters")
    first = TEXT_PLANE_BASE + client.index * TEXT_BLOCK + client.chars_used
    client.chars_used += length
    text = "".join(chr(first + i) for i in range(length))
    fields: dict[str, Any] = {"kind": "insert", "text": text}
    if client.last_kind == "insert" and rng.random() < 0.6:
        fields["at_cursor"] = True
        fields["target"] = client.last_target
    else:
        fields["where"] = 0 if rng.random() < 0.35 else rng.randrange(0, 1 << 30)
    return fields


def _factory(draw: Draw) -> Callable[[int, tuple[int, ...], Rng], OpClient]:
    def make(client_id: int, node_ids: tuple[int, ...], rng: Rng) -> OpClient:
        return OpClient(client_id, node_ids, rng, draw)

    return make


make_counter_client = _factory(draw_counter)
"""Factory of counter clients (for the simulator)."""
make_set_client = _factory(draw_set)
"""Factory of OR-Set clients."""
make_text_client = _factory(draw_text)
"""Factory of text clients."""
