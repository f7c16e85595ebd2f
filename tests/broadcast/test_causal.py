"""Causal broadcast: held-then-delivered scenarios, the buffer bound, restart, the simulator."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import pytest

from pnyx.catalog import get_protocol
from pnyx.core import Apply, DurableState, InvalidMessage, Ready, SplitMix64
from pnyx.protocols.broadcast import (
    Broadcast,
    CausalAck,
    CausalBroadcast,
    CausalBroadcastNode,
    CausalEntry,
    CausalGossip,
)
from pnyx.sim.runner import SimConfig, Simulation, run_sim
from pnyx.sim.schedule import parse_faults

GROUP = (1, 2, 3)


class Host:
    """A minimal host embedding the engine: records deliver() callbacks."""

    def __init__(self, node_id: int, durable: DurableState | None = None, **kw: Any) -> None:
        self.delivered: list[tuple[int, Any]] = []
        self.engine = CausalBroadcast(
            node_id, GROUP, deliver=lambda o, p: self.delivered.append((o, p)), **kw
        )
        self.ready = Ready()
        self.durable = durable if durable is not None else DurableState()
        self.engine.recover(self.durable, self.ready)

    def take(self) -> Ready:
        """The effects so far (persisted into this host's durable state)."""
        batch, self.ready = self.ready, Ready()
        self.durable.apply_all(batch.persist)
        return batch

    def broadcast(self, payload: Any) -> CausalGossip:
        entry = self.engine.broadcast(payload, self.ready)
        return CausalGossip(entry.origin, entry.seq, entry.deps, entry.payload)

    def receive(self, msg: Any, from_id: int) -> Ready:
        assert self.engine.step(msg, from_id, self.ready)
        return self.take()


def _applied(ready: Ready) -> list[tuple[int, int]]:
    out = []
    for item in ready.apply:
        assert isinstance(item, Apply) and isinstance(item.command, CausalEntry)
        out.append(item.command.key)
    return out


def _acks(ready: Ready) -> set[tuple[int, Any]]:
    return {(s.to, s.msg) for s in ready.send if isinstance(s.msg, CausalAck)}


def test_message_arriving_before_its_cause_is_held_then_delivered_after_it() -> None:
    a, b, c = Host(1), Host(2), Host(3)
    m1 = a.broadcast("m1")
    b.receive(m1, 1)
    m2 = b.broadcast("m2")  # b delivered m1 before broadcasting m2
    assert m2.deps == ((1, 1),) and m2.seq == 1
    held = c.receive(m2, 2)
    assert not held.apply and not held.persist and not _acks(held)  # held, not acknowledged
    assert c.engine.pending_count == 1 and c.delivered == []
    both = c.receive(m1, 1)
    assert _applied(both) == [(1, 1), (2, 1)]
    assert c.delivered == [(1, "m1"), (2, "m2")]
    assert _acks(both) == {(1, CausalAck(1, 1)), (2, CausalAck(2, 1))}
    assert c.engine.pending_count == 0 and c.engine.clock == {1: 1, 2: 1}
    # Relays go to the peers that did not send it: m1 to 2, m2 to 1.
    gossip = [s for s in both.send if isinstance(s.msg, CausalGossip)]
    assert {(s.to, s.msg.origin, s.msg.seq) for s in gossip} == {(2, 1, 1), (1, 2, 1)}  # type: ignore[attr-defined]


def test_fifo_per_origin_second_message_waits_for_the_first() -> None:
    a, c = Host(1), Host(3)
    m1, m2 = a.broadcast("x"), a.broadcast("y")
    assert (m1.seq, m2.seq) == (1, 2)
    assert not c.receive(m2, 1).apply
    assert _applied(c.receive(m1, 1)) == [(1, 1), (1, 2)]
    assert [p for _, p in c.delivered] == ["x", "y"]


def test_concurrent_messages_are_delivered_in_arrival_order() -> None:
    a, b, c = Host(1), Host(2), Host(3)
    ma, mb = a.broadcast("a"), b.broadcast("b")
    assert ma.deps == () and mb.deps == ()
    assert _applied(c.receive(mb, 2)) == [(2, 1)]
    assert _applied(c.receive(ma, 1)) == [(1, 1)]


def test_full_pending_buffer_refuses_and_retransmission_recovers() -> None:
    a, b, c = Host(1), Host(2), Host(3, pending_max=1)
    m1 = a.broadcast(1)
    b.receive(m1, 1)
    mb = b.broadcast("b")
    m2 = a.broadcast(2)
    a.take()
    assert not c.receive(mb, 2).apply and c.engine.pending_count == 1
    refused = c.receive(CausalGossip(1, 2, m2.deps, m2.payload), 1)
    assert not refused.apply and not _acks(refused)  # dropped unacknowledged
    assert c.engine.refused == 1 and c.engine.pending_count == 1
    assert _applied(c.receive(m1, 1)) == [(1, 1), (2, 1)]
    # a retransmits everything c has not acknowledged, oldest first.
    for _ in range(4):
        a.engine.tick(a.ready)
    resent = [s.msg for s in a.take().send if s.to == 3]
    assert [(m.origin, m.seq) for m in resent] == [(1, 1), (1, 2)]  # type: ignore[attr-defined]
    for msg in resent:
        c.receive(msg, 1)
    assert c.delivered == [(1, 1), (2, "b"), (1, 2)]
    assert c.engine.invariants() == []


def test_a_hole_wider_than_the_buffer_is_refused() -> None:
    c = Host(3, pending_max=2)
    far = CausalGossip(1, 5, (), "far")
    assert not c.receive(far, 1).apply
    assert c.engine.refused == 1 and c.engine.pending_count == 0


def test_duplicate_is_acknowledged_not_delivered_again() -> None:
    a, c = Host(1), Host(3)
    m1 = a.broadcast("m")
    c.receive(m1, 1)
    again = c.receive(m1, 2)
    assert not again.apply and not again.persist
    assert _acks(again) == {(2, CausalAck(1, 1))}
    assert c.delivered == [(1, "m")]


def test_acknowledgement_stops_retransmission() -> None:
    a = Host(1)
    a.broadcast("m")
    a.take()
    assert a.engine.unacked_count() == 2
    a.receive(CausalAck(1, 1), 2)
    assert a.engine.unacked_count() == 1
    for _ in range(4):
        a.engine.tick(a.ready)
    assert [s.to for s in a.take().send] == [3]


def test_restart_replays_the_log_in_order_and_continues_the_sequence() -> None:
    a, b = Host(1), Host(2)
    m1 = a.broadcast("m1")
    b.receive(m1, 1)
    b.broadcast("own")
    b.receive(CausalGossip(1, 3, (), "held"), 1)  # held: lost in the crash
    b.take()
    again = Host(2, durable=b.durable.copy())
    replay = again.take()
    assert _applied(replay) == [(1, 1), (2, 1)] and not replay.persist
    assert again.delivered == [(1, "m1"), (2, "own")]
    assert again.engine.clock == {1: 1, 2: 1} and again.engine.pending_count == 0
    nxt = again.broadcast("next")
    assert (nxt.seq, nxt.deps) == (2, ((1, 1),))
    # Which peers had acknowledged was not persisted: everything is retransmitted.
    assert again.engine.unacked_count() == 2 * 3


@pytest.mark.parametrize(
    "msg",
    [
        CausalGossip(9, 1, (), None),  # unknown origin
        CausalGossip(1, 0, (), None),  # seq < 1
        CausalGossip(1, 2**63, (), None),
        CausalGossip(1, 1, ((1, 1),), None),  # origin in its own deps
        CausalGossip(1, 1, ((3, 1), (2, 1)), None),  # unsorted deps
        CausalGossip(1, 1, ((2, 0),), None),  # zero count
        CausalGossip(1, 1, ((7, 1),), None),  # unknown node
    ],
)
def test_malformed_gossip_is_refused_without_change(msg: CausalGossip) -> None:
    c = Host(3)
    with pytest.raises(InvalidMessage):
        c.engine.step(msg, 1, c.ready)
    assert c.ready.is_empty() and c.engine.pending_count == 0 and not c.engine.entries


def test_gossip_from_a_non_peer_is_refused() -> None:
    c = Host(3)
    with pytest.raises(InvalidMessage, match="not a peer"):
        c.engine.step(CausalGossip(1, 1, (), None), 1000, c.ready)


def test_node_dedups_a_duplicated_client_request() -> None:
    node = CausalBroadcastNode(1, GROUP, SplitMix64(1), DurableState())
    node.step(Broadcast(1, "c-1", "x"), 1000)
    node.step(Broadcast(1, "c-1", "x"), 1000)
    ready = node.ready()
    assert len(ready.apply) == 1 and len(ready.persist) == 1
    with pytest.raises(InvalidMessage):
        node.step(Broadcast(2, "c-2", "x"), 2)  # a peer is not a client


ALL = parse_faults("all")


def test_causal_broadcast_passes_seeds_with_all_faults() -> None:
    spec = get_protocol("causal-broadcast")
    failures = []
    for seed in range(1, 41):
        result = run_sim(spec, SimConfig(seed=seed, faults=ALL))
        if not result.ok:
            failures.append(f"seed {seed}: {result.violation}")
    assert not failures, "\n".join(failures)


def test_broken_variant_is_caught_by_the_causal_order_property() -> None:
    spec = get_protocol("causal-broadcast-broken")
    props = [run_sim(spec, SimConfig(seed=s, faults=ALL)).violation for s in range(1, 11)]
    caught = [v for v in props if v is not None]
    assert len(caught) >= 5, props
    assert {v.prop for v in caught} == {"causal-order"}, caught


def test_same_seed_same_trace() -> None:
    spec = get_protocol("causal-broadcast")
    one = run_sim(spec, SimConfig(seed=3, faults=ALL, hash_trace=True))
    two = run_sim(spec, SimConfig(seed=3, faults=ALL, hash_trace=True))
    assert one.ok and one.trace_hash == two.trace_hash


def test_tiny_pending_buffer_refuses_under_faults_and_still_delivers_everything() -> None:
    spec = replace(
        get_protocol("causal-broadcast"),
        name="causal-broadcast-tiny-buffer",
        make_node=partial(CausalBroadcastNode, pending_max=2),
    )
    refused = 0
    for seed in range(1, 16):
        sim = Simulation(spec, SimConfig(seed=seed, faults=parse_faults("reorder,drop,partition")))
        result = sim.run()
        assert result.ok, f"seed {seed}: {result.violation}"
        for node_id in sim.node_ids:
            node = sim.node(node_id)
            assert isinstance(node, CausalBroadcastNode)
            assert node.engine.pending_count <= 2
            refused += node.engine.refused
    assert refused > 0, "the bound was never hit: the test proves nothing"
