"""What a runtime must make durable for a node, and the pure fold that rebuilds it on restart.

A node emits :class:`PersistOp` values in ``Ready.persist``.  The runtime writes them (WAL +
fsync in the real runtime, a modelled disk in the simulator) before sending anything from
the same batch.  On restart the runtime replays what survived into a :class:`DurableState`
and hands it to the node's constructor; both runtimes use the same fold below.
"""

from __future__ import annotations

from typing import Any

import msgspec


class PersistOp(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """Base of the durable write operations a node may request."""


class PutRecord(PersistOp, frozen=True):
    """Set a named record (hard state such as term and vote) to ``value``."""

    key: str
    value: Any


class LogAppend(PersistOp, frozen=True):
    """Drop log entries at ``first_index`` and after, then append ``entries`` from there."""

    first_index: int
    entries: tuple[Any, ...]


class LogCompact(PersistOp, frozen=True):
    """Entries up to and including ``through_index`` are no longer needed (snapshotted)."""

    through_index: int


class SnapshotSave(PersistOp, frozen=True):
    """A state-machine snapshot covering the log through ``index`` (of ``term``)."""

    index: int
    term: int
    data: bytes
    meta: Any = None


class DurableState:
    """Everything durable about one node: named records, a log with a moving start, a snapshot.

    Log indices are 1-based.  ``log[i]`` holds the entry of index ``log_start + i``.
    """

    __slots__ = ("log", "log_start", "records", "snapshot")

    def __init__(self) -> None:
        self.records: dict[str, Any] = {}
        self.log: list[Any] = []
        self.log_start = 1
        self.snapshot: SnapshotSave | None = None

    @property
    def last_index(self) -> int:
        """Index of the last log entry (or of the snapshot when the log is empty)."""
        return self.log_start + len(self.log) - 1

    def entry(self, index: int) -> Any:
        """The log entry at ``index``; it must be present."""
        if not self.log_start <= index <= self.last_index:
            raise IndexError(f"log index {index} outside [{self.log_start}, {self.last_index}]")
        return self.log[index - self.log_start]

    def apply(self, op: PersistOp) -> None:
        """Fold one durable write into this state."""
        if isinstance(op, PutRecord):
            self.records[op.key] = op.value
        elif isinstance(op, LogAppend):
            self._append(op)
        elif isinstance(op, LogCompact):
            self._compact(op.through_index)
        elif isinstance(op, SnapshotSave):
            if self.snapshot is None or op.index >= self.snapshot.index:
                self.snapshot = op
        else:
            raise TypeError(f"unknown persist operation {type(op).__name__}")

    def apply_all(self, ops: list[PersistOp]) -> None:
        """Fold a batch of durable writes, in order."""
        for op in ops:
            self.apply(op)

    def copy(self) -> DurableState:
        """An independent copy (entries themselves are immutable and shared)."""
        twin = DurableState()
        twin.records = dict(self.records)
        twin.log = list(self.log)
        twin.log_start = self.log_start
        twin.snapshot = self.snapshot
        return twin

    def _append(self, op: LogAppend) -> None:
        first = op.first_index
        if first > self.last_index + 1:  # guards the log: checked under python -O too
            raise ValueError(
                f"log append at {first} leaves a gap after last index {self.last_index}"
            )
        if first < self.log_start:
            # The head of this append is already covered by a snapshot: skip it.
            skip = self.log_start - first
            entries = op.entries[skip:]
            first = self.log_start
        else:
            entries = op.entries
        del self.log[first - self.log_start :]
        self.log.extend(entries)

    def _compact(self, through_index: int) -> None:
        if through_index < self.log_start:
            return
        drop = min(through_index - self.log_start + 1, len(self.log))
        del self.log[:drop]
        self.log_start = through_index + 1
