"""Every fault kind is injected as described, and only when switched on."""

from __future__ import annotations

import itertools

from pnyx.sim.runner import SimConfig, Simulation
from pnyx.sim.schedule import FAULT_KINDS, Schedule, generate, parse_faults
from tests.sim.probe import PROBE, ProbeMonitor, ProbeNode


def _run(faults: str, seed: int = 1, trace: bool = False, fault_ms: int = 2_000) -> Simulation:
    sim = Simulation(
        PROBE, SimConfig(seed=seed, faults=parse_faults(faults), fault_ms=fault_ms, trace=trace)
    )
    result = sim.run()
    assert result.ok, result.violation
    sim.last_result = result  # type: ignore[attr-defined]
    return sim


def _probe(sim: Simulation, node_id: int) -> ProbeNode:
    node = sim.node(node_id)
    assert isinstance(node, ProbeNode)
    return node


def test_no_faults_means_fifo_no_loss_and_bounded_lag() -> None:
    sim = _run("none")
    stats = sim.stats
    assert stats.dropped == 0 and stats.duplicated == 0 and stats.crashes == 0
    for nid in sim.node_ids:
        node = _probe(sim, nid)
        for seqs in node.received.values():
            assert seqs == list(range(1, len(seqs) + 1))
        assert max(node.lags) <= 1


def test_invariants_checked_after_every_event() -> None:
    sim = _run("all")
    assert isinstance(sim.monitor, ProbeMonitor)
    # after every event, and also between the steps of one resume event
    assert sim.monitor.after_event_calls >= sim.stats.events > 1000


def test_drop_loses_messages() -> None:
    sim = _run("drop")
    assert sim.stats.dropped > 0 and sim.stats.duplicated == 0
    gaps = [
        s
        for nid in sim.node_ids
        for s in _probe(sim, nid).received.values()
        if s != list(range(1, len(s) + 1))
    ]
    assert gaps


def test_duplicate_delivers_twice() -> None:
    sim = _run("duplicate")
    assert sim.stats.duplicated > 0 and sim.stats.dropped == 0
    assert any(
        len(s) != len(set(s)) for nid in sim.node_ids for s in _probe(sim, nid).received.values()
    )


def test_delay_adds_long_tail_latency() -> None:
    sim = _run("delay")
    assert max(max(_probe(sim, nid).lags) for nid in sim.node_ids) > 2


def test_reorder_breaks_per_link_fifo() -> None:
    sim = _run("reorder")
    inversions = sum(
        1
        for nid in sim.node_ids
        for s in _probe(sim, nid).received.values()
        for a, b in itertools.pairwise(s)
        if b < a
    )
    assert inversions > 0


def test_partition_blocks_its_links_while_active() -> None:
    for seed in range(1, 6):
        sim = _run("partition", seed=seed, trace=True)
        events = sim.schedule.events
        assert events and all(e.kind == "partition" for e in events)
        for record in sim.last_result.trace:  # type: ignore[attr-defined]
            if record[1] != "deliver":
                continue
            t_us, _, src, dst, _msg = record
            for e in events:
                assert not (e.start_us < t_us < e.end_us and (src, dst) in e.links)


def test_partition_shapes() -> None:
    shapes: dict[str, list[tuple[tuple[int, int], ...]]] = {}
    for seed in range(60):
        for e in generate(seed, 5, 1, 3000, frozenset({"partition"})).events:
            shapes.setdefault(e.shape, []).append(e.links)
    assert set(shapes) == {"halves", "isolate", "bridge", "one-way", "isolate-leader"}
    assert all(links == () for links in shapes["isolate-leader"])  # resolved when it starts
    for links in shapes["one-way"]:
        assert not any((b, a) in links for a, b in links)
    for links in shapes["halves"] + shapes["isolate"]:
        assert all((b, a) in links for a, b in links)
    for links in shapes["isolate"]:
        # one node cut from all four others, both ways
        assert len(links) == 8
    for links in shapes["bridge"]:
        touched = {n for link in links for n in link}
        assert len(touched) <= 4  # the bridge node keeps all its links


def test_pause_stops_ticks_and_processing() -> None:
    sim = _run("pause", trace=True)
    pauses = [e for e in sim.injected if e.kind == "pause"]
    assert pauses
    for record in sim.last_result.trace:  # type: ignore[attr-defined]
        t_us, kind = record[0], record[1]
        for p in pauses:
            inside = p.start_us < t_us < p.end_us
            if inside and kind == "tick":
                assert record[2] != p.node
            if inside and kind == "deliver":
                assert record[3] != p.node


def test_crash_loses_unsynced_batch_whole_without_torn() -> None:
    recovered = []
    for seed in range(1, 30):
        sim = _run("crash", seed=seed)
        assert sim.stats.crashes > 0
        assert isinstance(sim.monitor, ProbeMonitor)
        recovered += sim.monitor.recovered
    # Batches are all-or-nothing: two entries per batch, record names the last index.
    assert recovered
    for log_len, last in recovered:
        assert log_len % 2 == 0
        assert last == (log_len or None)


def test_torn_crash_keeps_the_unsynced_batch_whole_or_not_at_all() -> None:
    kept = 0
    for seed in range(1, 40):
        sim = _run("crash,torn", seed=seed, trace=True)
        assert isinstance(sim.monitor, ProbeMonitor)
        for log_len, last in sim.monitor.recovered:
            # atomic batches (as in the WAL): never one entry of a pair, never entries
            # without the record written after them
            assert log_len % 2 == 0 and last == (log_len or None)
        trace = sim.last_result.trace  # type: ignore[attr-defined]
        torn = [r for r in trace if r[1] == "torn"]
        assert all(r[3] in (0, r[4]) for r in torn)
        kept += sum(r[3] == r[4] for r in torn)
    assert kept > 0


def test_skew_changes_tick_rates() -> None:
    sim = _run("skew", fault_ms=3_000)
    drift = sim.schedule.drift
    assert len(drift) == 3 and any(abs(d) > 0.005 for d in drift)
    ticks = [_probe(sim, nid).ticks for nid in sim.node_ids]
    fastest, slowest = drift.index(min(drift)), drift.index(max(drift))
    assert ticks[fastest] > ticks[slowest]


def test_restart_gets_only_persisted_state() -> None:
    sim = _run("crash", seed=3)
    for nid in sim.node_ids:
        node = _probe(sim, nid)
        durable = sim.durable(nid)
        # what the live node believes it wrote never trails what is durable
        assert node.next_index - 1 >= durable.last_index


def test_schedule_roundtrips_through_json() -> None:
    used: set[str] = set()
    for seed in range(9, 29):
        schedule = generate(seed, 5, 2, 3000, frozenset(FAULT_KINDS))
        assert Schedule.from_json(schedule.to_json()) == schedule
        used |= schedule.kinds_used()
    assert used == set(FAULT_KINDS)


def test_no_fault_kind_without_its_switch() -> None:
    for kind in FAULT_KINDS:
        schedule = generate(4, 5, 2, 3000, frozenset(FAULT_KINDS) - {kind})
        assert kind not in schedule.kinds_used()


def test_leader_targeted_faults_hit_the_reported_leader() -> None:
    targeted = 0
    for seed in range(1, 8):
        sim = _run("pause,crash,partition", seed=seed)
        planned = {i: e for i, e in enumerate(sim.schedule.events)}
        assert len(sim.injected) <= len(planned)
        for event in sim.injected:
            assert event.target == "", "injected faults are pinned to a node"
        leader_events = [e for e in sim.schedule.events if e.target == "leader"]
        targeted += len(leader_events)
        hits = [e for e in sim.injected if e.node == 2 or (2, 1) in e.links]
        # ProbeNode reports node 2 as leader: every targeted fault lands on it
        assert len(hits) >= len(leader_events)
    assert targeted > 0


def test_exceptions_in_protocol_code_become_violations() -> None:
    from pnyx.sim.runner import run_sim
    from pnyx.sim.spec import ProtocolDef

    class Exploding(ProbeNode):
        def tick(self) -> None:
            super().tick()
            assert self.ticks < 50, "planted invariant failure"

    spec = ProtocolDef("boom", "test", Exploding, PROBE.make_client, PROBE.make_monitor)
    result = run_sim(spec, SimConfig(seed=1))
    assert result.violation is not None and result.violation.prop == "exception"
    assert "planted invariant failure" in result.violation.detail
    assert "test_faults.py" in result.violation.detail
