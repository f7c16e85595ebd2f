"""Wire messages of CRDT document replicas (peer sync) and of their control clients.

Peers (over :mod:`pnyx.runtime.transport`, one ``Hello`` per connection naming the sender):

* :class:`SyncDigest` — "this is what I have": per field its version (replica → counter).
  Sent every sync interval to every reachable peer (the anti-entropy round).
* :class:`SyncUpdates` — field payloads the receiver lacks: an answer to a digest, or a
  local edit pushed eagerly once it is durable.

Clients (``pnyx crdt get/edit/status`` and :class:`pnyx.services.crdt.client.DocClient`):
:class:`DocRequest` → :class:`DocReply` with the same ``request_id``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pnyx.core import Message


class FieldVersion(msgspec.Struct, frozen=True, array_like=True):
    """What a replica has of one field: ``version[replica]`` = highest contiguous counter."""

    name: str
    kind: str
    version: dict[str, int]


class FieldPayload(msgspec.Struct, frozen=True, array_like=True):
    """One update of one field (encoded by the field's kind)."""

    name: str
    kind: str
    data: bytes


class SyncDigest(Message, frozen=True):
    """Peer → peer: the sender's version of every field (answered by missing updates).

    A big digest is split into several, each speaking for the sorted ``(name, kind)`` keys
    in ``(after, upto]`` (``[]`` = unbounded): a field in that range that the digest does
    not list is one the sender does not have.
    """

    replica: str
    fields: list[FieldVersion]
    after: list[str] = msgspec.field(default_factory=list)
    upto: list[str] = msgspec.field(default_factory=list)


class SyncUpdates(Message, frozen=True):
    """Peer → peer: updates the receiver lacks (bounded by the sender's message budget)."""

    replica: str
    fields: list[FieldPayload]


class DocRequest(Message, frozen=True):
    """Client → replica.  ``op`` is one of ``get``, ``edit``, ``status``, ``partition``,
    ``heal`` (the last two only on a replica started for fault testing).

    ``edit``: ``kind`` and ``field`` name the field, ``args[0]`` the action and the rest
    its arguments (see ``pnyx crdt edit --help``).  ``get``: ``field`` (optional) names one
    field.  ``partition``: ``args`` are the peer names to cut off.
    """

    request_id: int
    op: str
    kind: str = ""
    field: str = ""
    args: list[Any] = msgspec.field(default_factory=list)


class DocReply(Message, frozen=True):
    """Replica → client: ``ok`` with a JSON-like ``value``, or an ``error`` message.

    An ``edit`` is answered only once it is durable on the replica.
    """

    request_id: int
    ok: bool
    value: Any = None
    error: str = ""


PEER_MESSAGES: tuple[type[Message], ...] = (SyncDigest, SyncUpdates)
CLIENT_MESSAGES: tuple[type[Message], ...] = (DocRequest,)
REPLY_MESSAGES: tuple[type[Message], ...] = (DocReply,)
