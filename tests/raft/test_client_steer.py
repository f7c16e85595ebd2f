"""A test harness steers a simulated KV client: quiet phases and operations bound to nodes."""

from __future__ import annotations

import random

from pnyx.core import ClientReply, Send
from pnyx.protocols.raft import ClientRequest, ReadRequest
from pnyx.protocols.raft.client import MAX_STEERED_OPS, KvClient, Steer

CLIENT = 1000


def _client_with_session() -> KvClient:
    client = KvClient(CLIENT, (1, 2, 3), random.Random(4), max_think_ticks=0)
    client.tick()  # opens a session
    [send] = client.ready().send
    client.step(ClientReply(send.msg.request_id, True, 7), send.to)
    client.ready()
    return client


def _sends(client: KvClient) -> list[Send]:
    return list(client.ready().send)


def test_steered_ops_go_to_their_nodes_in_order_at_once() -> None:
    client = _client_with_session()
    client.step(Steer(ops=((3, "put", "b"), (2, "get", "b"))), 0)
    [put] = _sends(client)
    assert put.to == 3 and isinstance(put.msg, ClientRequest)
    assert put.msg.command.op.kind == "put" and put.msg.command.op.key == "b"
    client.step(ClientReply(put.msg.request_id, True, None), 3)
    batch = client.ready()
    [get] = batch.send
    assert get.to == 2 and isinstance(get.msg, ReadRequest) and get.msg.query.key == "b"
    recorded = [(r.event.type, r.event.f, r.event.key) for r in batch.record]
    assert recorded == [("ok", "put", "b"), ("invoke", "get", "b")]


def test_a_quiet_phase_holds_new_operations_back() -> None:
    client = _client_with_session()
    client.step(Steer(idle_ticks=5), 0)
    for _ in range(5):
        client.tick()
        assert not _sends(client)
    client.tick()
    assert len(_sends(client)) == 1


def test_bad_steering_is_ignored_and_bounded() -> None:
    client = _client_with_session()
    client.step(Steer(idle_ticks=1, ops=((9, "put", "a"), (1, "cas", "a"))), 0)
    client.tick()  # quiet
    assert not _sends(client)
    many = tuple((1, "get", "a") for _ in range(3 * MAX_STEERED_OPS))
    client.step(Steer(ops=many), 0)
    assert len(client._steered) == MAX_STEERED_OPS - 1  # one started at once
