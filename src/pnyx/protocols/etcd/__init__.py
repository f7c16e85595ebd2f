"""etcd v3 compatible KV semantics as pure state machines (no I/O; see README.md).

:class:`MvccStore` applies etcd's Range / Put / DeleteRange / Txn / Compaction requests
(:mod:`pnyx.protocols.etcd.requests`) with etcd's revisions, errors and edge cases.
"""

from pnyx.protocols.etcd.errors import ErrorResult, EtcdError, GrpcCode
from pnyx.protocols.etcd.mvcc import SNAPSHOT_FORMAT, MvccCorrupted, MvccStore, Revision
from pnyx.protocols.etcd.requests import (
    CompactionRequest,
    CompactionResponse,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    HashKVRequest,
    HashKVResponse,
    KeyValue,
    KvRequest,
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
from pnyx.protocols.etcd.validate import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_TXN_OPS,
    check_request_size,
    encoded_size,
    validate,
)

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_MAX_TXN_OPS",
    "SNAPSHOT_FORMAT",
    "CompactionRequest",
    "CompactionResponse",
    "Compare",
    "CompareResult",
    "CompareTarget",
    "DeleteRangeRequest",
    "DeleteRangeResponse",
    "ErrorResult",
    "EtcdError",
    "GrpcCode",
    "HashKVRequest",
    "HashKVResponse",
    "KeyValue",
    "KvRequest",
    "MvccCorrupted",
    "MvccStore",
    "PutRequest",
    "PutResponse",
    "RangeRequest",
    "RangeResponse",
    "RequestOp",
    "ResponseHeader",
    "ResponseOp",
    "Revision",
    "SortOrder",
    "SortTarget",
    "TxnRequest",
    "TxnResponse",
    "check_request_size",
    "encoded_size",
    "validate",
]
