"""Ready-made replicated objects on real 3-replica groups (127.0.0.1, one process)."""

from __future__ import annotations

import asyncio
import time

import pytest

from pnyx.services.objects import (
    ReplicatedCounter,
    ReplicatedDict,
    ReplicatedLock,
    ReplicatedQueue,
)
from pnyx.services.replicated import ReplicatedCallError
from tests.runtime.runtime_helpers import run_async, wait_until
from tests.services.replicated_helpers import (
    async_group,
    bind_group,
    make_replicas,
    poll,
    sync_group,
)


def test_counter_sync_style_converges_on_every_replica() -> None:
    members, socks = bind_group()
    counters = [ReplicatedCounter() for _ in members]
    with sync_group(make_replicas(counters, members, socks)):
        assert counters[0].incr(5) == 5
        assert counters[1].incr() == 6
        assert counters[2].decr(2) == 4
        assert counters[1].get() == 4  # linearizable: sees every acknowledged write
        assert counters[2].reset(10) == 4
        poll(lambda: [c.value for c in counters] == [10, 10, 10], what="replicas converge")


def test_counter_async_concurrent_calls_each_get_a_distinct_value() -> None:
    async def main() -> None:
        members, socks = bind_group()
        counters = [ReplicatedCounter() for _ in members]
        async with async_group(make_replicas(counters, members, socks)):
            calls = [counters[i % 3].incr.call_async(1) for i in range(600)]
            results = await asyncio.gather(*calls)
            assert sorted(results) == list(range(1, 601))
            assert await counters[0].get.call_async() == 600
            await wait_until(lambda: all(c.value == 600 for c in counters), what="converge")

    run_async(main())


def test_dict_operations_and_local_reads() -> None:
    async def main() -> None:
        members, socks = bind_group()
        dicts = [ReplicatedDict() for _ in members]
        async with async_group(make_replicas(dicts, members, socks)):
            a, b, c = dicts
            await a.set.call_async("x", 1)
            await b.update.call_async({"y": [1, 2], "z": {"k": "v"}})
            assert await c.get.call_async("y") == [1, 2]
            assert await c.get.call_async("missing", "dflt") == "dflt"
            assert await a.pop.call_async("x") == 1
            assert await a.pop.call_async("x", "gone") == "gone"
            await wait_until(lambda: all(len(d) == 2 for d in dicts), what="converge")
            assert "z" in b and b["z"] == {"k": "v"} and "x" not in c
            assert await b.clear.call_async() == 2
            await wait_until(lambda: all(len(d) == 0 for d in dicts), what="cleared")

    run_async(main())


def test_lock_fencing_tokens_strictly_increase_across_holders() -> None:
    members, socks = bind_group()
    locks = [ReplicatedLock() for _ in members]
    with sync_group(make_replicas(locks, members, socks)):
        a, b, c = locks
        t1 = a.acquire("alice", 30.0)
        assert t1 > 0
        assert b.acquire("bob", 30.0) == 0  # held by alice
        assert a.acquire("alice", 30.0) == t1  # renewal keeps the token
        assert c.holder() is not None and c.holder()[:2] == ["alice", t1]  # type: ignore[index]
        assert not b.release("bob", t1)  # not the holder
        assert a.release("alice", t1)
        t2 = b.acquire("bob", 0.05)
        assert t2 > t1
        time.sleep(0.1)  # bob's lease runs out (log time moves with carol's command)
        t3 = c.acquire("carol", 30.0)
        assert t3 > t2
        assert not b.release("bob", t2)  # the stale holder cannot release
        assert c.holder()[:2] == ["carol", t3]  # type: ignore[index]
        with pytest.raises(ReplicatedCallError, match="ttl_s > 0"):
            a.acquire("alice", 0)


def test_queue_is_fifo_across_replicas_and_bounded() -> None:
    async def main() -> None:
        members, socks = bind_group()
        queues = [ReplicatedQueue(max_items=5) for _ in members]
        async with async_group(make_replicas(queues, members, socks)):
            for i in range(5):
                assert await queues[i % 3].put.call_async(f"item{i}")
            assert not await queues[0].put.call_async("overflow")
            assert await queues[1].size.call_async() == 5
            assert await queues[2].get.call_async() == "item0"
            assert await queues[0].get_many.call_async(3) == ["item1", "item2", "item3"]
            assert await queues[1].get.call_async() == "item4"
            assert await queues[1].get.call_async("empty") == "empty"
            await wait_until(lambda: all(len(q) == 0 for q in queues), what="drained")

    run_async(main())


def test_calls_continue_exactly_once_when_the_leader_replica_stops() -> None:
    members, socks = bind_group()
    counters = [ReplicatedCounter() for _ in members]
    replicas = make_replicas(counters, members, socks)
    with sync_group(replicas):
        for _ in range(20):
            counters[0].incr()
        poll(lambda: any(r.is_leader for r in replicas), what="a leader")
        leader = next(i for i, r in enumerate(replicas) if r.is_leader)
        replicas[leader].stop()  # the leader replica leaves: the others must elect and go on
        survivors = [i for i in range(len(replicas)) if i != leader]
        results = [counters[survivors[n % 2]].incr() for n in range(30)]
        # every call returned a distinct value, in order: none lost, none applied twice
        assert results == list(range(21, 51))
        for i in survivors:
            poll(lambda i=i: counters[i].value == 50, what=f"replica {i + 1} converged")
