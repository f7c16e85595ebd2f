"""The pieces the real runtime needs from the scheme protocols, without processes: the
chain master's configuration survives a restart through its WAL codec, a chain snapshot
crosses the wire, Dynamo siblings come back from an untyped WAL, and the cluster layout
(configuration process) of each scheme."""

from __future__ import annotations

import random
from typing import Any

import pytest

from pnyx.catalog import get_runnable
from pnyx.core import DurableState, PutRecord
from pnyx.protocols.chain import ChainMaster
from pnyx.protocols.chain.master import CONFIG_RECORD, DETECT_TICKS
from pnyx.protocols.chain.messages import ChainConfig, Ping, Snapshot
from pnyx.protocols.dynamo import DynamoNode, Version
from pnyx.runtime.transport import make_wire_codec
from pnyx.runtime.wal import PersistCodec
from pnyx.services.schemes import config_node, data_nodes, process_count


def _through_wal(ops: list[Any]) -> DurableState:
    """What a node recovers after ``ops`` went through the (untyped) WAL codec."""
    codec = PersistCodec()
    durable = DurableState()
    for op in ops:
        durable.apply(codec.decode(codec.encode(op)))
    return durable


def test_a_durable_chain_master_recovers_its_configuration() -> None:
    master = ChainMaster(4, (1, 2, 3), DurableState())
    for _ in range(DETECT_TICKS + 1):
        master.tick()
    # every replica went silent: the master keeps only the last holder of the state (3),
    # then node 2 shows up again and rejoins at the tail
    master.step(Ping(1, 1, 1), 2)
    persisted = [op for op in master.ready().persist if isinstance(op, PutRecord)]
    assert persisted and all(op.key == CONFIG_RECORD for op in persisted)
    restarted = ChainMaster(4, (1, 2, 3), _through_wal(persisted))
    assert (restarted.epoch, restarted.members) == (master.epoch, master.members)
    assert restarted.chain == (3, 2) and restarted.epoch > 1
    assert restarted.stateful == master.stateful


def test_a_master_without_durable_state_persists_nothing() -> None:
    master = ChainMaster(4, (1, 2, 3))  # the simulator's master: behaviour unchanged
    for _ in range(DETECT_TICKS + 1):
        master.tick()
    batch = master.ready()
    assert batch.persist == [] and master.epoch > 1
    assert any(isinstance(send.msg, ChainConfig) for send in batch.send)


def test_a_chain_snapshot_crosses_the_wire() -> None:
    codec = make_wire_codec(get_runnable("chain").message_types)
    snapshot = Snapshot(3, 7, 6, {"a": [(6, "x"), (7, "xy")]}, ((1234, 5, 7, None),))
    assert codec.decode(codec.encode(snapshot)) == snapshot


def test_dynamo_recovers_siblings_from_an_untyped_wal() -> None:
    sibling = Version(1, 1, ((), ()), "v")
    record = PutRecord("key:a", (sibling,))
    durable = _through_wal([record])
    assert not isinstance(durable.records["key:a"][0], Version)  # plain msgpack data
    node = DynamoNode(1, (1, 2, 3), random.Random(1), durable)
    assert node.store["a"] == (sibling,)
    assert node.invariants() == []


@pytest.mark.parametrize(
    ("protocol", "processes", "config", "data"),
    [
        ("chain", 4, 4, (1, 2, 3)),
        ("craq", 4, 4, (1, 2, 3)),
        ("primary-backup", 4, 1, (2, 3, 4)),
        ("dynamo", 3, None, (1, 2, 3)),
        ("raft", 3, None, (1, 2, 3)),
    ],
)
def test_cluster_layout(
    protocol: str, processes: int, config: int | None, data: tuple[int, ...]
) -> None:
    assert process_count(protocol, 3) == processes
    ids = tuple(range(1, processes + 1))
    assert config_node(protocol, ids) == config
    assert data_nodes(protocol, ids) == data


def test_lost_writes_names_an_acknowledged_append_missing_from_the_final_value() -> None:
    from pnyx.services.schemes_workload import SchemeRun

    run = SchemeRun(acked=[("a", "0.1;"), ("a", "1.1;"), ("b", "0.2;")])
    run.final = {"a": "0.1;1.1;", "b": "0.2;"}
    assert run.lost_writes() == []
    run.final = {"a": "1.1;", "b": ""}  # 0.1; vanished from a, b was reset
    assert run.lost_writes() == [("a", "0.1;"), ("b", "0.2;")]
