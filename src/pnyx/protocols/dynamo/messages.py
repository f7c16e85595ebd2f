"""Wire messages of Dynamo-style quorum replication."""

from __future__ import annotations

from typing import Any

import msgspec

from pnyx.core import Message
from pnyx.protocols.dynamo.versions import EMPTY, Context, Version

KeyData = tuple[tuple[str, tuple[Version, ...]], ...]
"""``(key, siblings)`` pairs, sorted by key."""


class Get(Message, frozen=True):
    """Client → coordinator: read ``key`` (answered with a :class:`ReadResult`)."""

    request_id: int
    key: str


class Put(Message, frozen=True):
    """Client → coordinator: write ``value`` to ``key`` in the ``context`` the client read
    (answered with a :class:`WriteResult`); the versions the context covers are replaced."""

    request_id: int
    key: str
    value: Any
    context: Context = EMPTY


class ReadResult(msgspec.Struct, frozen=True, array_like=True):
    """A read's answer: every sibling's value (sorted by dot) and the context to write back."""

    values: tuple[Any, ...]
    context: Context


class WriteResult(msgspec.Struct, frozen=True, array_like=True):
    """A write's answer: the new version's dot."""

    node: int
    counter: int


class ReplicaRead(Message, frozen=True):
    """Coordinator → replica: send your siblings of ``key``."""

    op_id: int
    key: str


class ReplicaReadReply(Message, frozen=True):
    """Replica → coordinator: its siblings of ``key`` (own and hinted)."""

    op_id: int
    key: str
    versions: tuple[Version, ...]


class ReplicaWrite(Message, frozen=True):
    """Coordinator → replica: merge ``versions`` into ``key``.  ``hint_for`` ≥ 0: keep them
    as a hint for that node (sloppy quorum).  ``op_id`` 0: a read repair, not acknowledged."""

    op_id: int
    key: str
    versions: tuple[Version, ...]
    hint_for: int = -1


class ReplicaWriteAck(Message, frozen=True):
    """Replica → coordinator: ``versions`` of the write ``op_id`` are durable."""

    op_id: int


class HintDeliver(Message, frozen=True):
    """Hint holder → intended replica: versions written for you while you were unreachable."""

    key: str
    versions: tuple[Version, ...]


class HintAck(Message, frozen=True):
    """Intended replica → hint holder: these versions are durable here; drop the hint."""

    key: str
    versions: tuple[Version, ...]


class MerkleTree(Message, frozen=True):
    """Anti-entropy, replica → replica: the sender's Merkle tree of one key range."""

    range_index: int
    hashes: tuple[bytes, ...]


class MerkleDiff(Message, frozen=True):
    """Answer to :class:`MerkleTree`: the differing leaves and the sender's keys in them."""

    range_index: int
    leaves: tuple[int, ...]
    data: KeyData


class MerklePush(Message, frozen=True):
    """Answer to :class:`MerkleDiff`: the initiator's keys in the differing leaves."""

    range_index: int
    data: KeyData


PEER_MESSAGE_TYPES: tuple[type[Message], ...] = (
    ReplicaRead,
    ReplicaReadReply,
    ReplicaWrite,
    ReplicaWriteAck,
    HintDeliver,
    HintAck,
    MerkleTree,
    MerkleDiff,
    MerklePush,
)
CLIENT_MESSAGE_TYPES: tuple[type[Message], ...] = (Get, Put)
WIRE_TYPES: tuple[type[Message], ...] = CLIENT_MESSAGE_TYPES + PEER_MESSAGE_TYPES
