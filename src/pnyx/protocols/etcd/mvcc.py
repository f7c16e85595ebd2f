"""A pure MVCC key-value state machine with etcd v3 semantics.

State: one global revision (the empty store is at revision 1; every request that changes
something bumps it by exactly one, sub-revisions order the changes inside it), and per key
the list of its versions ``(main, sub, KeyValue | tombstone)`` sorted by revision, plus a
sorted index of keys so that a range or prefix read visits only the keys inside it.

Requests are applied as etcd's ``applierV3backend`` applies them (etcd 3.4/3.5
``server/etcdserver/apply.go`` and ``server/mvcc/kvstore_txn.go``); see README.md in this
package for the rules followed one by one.  No I/O, no clock, no randomness.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import pairwise
from operator import attrgetter
from typing import Any, TypeVar

import crc32c
import msgspec

from pnyx.protocols.etcd.errors import (
    ERR_COMPACTED,
    ERR_FUTURE_REV,
    ERR_KEY_NOT_FOUND,
    ERR_LEASE_NOT_FOUND,
    EtcdError,
    GrpcCode,
)
from pnyx.protocols.etcd.requests import (
    CompactionRequest,
    CompactionResponse,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
    EventType,
    HashKVRequest,
    HashKVResponse,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    ResponseHeader,
    ResponseOp,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
)
from pnyx.protocols.etcd.validate import DEFAULT_MAX_TXN_OPS, validate

_T = TypeVar("_T")

SNAPSHOT_FORMAT = 1
"""Version of the :meth:`MvccStore.snapshot` encoding."""

DEFAULT_RECENT_REVISIONS = 1024
"""How many of the latest write revisions :attr:`MvccStore.recent` keeps (with events)."""

CommitHook = Callable[[int, list[Event]], None]
"""Called after each write revision commits: ``(revision, events of that revision)``."""


class MvccCorrupted(RuntimeError):
    """The store's data breaks an invariant (a bug, or a bad snapshot)."""


class Revision(msgspec.Struct, frozen=True, array_like=True):
    """One change of one key: at ``(main, sub)`` it became ``kv`` (``None``: deleted)."""

    main: int
    sub: int
    kv: KeyValue | None


class _Image(msgspec.Struct, frozen=True, array_like=True):
    format: int
    current_revision: int
    compact_revision: int
    leases: list[int]
    keys: list[tuple[bytes, list[Revision]]]


class _Path(msgspec.Struct):
    """Which branch a txn takes, and the paths of the nested txns in that branch."""

    succeeded: bool
    children: list[_Path]


_MAIN = attrgetter("main")
_SORT_KEYS: dict[int, Callable[[KeyValue], Any]] = {
    SortTarget.KEY: attrgetter("key"),
    SortTarget.VERSION: attrgetter("version"),
    SortTarget.CREATE: attrgetter("create_revision"),
    SortTarget.MOD: attrgetter("mod_revision"),
    SortTarget.VALUE: attrgetter("value"),
}


class _Write:
    """An open write transaction: its changes share revision ``begin + 1``."""

    __slots__ = ("begin", "changes", "events", "touched")

    def __init__(self, begin: int) -> None:
        self.begin = begin
        self.changes = 0
        self.touched: list[bytes] = []
        self.events: list[Event] = []

    @property
    def view(self) -> int:
        """The revision reads inside this transaction see (its own writes included)."""
        return self.begin + 1 if self.changes else self.begin


class MvccStore:
    """etcd v3 KV semantics as a pure :class:`pnyx.core.StateMachine`.

    ``apply`` takes a request struct from :mod:`pnyx.protocols.etcd.requests` and returns
    its response struct, or an :class:`ErrorResult` (code + etcd's message) when etcd would
    refuse it.  ``lease_exists`` lets a lease layer answer "is this lease live"; without it
    the store's own ``leases`` set (part of the snapshot) is consulted.

    Each write revision's changes are also kept as watch :class:`Event` lists: the last
    ``recent_revisions`` of them in :attr:`recent` (not part of the snapshot), and handed
    to ``on_commit(revision, events)`` as the revision commits.
    """

    def __init__(
        self,
        max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
        lease_exists: Callable[[int], bool] | None = None,
        on_commit: CommitHook | None = None,
        recent_revisions: int = DEFAULT_RECENT_REVISIONS,
    ) -> None:
        if recent_revisions < 1:
            raise ValueError(f"recent_revisions={recent_revisions}: at least 1")
        self.max_txn_ops = max_txn_ops
        self.lease_exists = lease_exists
        self.on_commit = on_commit
        self.recent: deque[tuple[int, list[Event]]] = deque(maxlen=recent_revisions)
        """``(revision, events)`` of the latest write revisions, oldest first."""
        self.leases: set[int] = set()
        self.current_revision = 1
        self.compact_revision = -1
        self._keys: list[bytes] = []
        self._history: dict[bytes, list[Revision]] = {}

    # ----------------------------------------------------------------- entry points

    def apply(self, command: Any) -> Any:
        """Apply one request (reads too); an etcd error becomes an :class:`ErrorResult`."""
        try:
            return self.execute(command)
        except EtcdError as exc:
            return exc.result()

    def execute(self, request: Any) -> Any:
        """Apply one request; raises :class:`EtcdError` where etcd answers with an error."""
        if isinstance(request, HashKVRequest):
            return self.hash_kv(request.revision)
        if isinstance(request, CompactionRequest):
            return self.compact(request.revision)
        if not isinstance(request, RangeRequest | PutRequest | DeleteRangeRequest | TxnRequest):
            raise EtcdError(GrpcCode.INVALID_ARGUMENT, f"pnyx: not an etcd request: {request!r}")
        validate(request, self.max_txn_ops)
        if isinstance(request, RangeRequest):
            return self.range(request)
        if isinstance(request, PutRequest):
            return self.put(request)
        if isinstance(request, DeleteRangeRequest):
            return self.delete_range(request)
        return self.txn(request)

    def range(self, r: RangeRequest) -> RangeResponse:
        """Read keys (no pre-consensus checks: see :func:`validate`)."""
        return self._range(r, self.current_revision)

    def put(self, r: PutRequest) -> PutResponse:
        """Write one key in a transaction of its own (lease checked first, as etcd)."""
        if r.lease != 0 and not self._lease_live(r.lease):
            raise ERR_LEASE_NOT_FOUND.fresh()
        w = _Write(self.current_revision)
        return self._finish(w, lambda: self._put(r, w))

    def delete_range(self, r: DeleteRangeRequest) -> DeleteRangeResponse:
        """Delete a key or a range in a transaction of its own."""
        w = _Write(self.current_revision)
        return self._finish(w, lambda: self._delete_range(r, w))

    def txn(self, r: TxnRequest) -> TxnResponse:
        """etcd's ``Txn``: every compare (nested ones too) is evaluated first against the
        state before the txn; puts then ranges of the chosen branches are checked; then
        the ops run in order, each seeing the earlier ones' writes."""
        path = self._compare_path(r)
        if not _read_only(r):
            self._check_ops(r, path, self._check_put)
        self._check_ops(r, path, self._check_range)
        w = _Write(self.current_revision)
        resp = self._finish(w, lambda: self._txn_ops(r, path, w))
        header = ResponseHeader(revision=w.view)
        return TxnResponse(header=header, succeeded=resp.succeeded, responses=resp.responses)

    def compact(self, revision: int) -> CompactionResponse:
        """Forget every version not visible at ``revision`` or later (etcd's ``Compact``)."""
        if revision <= self.compact_revision:
            raise ERR_COMPACTED.fresh()
        if revision > self.current_revision:
            raise ERR_FUTURE_REV.fresh()
        for key in list(self._keys):
            self._compact_key(key, revision)
        self.compact_revision = revision
        return CompactionResponse(header=ResponseHeader(revision=self.current_revision))

    def hash_kv(self, revision: int = 0) -> HashKVResponse:
        """CRC-32C over every stored change with ``main <= revision`` (0: the current
        revision), in revision order: each change's main, sub, key and value-or-tombstone
        record.  Equal states hash equal; see README.md for what it covers."""
        if 0 < revision <= self.compact_revision:  # etcd's HashByRev: at the compaction too
            raise ERR_COMPACTED.fresh()
        if revision > self.current_revision:
            raise ERR_FUTURE_REV.fresh()
        rev = revision if revision > 0 else self.current_revision
        changes = sorted(
            (
                (e.main, e.sub, key, e)
                for key, es in self._history.items()
                for e in es
                if e.main <= rev
            ),
            key=lambda t: (t[0], t[1]),
        )
        h = 0
        for _, _, key, e in changes:
            h = crc32c.crc32c(msgspec.msgpack.encode((key, e)), h)
        return HashKVResponse(
            header=ResponseHeader(revision=self.current_revision),
            hash=int(h),
            compact_revision=self.compact_revision,
        )

    def delete_keys(self, keys: Iterable[bytes]) -> int:
        """Delete ``keys`` (those that exist) in one write revision, in the order given
        (a lease revoke, as etcd's lessor deletes a lease's keys); returns how many."""
        w = _Write(self.current_revision)

        def body() -> int:
            for key in keys:
                prev = self.kv_at(key, w.view)
                if prev is not None:
                    self._append(w, key, None, prev)
            return w.changes

        return self._finish(w, body)

    # ----------------------------------------------------------------- watch history

    def live_kvs(self) -> Iterator[KeyValue]:
        """Every key's current version, in key order."""
        for key in self._keys:
            kv = self._history[key][-1].kv
            if kv is not None:
                yield kv

    def events_between(self, key: bytes, range_end: bytes, after: int, upto: int) -> list[Event]:
        """The watch events of the keys in etcd's range ``(key, range_end)`` with revision
        in ``(after, upto]``, in revision then sub-revision order, read from the retained
        history (complete for ``after >= compact_revision``).  ``prev_kv`` is the version
        before each change when history still holds it."""
        found: list[tuple[int, int, Event]] = []
        for k in self._keys_in(key, range_end):
            es = self._history[k]
            lo = bisect_right(es, after, key=_MAIN)
            hi = bisect_right(es, upto, key=_MAIN)
            for i in range(lo, hi):
                e = es[i]
                prev = es[i - 1].kv if i > 0 else None
                found.append((e.main, e.sub, _event(k, e.main, e.kv, prev)))
        found.sort(key=lambda t: (t[0], t[1]))
        return [ev for _, _, ev in found]

    # ----------------------------------------------------------------- leases

    def add_lease(self, lease_id: int) -> None:
        """Mark ``lease_id`` live (stand-in for the lease layer, a later step)."""
        self.leases.add(lease_id)

    def remove_lease(self, lease_id: int) -> None:
        """Mark ``lease_id`` gone (keys attached to it are not deleted here)."""
        self.leases.discard(lease_id)

    def _lease_live(self, lease_id: int) -> bool:
        if self.lease_exists is not None:
            return self.lease_exists(lease_id)
        return lease_id in self.leases

    # ----------------------------------------------------------------- reads

    def kv_at(self, key: bytes, revision: int) -> KeyValue | None:
        """The version of ``key`` visible at ``revision`` (None: absent then)."""
        es = self._history.get(key)
        if not es:
            return None
        i = bisect_right(es, revision, key=_MAIN)
        return es[i - 1].kv if i else None

    def _keys_in(self, key: bytes, range_end: bytes) -> Iterator[bytes]:
        """Keys of the index in etcd's range: ``range_end`` empty = just ``key``;
        ``"\\0"`` = every key ``>= key``; else ``[key, range_end)``."""
        if not range_end:
            if key in self._history:
                yield key
            return
        lo = bisect_left(self._keys, key)
        hi = len(self._keys) if range_end == b"\0" else bisect_left(self._keys, range_end)
        yield from self._keys[lo:hi] if hi > lo else ()

    def _visible(self, key: bytes, range_end: bytes, rev: int) -> list[KeyValue]:
        out = []
        for k in self._keys_in(key, range_end):
            kv = self.kv_at(k, rev)
            if kv is not None:
                out.append(kv)
        return out

    def _mvcc_range(self, key: bytes, range_end: bytes, at: int, cur: int) -> list[KeyValue]:
        """mvcc ``Range``: future and compacted revisions refused."""
        if at > cur:
            raise ERR_FUTURE_REV.fresh()
        rev = at if at > 0 else cur
        if rev < self.compact_revision:
            raise ERR_COMPACTED.fresh()
        return self._visible(key, range_end, rev)

    def _range(self, r: RangeRequest, cur: int) -> RangeResponse:
        """etcd's ``applierV3backend.Range`` at current revision ``cur``."""
        kvs = self._mvcc_range(r.key, r.range_end, r.revision, cur)
        header = ResponseHeader(revision=cur)
        if r.count_only:
            return RangeResponse(header=header, count=len(kvs))
        count = len(kvs)
        if r.limit > 0 and r.sort_order == SortOrder.NONE and not _has_revision_filter(r):
            # etcd fetches only limit + 1 keys (in key order) unless it must sort or
            # filter everything; a non-KEY sort target with order NONE then sorts just
            # those (apply.go: the fetch limit looks at sort_order, not the target).
            kvs = kvs[: r.limit + 1]
        kvs = _sorted(_filtered(kvs, r), r)
        more = False
        if r.limit > 0 and len(kvs) > r.limit:
            kvs, more = kvs[: r.limit], True
        if r.keys_only:
            kvs = [msgspec.structs.replace(kv, value=b"") for kv in kvs]
        return RangeResponse(header=header, kvs=kvs, more=more, count=count)

    # ----------------------------------------------------------------- writes

    def _finish(self, w: _Write, body: Callable[[], _T]) -> _T:
        """Run ``body`` in write txn ``w``: all its changes land, or (on error) none."""
        try:
            result = body()
        except EtcdError:
            self._rollback(w)
            raise
        if w.changes:
            self._set_revision(w.begin + 1)
            self.recent.append((w.begin + 1, w.events))
            if self.on_commit is not None:
                self.on_commit(w.begin + 1, w.events)
        return result

    def _set_revision(self, rev: int) -> None:
        if rev != self.current_revision + 1:
            raise MvccCorrupted(f"revision {self.current_revision} cannot move to {rev}")
        self.current_revision = rev

    def _rollback(self, w: _Write) -> None:
        for key in reversed(w.touched):
            es = self._history[key]
            es.pop()
            if not es:
                del self._history[key]
                del self._keys[bisect_left(self._keys, key)]
        w.changes = 0
        w.touched.clear()
        w.events = []

    def _append(self, w: _Write, key: bytes, kv: KeyValue | None, prev: KeyValue | None) -> None:
        entry = Revision(w.begin + 1, w.changes, kv)
        es = self._history.get(key)
        if es is None:
            es = self._history[key] = []
            insort(self._keys, key)
        elif (es[-1].main, es[-1].sub) >= (entry.main, entry.sub):
            raise MvccCorrupted(f"revision {entry} of {key!r} not after {es[-1]}")
        es.append(entry)
        w.changes += 1
        w.touched.append(key)
        w.events.append(_event(key, entry.main, kv, prev))

    def _put(self, r: PutRequest, w: _Write) -> PutResponse:
        """etcd's ``Put`` inside write txn ``w``."""
        prev = self.kv_at(r.key, w.view)
        if (r.ignore_value or r.ignore_lease) and prev is None:
            raise ERR_KEY_NOT_FOUND.fresh()
        value = prev.value if r.ignore_value and prev is not None else r.value
        lease = prev.lease if r.ignore_lease and prev is not None else r.lease
        main = w.begin + 1
        kv = KeyValue(
            key=r.key,
            create_revision=prev.create_revision if prev is not None else main,
            mod_revision=main,
            version=prev.version + 1 if prev is not None else 1,
            value=value,
            lease=lease,
        )
        self._append(w, r.key, kv, prev)
        return PutResponse(
            header=ResponseHeader(revision=main),
            prev_kv=prev if r.prev_kv else None,
        )

    def _delete_range(self, r: DeleteRangeRequest, w: _Write) -> DeleteRangeResponse:
        """etcd's ``DeleteRange`` inside write txn ``w``."""
        doomed = self._visible(r.key, r.range_end, w.view)
        for kv in doomed:
            self._append(w, kv.key, None, kv)
        rev = w.begin + 1 if w.changes else w.begin
        return DeleteRangeResponse(
            header=ResponseHeader(revision=rev),
            deleted=len(doomed),
            prev_kvs=doomed if r.prev_kv else [],
        )

    def _compact_key(self, key: bytes, rev: int) -> None:
        """Keep the version visible at ``rev`` and all later ones.  A tombstone visible at
        ``rev`` is dropped unless it was written at ``rev`` itself: a watch may still start
        at the compact revision and must see that delete (etcd 3.4 drops it too, so such a
        watch misses the event there; pnyx keeps it until a later compaction)."""
        es = self._history[key]
        i = bisect_right(es, rev, key=_MAIN) - 1
        if i < 0:
            return
        if es[i].kv is None and es[i].main < rev:
            i += 1
        if i:
            del es[:i]
        if not es:
            del self._history[key]
            del self._keys[bisect_left(self._keys, key)]

    # ----------------------------------------------------------------- txn

    def _compare_path(self, r: TxnRequest) -> _Path:
        ok = all(self._compare(c) for c in r.compare)
        ops = r.success if ok else r.failure
        kids = [self._compare_path(op.request_txn) for op in ops if op.request_txn is not None]
        return _Path(ok, kids)

    def _compare(self, c: Compare) -> bool:
        """etcd's ``applyCompare``: every key in the range must satisfy it; an empty range
        compares as a zero KeyValue, except a VALUE compare, which then fails."""
        kvs = self._visible(c.key, c.range_end, self.current_revision)
        if not kvs:
            return c.target != CompareTarget.VALUE and _compare_kv(c, KeyValue())
        return all(_compare_kv(c, kv) for kv in kvs)

    def _check_ops(self, r: TxnRequest, path: _Path, check: Callable[[RequestOp], None]) -> None:
        kids = iter(path.children)
        for op in r.success if path.succeeded else r.failure:
            if op.request_txn is not None:
                self._check_ops(op.request_txn, next(kids), check)
            else:
                check(op)

    def _check_put(self, op: RequestOp) -> None:
        """etcd's ``checkPut``: ignore_* needs the key to exist before the txn; a lease
        must be live."""
        p = op.request_put
        if p is None:
            return
        if (p.ignore_value or p.ignore_lease) and self.kv_at(p.key, self.current_revision) is None:
            raise ERR_KEY_NOT_FOUND.fresh()
        if p.lease != 0 and not self._lease_live(p.lease):
            raise ERR_LEASE_NOT_FOUND.fresh()

    def _check_range(self, op: RequestOp) -> None:
        """etcd's ``checkRange``: a set revision must be neither future nor compacted."""
        q = op.request_range
        if q is None or q.revision == 0:
            return
        if q.revision > self.current_revision:
            raise ERR_FUTURE_REV.fresh()
        if q.revision < self.compact_revision:
            raise ERR_COMPACTED.fresh()

    def _txn_ops(self, r: TxnRequest, path: _Path, w: _Write) -> TxnResponse:
        kids = iter(path.children)
        responses = [
            self._txn_op(op, kids, w) for op in (r.success if path.succeeded else r.failure)
        ]
        return TxnResponse(succeeded=path.succeeded, responses=responses)

    def _txn_op(self, op: RequestOp, kids: Iterator[_Path], w: _Write) -> ResponseOp:
        if op.request_range is not None:
            return ResponseOp(response_range=self._range(op.request_range, w.view))
        if op.request_put is not None:
            return ResponseOp(response_put=self._put(op.request_put, w))
        if op.request_delete_range is not None:
            return ResponseOp(response_delete_range=self._delete_range(op.request_delete_range, w))
        if op.request_txn is not None:
            # A nested txn's header stays empty, as etcd's newTxnResp leaves it.
            return ResponseOp(response_txn=self._txn_ops(op.request_txn, next(kids), w))
        return ResponseOp()

    # ----------------------------------------------------------------- snapshot

    def snapshot(self) -> bytes:
        """The whole MVCC state, deterministically encoded (same state, same bytes)."""
        image = _Image(
            format=SNAPSHOT_FORMAT,
            current_revision=self.current_revision,
            compact_revision=self.compact_revision,
            leases=sorted(self.leases),
            keys=[(k, self._history[k]) for k in self._keys],
        )
        return msgspec.msgpack.encode(image)

    def restore(self, data: bytes) -> None:
        """Replace the state with a :meth:`snapshot`; refuses a bad one with
        :class:`MvccCorrupted` and then leaves the current state untouched."""
        try:
            image = msgspec.msgpack.decode(data, type=_Image)
        except msgspec.DecodeError as exc:
            raise MvccCorrupted(f"undecodable MVCC snapshot: {exc}") from exc
        if image.format != SNAPSHOT_FORMAT:
            raise MvccCorrupted(f"MVCC snapshot format {image.format} is not {SNAPSHOT_FORMAT}")
        fresh = MvccStore(self.max_txn_ops, self.lease_exists)
        fresh.current_revision = image.current_revision
        fresh.compact_revision = image.compact_revision
        fresh.leases = set(image.leases)
        fresh._keys = [k for k, _ in image.keys]
        fresh._history = {k: list(es) for k, es in image.keys}
        fresh.invariants()
        self.leases, self.current_revision = fresh.leases, fresh.current_revision
        self.compact_revision, self._keys = fresh.compact_revision, fresh._keys
        self._history = fresh._history
        self.recent.clear()

    def invariants(self) -> None:
        """Check the data: raise :class:`MvccCorrupted` on the first broken invariant."""
        if self.current_revision < 1 or self.compact_revision > self.current_revision:
            raise MvccCorrupted(
                f"revisions: current {self.current_revision}, compact {self.compact_revision}"
            )
        if any(a >= b for a, b in pairwise(self._keys)):
            raise MvccCorrupted("key index not strictly sorted")
        if len(self._keys) != len(self._history) or set(self._keys) != set(self._history):
            raise MvccCorrupted("key index and histories disagree")
        for key, es in self._history.items():
            _check_history(key, es, self.current_revision)


def _check_history(key: bytes, es: list[Revision], current: int) -> None:
    if not es:
        raise MvccCorrupted(f"{key!r}: empty history")
    for a, b in pairwise(es):
        if (a.main, a.sub) >= (b.main, b.sub):
            raise MvccCorrupted(f"{key!r}: revisions not sorted: {a} then {b}")
    for e in es:
        if e.main > current or e.sub < 0:
            raise MvccCorrupted(f"{key!r}: revision {e.main}.{e.sub} beyond {current}")
        kv = e.kv
        if kv is not None and (
            kv.key != key
            or kv.mod_revision != e.main
            or kv.version < 1
            or not 0 < kv.create_revision <= kv.mod_revision
        ):
            raise MvccCorrupted(f"{key!r}: inconsistent version {e}")


def _event(key: bytes, main: int, kv: KeyValue | None, prev: KeyValue | None) -> Event:
    """The watch event of one change (a DELETE's kv carries just the key and revision)."""
    if kv is None:
        return Event(type=EventType.DELETE, kv=KeyValue(key=key, mod_revision=main), prev_kv=prev)
    return Event(type=EventType.PUT, kv=kv, prev_kv=prev)


def _read_only(r: TxnRequest) -> bool:
    """etcd's ``isTxnReadonly``: no put or delete in either branch, at any depth."""
    for op in (*r.success, *r.failure):
        if op.request_put is not None or op.request_delete_range is not None:
            return False
        if op.request_txn is not None and not _read_only(op.request_txn):
            return False
    return True


def _compare_kv(c: Compare, kv: KeyValue) -> bool:
    """etcd's ``compareKV`` (an unknown result compares true, as there)."""
    result = _cmp(*_compare_operands(c, kv))
    if c.result == CompareResult.EQUAL:
        return result == 0
    if c.result == CompareResult.NOT_EQUAL:
        return result != 0
    if c.result == CompareResult.GREATER:
        return result > 0
    if c.result == CompareResult.LESS:
        return result < 0
    return True


def _compare_operands(c: Compare, kv: KeyValue) -> tuple[Any, Any]:
    t = c.target
    if t == CompareTarget.VALUE:
        return kv.value, c.value
    if t == CompareTarget.CREATE:
        return kv.create_revision, c.create_revision
    if t == CompareTarget.MOD:
        return kv.mod_revision, c.mod_revision
    if t == CompareTarget.VERSION:
        return kv.version, c.version
    if t == CompareTarget.LEASE:
        return kv.lease, c.lease
    return 0, 0


def _cmp(a: Any, b: Any) -> int:
    return int((a > b) - (a < b))


def _has_revision_filter(r: RangeRequest) -> bool:
    return bool(
        r.min_mod_revision or r.max_mod_revision or r.min_create_revision or r.max_create_revision
    )


def _filtered(kvs: list[KeyValue], r: RangeRequest) -> list[KeyValue]:
    """etcd's ``pruneKVs`` for the min/max mod/create revision filters (0 = unset)."""
    if r.max_mod_revision:
        kvs = [kv for kv in kvs if kv.mod_revision <= r.max_mod_revision]
    if r.min_mod_revision:
        kvs = [kv for kv in kvs if kv.mod_revision >= r.min_mod_revision]
    if r.max_create_revision:
        kvs = [kv for kv in kvs if kv.create_revision <= r.max_create_revision]
    if r.min_create_revision:
        kvs = [kv for kv in kvs if kv.create_revision >= r.min_create_revision]
    return kvs


def _sorted(kvs: list[KeyValue], r: RangeRequest) -> list[KeyValue]:
    """etcd's sort: a target other than KEY with order NONE sorts ASCEND; results come
    key-ascending otherwise.  Ties keep key order (stable; etcd leaves them unspecified)."""
    order = r.sort_order
    if r.sort_target != SortTarget.KEY and order == SortOrder.NONE:
        order = SortOrder.ASCEND
    if order == SortOrder.NONE:
        return kvs
    return sorted(kvs, key=_SORT_KEYS[r.sort_target], reverse=order == SortOrder.DESCEND)
