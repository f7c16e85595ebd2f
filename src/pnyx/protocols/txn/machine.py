"""The range state machine of the transactional store: multi-Raft's range, whose per-key
record is Percolator's (:class:`~pnyx.protocols.txn.mvcc.KeyRecord`).

It runs in every data range (``MultiRaftConfig.make_range_machine``): the transaction
commands of :mod:`pnyx.protocols.txn.messages` are checked against the range's bounds when
applied (a command proposed before a split and applied after it is refused with
``key_not_in_range``, never applied where no reader looks); a split moves whole records —
data, writes, rollback records *and the lock* — to the right half, which also starts with
the left's ``max_read_ts``; snapshots carry records and ``max_read_ts``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from pnyx.protocols.multiraft.machines import RangeStateMachine
from pnyx.protocols.multiraft.messages import RangeBounds
from pnyx.protocols.raft.kv import KvOp
from pnyx.protocols.txn.messages import (
    TXN_COMMAND_TYPES,
    Get,
    Scan,
    ScanResult,
    TxnCommand,
    command_keys,
)
from pnyx.protocols.txn.mvcc import STORE_MUTANTS, KeyRecord, MvccStore

SPLIT_LOSES_LOCK = "split_loses_lock"
"""Mutant: a range split drops the locks of the keys it moves to the new range."""
MACHINE_MUTANTS: frozenset[str] = STORE_MUTANTS | {SPLIT_LOSES_LOCK}


PLAIN_KV_REFUSED = "plain KV operations are refused by a transaction range (use transactions)"
"""Error of a plain :class:`~pnyx.protocols.raft.kv.KvOp` sent to a transaction range."""


class TxnRangeMachine(RangeStateMachine):
    """A data range holding Percolator records (implements :class:`pnyx.core.StateMachine`)."""

    op_types: ClassVar[tuple[type[msgspec.Struct], ...]] = TXN_COMMAND_TYPES

    def __init__(
        self,
        bounds: RangeBounds,
        mutants: frozenset[str] = frozenset(),
        txn_mutants: frozenset[str] = frozenset(),
    ) -> None:
        unknown = txn_mutants - MACHINE_MUTANTS
        if unknown:
            valid = sorted(MACHINE_MUTANTS)
            raise ValueError(f"unknown txn range mutants {sorted(unknown)}; valid: {valid}")
        super().__init__(bounds, mutants)
        self._txn_mutants = txn_mutants
        self.mvcc = MvccStore(txn_mutants & STORE_MUTANTS, self.store.data)

    def op_keys(self, op: Any) -> tuple[str, ...]:
        """Every key a transaction command touches (the node refuses early when one lies
        outside the range)."""
        if type(op) in TXN_COMMAND_TYPES:
            return command_keys(op)
        return super().op_keys(op)

    def apply_op(self, op: Any) -> Any:
        """Refuse the plain KV operations of the base range: a ``put`` would replace a key's
        Percolator record with a bare value that every later transaction command on the key
        (and every replica replaying the log) would trip over."""
        if type(op) is KvOp:
            return {"error": f"{PLAIN_KV_REFUSED}: {op.kind} {op.key!r}"}
        return super().apply_op(op)

    def apply_other(self, op: Any) -> Any:
        """Apply a transaction command if every key it touches is this range's."""
        command: TxnCommand = op
        for key in command_keys(command):
            error = self.key_error(key)
            if error is not None:
                return error
        try:
            if type(command) is Scan:
                return self._scan(command)
            result = self.mvcc.apply(command)
        except ValueError as exc:
            return {"error": f"bad {type(op).__name__}: {exc}"}
        if type(op) is not Get:
            self.mutations += 1
        return result

    def _scan(self, cmd: Scan) -> ScanResult:
        """The scan clipped to this range (its start is this range's: checked above); when
        the interval goes on past the range, the answer resumes at the range's end."""
        range_end = self.bounds.end
        if range_end is None or (cmd.end and cmd.end <= range_end):
            return self.mvcc.scan(cmd)
        result = self.mvcc.scan(Scan(cmd.start, range_end, cmd.read_ts, cmd.limit))
        if result.resume or result.lock is not None:
            return result
        return ScanResult(result.items, None, range_end)

    # -- split and snapshots ----------------------------------------------------------------

    def split_records(self, right: RangeBounds) -> list[tuple[str, Any]]:
        """Whole records move to the right half (the mutant drops their locks)."""
        moved = super().split_records(right)
        if SPLIT_LOSES_LOCK in self._txn_mutants:
            for _, rec in moved:
                rec.lock = None
        return moved

    def split_extra(self, right: RangeBounds) -> Any:
        """The right half starts with this range's largest read timestamp."""
        return self.mvcc.max_read_ts

    def load_records(self, records: list[tuple[str, Any]]) -> None:
        """Records decoded from an image, typed again."""
        self.store.data = {k: _record(v) for k, v in records}
        self.mvcc.records = self.store.data

    def image_extra(self) -> Any:
        return self.mvcc.max_read_ts

    def restore_extra(self, extra: Any) -> None:
        self.mvcc.max_read_ts = int(extra) if extra is not None else 0


def _record(raw: Any) -> KeyRecord:
    return raw if type(raw) is KeyRecord else msgspec.convert(raw, KeyRecord, strict=False)
