"""Use a stock etcd client library (``aetcd``, from PyPI) against a pnyx etcd cluster.

Nothing here is pnyx-specific: the same code runs against etcd itself.  Start a cluster and
point the example at it::

    pnyx cluster up --nodes 3 --protocol etcd --data-dir /tmp/etcd-demo --detach
    export ETCDCTL_ENDPOINTS=127.0.0.1:PORT1,...     # the line `cluster up` printed
    python examples/etcd_client_example.py
    pnyx cluster down --data-dir /tmp/etcd-demo

It shows: put / get / prefix reads, a compare-and-swap transaction, a watch receiving the
events of later writes in revision order, a lease whose key disappears when it is revoked,
and a **fencing token**: the revision of a lock key, checked by the protected resource in
a transaction so that a holder whose lock has since expired cannot write.

(``aetcd`` talks to one endpoint; the example uses the first.  pnyx's own client,
``pnyx.etcdclient``, takes them all and moves on when a member fails.)
"""

from __future__ import annotations

import asyncio
import os

import aetcd  # type: ignore[import-untyped]


def first_endpoint() -> tuple[str, int]:
    endpoints = os.environ.get("ETCDCTL_ENDPOINTS", "127.0.0.1:2379")
    host, port = endpoints.split(",")[0].removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def main() -> None:
    host, port = first_endpoint()
    async with aetcd.Client(host=host, port=port, timeout=5) as client:
        # -- put, get, prefix ---------------------------------------------------------------
        await client.put(b"example/greeting", b"hello")
        await client.put(b"example/name", b"pnyx")
        got = await client.get(b"example/greeting")
        print("get:", got.value, "mod revision", got.mod_revision)
        everything = await client.get_prefix(b"example/")
        print("prefix:", sorted(kv.key for kv in everything))

        # -- compare-and-swap: replace only if the value is still what we read -------------
        txn = client.transactions
        ok, _ = await client.transaction(
            compare=[txn.value(b"example/greeting") == b"hello"],
            success=[txn.put(b"example/greeting", b"bonjour")],
            failure=[],
        )
        print("cas hello -> bonjour:", ok)
        ok, _ = await client.transaction(
            compare=[txn.value(b"example/greeting") == b"hello"],  # stale now: fails
            success=[txn.put(b"example/greeting", b"hallo")],
            failure=[],
        )
        print("cas hello -> hallo (stale):", ok)

        # -- watch: the events of later writes, in revision order ----------------------------
        start = (await client.get(b"example/greeting")).mod_revision + 1
        events = await client.watch_prefix(b"example/", start_revision=start)
        for i in range(3):
            await client.put(b"example/counter", str(i).encode())
        seen = []
        async for event in events:
            seen.append((event.kv.key, event.kv.value, event.kv.mod_revision))
            if len(seen) == 3:
                break
        await events.cancel()
        print("watched:", seen)

        # -- lease: keys attached to it go when it is revoked (or expires) ---------------------
        lease = await client.lease(30)
        await client.put(b"example/session", b"alive", lease=lease)
        await lease.refresh()  # one keep-alive
        await lease.revoke()
        print("after revoke:", await client.get(b"example/session"))  # None

        # -- lock with a fencing token ---------------------------------------------------------
        # The token is the revision at which the lock key was created: it grows with every
        # acquisition.  The protected write is a txn that only applies while the lock key
        # still has that create revision, i.e. while this holder still holds the lock.
        lock = client.lock(b"example/lock", ttl=10)
        await lock.acquire(timeout=10)
        token = (await client.get(b"example/lock")).create_revision
        ok, _ = await client.transaction(
            compare=[txn.create(b"example/lock") == token],
            success=[txn.put(b"example/protected", f"written with token {token}".encode())],
            failure=[],
        )
        print(f"fenced write with token {token}:", ok)
        await lock.release()
        ok, _ = await client.transaction(  # the same token after release: refused
            compare=[txn.create(b"example/lock") == token],
            success=[txn.put(b"example/protected", b"late write")],
            failure=[],
        )
        print(f"fenced write with token {token} after release:", ok)

        await client.delete_prefix(b"example/")


if __name__ == "__main__":
    asyncio.run(main())
