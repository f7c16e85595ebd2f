"""The Python API behind the etcd CLI (``pnyx.etcdclient``) against a 3-node pnyx etcd
cluster: blocking and asyncio clients, a watch that outlives its member, lock and election."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from pnyx.etcdclient import (
    AsyncEtcdClient,
    Compare,
    EtcdClient,
    EtcdError,
    EtcdUnavailable,
    Get,
    Put,
    RangeResult,
    hold_lock,
)
from tests.services.etcd_cluster import EtcdCluster, etcd_cluster, free_ports

__all__ = ["etcd_cluster"]


def test_blocking_client_kv_txn_lease_lock_election(etcd_cluster: EtcdCluster) -> None:
    with EtcdClient(etcd_cluster.endpoints) as etcd:
        first = etcd.put("api/a", "1")
        etcd.put("api/b", "2")
        page = etcd.range("api/", prefix=True, limit=1)
        assert page.count == 2 and page.more and page.kvs[0].key == b"api/a"
        kv = etcd.get("api/a")
        assert kv is not None and kv.value == b"1" and kv.mod_revision == first.revision
        cas = etcd.txn([Compare("api/a", "value", "=", "1")], [Put("api/a", "3")], [Get("api/a")])
        assert cas.succeeded
        stale = etcd.txn([Compare("api/a", "value", "=", "1")], [Put("api/a", "4")],
                         [Get("api/a")])  # fmt: skip
        assert not stale.succeeded
        read = stale.responses[0]
        assert isinstance(read, RangeResult) and read.kvs[0].value == b"3"
        with etcd.watch("api/", prefix=True, start_revision=first.revision) as watch:
            seen = [watch.get(timeout_s=10) for _ in range(3)]
        assert [(e.type, e.kv.key, e.kv.value) for e in seen if e] == [
            ("PUT", b"api/a", b"1"), ("PUT", b"api/b", b"2"), ("PUT", b"api/a", b"3")]
        lease = etcd.lease_grant(30)
        etcd.put("api/leased", "x", lease=lease.id)
        assert etcd.lease_keep_alive_once(lease.id) == 30
        assert etcd.lease_time_to_live(lease.id, keys=True).keys == [b"api/leased"]
        etcd.lease_revoke(lease.id)
        assert etcd.get("api/leased") is None
        with pytest.raises(EtcdError, match="lease not found"):
            etcd.lease_keep_alive_once(lease.id)
        with etcd.lock("api-lock") as held:
            owner = etcd.get(held.key)
            assert owner is not None and owner.create_revision == held.revision
        assert etcd.range("api-lock/", prefix=True).kvs == []
        with etcd.campaign("api-election", "me") as leader:
            current = etcd.leader("api-election")
            assert current is not None and current.key == leader.key
            assert current.value == b"me"
        assert etcd.leader("api-election") is None


def test_lock_excludes_concurrent_holders(etcd_cluster: EtcdCluster) -> None:
    inside = 0
    overlaps = 0
    tokens: list[int] = []
    guard = threading.Lock()

    def worker() -> None:
        nonlocal inside, overlaps
        with EtcdClient(etcd_cluster.endpoints) as etcd:
            for _ in range(3):
                with etcd.lock("api-mutex", timeout_s=30) as held:
                    with guard:
                        inside += 1
                        overlaps += inside > 1
                        tokens.append(held.revision)
                    time.sleep(0.05)
                    with guard:
                        inside -= 1

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads)
    assert overlaps == 0 and len(tokens) == 9 and tokens == sorted(set(tokens))


def test_an_acquire_that_times_out_leaves_no_task_and_no_queue_key(
    etcd_cluster: EtcdCluster,
) -> None:
    async def scenario() -> tuple[int, int, list[asyncio.Task[object]]]:
        async with AsyncEtcdClient(etcd_cluster.endpoints) as etcd:
            async with hold_lock(etcd, "api-timeout"):
                before = set(asyncio.all_tasks())

                async def acquire() -> None:
                    async with hold_lock(etcd, "api-timeout"):
                        raise AssertionError("granted while held")

                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(acquire(), 3.0)
                queued = (await etcd.range("api-timeout/", prefix=True)).count
                left = [t for t in asyncio.all_tasks() - before if not t.done()]
            free = (await etcd.range("api-timeout/", prefix=True)).count
        return queued, free, left

    queued, free, left = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert left == [], left  # the waiter's watch task ended with the acquire
    assert (queued, free) == (1, 0)  # only the holder's key was left, then none


def test_watch_resumes_on_another_member_when_its_member_dies(
    etcd_cluster: EtcdCluster,
) -> None:
    victim = etcd_cluster.leader()
    preferred = [etcd_cluster.endpoint(victim)] + [
        etcd_cluster.endpoint(i) for i in etcd_cluster.node_ids if i != victim]

    async def scenario() -> list[tuple[int, bytes]]:
        async with (AsyncEtcdClient(preferred, timeout_s=3, connect_timeout_s=1) as watcher,
                    AsyncEtcdClient(etcd_cluster.endpoints[::-1], timeout_s=3) as writer):
            start = (await writer.put("resume/k", "0")).revision
            seen: list[tuple[int, bytes]] = []
            async with watcher.watch("resume/", prefix=True, start_revision=start) as watch:
                events = aiter(watch)
                seen.append(((ev := await anext(events)).revision, ev.kv.value))
                await asyncio.to_thread(etcd_cluster.kill, victim)
                written = 0
                deadline = time.monotonic() + 30
                while written < 5 and time.monotonic() < deadline:
                    try:
                        await writer.put("resume/k", str(written + 1))
                        written += 1
                    except EtcdUnavailable:
                        await asyncio.sleep(0.2)
                while len(seen) < 1 + written:
                    ev = await asyncio.wait_for(anext(events), 30)
                    seen.append((ev.revision, ev.kv.value))
                assert watch.reconnects >= 1
            return seen

    try:
        seen = asyncio.run(scenario())
    finally:
        etcd_cluster.restart(victim)
    assert [v for _, v in seen] == [b"0", b"1", b"2", b"3", b"4", b"5"]
    revisions = [r for r, _ in seen]
    assert revisions == sorted(set(revisions))


def test_unreachable_endpoints_raise_unavailable() -> None:
    [port] = free_ports(1)

    async def attempt() -> None:
        async with AsyncEtcdClient(f"127.0.0.1:{port}", connect_timeout_s=0.3) as etcd:
            await etcd.get("k")

    with pytest.raises(EtcdUnavailable, match="cannot reach any endpoint"):
        asyncio.run(attempt())

    async def locked() -> None:
        async with (AsyncEtcdClient(f"127.0.0.1:{port}", connect_timeout_s=0.3) as etcd,
                    hold_lock(etcd, "x")):
            pass

    with pytest.raises(EtcdUnavailable):
        asyncio.run(locked())
