"""Reliable broadcast passes every fault; the broken variant is caught and shrunk."""

from __future__ import annotations

import os

import pytest

from pnyx.catalog import get_protocol
from pnyx.core import DurableState, SplitMix64
from pnyx.protocols.broadcast import Broadcast, BroadcastNode, Gossip, GossipAck
from pnyx.sim.runner import SimConfig, run_sim
from pnyx.sim.schedule import parse_faults
from pnyx.sim.shrink import shrink
from pnyx.sim.spec import ProtocolDef

ALL = parse_faults("all")
SEEDS = 1_000 if os.environ.get("PNYX_SOAK") else 200


def test_correct_broadcast_passes_many_seeds_with_all_faults() -> None:
    spec = get_protocol("broadcast")
    failures = []
    for seed in range(1, SEEDS + 1):
        result = run_sim(spec, SimConfig(seed=seed, faults=ALL))
        if not result.ok:
            failures.append(f"seed {seed}: {result.violation} (pnyx sim broadcast --seed {seed})")
    assert not failures, "\n".join(failures)


def test_broken_broadcast_is_caught_within_50_seeds_and_shrunk() -> None:
    spec = get_protocol("broadcast-broken")
    caught = None
    for seed in range(1, 51):
        config = SimConfig(seed=seed, faults=ALL)
        result = run_sim(spec, config)
        if not result.ok:
            caught = (config, result)
            break
    assert caught is not None, "broken broadcast survived 50 seeds"
    config, result = caught
    assert result.violation is not None and result.violation.prop == "liveness"
    outcome = shrink(spec, config, result)
    minimal = outcome.schedule
    # A single fault is enough to break a protocol that never retransmits.
    assert minimal.fault_count() == 1, minimal.describe()
    assert minimal.fault_count() < result.schedule.fault_count()
    assert minimal.nodes <= 3 and minimal.clients == 1
    # The minimal schedule replays to the same failure, deterministically.
    again = run_sim(spec, SimConfig(seed=config.seed, schedule=minimal, hash_trace=True))
    twice = run_sim(spec, SimConfig(seed=config.seed, schedule=minimal, hash_trace=True))
    assert again.violation is not None and again.violation.prop == "liveness"
    assert again.trace_hash == twice.trace_hash


def test_correct_protocol_survives_the_broken_ones_minimal_schedule() -> None:
    broken = get_protocol("broadcast-broken")
    drop = parse_faults("drop")
    failing = [
        r for seed in range(1, 31) if not (r := run_sim(broken, SimConfig(seed, faults=drop))).ok
    ]
    assert failing, "message loss alone never broke the non-retransmitting variant"
    for result in failing:
        fixed = run_sim(get_protocol("broadcast"), SimConfig(result.seed, schedule=result.schedule))
        assert fixed.ok, fixed.violation


class _DoubleDelivery(BroadcastNode):
    """Planted bug: a relayed copy is delivered again."""

    def step(self, msg, from_id):  # type: ignore[no-untyped-def]
        if isinstance(msg, Gossip) and msg.msg_id in self.delivered:
            del self.delivered[msg.msg_id]
        super().step(msg, from_id)


def test_duplicate_delivery_is_caught_by_the_invariant() -> None:
    good = get_protocol("broadcast")
    spec = ProtocolDef(
        name="broadcast-dup",
        summary="test",
        make_node=_DoubleDelivery,
        make_client=good.make_client,
        make_monitor=good.make_monitor,
    )
    result = run_sim(spec, SimConfig(seed=1, faults=parse_faults("duplicate")))
    assert result.violation is not None and result.violation.prop == "no-duplication"


def test_node_persists_before_acknowledging() -> None:
    node = BroadcastNode(1, (1, 2, 3), SplitMix64(1), DurableState())
    node.step(Broadcast(7, "c-7", "hello"), 1000)
    ready = node.ready()
    assert len(ready.persist) == 1 and len(ready.apply) == 1
    assert {s.to for s in ready.send} == {2, 3, 1000}
    node.advance(ready)
    # A relayed duplicate is acknowledged but not delivered again.
    node.step(Gossip("c-7", "hello"), 2)
    ready = node.ready()
    assert not ready.persist and not ready.apply
    assert [(s.to, s.msg) for s in ready.send] == [(2, GossipAck("c-7"))]


def test_restart_replays_log_and_retransmits_everything() -> None:
    node = BroadcastNode(1, (1, 2, 3), SplitMix64(1), DurableState())
    node.step(Broadcast(1, "m1", 1), 1000)
    durable = DurableState()
    durable.apply_all(node.ready().persist)
    again = BroadcastNode(1, (1, 2, 3), SplitMix64(2), durable)
    ready = again.ready()
    assert [a.command.msg_id for a in ready.apply] == ["m1"]  # type: ignore[union-attr]
    for _ in range(8):
        again.tick()
    resent = {(s.to, s.msg) for s in again.ready().send}
    assert resent == {(2, Gossip("m1", 1)), (3, Gossip("m1", 1))}


@pytest.mark.parametrize("name", ["broadcast", "broadcast-broken"])
def test_no_faults_no_failure(name: str) -> None:
    assert run_sim(get_protocol(name), SimConfig(seed=1)).ok
