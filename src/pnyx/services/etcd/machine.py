"""The state machine an etcd-service node runs: A's :class:`EtcdStateMachine` plus the
node-local parts etcd keeps outside its replicated state.

:class:`ServedMachine` wraps the replicated machine (what every replica applies) with

- the leader's lease clock (:class:`~pnyx.protocols.etcd.lease.Lessor`): a
  ``LeaseKeepAliveRequest`` or ``LeaseTimeToLiveRequest`` arriving as a *read* query (a
  ``ReadRequest``, answered by the leader after its ReadIndex round) is answered by this
  node's lessor, with the node's monotonic clock.  So a follower's server forwards
  keep-alives to the leader over the Raft client path, and a deposed leader cannot answer
  one (its ReadIndex round fails);
- write batches: a :class:`WriteBatch` log entry carries several session commands of one
  server (its gateway batches concurrent writes); they are applied in order, each through
  the replicated machine, and the entry's result is the list of their results;
- hooks run after every applied entry or restored snapshot (the watch hub);
- an estimate of the data size (``dbSize``, the quota): the exact snapshot size, counted
  again only after a compaction or a restore, plus the keys and values each new revision
  wrote (so a write costs O(1) here, not a snapshot).

Lease queries never change replicated state: every replica's ``snapshot`` stays the same.

Writes must come in a session (``SessionCommand``, alone or in a batch).  A bare write
request is refused with an ``ErrorResult``: reads reach ``apply`` as bare requests too (a
``ReadRequest`` is answered by the leader alone, a serializable one by any member), so a
bare Put sent as a "read" by a client of the pnyx port would otherwise change one
replica's state outside the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from pnyx.protocols.etcd import ErrorResult, EtcdError, EtcdStateMachine, GrpcCode
from pnyx.protocols.etcd.lease import Lessor
from pnyx.protocols.etcd.machine import decode_command
from pnyx.protocols.etcd.requests import (
    CompactionRequest,
    DeleteRangeRequest,
    LeaseEpochRequest,
    LeaseExpireRequest,
    LeaseGrantRequest,
    LeaseKeepAliveRequest,
    LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
    PutRequest,
    TxnRequest,
)
from pnyx.protocols.raft.sessions import SessionCommand

LeaseQuery = LeaseKeepAliveRequest | LeaseTimeToLiveRequest
EVENT_OVERHEAD_BYTES = 64
"""What one stored change costs beyond its key and value (revisions, version, lease)."""
_LEASE_QUERY_TAGS = frozenset({"lease_keep_alive", "lease_time_to_live"})


class WriteBatch(msgspec.Struct, frozen=True, tag="write_batch"):
    """Several write commands (session commands) as one log entry."""

    commands: list[Any]


def write_batch(command: Any) -> list[Any] | None:
    """The commands of a :class:`WriteBatch` (typed or in its untyped wire form), else None."""
    if type(command) is WriteBatch:
        return command.commands
    if isinstance(command, dict) and command.get("type") == "write_batch":
        commands = command.get("commands")
        return commands if isinstance(commands, list) else None
    return None


ERR_BARE_WRITE = ErrorResult(
    int(GrpcCode.INVALID_ARGUMENT), "pnyx: a write must be a session command, not a query"
)
_WRITES = (
    PutRequest,
    DeleteRangeRequest,
    CompactionRequest,
    LeaseGrantRequest,
    LeaseRevokeRequest,
    LeaseEpochRequest,
    LeaseExpireRequest,
)


def bare_write(command: Any) -> bool:
    """Whether ``command`` is a write request outside a session (typed or untyped)."""
    if type(command) is SessionCommand or _is_session_array(command):
        return False
    if isinstance(command, dict) and "type" not in command:
        return False
    try:
        request = decode_command(command)
    except EtcdError:
        return False  # not a request at all: the machine answers it with its own error
    if isinstance(request, TxnRequest):
        return txn_mutates(request)
    return isinstance(request, _WRITES)


def txn_mutates(txn: TxnRequest) -> bool:
    """Whether any branch of ``txn`` (nested txns too) puts or deletes."""
    for op in (*txn.success, *txn.failure):
        if op.request_put is not None or op.request_delete_range is not None:
            return True
        if op.request_txn is not None and txn_mutates(op.request_txn):
            return True
    return False


def _is_session_array(raw: Any) -> bool:
    return (
        isinstance(raw, list | tuple)
        and len(raw) == 3
        and type(raw[0]) is int
        and type(raw[1]) is int
    )


def monotonic_ms() -> int:
    """The lease clock: monotonic milliseconds."""
    return time.monotonic_ns() // 1_000_000


class ServedMachine:
    """``EtcdStateMachine`` + this node's lessor + after-apply hooks (a StateMachine)."""

    def __init__(
        self,
        inner: EtcdStateMachine,
        *,
        clock_ms: Callable[[], int] = monotonic_ms,
        lessor: Lessor | None = None,
    ) -> None:
        self.inner = inner
        self.clock_ms = clock_ms
        self.lessor: Lessor = lessor if lessor is not None else inner.store.new_lessor()
        """This node's lease clock (default: one over ``inner``'s lease table)."""
        self.is_leader: Callable[[], bool] = lambda: False
        """Set by the server once its node runs: whether the node leads now."""
        self.after_apply: list[Callable[[], None]] = [self._count_size]
        self._size: int | None = None
        self._size_mvcc: object = None
        self._size_revision = 0
        self._size_compact = 0

    # -- StateMachine ------------------------------------------------------------------------

    def apply(self, command: Any) -> Any:
        """A lease query is answered by the lessor; anything else by the replicated
        machine, after which the hooks run."""
        query = lease_query(command)
        if query is not None:
            return self.answer_lease_query(query)
        batch = write_batch(command)
        if batch is not None:
            results = [self._apply_one(item) for item in batch]
            self._after()
            return results
        result = self._apply_one(command)
        self._after()
        return result

    def _apply_one(self, command: Any) -> Any:
        if bare_write(command):
            return ERR_BARE_WRITE
        return self.inner.apply(command)

    def snapshot(self) -> bytes:
        return self.inner.snapshot()

    def restore(self, data: bytes) -> None:
        self.inner.restore(data)  # the lease table is loaded in place: the lessor follows it
        self._after()

    def _after(self) -> None:
        for hook in self.after_apply:
            hook()

    # -- size ---------------------------------------------------------------------------------

    def db_size(self) -> int:
        """Estimated bytes of the replicated state (exact after a compaction or restore)."""
        if self._size is None:
            store = self.inner.store
            self._size = len(store.snapshot())
            self._size_mvcc = store.mvcc
            self._size_revision = store.mvcc.current_revision
            self._size_compact = store.mvcc.compact_revision
        return self._size

    def _count_size(self) -> None:
        mvcc = self.inner.store.mvcc
        if self._size is None:
            return
        if mvcc is not self._size_mvcc or mvcc.compact_revision != self._size_compact:
            self._size = None  # compacted or restored: count again when asked
            return
        if mvcc.current_revision == self._size_revision:
            return
        added = 0
        for revision, events in reversed(mvcc.recent):
            if revision <= self._size_revision:
                break
            for event in events:
                kv = event.kv
                added += EVENT_OVERHEAD_BYTES + (len(kv.key) + len(kv.value) if kv else 0)
        else:
            self._size = None  # more revisions than ``recent`` holds: count again
            return
        self._size += added
        self._size_revision = mvcc.current_revision

    # -- leases ---------------------------------------------------------------------------------

    def sync_leadership(self) -> None:
        """Promote the lessor when the node leads and it does not, demote it when the node
        no longer leads (a new leader restarts every lease's TTL: none expires early)."""
        leading = self.is_leader()
        if leading and not self.lessor.primary:
            self.lessor.promote(self.clock_ms())
        elif not leading and self.lessor.primary:
            self.lessor.demote()

    def answer_lease_query(self, query: LeaseQuery) -> Any:
        """Keep-alive or time-to-live on this node's lessor (``not leader`` on a follower)."""
        self.sync_leadership()
        now = self.clock_ms()
        if isinstance(query, LeaseKeepAliveRequest):
            return self.lessor.keep_alive(query.ID, now)
        return self.lessor.time_to_live(query, now)

    def expired_leases(self) -> list[int]:
        """Leases the leader must revoke now (empty on a follower)."""
        self.sync_leadership()
        return self.lessor.expired(self.clock_ms())


def lease_query(command: Any) -> LeaseQuery | None:
    """``command`` as a lease query, typed or in its untyped wire form; None otherwise."""
    if isinstance(command, LeaseKeepAliveRequest | LeaseTimeToLiveRequest):
        return command
    if isinstance(command, dict) and command.get("type") in _LEASE_QUERY_TAGS:
        try:
            query: LeaseQuery = msgspec.convert(command, LeaseQuery)
            return query
        except msgspec.ValidationError:
            return None
    return None


__all__ = [
    "ERR_BARE_WRITE",
    "LeaseQuery",
    "ServedMachine",
    "WriteBatch",
    "bare_write",
    "lease_query",
    "monotonic_ms",
    "txn_mutates",
    "write_batch",
]
