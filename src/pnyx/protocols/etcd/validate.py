"""Request checks etcd makes before a request reaches consensus (``v3rpc/key.go``).

``check_range`` / ``check_put`` / ``check_delete_range`` / ``check_txn`` mirror etcd's
``checkRangeRequest`` / ``checkPutRequest`` / ``checkDeleteRequest`` / ``checkTxnRequest``
followed by ``checkIntervals`` on both branches; :func:`check_request_size` is the
``--max-request-bytes`` limit.  All raise :class:`EtcdError`.
"""

from __future__ import annotations

import msgspec

from pnyx.protocols.etcd.errors import (
    ERR_DUPLICATE_KEY,
    ERR_EMPTY_KEY,
    ERR_INVALID_SORT_OPTION,
    ERR_LEASE_PROVIDED,
    ERR_REQUEST_TOO_LARGE,
    ERR_TOO_MANY_OPS,
    ERR_VALUE_PROVIDED,
)
from pnyx.protocols.etcd.requests import (
    DeleteRangeRequest,
    KvRequest,
    PutRequest,
    RangeRequest,
    RequestOp,
    SortOrder,
    SortTarget,
    TxnRequest,
)

DEFAULT_MAX_TXN_OPS = 128
"""etcd's ``--max-txn-ops`` default."""
DEFAULT_MAX_REQUEST_BYTES = 1536 * 1024
"""etcd's ``--max-request-bytes`` default (1.5 MiB)."""

_SORT_ORDERS = frozenset(int(v) for v in SortOrder)
_SORT_TARGETS = frozenset(int(v) for v in SortTarget)


def check_request_size(size: int, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> None:
    """Refuse a request of ``size`` encoded bytes above ``max_request_bytes``
    ("etcdserver: request is too large", like etcd's proposal size check)."""
    if size > max_request_bytes:
        raise ERR_REQUEST_TOO_LARGE.fresh()


def encoded_size(request: KvRequest) -> int:
    """The size of ``request`` as pnyx encodes it (msgpack), for :func:`check_request_size`."""
    return len(msgspec.msgpack.encode(request))


def check_range(r: RangeRequest) -> None:
    """``checkRangeRequest``: a key, and (as etcd 3.5) known sort order and target."""
    if not r.key:
        raise ERR_EMPTY_KEY.fresh()
    if r.sort_order not in _SORT_ORDERS or r.sort_target not in _SORT_TARGETS:
        raise ERR_INVALID_SORT_OPTION.fresh()


def check_put(r: PutRequest) -> None:
    """``checkPutRequest``: a key; no value with ``ignore_value``; no lease with
    ``ignore_lease``."""
    if not r.key:
        raise ERR_EMPTY_KEY.fresh()
    if r.ignore_value and r.value:
        raise ERR_VALUE_PROVIDED.fresh()
    if r.ignore_lease and r.lease != 0:
        raise ERR_LEASE_PROVIDED.fresh()


def check_delete_range(r: DeleteRangeRequest) -> None:
    """``checkDeleteRequest``: a key."""
    if not r.key:
        raise ERR_EMPTY_KEY.fresh()


def check_txn(r: TxnRequest, max_txn_ops: int = DEFAULT_MAX_TXN_OPS) -> None:
    """``checkTxnRequest`` then ``checkIntervals`` on ``success`` and on ``failure``."""
    _check_txn_ops(r, max_txn_ops)
    _check_intervals(r.success)
    _check_intervals(r.failure)


def _check_txn_ops(r: TxnRequest, max_txn_ops: int) -> None:
    """Operation count (the largest of compare/success/failure; a nested txn gets what its
    parent leaves), compare keys, then every op of both branches."""
    opc = max(len(r.compare), len(r.success), len(r.failure))
    if opc > max_txn_ops:
        raise ERR_TOO_MANY_OPS.fresh()
    for c in r.compare:
        if not c.key:
            raise ERR_EMPTY_KEY.fresh()
    for op in (*r.success, *r.failure):
        _check_request_op(op, max_txn_ops - opc)


def _check_request_op(op: RequestOp, max_txn_ops: int) -> None:
    if op.request_range is not None:
        check_range(op.request_range)
    elif op.request_put is not None:
        check_put(op.request_put)
    elif op.request_delete_range is not None:
        check_delete_range(op.request_delete_range)
    elif op.request_txn is not None:
        _check_txn_ops(op.request_txn, max_txn_ops)


def _hits(point: bytes, begin: bytes, end: bytes) -> bool:
    """Whether key ``point`` lies in etcd's affine interval ``[begin, end)`` (an empty
    ``end`` is +infinity; ``end`` is taken literally, so ``"\\0"`` holds no key)."""
    return begin <= point and (not end or point < end)


class _Dels:
    """The delete intervals seen so far (etcd uses an interval tree; a list does here)."""

    def __init__(self) -> None:
        self.items: list[tuple[bytes, bytes]] = []

    def add(self, d: DeleteRangeRequest) -> None:
        # A point delete is the interval [key, key + "\0").
        self.items.append((d.key, d.range_end or d.key + b"\0"))

    def hits(self, key: bytes) -> bool:
        return any(_hits(key, b, e) for b, e in self.items)


def _check_intervals(ops: list[RequestOp]) -> tuple[set[bytes], _Dels]:
    """etcd's ``checkIntervals``: no key is put twice, and no key is both put and deleted,
    across this level and the nested txns (then/else of one nested txn may put the same
    key: only one of them runs).  Returns this level's puts and deletes for the parent."""
    dels = _Dels()
    for op in ops:
        if op.request_delete_range is not None:
            dels.add(op.request_delete_range)
    puts: set[bytes] = set()
    for op in ops:
        if op.request_txn is not None:
            _merge_child(op.request_txn, puts, dels)
    for op in ops:
        if op.request_put is not None:
            _add_put(op.request_put.key, puts, dels)
    return puts, dels


def _merge_child(txn: TxnRequest, puts: set[bytes], dels: _Dels) -> None:
    puts_then, dels_then = _check_intervals(txn.success)
    puts_else, dels_else = _check_intervals(txn.failure)
    for k in sorted(puts_then):
        _add_put(k, puts, dels)
    for k in sorted(puts_else):
        if k in puts and k not in puts_then:
            raise ERR_DUPLICATE_KEY.fresh()
        if dels.hits(k):
            raise ERR_DUPLICATE_KEY.fresh()
        puts.add(k)
    dels.items.extend(dels_then.items)
    dels.items.extend(dels_else.items)


def _add_put(key: bytes, puts: set[bytes], dels: _Dels) -> None:
    if key in puts or dels.hits(key):
        raise ERR_DUPLICATE_KEY.fresh()
    puts.add(key)


def validate(request: KvRequest, max_txn_ops: int = DEFAULT_MAX_TXN_OPS) -> None:
    """Run etcd's pre-consensus check for ``request`` (compaction has none)."""
    if isinstance(request, RangeRequest):
        check_range(request)
    elif isinstance(request, PutRequest):
        check_put(request)
    elif isinstance(request, DeleteRangeRequest):
        check_delete_range(request)
    elif isinstance(request, TxnRequest):
        check_txn(request, max_txn_ops)
