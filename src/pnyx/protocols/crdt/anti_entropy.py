"""Delta-interval anti-entropy (Almeida, Shoker, Baquero 2018, Algorithm 2), without I/O.

Each replica numbers the deltas it joins (its own mutations and received deltas that
changed its state) with a sequence counter and keeps them in a delta buffer.  For each
neighbour it remembers the highest acknowledged counter ``acked[j]`` ("j has every
delta numbered below it").  A shipment to ``j`` is the join of the buffered deltas from
``acked[j]`` up to the counter, tagged with the counter; ``j`` joins it and acknowledges
the tag.  Deltas every neighbour has acknowledged are garbage-collected.  When the
buffer no longer reaches back to ``acked[j]`` (the neighbour was away too long, the
buffer hit its bound, or this replica restarted with an empty buffer) the shipment is
the full state instead.

Deltas are not re-sent to the neighbour they came from.  The counter must be durable
with the state (an acknowledgement from before a restart refers to it), the buffer and
the acknowledgements are volatile.  The caller owns messages, timers and persistence:
this class only decides what to join, buffer and ship.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pnyx.protocols.crdt.state import StateCRDT

T = TypeVar("T", bound=StateCRDT)

DEFAULT_MAX_BUFFERED = 256
"""Deltas kept at most; beyond it the oldest go and lagging neighbours get full states."""

FIRST_SEQ = 1
"""Sequence number of a fresh replica's first delta (``acked = 1``: has nothing)."""


@dataclass(frozen=True)
class Shipment(Generic[T]):
    """What to send one neighbour: ``payload`` to join, ``seq`` for it to acknowledge."""

    payload: T
    """Encode it at once: it is the live state (``full``) or a cached group that the next
    :meth:`DeltaAntiEntropy.shipment_for` call may extend."""
    seq: int
    full: bool
    """True when ``payload`` is the whole state."""


class DeltaAntiEntropy(Generic[T]):
    """The delta buffer, counter and acknowledgements of one replica.

    ``state`` is joined in place; mutate it through the CRDT's own mutators and hand the
    returned delta to :meth:`record_local`.
    """

    def __init__(
        self,
        state: T,
        neighbours: Iterable[Hashable],
        *,
        next_seq: int = FIRST_SEQ,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
    ) -> None:
        if next_seq < FIRST_SEQ:
            raise ValueError(f"next_seq must be >= {FIRST_SEQ}, got {next_seq}")
        if max_buffered < 1:
            raise ValueError(f"max_buffered must be >= 1, got {max_buffered}")
        self.state = state
        self._seq = next_seq
        self._max_buffered = max_buffered
        self._buffer: dict[int, tuple[T, Hashable | None]] = {}
        self._low = next_seq
        """Lowest sequence number still buffered (== ``_seq`` when the buffer is empty)."""
        self._acked: dict[Hashable, int] = {j: FIRST_SEQ for j in neighbours}
        self._groups: dict[Hashable, tuple[int, int, T]] = {}
        """neighbour -> (from, to, join of the deltas in [from, to)): the last interval built."""

    @property
    def next_seq(self) -> int:
        """The counter: the number the next buffered delta gets (persist it with the state)."""
        return self._seq

    @property
    def buffered(self) -> int:
        """Deltas currently buffered."""
        return len(self._buffer)

    def acked(self, neighbour: Hashable) -> int:
        """What ``neighbour`` has acknowledged (it holds every delta numbered below)."""
        return self._acked[neighbour]

    def record_local(self, delta: T) -> int:
        """Buffer the delta of a local mutation (already applied to ``state``); its number."""
        return self._buffer_delta(delta, None)

    def apply_remote(self, payload: T, sender: Hashable | None = None) -> bool:
        """Join a received delta-interval or full state; buffer it when it changed the state.

        Returns True when the state changed.  Either way the caller then acknowledges the
        shipment's ``seq`` to the sender (after persisting, when it changed).  ``payload``
        is kept in the buffer: hand over an object nobody mutates later (a decoded one).
        """
        if not self.state.absorb(payload):
            return False
        self._buffer_delta(payload, sender)
        return True

    def on_ack(self, neighbour: Hashable, seq: int) -> None:
        """``neighbour`` acknowledged ``seq``; drop deltas every neighbour has."""
        if neighbour not in self._acked:
            raise KeyError(f"ack from {neighbour!r}, which is not a neighbour")
        if seq > self._acked[neighbour]:
            self._acked[neighbour] = min(seq, self._seq)
            self._collect_garbage()

    def shipment_for(self, neighbour: Hashable) -> Shipment[T] | None:
        """What ``neighbour`` lacks, or None when it has acknowledged everything."""
        since = self._acked[neighbour]
        if since >= self._seq:
            return None
        if since < self._low:
            return Shipment(self.state, self._seq, True)
        cached = self._groups.get(neighbour)
        if cached is not None and cached[0] == since:
            start, group = cached[1], cached[2]  # extend the interval shipped last time
        else:
            start, group = since, None
        for seq in range(start, self._seq):
            delta, origin = self._buffer[seq]
            if origin == neighbour:
                continue  # it came from there
            if group is None:
                group = delta.copy()
            else:
                group.absorb(delta)
        if group is None:  # everything new came from that neighbour: it has it all
            self.on_ack(neighbour, self._seq)
            return None
        self._groups[neighbour] = (since, self._seq, group)
        return Shipment(group, self._seq, False)

    def _buffer_delta(self, delta: T, origin: Hashable | None) -> int:
        seq = self._seq
        self._buffer[seq] = (delta, origin)
        self._seq += 1
        if len(self._buffer) > self._max_buffered:
            del self._buffer[self._low]
            self._low += 1
        return seq

    def _collect_garbage(self) -> None:
        floor = min(self._acked.values(), default=self._seq)
        while self._low < floor:
            self._buffer.pop(self._low, None)
            self._low += 1

    def invariants(self) -> list[str]:
        """Broken internal invariants (empty when all hold)."""
        problems = []
        if len(self._buffer) != self._seq - self._low or (
            self._buffer and (self._low not in self._buffer or self._seq - 1 not in self._buffer)
        ):
            problems.append(f"buffer keys {sorted(self._buffer)} != [{self._low}, {self._seq})")
        if max(self._acked.values(), default=0) > self._seq:
            problems.append(f"ack beyond counter {self._seq}: {self._acked}")
        return problems
