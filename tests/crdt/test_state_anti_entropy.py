"""Delta-interval anti-entropy (buffer, acks, GC, full-state fallback) and the replica node."""

from __future__ import annotations

import pytest

from pnyx.core import (
    Apply,
    ClientReply,
    DurableState,
    InvalidMessage,
    LogAppend,
    LogCompact,
    PutRecord,
    SplitMix64,
)
from pnyx.protocols.crdt import AWORSet, DeltaAntiEntropy, GCounter
from pnyx.protocols.crdt.messages import SNAPSHOT_KEY, ClientOp, DeltaAck, DeltaShip, LocalOp
from pnyx.protocols.crdt.replica import Bundle, CrdtReplica
from pnyx.protocols.crdt.spec_state import COUNTER

CLIENT = 1_000_000


def _pair() -> tuple[DeltaAntiEntropy[GCounter], DeltaAntiEntropy[GCounter]]:
    return (
        DeltaAntiEntropy(GCounter("a"), ["b"], max_buffered=4),
        DeltaAntiEntropy(GCounter("b"), ["a"], max_buffered=4),
    )


def test_deltas_ship_ack_and_are_collected() -> None:
    a, b = _pair()
    assert a.shipment_for("b") is None  # nothing new
    a.record_local(a.state.increment(2))
    a.record_local(a.state.increment(3))
    ship = a.shipment_for("b")
    assert ship is not None and not ship.full and ship.seq == 3
    assert ship.payload.counts == {"a": 5}  # the join of the two deltas
    assert b.apply_remote(ship.payload, "a")
    assert not b.apply_remote(ship.payload, "a")  # a duplicate changes nothing
    a.on_ack("b", ship.seq)
    assert a.buffered == 0 and a.shipment_for("b") is None
    assert b.state.value() == 5
    # b does not send a's delta back to a: it acknowledges it on a's behalf.
    assert b.buffered == 1 and b.shipment_for("a") is None and b.acked("a") == b.next_seq
    assert a.invariants() == [] and b.invariants() == []


def test_far_behind_neighbour_gets_the_full_state() -> None:
    a, _ = _pair()
    for _ in range(6):  # more than max_buffered=4: the oldest deltas are dropped
        a.record_local(a.state.increment(1))
    assert a.buffered == 4
    ship = a.shipment_for("b")
    assert ship is not None and ship.full and ship.payload is a.state and ship.seq == 7


def test_restarted_replica_ships_its_full_state_once() -> None:
    restarted = DeltaAntiEntropy(AWORSet("a"), ["b", "c"], next_seq=9)
    restarted.state.add("x")
    ship = restarted.shipment_for("b")
    assert ship is not None and ship.full and ship.seq == 9
    restarted.on_ack("b", 9)
    assert restarted.shipment_for("b") is None
    with pytest.raises(KeyError, match="'z'"):
        restarted.on_ack("z", 1)


def test_lossy_exchange_converges() -> None:
    rng = SplitMix64(7)
    names = ["a", "b", "c"]
    nodes = {
        n: DeltaAntiEntropy(AWORSet(n), [m for m in names if m != n], max_buffered=5) for n in names
    }

    def round_(loss: float) -> None:
        for src, node in nodes.items():
            for dst in names:
                if dst == src:
                    continue
                ship = node.shipment_for(dst)
                if ship is None or rng.random() < loss:
                    continue
                payload = ship.payload.copy()
                nodes[dst].apply_remote(payload, src)
                if rng.random() >= loss:
                    node.on_ack(dst, ship.seq)

    for step in range(200):
        node = nodes[names[rng.randrange(0, 3)]]
        element = rng.randrange(0, 5)
        delta = node.state.add(element) if rng.random() < 0.6 else node.state.remove(element)
        node.record_local(delta)
        if step % 3 == 0:
            round_(loss=0.5)
    for _ in range(5):
        round_(loss=0.0)
    states = [n.state for n in nodes.values()]
    assert states[0] == states[1] == states[2]
    assert all(n.buffered == 0 for n in nodes.values())


def _replica(durable: DurableState | None = None, node_id: int = 1) -> CrdtReplica:
    def template(replica: str) -> Bundle:
        return Bundle(replica, COUNTER.parts(replica))

    return CrdtReplica(
        node_id,
        (1, 2, 3),
        SplitMix64(node_id),
        durable or DurableState(),
        template=template,
        apply_op=COUNTER.apply_op,
        snapshot_every=3,
    )


def test_replica_logs_before_replying_and_recovers_everything() -> None:
    node = _replica()
    durable = DurableState()
    for i in range(5):
        node.step(ClientOp(i, ["inc", "g", i + 1]), CLIENT)
        ready = node.ready()
        assert isinstance(ready.persist[0], LogAppend)
        assert [type(s.msg) for s in ready.send] == [ClientReply]
        assert isinstance(ready.apply[0].command, LocalOp)
        durable.apply_all(ready.persist)
        node.advance(ready)
    assert SNAPSHOT_KEY in durable.records
    assert durable.log_start == 3  # the snapshot at entry 3 compacted the announced 1..2
    again = _replica(durable)
    assert again.state == node.state and again.state.value()["g"] == 15
    assert again.ae.next_seq == node.ae.next_seq == 6
    replayed = again.ready().apply
    assert [a.index for a in replayed] == [3, 4, 5]  # ops still in the log are re-announced
    assert all(isinstance(a, Apply) for a in replayed)


def test_replica_acks_a_shipment_after_logging_it() -> None:
    sender, receiver = _replica(node_id=2), _replica(node_id=1)
    sender.step(ClientOp(1, ["dec", "pn", 4]), CLIENT)
    sender.advance(sender.ready())
    for _ in range(4):
        sender.tick()
    ships = [s for s in sender.ready().send if s.to == 1]
    assert len(ships) == 1 and isinstance(ships[0].msg, DeltaShip)
    receiver.step(ships[0].msg, 2)
    ready = receiver.ready()
    assert [type(p) for p in ready.persist] == [LogAppend]
    assert [(s.to, s.msg) for s in ready.send] == [(2, DeltaAck(ships[0].msg.seq))]
    assert receiver.state.value()["pn"] == -4


def test_replica_refuses_bad_messages_without_changing_state() -> None:
    node = _replica()
    before = node.state.copy()
    with pytest.raises(InvalidMessage, match="bad shipment"):
        node.step(DeltaShip(3, False, [[["g", {"2": -1}]], [{}, []]]), 2)
    with pytest.raises(InvalidMessage, match="not a peer"):
        node.step(DeltaShip(3, False, before.to_wire()), 9)
    with pytest.raises(InvalidMessage, match="non-client"):
        node.step(ClientOp(1, ["inc", "g", 1]), 2)
    node.step(ClientOp(1, ["inc", "nope", 1]), CLIENT)
    reply = node.ready().send[0].msg
    assert isinstance(reply, ClientReply) and not reply.ok and "nope" in reply.error
    assert node.state == before


def test_snapshot_record_is_written_with_a_compaction() -> None:
    node = _replica()
    persisted = []
    for i in range(3):
        node.step(ClientOp(i, ["inc", "pn", 1]), CLIENT)
        ready = node.ready()
        persisted.extend(ready.persist)
        node.advance(ready)
    assert [type(p) for p in persisted] == [LogAppend, LogAppend, LogAppend, PutRecord, LogCompact]


def test_an_op_torn_by_a_crash_is_announced_after_restart() -> None:
    """Seed 2833 of crdt-counter: the batch of op 3 also wrote a snapshot; a crash kept the
    batch on disk but never carried it out, so the op had not been announced (Apply).  The
    snapshot must not compact that entry away: recovery announces it."""
    node = _replica()
    durable = DurableState()
    for i in range(3):
        node.step(ClientOp(i, ["inc", "g", 1]), CLIENT)
        ready = node.ready()
        durable.apply_all(ready.persist)  # durable (for the last one: torn, kept whole)
        if i < 2:
            node.advance(ready)  # the last batch is never carried out: the crash
    assert SNAPSHOT_KEY in durable.records
    again = _replica(durable)
    announced = [a.command.op_id for a in again.ready().apply]  # type: ignore[union-attr]
    assert ("1", 3) in announced
    assert again.state.value()["g"] == 3
