"""Wire messages of chain replication and CRAQ (clients, replicas and the master)."""

from __future__ import annotations

from typing import Any

from pnyx.core import Message


class KvRequest(Message, frozen=True):
    """Client → replica: one KV operation ``f`` (get, put, append, cas) on ``key``.

    ``value`` is the new value (put), the suffix (append) or ``[expected, new]`` (cas).
    A retry carries the same ``request_id``; the head applies a write at most once.
    """

    request_id: int
    f: str
    key: str
    value: Any = None


class Update(Message, frozen=True):
    """Replica → successor: the write with sequence number ``seq`` as computed by the head
    (the key's new value and the operation's result), in configuration ``epoch``."""

    epoch: int
    seq: int
    client: int
    request_id: int
    key: str
    new_value: Any
    result: Any


class Sync(Message, frozen=True):
    """Replica → predecessor: what the sender holds.  Acknowledges ``committed`` (the
    tail's commit point as the sender knows it) and asks for updates after ``last_seq``,
    or for a snapshot when ``has_state`` is false (a node just added at the tail)."""

    epoch: int
    last_seq: int
    committed: int
    has_state: bool


class Snapshot(Message, frozen=True):
    """Replica → new successor: the whole replicated state (state transfer)."""

    epoch: int
    last_seq: int
    committed: int
    versions: dict[str, list[tuple[int, Any]]]
    last_writes: tuple[tuple[int, int, int, Any], ...]
    """``(client, request_id, seq, result)`` of each client's newest write, sorted by client
    (a tuple, not a dict: the wire encoding allows only string keys in maps)."""


class VersionQuery(Message, frozen=True):
    """CRAQ replica → tail: which version of ``key`` is committed?"""

    epoch: int
    query_id: int
    key: str


class VersionReply(Message, frozen=True):
    """Tail → CRAQ replica: ``seq`` is the committed version of the key asked about."""

    query_id: int
    seq: int


class Ping(Message, frozen=True):
    """Replica → master: heartbeat.  ``sent_tick`` is echoed back to grant a lease."""

    sent_tick: int
    incarnation: int
    epoch: int
    has_state: bool = True


class ChainConfig(Message, frozen=True):
    """Master → replica: configuration ``epoch``; ``members`` lists ``(node, since_epoch)``
    from head to tail.  ``echo_tick`` (a Ping's ``sent_tick``, or -1) grants a lease."""

    epoch: int
    members: tuple[tuple[int, int], ...]
    echo_tick: int = -1


WIRE_TYPES: tuple[type[Message], ...] = (
    KvRequest,
    Update,
    Sync,
    Snapshot,
    VersionQuery,
    VersionReply,
    Ping,
    ChainConfig,
)
