"""The raw history event a client records; checkers in ``pnyx.check`` build on it."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

EventType = Literal["invoke", "ok", "fail", "info"]


class HistoryEvent(msgspec.Struct, frozen=True, array_like=True):
    """One half of a client operation, as in Jepsen histories.

    ``type`` is ``invoke`` when the operation starts and ``ok`` / ``fail`` / ``info`` when
    it completes (``fail``: certainly did not happen; ``info``: outcome unknown).
    ``time`` is stamped by the runtime (virtual or wall-clock nanoseconds); clients leave it 0.
    """

    process: int
    type: EventType
    f: str
    value: Any = None
    key: Any = None
    time: int = 0
