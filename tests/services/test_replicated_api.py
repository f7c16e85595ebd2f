"""The replicated-object API: user classes, errors, exactly-once, durability, restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest

from pnyx.catalog import get_runnable
from pnyx.protocols.raft import ClientRequest
from pnyx.protocols.raft.sessions import OPEN_SESSION, SessionCommand
from pnyx.runtime import bind_listen_socket
from pnyx.services.client import AsyncClient
from pnyx.services.objects import ReplicatedCounter
from pnyx.services.replicated import (
    ObjectStateMachine,
    Overloaded,
    Replica,
    ReplicaError,
    ReplicaOptions,
    ReplicatedCallError,
    ReplicatedObject,
    query,
    replicated,
)
from tests.runtime.runtime_helpers import run_async, wait_until
from tests.services.replicated_helpers import (
    FAST,
    async_group,
    bind_group,
    make_replicas,
    poll,
    sync_group,
)

SNAPSHOT_OFTEN = ReplicaOptions(
    tick_ms=5, request_timeout_s=1.0, deadline_s=10.0, snapshot_threshold_entries=4
)


class Inventory(ReplicatedObject):
    """A user class: pickled snapshots, a failing method, a query."""

    def __init__(self) -> None:
        self.stock: dict[str, int] = {}
        self.moves = 0

    @replicated
    def add(self, item: str, count: int = 1) -> int:
        self.stock[item] = self.stock.get(item, 0) + count
        self.moves += 1
        return self.stock[item]

    @replicated
    def take(self, item: str, count: int) -> int:
        self.moves += 1  # counted even when the take fails: every replica does the same
        if self.stock.get(item, 0) < count:
            raise ValueError(f"only {self.stock.get(item, 0)} {item} left")
        self.stock[item] -= count
        return self.stock[item]

    @replicated
    def leak(self) -> object:
        return object()  # not msgpack-encodable

    @query
    def count(self, item: str) -> int:
        return self.stock.get(item, 0)

    def total(self) -> int:
        """A plain method: a local read."""
        return sum(self.stock.values())


def test_user_class_results_errors_and_queries() -> None:
    members, socks = bind_group()
    objs = [Inventory() for _ in members]
    with sync_group(make_replicas(objs, members, socks)):
        a, b, c = objs
        assert a.add("apple", 3) == 3
        assert b.add(item="apple", count=2) == 5  # keyword arguments travel too
        assert c.take("apple", 4) == 1
        with pytest.raises(ReplicatedCallError, match="ValueError: only 1 apple left"):
            b.take("apple", 2)
        with pytest.raises(ReplicatedCallError, match="not msgpack-encodable"):
            a.leak()
        with pytest.raises(TypeError, match="arguments of add"):
            a.add(object())  # type: ignore[arg-type]
        assert c.count("apple") == 1 and c.count.local("pear") == 0
        poll(lambda: all(o.moves == 4 and o.total() == 1 for o in objs), what="converge")


def test_query_of_a_write_method_is_refused_by_the_state_machine() -> None:
    machine = ObjectStateMachine(Inventory())
    with pytest.raises(ValueError, match="'add' is not a @query method"):
        machine.apply(["q", "add", ["apple"]])
    packed = msgspec.msgpack.encode([["count", ["apple"]], ["nope", []]])
    values, errors = msgspec.msgpack.decode(machine.apply([1000, packed]))
    assert values == [None, None]
    assert "not a @replicated method" in errors[0][1] and errors[1][0] == 1


def test_unhosted_object_and_blocking_call_on_the_loop_are_clear_errors() -> None:
    with pytest.raises(ReplicaError, match="not hosted by a replica"):
        ReplicatedCounter().incr(1)

    async def main() -> None:
        members, socks = bind_group()
        counters = [ReplicatedCounter() for _ in members]
        async with async_group(make_replicas(counters, members, socks)):
            with pytest.raises(RuntimeError, match="would deadlock"):
                counters[0].incr(1)
            assert await counters[0].incr.call_async(2) == 2

    run_async(main())


def test_full_queue_refuses_submit_at_once() -> None:
    async def main() -> None:
        members, socks = bind_group()
        counters = [ReplicatedCounter() for _ in members]
        tight = ReplicaOptions(tick_ms=5, max_pending_calls=2, max_inflight_batches=1)
        async with async_group(make_replicas(counters, members, socks, options=tight)):
            first = [counters[0].incr.submit(1), counters[0].incr.submit(1)]
            assert counters[0].incr.try_submit(1) is None
            with pytest.raises(Overloaded, match="max_pending_calls=2"):
                counters[0].incr.submit(1)
            assert sorted(await asyncio.gather(*first)) == [1, 2]
            # call_async waits for room instead of failing
            results = await asyncio.gather(*(counters[0].incr.call_async(1) for _ in range(20)))
            assert sorted(results) == list(range(3, 23))

    run_async(main())


def test_retried_command_is_applied_once() -> None:
    async def main() -> None:
        members, socks = bind_group()
        counters = [ReplicatedCounter() for _ in members]
        async with async_group(make_replicas(counters, members, socks)):
            client = AsyncClient(members, get_runnable("raft").message_types)
            try:
                opened = await client.call(
                    lambda rid: ClientRequest(rid, SessionCommand(0, 0, OPEN_SESSION))
                )
                session = opened.result
                packed = msgspec.msgpack.encode([["incr", [7]]])
                command = SessionCommand(session, 1, [1000, packed])
                first = await client.call(lambda rid: ClientRequest(rid, command))
                retry = await client.call(lambda rid: ClientRequest(rid, command))
            finally:
                await client.close()
            assert first.ok and retry.ok and first.result == retry.result
            assert msgspec.msgpack.decode(first.result) == [[7], []]
            assert await counters[1].get.call_async() == 7  # applied once, not 14

    run_async(main())


async def _run_durable(
    data_dirs: list[Path], members: dict[int, Any], writes: int, recovered_snapshot: bool
) -> int:
    socks = {i: bind_listen_socket(port=members[i][1]) for i in members}
    objs = [Inventory() for _ in members]
    replicas = make_replicas(objs, members, socks, data_dirs, SNAPSHOT_OFTEN)
    async with async_group(replicas):
        if recovered_snapshot:  # the WAL handed back a snapshot of the object
            assert all(getattr(r.runner.node, "snapshot", None) is not None for r in replicas)
        for _ in range(writes):
            await objs[0].add.call_async("bolt")
        result: int = await objs[2].count.call_async("bolt")
        await wait_until(lambda: all(o.count.local("bolt") == result for o in objs))
        return result


def test_durable_group_restart_keeps_state(tmp_path: Path) -> None:
    members, socks = bind_group()
    for sock in socks.values():
        sock.close()  # _run_durable binds the same ports again
    data_dirs = [tmp_path / f"r{i}" for i in members]
    assert run_async(_run_durable(data_dirs, members, 12, False)) == 12  # snapshots every 4
    assert run_async(_run_durable(data_dirs, members, 3, True)) == 15  # everything came back


def test_in_memory_replica_restarts_empty_and_catches_up() -> None:
    async def main() -> None:
        members, socks = bind_group()
        objs = [Inventory() for _ in members]
        replicas = make_replicas(objs, members, socks, options=SNAPSHOT_OFTEN)
        async with async_group(replicas[:2]):
            await replicas[2].start_async()
            await objs[0].add.call_async("nut", 5)
            await replicas[2].stop_async()
            for _ in range(10):  # beyond the snapshot threshold: catch-up needs a snapshot
                await objs[1].add.call_async("nut")
            fresh = Inventory()
            sock = bind_listen_socket(port=members[3][1])
            rejoined = Replica(fresh, 3, members, options=SNAPSHOT_OFTEN, listen_sock=sock)
            assert fresh.count.local("nut") == 0
            await rejoined.start_async()
            try:
                await wait_until(lambda: fresh.count.local("nut") == 15, what="catch-up")
                assert fresh.moves == 11
                assert rejoined.runner.metrics.restores._value.get() >= 1  # via a snapshot
                assert await fresh.add.call_async("nut") == 16
            finally:
                await rejoined.stop_async()

    run_async(main())


def test_replica_rejects_a_self_id_outside_the_members() -> None:
    members, socks = bind_group()
    try:
        with pytest.raises(ValueError, match="self_id 9 is not among the members"):
            Replica(ReplicatedCounter(), 9, members, options=FAST)
    finally:
        for sock in socks.values():
            sock.close()
