"""A 3-process pnyx etcd cluster (real sockets, fsync) driven with ``aetcd``: any endpoint
serves, and writes keep working when the leader process is killed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aetcd
import aetcd.exceptions
import grpc
from aetcd.rpc import rpc_pb2, rpc_pb2_grpc

from tests.services.etcd_cluster import EtcdCluster, etcd_cluster  # noqa: F401 (fixture)

T = TypeVar("T")
BOUND_S = 45.0


def run(test: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(BOUND_S):
            return await test()

    return asyncio.run(bounded())


def connect(endpoint: str) -> aetcd.Client:
    host, port = endpoint.rsplit(":", 1)
    return aetcd.Client(host, int(port), timeout=5)


async def retrying(call: Callable[[], Awaitable[T]], within_s: float = 20.0) -> T:
    """``call()`` until it succeeds (an election may be running), bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        try:
            return await call()
        except (aetcd.exceptions.ClientError, grpc.aio.AioRpcError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


def test_every_endpoint_serves_reads_and_writes(etcd_cluster: EtcdCluster) -> None:  # noqa: F811
    leader = etcd_cluster.leader()
    followers = [n for n in etcd_cluster.node_ids if n != leader]

    async def body() -> None:
        async with connect(etcd_cluster.endpoint(followers[0])) as c:
            put = await c.put(b"via-follower", b"1")
            assert put.header.member_id == etcd_cluster._member_id(followers[0])
            # read-your-writes on the member written to, even serializable
            local = await c.get(b"via-follower", serializable=True)
            assert local is not None and local.value == b"1"
        async with connect(etcd_cluster.endpoint(followers[1])) as c:
            got = await c.get(b"via-follower")
            assert got is not None and got.value == b"1"
            await c.put(b"via-follower", b"2")
        async with connect(etcd_cluster.endpoint(leader)) as c:
            got = await c.get(b"via-follower")
            assert got is not None and (got.value, got.version) == (b"2", 2)
            members = await c.clusterstub.MemberList(rpc_pb2.MemberListRequest())
            assert len(members.members) == 3
            assert sorted(u for m in members.members for u in m.clientURLs) == sorted(
                f"http://{e}" for e in etcd_cluster.endpoints
            )

    run(body)


def test_killing_the_leader_keeps_writes_working(etcd_cluster: EtcdCluster) -> None:  # noqa: F811
    leader = etcd_cluster.leader()
    survivor = next(n for n in etcd_cluster.node_ids if n != leader)

    async def body() -> None:
        async with connect(etcd_cluster.endpoint(survivor)) as c:
            for i in range(5):
                await c.put(f"before-{i}".encode(), b"v")
            etcd_cluster.kill(leader)
            for i in range(5):
                await retrying(lambda i=i: c.put(f"after-{i}".encode(), b"v"))
            keys = [kv.key for kv in await retrying(c.get_all)]
            assert keys == sorted(
                f"{when}-{i}".encode() for when in ("before", "after") for i in range(5)
            )
            assert etcd_cluster.leader() != leader

    run(body)
    etcd_cluster.restart(leader)

    async def caught_up() -> None:
        async with connect(etcd_cluster.endpoint(leader)) as c:
            while len(await c.get_all()) < 10:
                await asyncio.sleep(0.05)
            kv = await c.get(b"after-4", serializable=True)
            assert kv is not None

    run(caught_up)


MOVE_ATTEMPTS = 5


def test_status_and_move_leader(etcd_cluster: EtcdCluster) -> None:  # noqa: F811
    leader = etcd_cluster.leader()
    target = next(n for n in etcd_cluster.node_ids if n != leader)

    async def body() -> Any:
        async with grpc.aio.insecure_channel(etcd_cluster.endpoint(target)) as channel:
            maintenance = rpc_pb2_grpc.MaintenanceStub(channel)
            before = await maintenance.Status(rpc_pb2.StatusRequest())
            assert before.leader == etcd_cluster._member_id(leader)
            move = rpc_pb2.MoveLeaderRequest(targetID=etcd_cluster._member_id(target))
            for attempt in range(MOVE_ATTEMPTS):
                # Raft abandons a transfer the target does not complete within an election
                # timeout (a loaded machine): etcd's "leader transfer timeout"; ask again
                try:
                    await maintenance.MoveLeader(move)
                    break
                except grpc.aio.AioRpcError as exc:
                    timed_out = exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                    if not timed_out or attempt == MOVE_ATTEMPTS - 1:
                        raise
                now = await maintenance.Status(rpc_pb2.StatusRequest())
                if now.leader == etcd_cluster._member_id(target):
                    break  # the transfer completed after the wait gave up
            after = await maintenance.Status(rpc_pb2.StatusRequest())
            assert after.leader == etcd_cluster._member_id(target)
            assert after.raftTerm > before.raftTerm
            bad = rpc_pb2.MoveLeaderRequest(targetID=12345)
            try:
                await maintenance.MoveLeader(bad)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert exc.details() == "etcdserver: bad leader transferee"
            else:
                raise AssertionError("a move to an unknown member succeeded")

    run(body)
    assert etcd_cluster.leader() == target


def test_member_remove_and_add_back(etcd_cluster: EtcdCluster) -> None:  # noqa: F811
    leader = etcd_cluster.leader()
    other = next(n for n in etcd_cluster.node_ids if n != leader)
    member = etcd_cluster._member_id(other)

    async def body() -> None:
        async with grpc.aio.insecure_channel(etcd_cluster.endpoint(leader)) as channel:
            cluster = rpc_pb2_grpc.ClusterStub(channel)
            listed = await cluster.MemberList(rpc_pb2.MemberListRequest())
            by_id = {m.ID: m for m in listed.members}
            peer_urls = list(by_id[member].peerURLs)
            removed = await cluster.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=member))
            assert member not in [m.ID for m in removed.members] and len(removed.members) == 2
            kv = rpc_pb2_grpc.KVStub(channel)
            await kv.Put(rpc_pb2.PutRequest(key=b"while-removed", value=b"1"))
            again = rpc_pb2.MemberRemoveRequest(ID=member)
            try:
                await cluster.MemberRemove(again)
            except grpc.aio.AioRpcError as exc:
                assert (exc.code(), exc.details()) == (
                    grpc.StatusCode.NOT_FOUND,
                    "etcdserver: member not found",
                )
            else:
                raise AssertionError("removed twice")
            added = await cluster.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=peer_urls))
            assert [m.ID for m in [added.member]] == [member] and len(added.members) == 3
            async with asyncio.timeout(20):  # a voter add promotes once the learner caught up
                while True:
                    listed = await cluster.MemberList(rpc_pb2.MemberListRequest())
                    if not any(m.isLearner for m in listed.members):
                        break
                    await asyncio.sleep(0.1)
        async with connect(etcd_cluster.endpoint(other)) as c:
            got = await retrying(lambda: c.get(b"while-removed"))
            assert got is not None and got.value == b"1"

    run(body)


def test_a_watcher_sees_every_write_once_in_order_across_a_leader_kill(
    etcd_cluster: EtcdCluster,  # noqa: F811
) -> None:
    leader = etcd_cluster.leader()
    watcher_node, writer_node = [n for n in etcd_cluster.node_ids if n != leader]

    async def body() -> None:
        hold = asyncio.Event()

        async def requests() -> Any:
            create = rpc_pb2.WatchCreateRequest(key=b"w/", range_end=b"w0")
            yield rpc_pb2.WatchRequest(create_request=create)
            await hold.wait()

        async with grpc.aio.insecure_channel(etcd_cluster.endpoint(watcher_node)) as channel:
            call = rpc_pb2_grpc.WatchStub(channel).Watch(requests())
            assert (await call.read()).created
            written: list[int] = []
            async with connect(etcd_cluster.endpoint(writer_node)) as c:
                for i in range(20):
                    if i == 8:
                        etcd_cluster.kill(leader)
                    put = await retrying(lambda i=i: c.put(f"w/{i:02}".encode(), b"v"))
                    written.append(put.header.revision)
            seen: list[int] = []
            async with asyncio.timeout(20):
                while len(seen) < len(set(written)):
                    response = await call.read()
                    seen += [e.kv.mod_revision for e in response.events]
            # in order, no duplicate, none missing (a put retried by the test after a
            # client time-out may legitimately add a revision of its own)
            assert seen == sorted(set(seen)) and set(written) <= set(seen)
            assert seen[0] == written[0]
            hold.set()
            call.cancel()

    run(body)
