"""Simulated clients of the op-based CRDT nodes: random edits, one at a time, recorded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pnyx.core import (
    CLIENT_ID_BASE,
    ClientReply,
    HistoryEvent,
    Message,
    Outbox,
    Quiesce,
    Record,
    Rng,
    Send,
)
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


class OpClient(Outbox):
    """Sends one edit at a time to a node (implements :class:`pnyx.core.Node`)."""

    def __init__(self, client_id: int, node_ids: tuple[int, ...], rng: Rng, draw: Draw) -> None:
        if not node_ids:
            raise ValueError("a client needs at least one node")
        super().__init__()
        self.node_id = client_id
        self.index = client_id - CLIENT_ID_BASE
        self.chars_used = 0
        self.last_target: int | None = None
        self.last_kind = ""
        self._nodes = node_ids
        self._rng = rng
        self._draw = draw
        self._seq = 0
        self._in_flight: CrdtEdit | None = None
        self._waited_ticks = 0
        self._think_ticks = rng.randrange(0, MAX_THINK_TICKS)
        self._stopped = False

    def step(self, msg: Message, from_id: int) -> None:
        if isinstance(msg, Quiesce):
            self._stopped = True
        elif isinstance(msg, ClientReply):
            edit = self._in_flight
            if edit is not None and msg.request_id == edit.request_id:
                self._complete("ok" if msg.ok else "fail", edit)

    def tick(self) -> None:
        edit = self._in_flight
        if edit is not None:
            self._waited_ticks += 1
            if self._waited_ticks >= TIMEOUT_TICKS:
                self._complete("info", edit)
            return
        if self._stopped:
            return
        if self._think_ticks > 0:
            self._think_ticks -= 1
            return
        self._start()

    def pick_node(self) -> int:
        """A random node."""
        return self._nodes[self._rng.randrange(0, len(self._nodes))]

    def _start(self) -> None:
        self._seq += 1
        fields = self._draw(self, self._rng)
        target = fields.pop("target", None) or self.pick_node()
        edit = CrdtEdit(self._seq, f"{self.node_id}-{self._seq}", **fields)
        self._in_flight = edit
        self._waited_ticks = 0
        self.last_target, self.last_kind = target, edit.kind
        invoke = HistoryEvent(self.node_id, "invoke", edit.kind, edit.edit_id)
        self._ready.record.append(Record(invoke))
        self._ready.send.append(Send(target, edit))

    def _complete(self, outcome: str, edit: CrdtEdit) -> None:
        event = HistoryEvent(self.node_id, outcome, edit.kind, edit.edit_id)  # type: ignore[arg-type]
        self._ready.record.append(Record(event))
        self._in_flight = None
        self._think_ticks = self._rng.randrange(0, MAX_THINK_TICKS)


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
