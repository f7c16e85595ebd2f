"""Effects a node hands to its runtime in a :class:`Ready` batch (modelled on etcd-raft)."""

from __future__ import annotations

from typing import Any

import msgspec

from pnyx.core.messages import Message
from pnyx.core.storage import PersistOp


class Send(msgspec.Struct, frozen=True, array_like=True):
    """Deliver ``msg`` to the node or client ``to``."""

    to: int
    msg: Message


class Apply(msgspec.Struct, frozen=True, array_like=True):
    """Apply a committed ``command`` (log position ``index``) to the state machine.

    When ``reply_to`` is set, the runtime sends the state machine's result to that client
    as a :class:`ClientReply` carrying ``request_id``.  ``read_only`` commands must not
    change the state machine (linearizable reads served after a read barrier).
    """

    index: int
    command: Any
    reply_to: int | None = None
    request_id: int = 0
    read_only: bool = False


class Restore(msgspec.Struct, frozen=True, array_like=True):
    """Replace the state machine's state with snapshot ``data`` covering log ``index``."""

    index: int
    data: bytes


class Record(msgspec.Struct, frozen=True, array_like=True):
    """An observation for the runtime to timestamp and keep (client history events)."""

    event: Any


class ClientReply(Message, frozen=True):
    """Generic reply to a client request: result of applying, or a redirect/error."""

    request_id: int
    ok: bool
    result: Any = None
    leader_hint: int | None = None
    error: str = ""


class Ready:
    """One batch of work for the runtime, carried out in field order.

    1. ``persist`` made durable (fsync) before anything else in the batch happens;
    2. ``send`` delivered to peers and clients;
    3. ``apply`` handed to the state machine (with replies), in order;
    4. ``record`` observations stamped and kept;
    5. ``services``: other runtime requests (snapshots, ...), protocol specific.

    After carrying it out the runtime calls ``node.advance(ready)``.
    """

    __slots__ = ("apply", "persist", "record", "send", "services")

    def __init__(self) -> None:
        self.persist: list[PersistOp] = []
        self.send: list[Send] = []
        self.apply: list[Apply | Restore] = []
        self.record: list[Record] = []
        self.services: list[Any] = []

    def is_empty(self) -> bool:
        """True when the batch asks the runtime for nothing."""
        return not (self.persist or self.send or self.apply or self.record or self.services)

    def __repr__(self) -> str:
        return (
            f"Ready(persist={self.persist!r}, send={self.send!r}, apply={self.apply!r}, "
            f"record={self.record!r}, services={self.services!r})"
        )
