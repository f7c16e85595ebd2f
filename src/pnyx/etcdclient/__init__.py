"""pnyx.etcdclient: a small typed client for the etcd v3 API (a pnyx etcd cluster or etcd).

Asynchronous::

    from pnyx.etcdclient import AsyncEtcdClient, Compare, Put, hold_lock

    async with AsyncEtcdClient("127.0.0.1:2379,127.0.0.1:22379") as etcd:
        await etcd.put("greeting", "hello")
        kv = await etcd.get("greeting")                       # KeyValue or None
        page = await etcd.range("app/", prefix=True, limit=10)
        cas = await etcd.txn([Compare("greeting", "value", "=", "hello")],
                             [Put("greeting", "bye")])        # cas.succeeded
        async with etcd.watch("app/", prefix=True, start_revision=page.revision + 1) as w:
            async for event in w: ...                         # WatchEvent, in revision order
        lease = await etcd.lease_grant(10)
        async for ttl in etcd.lease_keep_alive(lease.id): ...
        async with hold_lock(etcd, "jobs") as lock:           # etcd's concurrency mutex
            ...                                               # lock.revision: fencing token

Blocking: :class:`EtcdClient` has the same methods (``with etcd.lock("jobs") as lock``,
``with etcd.campaign("leader", "me")``, ``etcd.watch(...).get(timeout_s=1)``).

Built on the gRPC stubs of the ``aetcd`` package; see :mod:`pnyx.etcdclient.aio`.
"""

from pnyx.etcdclient.aio import (
    DEFAULT_ENDPOINT,
    AsyncEtcdClient,
    Compare,
    Delete,
    DeleteResult,
    EtcdError,
    EtcdUnavailable,
    Get,
    KeyValue,
    Lease,
    LeaseInfo,
    MemberStatus,
    Put,
    PutResult,
    RangeResult,
    Txn,
    TxnResult,
    Watch,
    WatchEvent,
    prefix_end,
)
from pnyx.etcdclient.recipes import (
    Election,
    LockHandle,
    Mutex,
    Session,
    SessionExpired,
    hold_lock,
)
from pnyx.etcdclient.sync import EtcdClient, SyncWatch

__all__ = [
    "DEFAULT_ENDPOINT",
    "AsyncEtcdClient",
    "Compare",
    "Delete",
    "DeleteResult",
    "Election",
    "EtcdClient",
    "EtcdError",
    "EtcdUnavailable",
    "Get",
    "KeyValue",
    "Lease",
    "LeaseInfo",
    "LockHandle",
    "MemberStatus",
    "Mutex",
    "Put",
    "PutResult",
    "RangeResult",
    "Session",
    "SessionExpired",
    "SyncWatch",
    "Txn",
    "TxnResult",
    "Watch",
    "WatchEvent",
    "hold_lock",
    "prefix_end",
]
