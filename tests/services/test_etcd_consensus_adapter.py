"""The etcd server's consensus adapter (``pnyx.services.etcd.consensus``), in process:
leadership per protocol, the lessor restarting TTLs on a new term, status in Raft's shape,
a data directory tied to its consensus, and a one-node server over each consensus."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import msgspec
import pytest
from aetcd.rpc import rpc_pb2, rpc_pb2_grpc

from pnyx.protocols.etcd import ErrorResult, EtcdStateMachine
from pnyx.protocols.etcd.lease import ballot_epoch
from pnyx.protocols.etcd.requests import (
    LeaseEpochRequest,
    LeaseExpireRequest,
    LeaseGrantRequest,
    LeaseRevokeResponse,
)
from pnyx.protocols.raft.sessions import OPEN_SESSION, SessionCommand
from pnyx.runtime.node_runner import RunnerConfig
from pnyx.runtime.transport import TransportConfig
from pnyx.services.etcd.consensus import CONSENSUS, get_consensus
from pnyx.services.etcd.server import CONSENSUS_FILE, EtcdOptions, EtcdServer, _claim_data_dir

BOUND_S = 30.0


def _config(directory: Path) -> RunnerConfig:
    return RunnerConfig(
        node_id=1,
        data_dir=directory,
        peers={1: ("127.0.0.1", 0)},
        transport=TransportConfig(cluster="test-adapter"),
    )


def test_an_unknown_consensus_is_refused_with_the_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown consensus 'zab'.*raft, paxos, vr, vr-durable"):
        get_consensus("zab")
    with pytest.raises(ValueError, match="zab"):
        EtcdServer(_config(Path("/nonexistent")), EtcdOptions(consensus="zab"))


def test_leadership_per_consensus() -> None:
    raft, paxos, vr = CONSENSUS["raft"], CONSENSUS["paxos"], CONSENSUS["vr"]
    assert raft.leader_term(SimpleNamespace(role="leader", term=4)) == 4
    assert raft.leader_term(SimpleNamespace(role="follower", term=4)) is None
    assert paxos.leader_term(SimpleNamespace(role="leader", ballot=(7, 2))) == 7 << 16 | 2
    assert paxos.leader_term(SimpleNamespace(role="leader", ballot=(7, 3))) > 7 << 16 | 2
    assert paxos.leader_term(SimpleNamespace(role="candidate", ballot=(7, 2))) is None
    assert vr.leader_term(SimpleNamespace(is_primary=True, view=3)) == 3
    assert vr.leader_term(SimpleNamespace(is_primary=False, view=3)) is None
    assert raft.membership and raft.move_leader
    for name in ("paxos", "vr", "vr-durable"):
        assert not CONSENSUS[name].membership and not CONSENSUS[name].move_leader
    assert [n for n, c in CONSENSUS.items() if c.epochs] == ["paxos"]


def test_vr_status_in_rafts_shape() -> None:
    class Replica:
        applied = 5

        def status(self) -> dict[str, Any]:
            return {"leader": 2, "role": "primary", "term": 3, "commit_index": 6,
                    "members": [1, 2, 3]}  # fmt: skip

    status = CONSENSUS["vr"].status(Replica())
    assert status["members"] == {"voters": [1, 2, 3], "outgoing": [], "learners": []}
    assert (status["applied_index"], status["role"], status["leader"]) == (5, "leader", 2)


def test_a_new_term_of_the_same_leader_restarts_every_lease_ttl(tmp_path: Path) -> None:
    """A node that led, lost leadership and led again between two lease checks must not
    expire a lease that the leader in between renewed: its lessor restarts every TTL."""
    server = EtcdServer(_config(tmp_path), EtcdOptions(consensus="raft"))
    node = SimpleNamespace(role="leader", term=1)
    server._runner = SimpleNamespace(node=node)  # type: ignore[assignment]
    now = [0]
    machine = server.machine
    machine.clock_ms = lambda: now[0]
    machine.is_leader = server._leading
    session = machine.apply(SessionCommand(0, 0, OPEN_SESSION))
    machine.apply(SessionCommand(session, 1, LeaseGrantRequest(TTL=2, ID=7)))
    assert machine.expired_leases() == []  # promoted at 0: deadline 2000 ms
    now[0] = 2500
    node.term = 9  # led again, in a later term
    assert machine.expired_leases() == []  # TTL restarted at 2500
    now[0] = 4600
    assert machine.expired_leases() == [7]
    node.role = "follower"
    assert machine.expired_leases() == []


def test_a_paxos_lessor_waits_for_its_epoch_and_a_stale_expiry_is_refused(
    tmp_path: Path,
) -> None:
    """Multi-Paxos: the lessor runs only once the store applied the leader's ballot as its
    lease epoch; an expiry of an earlier epoch changes nothing (a later phase 1 may choose a
    deposed leader's expiry after a leader in between renewed the lease)."""
    server = EtcdServer(_config(tmp_path), EtcdOptions(consensus="paxos"))
    node = SimpleNamespace(role="leader", ballot=(2, 1))
    server._runner = SimpleNamespace(node=node)  # type: ignore[assignment]
    machine = server.machine
    now = [0]
    machine.clock_ms = lambda: now[0]
    machine.is_leader = server._leading
    session = machine.apply(SessionCommand(0, 0, OPEN_SESSION))
    machine.apply(SessionCommand(session, 1, LeaseGrantRequest(TTL=2, ID=7)))
    now[0] = 5000
    assert machine.expired_leases() == [] and not machine.lessor.primary  # no epoch yet
    epoch = ballot_epoch(2, 1)
    machine.apply(SessionCommand(session, 2, LeaseEpochRequest(epoch=epoch)))
    assert machine.expired_leases() == [] and machine.lessor.primary  # TTL from 5000
    now[0] = 7100
    assert machine.expired_leases() == [7]
    later = ballot_epoch(3, 2)  # another leader's epoch began meanwhile
    machine.apply(SessionCommand(session, 3, LeaseEpochRequest(epoch=later)))
    stale = machine.apply(SessionCommand(session, 4, LeaseExpireRequest(ID=7, epoch=epoch)))
    assert isinstance(stale, ErrorResult) and "stale lease expiry" in stale.message
    assert machine.inner.store.leases.exists(7)
    assert machine.expired_leases() == [] and not machine.lessor.primary  # not its epoch
    current = machine.apply(SessionCommand(session, 5, LeaseExpireRequest(ID=7, epoch=later)))
    assert isinstance(current, LeaseRevokeResponse) and not machine.inner.store.leases.exists(7)


def test_the_lease_epoch_survives_a_snapshot_and_unset_leaves_the_bytes_alone() -> None:
    fresh = EtcdStateMachine()
    assert len(msgspec.msgpack.decode(fresh.store.snapshot())) == 5  # the format before epochs
    session = fresh.apply(SessionCommand(0, 0, OPEN_SESSION))
    fresh.apply(SessionCommand(session, 1, LeaseEpochRequest(epoch=5)))
    assert len(msgspec.msgpack.decode(fresh.store.snapshot())) == 6
    copy = EtcdStateMachine()
    copy.restore(fresh.snapshot())
    assert copy.store.lease_epoch == 5
    plain = EtcdStateMachine()
    plain.store.restore(EtcdStateMachine().store.snapshot())
    assert plain.store.lease_epoch == 0


def test_a_data_dir_keeps_its_consensus(tmp_path: Path) -> None:
    _claim_data_dir(tmp_path, "paxos")
    assert (tmp_path / CONSENSUS_FILE).read_text().strip() == "paxos"
    _claim_data_dir(tmp_path, "paxos")
    with pytest.raises(OSError, match="over 'paxos': start it with --consensus paxos"):
        _claim_data_dir(tmp_path, "vr")
    older = tmp_path / "older"
    (older / "wal").mkdir(parents=True)  # a Raft node's, from before the file existed
    with pytest.raises(OSError, match="over 'raft'"):
        _claim_data_dir(older, "vr")
    _claim_data_dir(older, "raft")


@pytest.mark.parametrize("consensus", ["paxos", "vr-durable"])
def test_one_node_serves_and_refuses_what_its_consensus_lacks(
    tmp_path: Path, consensus: str
) -> None:
    directory = tmp_path / "n"

    async def body() -> None:
        options = EtcdOptions(client_port=0, consensus=consensus)
        async with asyncio.timeout(BOUND_S), EtcdServer(_config(directory), options) as server:
            while server.status().get("leader") != 1:
                await asyncio.sleep(0.01)
            host, port = server.client_address
            async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
                kv = rpc_pb2_grpc.KVStub(channel)
                put = await kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"))
                assert put.header.revision == 2
                got = await kv.Range(rpc_pb2.RangeRequest(key=b"k"))
                assert [x.value for x in got.kvs] == [b"v"]
                status = await rpc_pb2_grpc.MaintenanceStub(channel).Status(rpc_pb2.StatusRequest())
                assert status.leader == server.member_id and not status.isLearner
                assert status.raftAppliedIndex >= 2
                cluster = rpc_pb2_grpc.ClusterStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await cluster.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=1))
                assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
                assert f"--consensus {consensus}" in (refused.value.details() or "")
                members = await cluster.MemberList(rpc_pb2.MemberListRequest())
                assert [m.ID for m in members.members] == [server.member_id]

    try:
        asyncio.run(body())
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_paxos_node_snapshots_the_etcd_state_and_restarts_from_it(tmp_path: Path) -> None:
    """Over Multi-Paxos the etcd state machine is snapshotted through Paxos's own
    ``TakeSnapshot`` (every 4 slots here) and a restarted node restores it from disk."""
    directory = tmp_path / "n"
    options = EtcdOptions(client_port=0, consensus="paxos", snapshot_threshold_entries=4)

    async def start_put_read(puts: int) -> tuple[list[bytes], int]:
        async with asyncio.timeout(BOUND_S), EtcdServer(_config(directory), options) as server:
            while server.status().get("leader") != 1:
                await asyncio.sleep(0.01)
            host, port = server.client_address
            async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
                kv = rpc_pb2_grpc.KVStub(channel)
                for i in range(puts):
                    await kv.Put(rpc_pb2.PutRequest(key=b"k%02d" % i, value=b"v"))
                got = await kv.Range(rpc_pb2.RangeRequest(key=b"k", range_end=b"l"))
            return [x.key for x in got.kvs], int(server.runner.node.offset)

    try:
        keys, offset = asyncio.run(start_put_read(12))
        assert keys == [b"k%02d" % i for i in range(12)] and offset > 0  # a snapshot taken
        again, _ = asyncio.run(start_put_read(0))
        assert again == keys
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--protocol", "raft", "--consensus", "vr"], "only for --protocol etcd"),
        (
            [
                "serve",
                "--protocol",
                "etcd",
                "--consensus",
                "paxos",
                "--test-mutant",
                "vote_not_persisted",
            ],
            "Raft's mutants need --consensus raft",
        ),
        (["serve", "--protocol", "etcd", "--consensus", "zab"], "'zab' is not one of"),
        (["cluster", "up", "--protocol", "paxos", "--consensus", "vr"], "only for --protocol etcd"),
        (["test", "--system", "etcd", "--consensus", "paxos"], "for --system pnyx only"),
    ],
)
def test_the_consensus_option_is_refused_where_it_does_not_apply(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    from click.testing import CliRunner

    from pnyx.cli.main import cli

    where = ["--data-dir", str(tmp_path / "d")] if argv[0] != "test" else []
    node = ["--id", "1", "--peers", "1=127.0.0.1:1"] if argv[0] == "serve" else []
    result = CliRunner().invoke(cli, [*argv, *node, *where])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "d").exists()  # refused before anything started
