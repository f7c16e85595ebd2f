"""Wire and log types of the timestamp oracle."""

from __future__ import annotations

import msgspec

from pnyx.core import Message

MAX_BATCH = 100_000
"""Most timestamps one request may ask for."""


class TsoRequest(Message, frozen=True):
    """Client → leader: ``count`` fresh timestamps.  Answered with a ``ClientReply`` whose
    result is ``[first, count]``: the timestamps ``first .. first + count - 1``."""

    request_id: int
    count: int = 1


class SetHighWater(msgspec.Struct, frozen=True, array_like=True, tag=True):
    """Log command: no timestamp at or below ``mark`` may be handed out by a later leader.
    ``term`` is the proposing leader's term (its own window grows only with its own marks)."""

    mark: int
    term: int


class Barrier(msgspec.Struct, frozen=True, array_like=True, tag=True):
    """Read query the leader runs through Raft's ReadIndex to confirm it still leads."""

    ctx: int


TsoCommand = SetHighWater | Barrier
"""Everything the TSO puts through Raft."""
