"""The etcd gRPC server in-process: one real node (TCP, WAL with fsync in a temp dir) driven
with the ``aetcd`` client and raw gRPC stubs.  Errors must be etcd's, and the node must
keep serving after each bad request."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aetcd
import aetcd.exceptions
import grpc
import pytest
from aetcd.rpc import rpc_pb2, rpc_pb2_grpc

from pnyx.runtime.node_runner import RunnerConfig
from pnyx.runtime.transport import TransportConfig
from pnyx.services.etcd.server import EtcdOptions, EtcdServer

T = TypeVar("T")
BOUND_S = 30.0


def run(test: Callable[[], Awaitable[T]]) -> T:
    """Run an async test body with an overall bound."""

    async def bounded() -> T:
        async with asyncio.timeout(BOUND_S):
            return await test()

    return asyncio.run(bounded())


@asynccontextmanager
async def one_node(directory: Path, **options: Any) -> AsyncIterator[EtcdServer]:
    """A started single-node server (WAL + fsync in ``directory``), removed afterwards."""
    config = RunnerConfig(
        node_id=1,
        data_dir=directory,
        peers={1: ("127.0.0.1", 0)},
        transport=TransportConfig(cluster="test-one"),
    )
    server = EtcdServer(config, EtcdOptions(client_port=0, **options))
    try:
        async with server:
            await _wait_leader(server)
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def _wait_leader(server: EtcdServer) -> None:
    async with asyncio.timeout(10):
        while server.status().get("leader") != 1:
            await asyncio.sleep(0.01)


async def rpc_error(call: Awaitable[Any]) -> tuple[Any, str]:
    """(gRPC status code, message) of a raw stub call that must fail."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details()
    raise AssertionError("the call succeeded")


@asynccontextmanager
async def client(server: EtcdServer) -> AsyncIterator[aetcd.Client]:
    host, port = server.client_address
    async with aetcd.Client(host, port, timeout=10) as c:
        yield c


def test_put_get_range_delete_txn_compact(tmp_path: Path) -> None:
    async def body() -> None:
        async with one_node(tmp_path / "n") as server, client(server) as c:
            put = await c.put(b"a", b"1")
            assert put.header.revision == 2 and put.header.member_id == server.member_id
            assert put.header.cluster_id == server.directory.cluster_id
            assert put.header.raft_term >= 1
            await c.put(b"a", b"2")
            await c.put(b"b", b"3")
            got = await c.get(b"a")
            assert (got.value, got.version, got.create_revision, got.mod_revision) == (
                b"2",
                2,
                2,
                3,
            )
            old = await c.kvstub.Range(rpc_pb2.RangeRequest(key=b"a", revision=2))
            assert [kv.value for kv in old.kvs] == [b"1"]
            prefix = await c.get_all()
            assert [kv.key for kv in prefix] == [b"a", b"b"]
            succeeded, responses = await c.transaction(
                compare=[c.transactions.value(b"a") == b"2"],
                success=[c.transactions.put(b"c", b"4"), c.transactions.get(b"b")],
                failure=[],
            )
            assert succeeded and responses[0].response_put.header.revision == 5
            assert [value for value, _ in responses[1]] == [b"3"]
            deleted = await c.delete(b"b")
            assert deleted.deleted == 1
            assert await c.get(b"b") is None
            await c.compact(4)
            code, message = await rpc_error(
                c.kvstub.Range(rpc_pb2.RangeRequest(key=b"a", revision=3))
            )
            assert code == grpc.StatusCode.OUT_OF_RANGE
            assert message == "etcdserver: mvcc: required revision has been compacted"
            assert (await c.get(b"c")).value == b"4"

    run(body)


def test_serializable_reads_and_status(tmp_path: Path) -> None:
    async def body() -> None:
        async with one_node(tmp_path / "n") as server, client(server) as c:
            await c.put(b"k", b"v")
            host, port = server.client_address
            async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
                kv = rpc_pb2_grpc.KVStub(channel)
                reply = await kv.Range(rpc_pb2.RangeRequest(key=b"k", serializable=True))
                assert [x.value for x in reply.kvs] == [b"v"]
                maintenance = rpc_pb2_grpc.MaintenanceStub(channel)
                status = await maintenance.Status(rpc_pb2.StatusRequest())
                assert status.version == "3.4.23" and status.leader == server.member_id
                assert status.raftTerm >= 1 and status.raftIndex >= 2 and status.dbSize > 0
                members = await rpc_pb2_grpc.ClusterStub(channel).MemberList(
                    rpc_pb2.MemberListRequest()
                )
                assert [m.ID for m in members.members] == [server.member_id]
                assert members.members[0].clientURLs == [f"http://{host}:{port}"]
                hashed = await maintenance.HashKV(rpc_pb2.HashKVRequest())
                assert hashed.hash != 0 and hashed.header.revision == 2

    run(body)


def test_bad_input_gets_etcds_error_and_the_node_keeps_serving(tmp_path: Path) -> None:
    async def body() -> None:
        async with one_node(tmp_path / "n") as server, client(server) as c:
            await c.put(b"a", b"1")
            with pytest.raises(aetcd.exceptions.InvalidArgumentError) as too_large:
                await c.put(b"big", b"x" * (1536 * 1024))
            assert str(too_large.value) == "etcdserver: request is too large"
            with pytest.raises(aetcd.exceptions.ClientError) as grpc_limit:
                await c.put(b"huge", b"x" * (2200 * 1024))
            assert "larger than max" in str(grpc_limit.value)
            with pytest.raises(aetcd.exceptions.InvalidArgumentError) as empty:
                await c.put(b"", b"x")
            assert str(empty.value) == "etcdserver: key is not provided"
            future = await rpc_error(c.kvstub.Range(rpc_pb2.RangeRequest(key=b"a", revision=100)))
            assert future == (
                grpc.StatusCode.OUT_OF_RANGE,
                "etcdserver: mvcc: required revision is a future revision",
            )
            no_lease = await rpc_error(
                c.kvstub.Put(rpc_pb2.PutRequest(key=b"l", value=b"v", lease=12345))
            )
            assert no_lease == (grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")
            empty_range = await rpc_error(c.kvstub.Range(rpc_pb2.RangeRequest()))
            assert empty_range == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "etcdserver: key is not provided",
            )
            assert (await c.put(b"a", b"2")).header.revision == 3  # still serving
            assert (await c.get(b"a")).value == b"2"

    run(body)


MALFORMED_FRAMES: tuple[bytes, ...] = (
    b"\xff\xff\xff",  # a truncated varint tag
    b"\x0a\x10short",  # a length past the end
    b"\x08" + b"\x80" * 11,  # a varint longer than 10 bytes
    bytes(range(256)) * 4,
)
"""Bytes that are not a protobuf message, sent where etcd's requests go."""


def test_malformed_grpc_messages_are_refused_and_the_node_keeps_serving(tmp_path: Path) -> None:
    """Raw bytes on the KV, Lease and Watch methods (unary and stream): each call fails with
    a gRPC error, never a node failure, and the node answers well-formed requests after."""

    async def body() -> None:
        async with one_node(tmp_path / "n") as server, client(server) as c:
            await c.put(b"a", b"1")
            host, port = server.client_address
            async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
                for method in (
                    "/etcdserverpb.KV/Range",
                    "/etcdserverpb.KV/Put",
                    "/etcdserverpb.KV/Txn",
                    "/etcdserverpb.Lease/LeaseGrant",
                ):
                    call = channel.unary_unary(method)  # no serializers: raw bytes
                    for frame in MALFORMED_FRAMES:
                        code, _ = await rpc_error(call(frame, timeout=10))
                        assert code != grpc.StatusCode.OK and code is not None
                watch = channel.stream_stream("/etcdserverpb.Watch/Watch")
                stream = watch(iter(MALFORMED_FRAMES), timeout=10)
                with pytest.raises(grpc.aio.AioRpcError):
                    async for _ in stream:
                        pass
            assert (await c.put(b"a", b"2")).header.revision == 3  # still serving
            assert (await c.get(b"a")).value == b"2"

    run(body)


def test_quota_raises_the_nospace_alarm(tmp_path: Path) -> None:
    async def body() -> None:
        async with (
            one_node(tmp_path / "n", quota_backend_bytes=4096) as server,
            client(server) as c,
        ):
            await c.put(b"a", b"x" * 1000)
            with pytest.raises(aetcd.exceptions.ClientError) as full:
                for i in range(10):
                    await c.put(f"k{i}".encode(), b"x" * 1000)
            assert str(full.value) == "etcdserver: mvcc: database space exceeded"
            alarms = [a async for a in c.list_alarms()]
            assert [(a.alarm_type, a.member_id) for a in alarms] == [
                (rpc_pb2.NOSPACE, server.member_id)
            ]
            await c.delete(b"a")  # deletes still work under the alarm
            await c.disarm_alarm(server.member_id)
            assert [a async for a in c.list_alarms()] == []

    run(body)


def test_leases_grant_keepalive_ttl_revoke(tmp_path: Path) -> None:
    async def body() -> None:
        async with one_node(tmp_path / "n") as server, client(server) as c:
            lease = await c.lease(30)
            await c.put(b"held", b"v", lease=lease.id)
            info = await c.get_lease_info(lease.id)
            assert info.grantedTTL == 30 and 0 < info.TTL <= 30 and list(info.keys) == [b"held"]
            refreshed = await c.refresh_lease(lease.id)
            ttl, lease_id = refreshed.TTL, refreshed.ID
            assert (ttl, lease_id) == (30, lease.id)
            leases = await c.leasestub.LeaseLeases(rpc_pb2.LeaseLeasesRequest())
            assert [x.ID for x in leases.leases] == [lease.id]
            await lease.revoke()
            assert await c.get(b"held") is None
            gone = await c.get_lease_info(lease.id)
            assert gone.TTL == -1

    run(body)


def test_stop_is_bounded_with_clients_connected(tmp_path: Path) -> None:
    async def body() -> None:
        async with one_node(tmp_path / "n") as server:
            host, port = server.client_address
            channel = grpc.aio.insecure_channel(f"{host}:{port}")
            await rpc_pb2_grpc.KVStub(channel).Put(rpc_pb2.PutRequest(key=b"a", value=b"b"))
            loop = asyncio.get_running_loop()
            started = loop.time()
            await server.stop()
            assert loop.time() - started < 10
            await channel.close()

    run(body)


def test_snapshot_streams_the_state_with_its_sha256(tmp_path: Path) -> None:
    import hashlib

    async def body() -> None:
        async with one_node(tmp_path / "n") as server, client(server) as c:
            for i in range(50):
                await c.put(f"k{i}".encode(), b"v" * 2000)
            chunks = [r async for r in c.maintenancestub.Snapshot(rpc_pb2.SnapshotRequest())]
            assert chunks[-1].remaining_bytes == 0 and len(chunks) > 1
            blob = b"".join(r.blob for r in chunks)
            data, digest = blob[:-32], blob[-32:]
            assert hashlib.sha256(data).digest() == digest
            assert len(blob) % 512 == 32  # how etcdctl snapshot save finds the trailer
            state = server.machine.inner.store.snapshot()
            assert data[: len(state)] == state and not data[len(state) :].strip(b"\0")

    run(body)


def test_tls_client_port_with_and_without_client_certificates(tmp_path: Path) -> None:
    from pnyx.runtime.tls import generate_cluster_certs

    tls = generate_cluster_certs(tmp_path / "tls", [1])[1]
    ca = Path(tls.ca_file).read_bytes()

    async def body(cert_auth: bool) -> None:
        config = RunnerConfig(
            node_id=1,
            data_dir=tmp_path / f"n-{cert_auth}",
            peers={1: ("127.0.0.1", 0)},
            transport=TransportConfig(cluster="test-tls", tls=tls),
        )
        options = EtcdOptions(client_port=0, client_tls=tls, client_cert_auth=cert_auth)
        async with EtcdServer(config, options) as server:
            await _wait_leader(server)
            host, port = server.client_address
            mine = (Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes())
            credentials = grpc.ssl_channel_credentials(ca, *(mine if cert_auth else ()))
            async with grpc.aio.secure_channel(f"{host}:{port}", credentials) as channel:
                kv = rpc_pb2_grpc.KVStub(channel)
                await kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"1"), timeout=10)
                got = await kv.Range(rpc_pb2.RangeRequest(key=b"a"), timeout=10)
                assert [x.value for x in got.kvs] == [b"1"]
                members = await rpc_pb2_grpc.ClusterStub(channel).MemberList(
                    rpc_pb2.MemberListRequest()
                )
                assert members.members[0].clientURLs == [f"https://{host}:{port}"]
            if cert_auth:  # a client without a certificate is refused
                anonymous = grpc.ssl_channel_credentials(ca)
                async with grpc.aio.secure_channel(f"{host}:{port}", anonymous) as channel:
                    code, _ = await rpc_error(
                        rpc_pb2_grpc.KVStub(channel).Range(
                            rpc_pb2.RangeRequest(key=b"a"), timeout=5
                        )
                    )
                    assert code == grpc.StatusCode.UNAVAILABLE

    run(lambda: body(False))
    run(lambda: body(True))


def test_metrics_carry_etcd_series(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    async def body() -> None:
        async with one_node(tmp_path / "n") as server, client(server) as c:
            await c.put(b"a", b"1")
            await c.get(b"a")
            text = generate_latest(server.runner.metrics.registry).decode()
            registry = server.runner.metrics.registry
            assert registry.get_sample_value("etcd_server_has_leader") == 1
            assert registry.get_sample_value("etcd_server_is_leader") == 1
            assert (registry.get_sample_value("etcd_server_proposals_committed_total") or 0) >= 2
            handled = {"grpc_method": "Put", "grpc_code": "OK"}
            assert registry.get_sample_value("grpc_server_handled_total", handled) == 1
            assert "etcd_disk_wal_fsync_duration_seconds_bucket" in text
            assert "etcd_server_leader_changes_seen_total" in text

    run(body)


def test_an_expired_lease_is_revoked_by_the_leader_and_its_keys_deleted(tmp_path: Path) -> None:
    async def body() -> None:
        async with one_node(tmp_path / "n", lease_check_ms=20) as server, client(server) as c:
            lease = await c.lease(2)  # etcd's minimum TTL here
            await c.put(b"ephemeral", b"v", lease=lease.id)
            await c.put(b"stays", b"v")
            loop = asyncio.get_running_loop()
            granted = loop.time()
            async with asyncio.timeout(10):
                while await c.get(b"ephemeral") is not None:
                    await asyncio.sleep(0.05)
            assert loop.time() - granted >= 1.9  # never before its TTL
            assert await c.get(b"stays") is not None
            assert (await c.get_lease_info(lease.id)).TTL == -1

    run(body)


def test_restart_recovers_from_snapshot_and_log(tmp_path: Path) -> None:
    directory = tmp_path / "n"

    def config() -> RunnerConfig:
        return RunnerConfig(
            node_id=1,
            data_dir=directory,
            peers={1: ("127.0.0.1", 0)},
            transport=TransportConfig(cluster="test-restart"),
        )

    options = EtcdOptions(client_port=0, snapshot_threshold_entries=5)

    async def write() -> tuple[int, int]:
        async with EtcdServer(config(), options) as server, client(server) as c:
            await _wait_leader(server)
            await asyncio.gather(*(c.put(f"k{i:03}".encode(), str(i).encode()) for i in range(60)))
            lease = await c.lease(600)
            await c.put(b"leased", b"v", lease=lease.id)
            await c.delete(b"k000")
            assert server.runner.node.snapshot is not None  # type: ignore[attr-defined]
            return server.machine.inner.store.current_revision, lease.id

    async def read(revision: int, lease_id: int) -> None:
        async with EtcdServer(config(), options) as server, client(server) as c:
            await _wait_leader(server)
            assert server.machine.inner.store.current_revision == revision
            assert [kv.key for kv in await c.get_all()][:2] == [b"k001", b"k002"]
            assert len(await c.get_all()) == 60
            info = await c.get_lease_info(lease_id)
            assert list(info.keys) == [b"leased"]
            assert (await c.put(b"after", b"1")).header.revision == revision + 1

    revision, lease_id = run(write)
    run(lambda: read(revision, lease_id))
    shutil.rmtree(directory, ignore_errors=True)


def test_a_write_sent_as_a_read_query_is_refused(tmp_path: Path) -> None:
    from pnyx.catalog import get_runnable
    from pnyx.protocols.etcd import PutRequest, RangeRequest
    from pnyx.protocols.raft import ClientRequest, ReadRequest
    from pnyx.protocols.raft.messages import READ_SERIALIZABLE
    from pnyx.services.client import AsyncClient

    async def body() -> None:
        async with one_node(tmp_path / "n") as server:
            members = {1: server.runner.address}
            raw = AsyncClient(members, get_runnable("etcd").message_types, deadline_s=10)
            try:
                put = PutRequest(key=b"sneaky", value=b"v")
                for build in (
                    lambda rid: ReadRequest(rid, put),
                    lambda rid: ReadRequest(rid, put, READ_SERIALIZABLE),
                    lambda rid: ClientRequest(rid, put),
                ):
                    reply = await raw.call(build)
                    assert reply.ok and reply.result[1].startswith("pnyx: a write must be")
                read = await raw.call(lambda rid: ReadRequest(rid, RangeRequest(key=b"sneaky")))
                assert read.ok and read.result["count"] == 0
            finally:
                await raw.close()
            assert server.machine.inner.store.current_revision == 1

    run(body)
