"""Shorthands for building etcd requests in tests."""

from __future__ import annotations

from typing import Any

from pnyx.protocols.etcd import (
    Compare,
    DeleteRangeRequest,
    MvccStore,
    PutRequest,
    RangeRequest,
    RequestOp,
    TxnRequest,
)


def put(store: MvccStore, key: bytes, value: bytes = b"v", **kw: Any) -> Any:
    """Apply a Put (errors come back as ErrorResult)."""
    return store.apply(PutRequest(key=key, value=value, **kw))


def get(store: MvccStore, key: bytes, **kw: Any) -> Any:
    """Apply a Range."""
    return store.apply(RangeRequest(key=key, **kw))


def delete(store: MvccStore, key: bytes, **kw: Any) -> Any:
    """Apply a DeleteRange."""
    return store.apply(DeleteRangeRequest(key=key, **kw))


def txn(
    store: MvccStore,
    compare: list[Compare] | None = None,
    success: list[RequestOp] | None = None,
    failure: list[RequestOp] | None = None,
) -> Any:
    """Apply a Txn."""
    return store.apply(
        TxnRequest(compare=compare or [], success=success or [], failure=failure or [])
    )


def op_put(key: bytes, value: bytes = b"v", **kw: Any) -> RequestOp:
    return RequestOp(request_put=PutRequest(key=key, value=value, **kw))


def op_get(key: bytes, **kw: Any) -> RequestOp:
    return RequestOp(request_range=RangeRequest(key=key, **kw))


def op_del(key: bytes, **kw: Any) -> RequestOp:
    return RequestOp(request_delete_range=DeleteRangeRequest(key=key, **kw))


def op_txn(
    compare: list[Compare] | None = None,
    success: list[RequestOp] | None = None,
    failure: list[RequestOp] | None = None,
) -> RequestOp:
    return RequestOp(
        request_txn=TxnRequest(compare=compare or [], success=success or [], failure=failure or [])
    )


def keys(resp: Any) -> list[bytes]:
    """The keys of a RangeResponse, in order."""
    return [kv.key for kv in resp.kvs]
