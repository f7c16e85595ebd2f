"""An obviously-correct reference model of etcd's MVCC KV semantics, for the tests.

Whole history kept (compaction only moves the readable floor), linear scans everywhere,
a deep copy for txn atomicity.  Pre-consensus request checks (empty keys, too many ops,
duplicate keys) are not modelled: the model calls :func:`validate`, which has its own unit
tests; everything after that — revisions, versions, reads, txn branches — is modelled here.
"""

from __future__ import annotations

import copy
from typing import Any

from pnyx.protocols.etcd import (
    CompactionRequest,
    CompactionResponse,
    Compare,
    DeleteRangeRequest,
    DeleteRangeResponse,
    ErrorResult,
    EtcdError,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    ResponseHeader,
    ResponseOp,
    TxnRequest,
    TxnResponse,
    validate,
)
from pnyx.protocols.etcd.errors import (
    ERR_COMPACTED,
    ERR_FUTURE_REV,
    ERR_KEY_NOT_FOUND,
    ERR_LEASE_NOT_FOUND,
)


class Model:
    """key -> list of (revision, KeyValue or None for deleted), appended in order."""

    def __init__(self, leases: set[int]) -> None:
        self.hist: dict[bytes, list[tuple[int, KeyValue | None]]] = {}
        self.rev = 1
        self.compacted = -1
        self.leases = leases
        self.dirty = False  # the open write txn changed something

    # ---- reads
    def at(self, key: bytes, rev: int) -> KeyValue | None:
        found = None
        for r, kv in self.hist.get(key, []):
            if r <= rev:
                found = kv
        return found

    def matching(self, key: bytes, end: bytes, rev: int) -> list[KeyValue]:
        out = []
        for k in sorted(self.hist):
            if end == b"":
                inside = k == key
            elif end == b"\x00":
                inside = k >= key
            else:
                inside = key <= k < end
            kv = self.at(k, rev)
            if inside and kv is not None:
                out.append(kv)
        return out

    def view(self) -> int:
        return self.rev + 1 if self.dirty else self.rev

    def range(self, r: RangeRequest) -> RangeResponse:
        cur = self.view()
        if r.revision > cur:
            raise ERR_FUTURE_REV.fresh()
        rev = r.revision if r.revision > 0 else cur
        if rev < self.compacted:
            raise ERR_COMPACTED.fresh()
        kvs = self.matching(r.key, r.range_end, rev)
        count = len(kvs)
        if r.count_only:
            return RangeResponse(header=ResponseHeader(revision=cur), count=count)
        kvs = [
            kv for kv in kvs
            if (not r.max_mod_revision or kv.mod_revision <= r.max_mod_revision)
            and (not r.min_mod_revision or kv.mod_revision >= r.min_mod_revision)
            and (not r.max_create_revision or kv.create_revision <= r.max_create_revision)
            and (not r.min_create_revision or kv.create_revision >= r.min_create_revision)
        ]
        order = r.sort_order
        if r.sort_target != 0 and order == 0:
            order = 1
        field = ["key", "version", "create_revision", "mod_revision", "value"][r.sort_target]
        if order:
            kvs = sorted(kvs, key=lambda kv: getattr(kv, field), reverse=order == 2)
        more = 0 < r.limit < len(kvs)
        if more:
            kvs = kvs[: r.limit]
        if r.keys_only:
            kvs = [KeyValue(key=kv.key, create_revision=kv.create_revision,
                            mod_revision=kv.mod_revision, version=kv.version, lease=kv.lease)
                   for kv in kvs]
        return RangeResponse(header=ResponseHeader(revision=cur), kvs=kvs, more=more, count=count)

    # ---- writes (inside an open write txn)
    def write(self, key: bytes, kv: KeyValue | None) -> None:
        self.hist.setdefault(key, []).append((self.rev + 1, kv))
        self.dirty = True

    def put(self, p: PutRequest) -> PutResponse:
        prev = self.at(p.key, self.view())
        if (p.ignore_value or p.ignore_lease) and prev is None:
            raise ERR_KEY_NOT_FOUND.fresh()
        new = self.rev + 1
        kv = KeyValue(
            key=p.key,
            create_revision=prev.create_revision if prev else new,
            mod_revision=new,
            version=prev.version + 1 if prev else 1,
            value=prev.value if p.ignore_value and prev else p.value,
            lease=prev.lease if p.ignore_lease and prev else p.lease,
        )
        self.write(p.key, kv)
        return PutResponse(header=ResponseHeader(revision=new), prev_kv=prev if p.prev_kv else None)

    def delete(self, d: DeleteRangeRequest) -> DeleteRangeResponse:
        gone = self.matching(d.key, d.range_end, self.view())
        for kv in gone:
            self.write(kv.key, None)
        return DeleteRangeResponse(header=ResponseHeader(revision=self.view()),
                                   deleted=len(gone), prev_kvs=gone if d.prev_kv else [])

    # ---- txn
    def holds(self, c: Compare) -> bool:
        kvs = self.matching(c.key, c.range_end, self.rev)
        if not kvs:
            if c.target == 3:
                return False
            kvs = [KeyValue()]
        for kv in kvs:
            mine: Any = [kv.version, kv.create_revision, kv.mod_revision, kv.value,
                         kv.lease][c.target]
            theirs: Any = [c.version, c.create_revision, c.mod_revision, c.value, c.lease][c.target]
            ok = {0: mine == theirs, 1: mine > theirs, 2: mine < theirs, 3: mine != theirs}
            if not ok[c.result]:
                return False
        return True

    def decide(self, t: TxnRequest) -> list[Any]:
        """[succeeded, decisions of the nested txns of the chosen branch...], before writes."""
        ok = all(self.holds(c) for c in t.compare)
        ops = t.success if ok else t.failure
        return [ok] + [self.decide(o.request_txn) for o in ops if o.request_txn is not None]

    def checks(self, t: TxnRequest, d: list[Any], writes: bool) -> None:
        kids = iter(d[1:])
        for o in t.success if d[0] else t.failure:
            if o.request_txn is not None:
                self.checks(o.request_txn, next(kids), writes)
            elif writes and o.request_put is not None:
                p = o.request_put
                if (p.ignore_value or p.ignore_lease) and self.at(p.key, self.rev) is None:
                    raise ERR_KEY_NOT_FOUND.fresh()
                if p.lease and p.lease not in self.leases:
                    raise ERR_LEASE_NOT_FOUND.fresh()
            elif not writes and o.request_range is not None and o.request_range.revision:
                if o.request_range.revision > self.rev:
                    raise ERR_FUTURE_REV.fresh()
                if o.request_range.revision < self.compacted:
                    raise ERR_COMPACTED.fresh()

    def run(self, t: TxnRequest, d: list[Any]) -> TxnResponse:
        kids = iter(d[1:])
        out = []
        for o in t.success if d[0] else t.failure:
            if o.request_range is not None:
                out.append(ResponseOp(response_range=self.range(o.request_range)))
            elif o.request_put is not None:
                out.append(ResponseOp(response_put=self.put(o.request_put)))
            elif o.request_delete_range is not None:
                out.append(ResponseOp(response_delete_range=self.delete(o.request_delete_range)))
            elif o.request_txn is not None:
                out.append(ResponseOp(response_txn=self.run(o.request_txn, next(kids))))
            else:
                out.append(ResponseOp())
        return TxnResponse(succeeded=d[0], responses=out)

    def txn(self, t: TxnRequest) -> TxnResponse:
        d = self.decide(t)
        self.checks(t, d, writes=_writes(t))
        self.checks(t, d, writes=False)
        resp = self.run(t, d)
        return TxnResponse(header=ResponseHeader(revision=self.view()),
                           succeeded=resp.succeeded, responses=resp.responses)

    # ---- entry point
    def apply(self, req: Any) -> Any:
        saved = copy.deepcopy((self.hist, self.rev, self.compacted))
        self.dirty = False
        try:
            if isinstance(req, CompactionRequest):
                return self.compact(req.revision)
            validate(req)
            if isinstance(req, PutRequest) and req.lease and req.lease not in self.leases:
                raise ERR_LEASE_NOT_FOUND.fresh()
            resp = self.dispatch(req)
            if self.dirty:
                self.rev += 1
            return resp
        except EtcdError as exc:
            self.hist, self.rev, self.compacted = saved
            return ErrorResult(int(exc.code), exc.message)
        finally:
            self.dirty = False

    def dispatch(self, req: Any) -> Any:
        if isinstance(req, RangeRequest):
            return self.range(req)
        if isinstance(req, PutRequest):
            return self.put(req)
        if isinstance(req, DeleteRangeRequest):
            return self.delete(req)
        return self.txn(req)

    def compact(self, rev: int) -> CompactionResponse:
        if rev <= self.compacted:
            raise ERR_COMPACTED.fresh()
        if rev > self.rev:
            raise ERR_FUTURE_REV.fresh()
        self.compacted = rev
        return CompactionResponse(header=ResponseHeader(revision=self.rev))


def _writes(t: TxnRequest) -> bool:
    ops: list[RequestOp] = [*t.success, *t.failure]
    return any(
        o.request_put is not None or o.request_delete_range is not None
        or (o.request_txn is not None and _writes(o.request_txn))
        for o in ops
    )
