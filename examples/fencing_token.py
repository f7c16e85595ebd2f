"""Fencing tokens with the etcd lock API (pnyx or etcd 3.4): a stale lock holder's write
is refused by the protected resource.

Starts nothing: point it at a running cluster::

    python examples/fencing_token.py --endpoints 127.0.0.1:2379[,...] [--resource NAME]

What it does (see docs/ETCD-LOCKS.md):

1. Client A takes the lock ``<resource>/lock`` (``v3lockpb.Lock`` with a lease of its own)
   and reads its **fencing token**: the create revision of the lock key Lock returned.
2. A writes ``<resource>/data`` through the *fenced write*: one txn that succeeds only if
   ``<resource>/fence`` holds a token <= A's, and then stores A's token in the fence and
   the data together.
3. A stalls (a GC pause, a partition): its lease runs out (here: is revoked), so its lock
   key is gone, but A does not know.  Client B takes the lock: its token is larger.
   B's fenced write succeeds and moves the fence to B's token.
4. A wakes up and writes with its old token: the txn's compare fails, the write is
   refused, and the data stays B's.

Tokens are stored as 20-digit zero-padded decimals, so etcd's byte-wise value compare
orders them as numbers; "fence <= token" is the compare ``value(fence) < token + 1``
(etcd compares with =, !=, <, >).

Exit status 0 when the stale write was refused and the data is B's; 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys

import grpc  # type: ignore[import-untyped]
from aetcd.rpc import rpc_pb2, rpc_pb2_grpc  # type: ignore[import-untyped]

from pnyx.services.etcd.proto import v3lock_pb2, v3lock_pb2_grpc

TIMEOUT_S = 30.0
"""Deadline of each call (the lock is free here, so Lock does not wait)."""


def token_bytes(token: int) -> bytes:
    """A token as etcd can compare it: 20 digits, zero-padded (byte order = number order)."""
    return b"%020d" % token


class Client:
    """One client of the cluster: KV, Lease and Lock stubs over one channel."""

    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(endpoint)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.lock = v3lock_pb2_grpc.LockStub(self.channel)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self.channel.close()

    def acquire(self, name: bytes, ttl: int) -> tuple[int, bytes, int]:
        """Take the lock ``name`` with a fresh lease: (lease id, lock key, fencing token).

        The token is the lock key's create revision.  (LockResponse's header revision is
        the revision at which the lock was granted: also larger for every later holder,
        and equal to the create revision when the lock was free.)"""
        lease = self.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=TIMEOUT_S).ID
        locked = self.lock.Lock(v3lock_pb2.LockRequest(name=name, lease=lease), timeout=TIMEOUT_S)
        got = self.kv.Range(rpc_pb2.RangeRequest(key=locked.key), timeout=TIMEOUT_S)
        return lease, locked.key, got.kvs[0].create_revision

    def fenced_write(self, resource: bytes, token: int, value: bytes) -> tuple[bool, int]:
        """Write ``value`` to ``<resource>/data`` if no newer token was seen there: (done,
        the fence's token now)."""
        fence, data = resource + b"/fence", resource + b"/data"
        txn = rpc_pb2.TxnRequest(
            compare=[
                rpc_pb2.Compare(
                    key=fence,
                    target=rpc_pb2.Compare.VALUE,
                    result=rpc_pb2.Compare.LESS,
                    value=token_bytes(token + 1),  # fence < token + 1, i.e. fence <= token
                )
            ],
            success=[
                rpc_pb2.RequestOp(
                    request_put=rpc_pb2.PutRequest(key=fence, value=token_bytes(token))
                ),
                rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=data, value=value)),
            ],
            failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=fence))],
        )
        response = self.kv.Txn(txn, timeout=TIMEOUT_S)
        if response.succeeded:
            return True, token
        (kv,) = response.responses[0].response_range.kvs
        return False, int(kv.value)

    def init_fence(self, resource: bytes) -> None:
        """Create ``<resource>/fence`` = 0 unless it exists (a value compare needs a key)."""
        fence = resource + b"/fence"
        self.kv.Txn(
            rpc_pb2.TxnRequest(
                compare=[
                    rpc_pb2.Compare(
                        key=fence,
                        target=rpc_pb2.Compare.CREATE,
                        result=rpc_pb2.Compare.EQUAL,
                        create_revision=0,
                    )
                ],
                success=[
                    rpc_pb2.RequestOp(
                        request_put=rpc_pb2.PutRequest(key=fence, value=token_bytes(0))
                    )
                ],
            ),
            timeout=TIMEOUT_S,
        )


def report(who: str, token: int, outcome: tuple[bool, int]) -> None:
    done, fence = outcome
    verdict = "accepted" if done else f"REFUSED (the fence holds the newer token {fence})"
    print(f"{who} writes with token {token}: {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", required=True, help="host:port[,host:port...]")
    parser.add_argument("--resource", default="fenced-resource", help="key prefix to protect")
    parser.add_argument("--ttl", type=int, default=30, help="lease TTL of each client (s)")
    args = parser.parse_args(argv)
    endpoints = [e.strip().removeprefix("http://") for e in args.endpoints.split(",") if e]
    resource = args.resource.encode()
    lock_name = resource + b"/lock"
    # the two clients talk to different members when there are several
    a, b = Client(endpoints[0]), Client(endpoints[-1])
    try:
        a.init_fence(resource)
        lease_a, key_a, token_a = a.acquire(lock_name, args.ttl)
        print(f"A holds {key_a.decode()} with token {token_a}")
        report("A", token_a, a.fenced_write(resource, token_a, b"written by A"))

        # A stalls; its lease ends (revoked here, as if it expired), taking the lock key
        a.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lease_a), timeout=TIMEOUT_S)
        print("A stalls; its lease ends and the lock is free again")

        lease_b, key_b, token_b = b.acquire(lock_name, args.ttl)
        print(f"B holds {key_b.decode()} with token {token_b}")
        report("B", token_b, b.fenced_write(resource, token_b, b"written by B"))

        stale = a.fenced_write(resource, token_a, b"stale write by A")
        report("A", token_a, stale)

        b.lock.Unlock(v3lock_pb2.UnlockRequest(key=key_b), timeout=TIMEOUT_S)
        b.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lease_b), timeout=TIMEOUT_S)
        data = b.kv.Range(rpc_pb2.RangeRequest(key=resource + b"/data"), timeout=TIMEOUT_S)
        value = data.kvs[0].value if data.kvs else b""
        print(f"{resource.decode()}/data = {value.decode()!r}")
        if token_b > token_a and not stale[0] and value == b"written by B":
            print("ok: the stale holder's write was refused")
            return 0
        print("FAILED: the stale holder's write was not refused")
        return 1
    finally:
        a.close()
        b.close()


if __name__ == "__main__":
    sys.exit(main())
