"""Wire message base class and the stable encoding used for transport and trace hashing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, TypeVar

import msgspec


class Message(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """Base of every wire message: frozen, typed, comparable, tagged by class name.

    ``array_like`` keeps frames small; ``tag`` lets a union of message types be decoded.
    """


_ENCODER = msgspec.msgpack.Encoder(order="deterministic")


def encode(value: Any) -> bytes:
    """Encode ``value`` as msgpack with deterministic map ordering (stable across runs)."""
    return _ENCODER.encode(value)


T = TypeVar("T")


class Codec(Generic[T]):
    """Decoder for a closed set of message types (a protocol's wire vocabulary)."""

    def __init__(self, types: Iterable[type[Any]]) -> None:
        self.types: tuple[type[Any], ...] = tuple(types)
        assert self.types, "a codec needs at least one message type"
        union: Any = self.types[0]
        for extra in self.types[1:]:
            union = union | extra
        self._decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(union)

    def encode(self, value: T) -> bytes:
        """Encode one message."""
        return _ENCODER.encode(value)

    def decode(self, data: bytes) -> T:
        """Decode one message; raises :class:`msgspec.DecodeError` on malformed input."""
        result: T = self._decoder.decode(data)
        return result


class Quiesce(Message, frozen=True):
    """Sent by a runtime to a client: stop starting new operations, finish the open ones."""
