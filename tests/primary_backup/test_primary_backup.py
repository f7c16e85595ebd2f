"""Primary-backup: a directed view change with state transfer, seeds with faults, the broken
variant caught by the property it breaks."""

from __future__ import annotations

from pnyx.catalog import get_protocol
from pnyx.core import CLIENT_ID_BASE, ClientReply, DurableState, SplitMix64
from pnyx.protocols.primary_backup import (
    Forward,
    ForwardAck,
    Ping,
    Server,
    StateTransfer,
    TransferAck,
    View,
    ViewManager,
    ViewReply,
    make_node,
)
from pnyx.protocols.raft.kv import GET, PUT, Command, KvOp
from pnyx.protocols.raft.messages import ClientRequest, ReadRequest
from pnyx.sim.runner import SimConfig, run_sim
from pnyx.sim.schedule import parse_faults

FAULTS = parse_faults("delay,drop,duplicate,reorder,partition,crash,pause,skew")
CLIENT = CLIENT_ID_BASE


def _sends(node: ViewManager | Server) -> list[tuple[int, object]]:
    return [(s.to, s.msg) for s in node.ready().send]


def _server(node_id: int) -> Server:
    node = make_node(node_id, (1, 2, 3, 4), SplitMix64(node_id), DurableState())
    assert isinstance(node, Server)
    node.ready()
    return node


def test_view_change_transfers_state_and_refuses_a_stale_primary() -> None:
    s2, s3, s4 = _server(2), _server(3), _server(4)
    s2.step(ViewReply(View(1, 2, 3)), 1)
    ((to, transfer),) = _sends(s2)
    assert to == 3 and isinstance(transfer, StateTransfer)
    s3.step(transfer, 2)
    assert _sends(s3) == [(2, TransferAck(1))]
    s2.step(TransferAck(1), 3)
    assert s2.serving
    s2.step(ClientRequest(1, Command(0, 0, "open_session")), CLIENT)
    ((_, fwd),) = _sends(s2)
    assert isinstance(fwd, Forward) and s2.applied_index == 0  # not applied before the ack
    s3.step(fwd, 2)
    s2.step(_sends(s3)[0][1], 3)  # type: ignore[arg-type]
    ((_, reply),) = _sends(s2)
    assert isinstance(reply, ClientReply) and reply.ok and reply.result == 1
    s2.step(ClientRequest(2, Command(1, 1, KvOp(PUT, "x", "v"))), CLIENT)
    s3.step(_sends(s2)[0][1], 2)  # type: ignore[arg-type]
    s2.step(_sends(s3)[0][1], 3)  # type: ignore[arg-type]
    assert _sends(s2)[0][1] == ClientReply(2, True, None)
    # Primary 2 fails: view 2 promotes backup 3 and transfers the state to server 4.
    s3.step(ViewReply(View(2, 3, 4)), 1)
    ((to, transfer),) = _sends(s3)
    assert to == 4 and isinstance(transfer, StateTransfer)
    s4.step(transfer, 3)
    assert s4.sm.data == {"x": "v"} and s4.applied_index == 2
    # The stale primary 2 still forwards in view 1: its backup refuses, so no answer.
    s2.step(ReadRequest(3, KvOp(GET, "x")), CLIENT)
    ((_, stale),) = _sends(s2)
    s3.step(stale, 2)  # type: ignore[arg-type]
    assert not [m for _, m in _sends(s3) if isinstance(m, ForwardAck)]
    assert s2.replied_index == 2


def test_manager_waits_for_the_primarys_ack_before_the_next_view() -> None:
    vm = make_node(1, (1, 2, 3, 4), SplitMix64(1), DurableState())
    assert isinstance(vm, ViewManager)
    for server in (2, 3):
        vm.step(Ping(0), server)
    vm.tick()
    assert vm.view.num == 1
    for _ in range(20):  # primary 2 never acknowledges view 1, then falls silent
        vm.tick()
        vm.step(Ping(0), 3)
    assert vm.view == View(1, 2, 0) and not vm.acked  # stuck in view 1 without the ack
    vm.step(Ping(1, 1), 2)  # the ack: now (and only now) view 2 adds backup 3
    assert vm.view == View(2, 2, 3) and not vm.acked


def test_seeds_with_faults_keep_every_acknowledged_write_and_linearizability() -> None:
    spec = get_protocol("primary-backup")
    failures = []
    for seed in range(1, 101):
        result = run_sim(spec, SimConfig(seed=seed, faults=FAULTS))
        if not result.ok:
            failures.append(f"seed {seed}: {result.violation}")
    assert not failures, "\n".join(failures)


def test_broken_primary_that_answers_before_its_backup_is_caught() -> None:
    spec = get_protocol("primary-backup-broken")
    props = set()
    for seed in range(1, 31):
        result = run_sim(spec, SimConfig(seed=seed, faults=FAULTS))
        if result.violation is not None:
            props.add(result.violation.prop)
    assert "acknowledged-write-lost" in props, props
