"""etcd v3 KV requests and responses as msgspec structs.

Field names, order and defaults mirror etcd's ``api/etcdserverpb/rpc.proto`` (``RangeRequest``,
``PutRequest``, ``DeleteRangeRequest``, ``TxnRequest``, ``Compare``, ``RequestOp``,
``CompactionRequest``, ``HashKVRequest`` and their responses) and ``api/mvccpb/kv.proto``
(``KeyValue``).  Proto3 defaults become struct defaults (empty bytes, 0, False, empty list).
A proto ``oneof`` (``RequestOp.request``, ``ResponseOp.response``, ``Compare.target_union``)
becomes one optional field per member, of which at most one is set.

Requests are *tagged* structs (msgpack/JSON carry ``"type": "put"`` etc.), so a request
that crossed the Raft log or a wire untyped is decoded back to its struct by
:func:`pnyx.protocols.etcd.machine.decode_command`.  Lease fields keep the proto's names
(``ID``, ``TTL``, ``grantedTTL``) so the gRPC layer maps them one to one.
"""

from __future__ import annotations

from enum import IntEnum

import msgspec


class SortOrder(IntEnum):
    """``RangeRequest.SortOrder``."""

    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(IntEnum):
    """``RangeRequest.SortTarget``."""

    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


class CompareResult(IntEnum):
    """``Compare.CompareResult``."""

    EQUAL = 0
    GREATER = 1
    LESS = 2
    NOT_EQUAL = 3


class CompareTarget(IntEnum):
    """``Compare.CompareTarget``."""

    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3
    LEASE = 4


class ResponseHeader(msgspec.Struct, frozen=True, kw_only=True):
    """``ResponseHeader``: the state machine fills ``revision``; the server the rest."""

    cluster_id: int = 0
    member_id: int = 0
    revision: int = 0
    raft_term: int = 0


class KeyValue(msgspec.Struct, frozen=True, kw_only=True):
    """``mvccpb.KeyValue``: one version of a key."""

    key: bytes = b""
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    value: bytes = b""
    lease: int = 0


class RangeRequest(msgspec.Struct, frozen=True, kw_only=True, tag="range"):
    """``RangeRequest``: read one key, ``[key, range_end)``, or all keys ``>= key``."""

    key: bytes = b""
    range_end: bytes = b""
    limit: int = 0
    revision: int = 0
    sort_order: int = SortOrder.NONE
    sort_target: int = SortTarget.KEY
    serializable: bool = False
    keys_only: bool = False
    count_only: bool = False
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0


class RangeResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``RangeResponse``: ``count`` is every key in the range, whatever ``limit`` says."""

    header: ResponseHeader = ResponseHeader()
    kvs: list[KeyValue] = []
    more: bool = False
    count: int = 0


class PutRequest(msgspec.Struct, frozen=True, kw_only=True, tag="put"):
    """``PutRequest``."""

    key: bytes = b""
    value: bytes = b""
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


class PutResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``PutResponse``: ``prev_kv`` when asked for and the key existed."""

    header: ResponseHeader = ResponseHeader()
    prev_kv: KeyValue | None = None


class DeleteRangeRequest(msgspec.Struct, frozen=True, kw_only=True, tag="delete_range"):
    """``DeleteRangeRequest`` (range rules as :class:`RangeRequest`)."""

    key: bytes = b""
    range_end: bytes = b""
    prev_kv: bool = False


class DeleteRangeResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``DeleteRangeResponse``."""

    header: ResponseHeader = ResponseHeader()
    deleted: int = 0
    prev_kvs: list[KeyValue] = []


class Compare(msgspec.Struct, frozen=True, kw_only=True):
    """``Compare``: ``target_union`` is ``version`` / ``create_revision`` /
    ``mod_revision`` / ``value`` / ``lease`` (the one matching ``target`` is read)."""

    result: int = CompareResult.EQUAL
    target: int = CompareTarget.VERSION
    key: bytes = b""
    version: int = 0
    create_revision: int = 0
    mod_revision: int = 0
    value: bytes = b""
    lease: int = 0
    range_end: bytes = b""


class RequestOp(msgspec.Struct, frozen=True, kw_only=True):
    """``RequestOp``: exactly one of the fields set (none set = an empty op, ignored)."""

    request_range: RangeRequest | None = None
    request_put: PutRequest | None = None
    request_delete_range: DeleteRangeRequest | None = None
    request_txn: TxnRequest | None = None


class ResponseOp(msgspec.Struct, frozen=True, kw_only=True):
    """``ResponseOp``: the response to the :class:`RequestOp` at the same position."""

    response_range: RangeResponse | None = None
    response_put: PutResponse | None = None
    response_delete_range: DeleteRangeResponse | None = None
    response_txn: TxnResponse | None = None


class TxnRequest(msgspec.Struct, frozen=True, kw_only=True, tag="txn"):
    """``TxnRequest``: if every ``compare`` holds run ``success`` else ``failure``."""

    compare: list[Compare] = []
    success: list[RequestOp] = []
    failure: list[RequestOp] = []


class TxnResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``TxnResponse``."""

    header: ResponseHeader = ResponseHeader()
    succeeded: bool = False
    responses: list[ResponseOp] = []


class CompactionRequest(msgspec.Struct, frozen=True, kw_only=True, tag="compaction"):
    """``CompactionRequest``: forget history before ``revision``."""

    revision: int = 0
    physical: bool = False


class CompactionResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``CompactionResponse``."""

    header: ResponseHeader = ResponseHeader()


class HashKVRequest(msgspec.Struct, frozen=True, kw_only=True, tag="hash_kv"):
    """``HashKVRequest`` (Maintenance service): hash the KV history up to ``revision``."""

    revision: int = 0


class HashKVResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``HashKVResponse``."""

    header: ResponseHeader = ResponseHeader()
    hash: int = 0
    compact_revision: int = 0


# --------------------------------------------------------------------------- leases


MAX_LEASE_TTL_S = 9_000_000_000
"""etcd's ``lease.MaxLeaseTTL``: a larger requested TTL gets *too large lease TTL*."""


class LeaseGrantRequest(msgspec.Struct, frozen=True, kw_only=True, tag="lease_grant"):
    """``LeaseGrantRequest``: ``TTL`` seconds; ``ID`` 0 lets the state machine choose."""

    TTL: int = 0
    ID: int = 0


class LeaseGrantResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``LeaseGrantResponse``: ``TTL`` is the granted TTL (raised to the minimum)."""

    header: ResponseHeader = ResponseHeader()
    ID: int = 0
    TTL: int = 0
    error: str = ""


class LeaseRevokeRequest(msgspec.Struct, frozen=True, kw_only=True, tag="lease_revoke"):
    """``LeaseRevokeRequest``: revoke lease ``ID`` and delete the keys attached to it."""

    ID: int = 0


class LeaseRevokeResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``LeaseRevokeResponse``."""

    header: ResponseHeader = ResponseHeader()


class LeaseEpochRequest(msgspec.Struct, frozen=True, kw_only=True, tag="lease_epoch"):
    """pnyx (no etcd counterpart): a new leader's lessor starts in ``epoch`` (its term,
    ballot or view as one increasing number).  A leader proposes it on gaining leadership
    and expires leases only once it applied it; the store keeps the highest epoch."""

    epoch: int = 0


class LeaseEpochResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The store's lease epoch after a :class:`LeaseEpochRequest`."""

    header: ResponseHeader = ResponseHeader()
    epoch: int = 0


class LeaseExpireRequest(msgspec.Struct, frozen=True, kw_only=True, tag="lease_expire"):
    """pnyx: the lessor of ``epoch`` revokes lease ``ID`` because its TTL ran out; refused
    (nothing changes) once a later epoch has started: that leader's lessor restarted every
    TTL and may have renewed the lease since.  Answered like a ``LeaseRevokeRequest``."""

    ID: int = 0
    epoch: int = 0


LOG_ONLY_STRUCTS: frozenset[type[msgspec.Struct]] = frozenset(
    {LeaseEpochRequest, LeaseEpochResponse, LeaseExpireRequest}
)
"""pnyx's own commands with no etcd protobuf counterpart: they travel only on the log, never
through the gRPC API (so ``pnyx.services.etcd.convert`` has nothing to map them to)."""


class LeaseKeepAliveRequest(msgspec.Struct, frozen=True, kw_only=True, tag="lease_keep_alive"):
    """``LeaseKeepAliveRequest`` (one message of the keep-alive stream)."""

    ID: int = 0


class LeaseKeepAliveResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``LeaseKeepAliveResponse``: ``TTL`` = the granted TTL, 0 when the lease is gone."""

    header: ResponseHeader = ResponseHeader()
    ID: int = 0
    TTL: int = 0


class LeaseTimeToLiveRequest(msgspec.Struct, frozen=True, kw_only=True, tag="lease_time_to_live"):
    """``LeaseTimeToLiveRequest``: ``keys`` asks for the attached keys too."""

    ID: int = 0
    keys: bool = False


class LeaseTimeToLiveResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``LeaseTimeToLiveResponse``: ``TTL`` remaining seconds (-1: no such lease),
    ``grantedTTL`` the granted one, ``keys`` when asked."""

    header: ResponseHeader = ResponseHeader()
    ID: int = 0
    TTL: int = 0
    grantedTTL: int = 0
    keys: list[bytes] = []


class LeaseLeasesRequest(msgspec.Struct, frozen=True, kw_only=True, tag="lease_leases"):
    """``LeaseLeasesRequest``: list every lease."""


class LeaseStatus(msgspec.Struct, frozen=True, kw_only=True):
    """``LeaseStatus``."""

    ID: int = 0


class LeaseLeasesResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``LeaseLeasesResponse``."""

    header: ResponseHeader = ResponseHeader()
    leases: list[LeaseStatus] = []


# --------------------------------------------------------------------------- watch


class EventType(IntEnum):
    """``mvccpb.Event.EventType``."""

    PUT = 0
    DELETE = 1


class FilterType(IntEnum):
    """``WatchCreateRequest.FilterType``."""

    NOPUT = 0
    NODELETE = 1


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """``mvccpb.Event``: a DELETE's ``kv`` has only ``key`` and ``mod_revision`` set."""

    type: int = EventType.PUT
    kv: KeyValue | None = None
    prev_kv: KeyValue | None = None


class WatchCreateRequest(msgspec.Struct, frozen=True, kw_only=True):
    """``WatchCreateRequest`` (range rules as :class:`RangeRequest`)."""

    key: bytes = b""
    range_end: bytes = b""
    start_revision: int = 0
    progress_notify: bool = False
    filters: list[int] = []
    prev_kv: bool = False
    watch_id: int = 0
    fragment: bool = False


class WatchCancelRequest(msgspec.Struct, frozen=True, kw_only=True):
    """``WatchCancelRequest``."""

    watch_id: int = 0


class WatchProgressRequest(msgspec.Struct, frozen=True, kw_only=True):
    """``WatchProgressRequest``: ask for a progress notification now."""


class WatchRequest(msgspec.Struct, frozen=True, kw_only=True):
    """``WatchRequest``: one of ``create_request`` / ``cancel_request`` /
    ``progress_request``."""

    create_request: WatchCreateRequest | None = None
    cancel_request: WatchCancelRequest | None = None
    progress_request: WatchProgressRequest | None = None


class WatchResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``WatchResponse``."""

    header: ResponseHeader = ResponseHeader()
    watch_id: int = 0
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    cancel_reason: str = ""
    fragment: bool = False
    events: list[Event] = []


KvRequest = RangeRequest | PutRequest | DeleteRangeRequest | TxnRequest | CompactionRequest
"""The commands the MVCC state machine applies (plus :class:`HashKVRequest` queries)."""
