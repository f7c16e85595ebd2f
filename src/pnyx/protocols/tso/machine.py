"""The replicated part of the timestamp oracle: the persisted high-water mark."""

from __future__ import annotations

from typing import Any

import msgspec

from pnyx.protocols.tso.messages import Barrier, SetHighWater

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(int)


def as_command(raw: Any) -> SetHighWater | Barrier:
    """A TSO command, also from its untyped form (a list after a WAL or wire round trip);
    ValueError for anything else."""
    if isinstance(raw, SetHighWater | Barrier):
        return raw
    try:
        command: SetHighWater | Barrier = msgspec.convert(raw, SetHighWater | Barrier)
    except msgspec.ValidationError as exc:
        raise ValueError(f"not a TSO command: {raw!r} ({exc})") from exc
    return command


def decode_mark(data: bytes) -> int:
    """The mark in a snapshot made by :meth:`TsoStateMachine.snapshot`."""
    mark = _DECODER.decode(data)
    if mark < 0:
        raise ValueError(f"TSO snapshot holds a negative mark {mark}")
    return mark


class TsoStateMachine:
    """Applies :class:`SetHighWater` (the mark only grows); a :class:`Barrier` read returns it."""

    def __init__(self) -> None:
        self.mark = 0

    def apply(self, command: Any) -> Any:
        """Raise the mark, or read it."""
        command = as_command(command)
        if isinstance(command, SetHighWater):
            self.mark = max(self.mark, command.mark)
            return self.mark
        if isinstance(command, Barrier):
            return self.mark
        raise ValueError(f"TSO state machine cannot apply {command!r}")

    def snapshot(self) -> bytes:
        """The mark, msgpack-encoded."""
        return _ENCODER.encode(self.mark)

    def restore(self, data: bytes) -> None:
        """Take the mark from a snapshot."""
        self.mark = decode_mark(data)
