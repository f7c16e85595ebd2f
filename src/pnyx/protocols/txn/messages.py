"""Commands of the transaction layer's range machine and their results (Percolator's
vocabulary: Peng & Dabek, OSDI 2010; async commit and 1PC as TiKV designs them).

Every command is a Raft log command of the range holding its keys (reads too, so that a
range records the largest read timestamp it served, which async commit and 1PC need).
All are idempotent: a retried or network-duplicated copy changes nothing more.
"""

from __future__ import annotations

from typing import Any

import msgspec

COMMITTED = "committed"
ROLLED_BACK = "rolled_back"
LOCKED = "locked"
WRITE_CONFLICT = "write_conflict"
TXN_NOT_FOUND = "txn_not_found"
"""A commit found neither the transaction's lock nor its commit record (it was rolled back)."""
ALREADY_COMMITTED = "already_committed"
"""A rollback found the transaction's commit record: it committed."""
RESERVED_PREFIX = "!"
"""Keys starting with this are the store's own (the timestamp allocator's ``!ts``): no
scan returns them and clients may not write them."""
MAX_ALLOC_COUNT = 1 << 16
"""The most timestamps one :class:`AllocTs` may take."""


class Lock(msgspec.Struct, frozen=True, array_like=True):
    """Percolator's lock column of one key: the pending write of transaction ``start_ts``.

    ``value`` is what the key gets if the transaction commits (None deletes it).  An
    async-commit lock (``use_async``) carries ``min_commit_ts``: the transaction's commit
    timestamp is the largest ``min_commit_ts`` of its locks, so a reader at a smaller
    timestamp may ignore the lock.  The primary's async lock lists every ``secondaries``
    key, so a reader can decide the transaction by checking them all.
    """

    primary: str
    start_ts: int
    value: Any
    use_async: bool = False
    min_commit_ts: int = 0
    secondaries: tuple[str, ...] = ()
    read_only: bool = False
    """A read lock (serializable 2PC mode): the transaction read the key and does not
    write it; committing it writes nothing, and it never blocks a reader."""


class Mutation(msgspec.Struct, frozen=True, array_like=True):
    """Write ``value`` to ``key`` (None: delete it); with ``read_only``, validate and lock a
    key the transaction read without writing it (no write since its start timestamp)."""

    key: str
    value: Any
    read_only: bool = False


# -- commands ---------------------------------------------------------------------------------


class Get(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """Read ``key`` at ``read_ts``; answered with :class:`GetResult`."""

    key: str
    read_ts: int


class Scan(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """Read the keys of ``[start, end)`` at ``read_ts`` in key order, at most ``limit``
    values; ``end`` "" means no upper bound.  The range holding ``start`` answers for the
    part of the interval it holds (the scan is clipped to its bounds when applied) with a
    :class:`ScanResult` saying where the client goes on."""

    start: str
    end: str
    read_ts: int
    limit: int


class Prewrite(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """Lock ``mutations`` (all keys of one range) for transaction ``start_ts`` whose primary
    key is ``primary``; all or nothing.  ``one_pc``: commit at once (the transaction's
    keys all live in this range); answered with :class:`PrewriteResult`."""

    start_ts: int
    primary: str
    mutations: tuple[Mutation, ...]
    use_async: bool = False
    secondaries: tuple[str, ...] = ()
    one_pc: bool = False


class Resolve(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """Commit (``commit_ts`` > 0) or roll back (``commit_ts`` 0) transaction ``start_ts`` on
    ``keys``; answered with :class:`ResolveResult`."""

    keys: tuple[str, ...]
    start_ts: int
    commit_ts: int


class CheckTxnStatus(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """Ask the primary key's range how transaction ``start_ts`` ended.  With nothing there,
    a rollback record is written (a late prewrite then fails); with ``force_rollback`` a
    plain (not async) lock is rolled back too.  Answered with :class:`TxnStatus`."""

    primary: str
    start_ts: int
    force_rollback: bool = False


class CheckSecondaryLocks(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """Async commit's resolution: the state of transaction ``start_ts`` on each key; a key
    with neither its lock nor its commit record gets a rollback record.  Answered with a
    tuple of :class:`TxnStatus`, one per key."""

    keys: tuple[str, ...]
    start_ts: int


class AllocTs(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """Take ``count`` timestamps (1 to :data:`MAX_ALLOC_COUNT`) from the allocator kept
    under ``key``; answered with the first one ``t``: the window ``t .. t + count - 1`` is
    the caller's, above every timestamp allocated before."""

    key: str
    count: int = 1


TxnCommand = Get | Scan | Prewrite | Resolve | CheckTxnStatus | CheckSecondaryLocks | AllocTs
TXN_COMMAND_TYPES: tuple[type, ...] = (
    Get,
    Scan,
    Prewrite,
    Resolve,
    CheckTxnStatus,
    CheckSecondaryLocks,
    AllocTs,
)

# -- results ----------------------------------------------------------------------------------


class GetResult(msgspec.Struct, frozen=True, array_like=True):
    """The value visible at the read timestamp (None: absent), or the ``lock`` that blocks."""

    value: Any = None
    lock: Lock | None = None


class ScanResult(msgspec.Struct, frozen=True, array_like=True):
    """The visible ``(key, value)`` pairs of a :class:`Scan` in key order (deleted and
    never-committed keys omitted, reserved keys never listed).

    ``resume`` is where the scan goes on: "" when nothing of ``[start, end)`` is left;
    otherwise the first key not covered — the key whose ``lock`` stopped the scan (the
    lock may hide a value visible at the read timestamp, as for :class:`Get`), the next
    key once ``limit`` values were listed, or the end of the answering range."""

    items: tuple[tuple[str, Any], ...] = ()
    lock: Lock | None = None
    resume: str = ""


class PrewriteResult(msgspec.Struct, frozen=True, array_like=True):
    """``status`` "" (locked for the transaction), :data:`COMMITTED` (1PC, or a resolver
    already committed it: ``commit_ts``), :data:`ROLLED_BACK`, :data:`WRITE_CONFLICT` or
    :data:`LOCKED` (another transaction's ``lock``)."""

    status: str = ""
    min_commit_ts: int = 0
    commit_ts: int = 0
    lock: Lock | None = None
    key: str = ""
    """The key refused (its ``lock`` blocks it)."""

    @property
    def ok(self) -> bool:
        """True when every key is locked (or committed) for the transaction."""
        return self.status in ("", COMMITTED)


class ResolveResult(msgspec.Struct, frozen=True, array_like=True):
    """``status`` "" when every key was resolved as asked, else :data:`TXN_NOT_FOUND` (a
    commit that found no lock) or :data:`ALREADY_COMMITTED` (a rollback that found a
    commit); ``keys`` names the keys that answered so."""

    status: str = ""
    keys: tuple[str, ...] = ()
    commit_ts: int = 0


class TxnStatus(msgspec.Struct, frozen=True, array_like=True):
    """:data:`COMMITTED` (at ``commit_ts``), :data:`ROLLED_BACK` or :data:`LOCKED` (``lock``)."""

    state: str
    commit_ts: int = 0
    lock: Lock | None = None


def command_keys(command: TxnCommand) -> tuple[str, ...]:
    """Every key a command touches (all must lie in the applying range)."""
    if type(command) is Prewrite:
        return tuple(m.key for m in command.mutations)
    if type(command) in (Resolve, CheckSecondaryLocks):
        return command.keys  # type: ignore[union-attr]
    if type(command) is CheckTxnStatus:
        return (command.primary,)
    if type(command) is Scan:
        return (command.start,)
    return (command.key,)  # type: ignore[union-attr]
