"""Percolator's columns per key and the commands over them, pure (no range, no Raft).

Per key (Peng & Dabek 2010, section 2.2): **data** ``start_ts -> value``, **lock** (at most
one pending write: primary key, start timestamp, value, async-commit fields) and **write**
``commit_ts -> start_ts`` (which data version a commit made visible).  Rolled-back start
timestamps are kept as **rollback records**, so a prewrite that arrives after its
transaction was rolled back cannot revive it (TiKV's protected rollback).

:class:`MvccStore` applies the commands of :mod:`pnyx.protocols.txn.messages`.  It also
keeps ``max_read_ts``, the largest timestamp any read of this store asked for: async
commit and 1PC choose commit timestamps above it (TiKV's ``max_ts``), so a reader that did
not see a lock never misses the write at a timestamp it already read at.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

import msgspec

from pnyx.protocols.txn.messages import (
    ALREADY_COMMITTED,
    COMMITTED,
    LOCKED,
    MAX_ALLOC_COUNT,
    RESERVED_PREFIX,
    ROLLED_BACK,
    TXN_NOT_FOUND,
    WRITE_CONFLICT,
    AllocTs,
    CheckSecondaryLocks,
    CheckTxnStatus,
    Get,
    GetResult,
    Lock,
    Prewrite,
    PrewriteResult,
    Resolve,
    ResolveResult,
    Scan,
    ScanResult,
    TxnCommand,
    TxnStatus,
)

READER_IGNORES_LOCK = "reader_ignores_lock"
"""Mutant: a read at ``ts`` skips a lock that should block it (it reads the last committed
version under a write that may commit below ``ts``)."""
SCAN_IGNORES_LOCK = "scan_ignores_lock"
"""Mutant: a scan lists the last committed value under a lock that should stop it (gets
still honour locks)."""
STORE_MUTANTS: frozenset[str] = frozenset({READER_IGNORES_LOCK, SCAN_IGNORES_LOCK})


class KeyRecord(msgspec.Struct, array_like=True):
    """Everything stored for one key: its whole record travels together (splits, snapshots)."""

    data: dict[int, Any] = msgspec.field(default_factory=dict)
    """start_ts -> value written by that transaction (None: a delete)."""
    writes: list[tuple[int, int]] = msgspec.field(default_factory=list)
    """(commit_ts, start_ts), ascending by commit_ts."""
    rollbacks: list[int] = msgspec.field(default_factory=list)
    """start timestamps rolled back on this key, ascending."""
    lock: Lock | None = None
    counter: int = 0
    """The timestamp allocator's high-water mark (only on the allocator's key)."""

    def commit_of(self, start_ts: int) -> int:
        """The commit timestamp of transaction ``start_ts`` on this key (0: not committed)."""
        for commit_ts, s in reversed(self.writes):
            if s == start_ts:
                return commit_ts
        return 0

    def rolled_back(self, start_ts: int) -> bool:
        """True when transaction ``start_ts`` was rolled back on this key."""
        i = bisect.bisect_left(self.rollbacks, start_ts)
        return i < len(self.rollbacks) and self.rollbacks[i] == start_ts

    def add_rollback(self, start_ts: int) -> None:
        """Record that transaction ``start_ts`` was rolled back here."""
        if not self.rolled_back(start_ts):
            bisect.insort(self.rollbacks, start_ts)

    def visible(self, read_ts: int) -> Any:
        """The value of the last commit at or below ``read_ts`` (None: none, or deleted)."""
        i = bisect.bisect_right(self.writes, (read_ts, 2**63))
        if i == 0:
            return None
        return self.data.get(self.writes[i - 1][1])

    def last_commit_ts(self) -> int:
        """The newest commit timestamp (0: never written)."""
        return self.writes[-1][0] if self.writes else 0

    def empty(self) -> bool:
        """True when nothing is stored for the key."""
        return not (self.data or self.writes or self.rollbacks or self.lock or self.counter)


class MvccStore:
    """Percolator's columns for a set of keys, and the transaction commands over them."""

    def __init__(
        self,
        mutants: frozenset[str] = frozenset(),
        records: dict[str, KeyRecord] | None = None,
    ) -> None:
        unknown = mutants - STORE_MUTANTS
        if unknown:
            valid = sorted(STORE_MUTANTS)
            raise ValueError(f"unknown mvcc mutants {sorted(unknown)}; valid: {valid}")
        self.records: dict[str, KeyRecord] = {} if records is None else records
        """Records by key (a range machine shares its per-key data dict here)."""
        self.max_read_ts = 0
        self._mutants = mutants

    def record(self, key: str) -> KeyRecord:
        """The record of ``key``, created empty."""
        rec = self.records.get(key)
        if rec is None:
            rec = self.records[key] = KeyRecord()
        return rec

    def apply(self, command: TxnCommand) -> Any:
        """Apply one transaction command; its result type is documented on the command."""
        handler = _HANDLERS.get(type(command))
        if handler is None:
            raise TypeError(f"not a transaction command: {command!r}")
        return handler(self, command)

    # -- reads ----------------------------------------------------------------------------------

    def get(self, cmd: Get) -> GetResult:
        """The committed value at ``read_ts``, or the lock that may hide a newer one."""
        self.max_read_ts = max(self.max_read_ts, cmd.read_ts)
        rec = self.records.get(cmd.key)
        if rec is None:
            return GetResult()
        lock = rec.lock
        ignores = READER_IGNORES_LOCK in self._mutants
        if lock is not None and _blocks(lock, cmd.read_ts) and not ignores:
            return GetResult(lock=lock)
        return GetResult(rec.visible(cmd.read_ts))

    def scan(self, cmd: Scan) -> ScanResult:
        """The committed values of ``[start, end)`` at ``read_ts`` in key order, up to
        ``limit``, stopping at the first lock that may hide a newer value (as :meth:`get`);
        records the read timestamp like a get (for the whole store: a key inserted later
        anywhere here gets a commit timestamp above it)."""
        if cmd.limit < 1:
            raise ValueError(f"scan limit must be >= 1, got {cmd.limit}")
        self.max_read_ts = max(self.max_read_ts, cmd.read_ts)
        ignores = SCAN_IGNORES_LOCK in self._mutants
        items: list[tuple[str, Any]] = []
        for key in self._keys_between(cmd.start, cmd.end):
            if len(items) == cmd.limit:
                return ScanResult(tuple(items), None, key)
            rec = self.records[key]
            lock = rec.lock
            if lock is not None and _blocks(lock, cmd.read_ts) and not ignores:
                return ScanResult(tuple(items), lock, key)
            value = rec.visible(cmd.read_ts)
            if value is not None:
                items.append((key, value))
        return ScanResult(tuple(items))

    def _keys_between(self, start: str, end: str) -> list[str]:
        """Keys with a record in ``[start, end)`` (``end`` "": unbounded), sorted, reserved
        keys left out."""
        return sorted(
            k
            for k in self.records
            if start <= k and (not end or k < end) and not k.startswith(RESERVED_PREFIX)
        )

    # -- writes ---------------------------------------------------------------------------------

    def prewrite(self, cmd: Prewrite) -> PrewriteResult:
        """Lock every key for the transaction, or none (first conflict found answers)."""
        min_commit_ts = 0
        for m in cmd.mutations:
            refusal = self._refusal(m.key, cmd.start_ts)
            if refusal is not None:
                return refusal
            lock = self.records[m.key].lock if m.key in self.records else None
            if lock is not None and lock.start_ts == cmd.start_ts:
                min_commit_ts = max(min_commit_ts, lock.min_commit_ts)
        if min_commit_ts == 0 and (cmd.use_async or cmd.one_pc):
            min_commit_ts = max(cmd.start_ts, self.max_read_ts) + 1
        if cmd.one_pc:
            for m in cmd.mutations:
                if m.read_only:
                    continue
                rec = self.record(m.key)
                rec.data[cmd.start_ts] = m.value
                rec.writes.append((min_commit_ts, cmd.start_ts))
            return PrewriteResult(COMMITTED, min_commit_ts, min_commit_ts)
        for m in cmd.mutations:
            rec = self.record(m.key)
            if rec.lock is None:
                secondaries = cmd.secondaries if m.key == cmd.primary else ()
                rec.lock = Lock(
                    cmd.primary,
                    cmd.start_ts,
                    m.value,
                    cmd.use_async,
                    min_commit_ts,
                    secondaries,
                    m.read_only,
                )
        return PrewriteResult("", min_commit_ts)

    def _refusal(self, key: str, start_ts: int) -> PrewriteResult | None:
        """Why ``key`` cannot be locked for ``start_ts`` (None: it can, or already is)."""
        rec = self.records.get(key)
        if rec is None:
            return None
        commit_ts = rec.commit_of(start_ts)
        if commit_ts:
            return PrewriteResult(COMMITTED, commit_ts=commit_ts)
        if rec.rolled_back(start_ts):
            return PrewriteResult(ROLLED_BACK)
        lock = rec.lock
        if lock is not None and lock.start_ts != start_ts:
            return PrewriteResult(LOCKED, lock=lock, key=key)
        if rec.last_commit_ts() > start_ts:
            return PrewriteResult(WRITE_CONFLICT)
        return None

    def resolve(self, cmd: Resolve) -> ResolveResult:
        """Commit or roll back the transaction on each key (each key on its own)."""
        odd: list[str] = []
        status = ""
        for key in cmd.keys:
            problem = self._resolve_key(key, cmd.start_ts, cmd.commit_ts)
            if problem:
                status = problem
                odd.append(key)
        return ResolveResult(status, tuple(odd), cmd.commit_ts)

    def _resolve_key(self, key: str, start_ts: int, commit_ts: int) -> str:
        rec = self.record(key)
        committed = rec.commit_of(start_ts)
        if commit_ts == 0:
            if committed:
                return ALREADY_COMMITTED
            if rec.lock is not None and rec.lock.start_ts == start_ts:
                rec.lock = None
            rec.add_rollback(start_ts)
            return ""
        if committed:
            return ""
        lock = rec.lock
        if lock is None or lock.start_ts != start_ts:
            return TXN_NOT_FOUND
        rec.lock = None
        if lock.read_only:
            return ""  # a read lock: validated, nothing to write
        rec.data[start_ts] = lock.value
        bisect.insort(rec.writes, (commit_ts, start_ts))
        return ""

    # -- resolution -------------------------------------------------------------------------------

    def check_txn_status(self, cmd: CheckTxnStatus) -> TxnStatus:
        """How the transaction stands on its primary key (rolling it back when allowed)."""
        rec = self.record(cmd.primary)
        status = _settled(rec, cmd.start_ts)
        if status is not None:
            return status
        lock = rec.lock
        if lock is not None and lock.start_ts == cmd.start_ts:
            if lock.use_async or not cmd.force_rollback:
                return TxnStatus(LOCKED, lock=lock)
            rec.lock = None
        rec.add_rollback(cmd.start_ts)
        return TxnStatus(ROLLED_BACK)

    def check_secondary_locks(self, cmd: CheckSecondaryLocks) -> tuple[TxnStatus, ...]:
        """The transaction's state on each key; a key without lock or record is rolled back."""
        out: list[TxnStatus] = []
        for key in cmd.keys:
            rec = self.record(key)
            status = _settled(rec, cmd.start_ts)
            if status is None:
                lock = rec.lock
                if lock is not None and lock.start_ts == cmd.start_ts:
                    status = TxnStatus(LOCKED, lock=lock)
                else:
                    rec.add_rollback(cmd.start_ts)
                    status = TxnStatus(ROLLED_BACK)
            out.append(status)
        return tuple(out)

    def alloc_ts(self, cmd: AllocTs) -> int:
        """Hand out ``count`` timestamps (the first is returned)."""
        if not 1 <= cmd.count <= MAX_ALLOC_COUNT:
            raise ValueError(f"AllocTs count must be in 1..{MAX_ALLOC_COUNT}, got {cmd.count}")
        rec = self.record(cmd.key)
        first = rec.counter + 1
        rec.counter += cmd.count
        return first

    # -- views -----------------------------------------------------------------------------------

    def keys(self) -> list[str]:
        """Keys with a record (sorted)."""
        return sorted(self.records)

    def locks(self) -> dict[str, Lock]:
        """Every pending lock by key."""
        return {k: r.lock for k, r in sorted(self.records.items()) if r.lock is not None}


def _blocks(lock: Lock, read_ts: int) -> bool:
    """True when ``lock`` may hide a write visible at ``read_ts``."""
    if lock.start_ts > read_ts or lock.read_only:
        return False
    return not (lock.use_async and lock.min_commit_ts > read_ts)


def _settled(rec: KeyRecord, start_ts: int) -> TxnStatus | None:
    commit_ts = rec.commit_of(start_ts)
    if commit_ts:
        return TxnStatus(COMMITTED, commit_ts)
    if rec.rolled_back(start_ts):
        return TxnStatus(ROLLED_BACK)
    return None


_HANDLERS: dict[type, Callable[[MvccStore, Any], Any]] = {
    Get: MvccStore.get,
    Scan: MvccStore.scan,
    Prewrite: MvccStore.prewrite,
    Resolve: MvccStore.resolve,
    CheckTxnStatus: MvccStore.check_txn_status,
    CheckSecondaryLocks: MvccStore.check_secondary_locks,
    AllocTs: MvccStore.alloc_ts,
}
