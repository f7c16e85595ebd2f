"""etcd over Raft in the simulator: seeds clean under every fault, same seed same trace,
the runs exercise what the monitor checks, and both etcd mutants are caught."""

from __future__ import annotations

from collections import Counter

import pytest
from click.testing import CliRunner

from pnyx.catalog import get_protocol, protocol_names
from pnyx.cli.main import cli
from pnyx.protocols.etcd import EtcdStore, WatchHub
from pnyx.protocols.etcd.requests import (
    CompactionRequest,
    DeleteRangeRequest,
    PutRequest,
    WatchCreateRequest,
    WatchRequest,
)
from pnyx.protocols.etcd.sim_client import EtcdClient, WatchRecord
from pnyx.protocols.etcd.spec import (
    ETCD,
    ETCD_COMPACT,
    ETCD_MUTANTS,
    LEASE_EXPIRES_EARLY,
    MUTANT_PROPERTIES,
    WATCH_GAP,
    EtcdMonitor,
    EtcdNode,
    etcd_spec,
)
from pnyx.sim.runner import SimConfig, Simulation, run_sim
from pnyx.sim.schedule import parse_faults

ALL = parse_faults("all")
SEEDS = 100
"""Plain seeds in ``make test``; ``make soak`` runs the next ``SOAK_SEEDS`` (and as many
swarm seeds)."""
CHUNK = 50
SOAK_SEEDS = 1_000
COMPACT_SEEDS = 40
"""etcd-compact seeds in ``make test``; ``make soak`` runs the rest up to ``COMPACT_SOAK_SEEDS``."""
COMPACT_SOAK_SEEDS = 500
MUTANT_SEED_BUDGET = 100
"""Plain seeds (all faults) within which each mutant must be caught by its property."""


def test_registered_in_the_catalog() -> None:
    assert "etcd" in protocol_names()
    assert get_protocol("etcd") is ETCD and not ETCD.broken
    spec = get_protocol("etcd+watch_gap")
    assert spec.name == "etcd+watch_gap" and spec.broken
    assert get_protocol("etcd+lease_expires_early,vote_not_persisted").broken  # Raft's too
    with pytest.raises(KeyError, match="unknown mutants"):
        get_protocol("etcd+no_such_mutant")
    assert set(MUTANT_PROPERTIES) == ETCD_MUTANTS


@pytest.mark.slow
@pytest.mark.parametrize("first", range(0, SEEDS, CHUNK))
def test_seeds_with_all_faults_have_no_violation(first: int) -> None:
    failures, unknown = [], []
    for seed in range(first, first + CHUNK):
        result = run_sim(ETCD, SimConfig(seed=seed, faults=ALL))
        if not result.ok:
            failures.append((seed, str(result.violation)))
        if result.unknown:
            unknown.append(seed)
    assert not failures, f"replay with: pnyx sim etcd --seed {failures[0][0]}: {failures[0][1]}"
    assert len(unknown) <= 1, f"undecided checks in seeds {unknown}"


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_soak_seeds_plain_and_swarm() -> None:
    plain = range(SEEDS, SEEDS + SOAK_SEEDS)
    bad = [s for s in plain if not run_sim(ETCD, SimConfig(s, faults=ALL)).ok]
    bad += [
        -s for s in range(SOAK_SEEDS) if not run_sim(ETCD, SimConfig(s, faults=ALL, swarm=True)).ok
    ]
    assert not bad, f"failing seeds (negative: --swarm): {bad[:20]}"


def test_same_seed_same_trace_hash() -> None:
    first = run_sim(ETCD, SimConfig(seed=7, faults=ALL, hash_trace=True))
    again = run_sim(ETCD, SimConfig(seed=7, faults=ALL, hash_trace=True))
    other = run_sim(ETCD, SimConfig(seed=8, faults=ALL, hash_trace=True))
    assert first.trace_hash and first.trace_hash == again.trace_hash
    assert first.trace_hash != other.trace_hash
    swarm = run_sim(ETCD, SimConfig(seed=7, faults=ALL, swarm=True, hash_trace=True))
    swarm_again = run_sim(ETCD, SimConfig(seed=7, faults=ALL, swarm=True, hash_trace=True))
    assert swarm.trace_hash == swarm_again.trace_hash


def test_runs_exercise_what_the_monitor_checks() -> None:
    """Guard against a quiet simulation: txns, leases expiring, watches resumed elsewhere."""
    seen: Counter[str] = Counter()
    for seed in range(12):
        sim = Simulation(ETCD, SimConfig(seed=seed, faults=ALL))
        result = sim.run()
        assert result.ok, result.violation
        monitor = sim.monitor
        assert isinstance(monitor, EtcdMonitor)
        seen["revisions"] += len(monitor.revisions)
        seen["expiries"] += len(monitor.expired_us)
        seen["leases kept alive"] += len(monitor.protected_us)
        for event in result.history:
            if event.type == "ok":
                seen[event.f] += 1
        for client_id in sim.client_ids:
            client = sim.node(client_id)
            assert isinstance(client, EtcdClient)
            seen["watch events"] += len(client.watch.events)
            seen["watch re-created"] += client.watch.recreated
        for node_id in sim.node_ids:
            node = sim.node(node_id)
            if isinstance(node, EtcdNode):
                seen["snapshots"] += node.raft.log.offset > 0
    wanted = {
        "revisions": 100,
        "expiries": 4,
        "keep_alive": 30,
        "lease_put": 10,
        "cas": 30,
        "get": 100,
        "put": 50,
        "watch events": 200,
        "watch re-created": 50,
        "snapshots": 5,
    }
    short = {k: (seen[k], n) for k, n in wanted.items() if seen[k] < n}
    assert not short, f"too little of (seen, wanted): {short}; all: {dict(seen)}"


def _first_catch(mutant: str, budget: int, swarm: bool = False) -> tuple[int, str] | None:
    spec = etcd_spec(frozenset({mutant}), name=f"etcd+{mutant}")
    for seed in range(budget):
        violation = run_sim(spec, SimConfig(seed=seed, faults=ALL, swarm=swarm)).violation
        if violation is not None:
            return seed, violation.prop
    return None


@pytest.mark.slow
@pytest.mark.parametrize("mutant", sorted(ETCD_MUTANTS))
def test_mutant_is_caught_by_its_property_within_budget(mutant: str) -> None:
    caught = _first_catch(mutant, MUTANT_SEED_BUDGET)
    assert caught is not None, f"etcd+{mutant} not caught in {MUTANT_SEED_BUDGET} seeds"
    seed, prop = caught
    assert prop == MUTANT_PROPERTIES[mutant], f"pnyx sim etcd+{mutant} --seed {seed}: {prop}"


@pytest.mark.slow
def test_lease_mutant_is_caught_by_swarm_seeds_too() -> None:
    caught = _first_catch(LEASE_EXPIRES_EARLY, MUTANT_SEED_BUDGET, swarm=True)
    assert caught is not None and caught[1] == "lease-early-expiry", caught


def test_watch_check_reports_a_gap_and_a_duplicate() -> None:
    """The watch property on a hand-made log: exact prefix, nothing missing or repeated."""
    sim = Simulation(ETCD, SimConfig(seed=3, faults=frozenset()))
    assert sim.run().ok
    monitor = sim.monitor
    assert isinstance(monitor, EtcdMonitor)
    record = next(
        (
            r
            for c in sim.client_ids
            if isinstance(cl := sim.node(c), EtcdClient)
            for r in cl.watch_log
            if len(r.events) >= 3
        ),
        None,
    )
    assert record is not None
    check = monitor.check_watch
    assert check(1, record) is None
    gap = WatchRecord(
        record.key, record.range_end, record.start, record.events[:1] + record.events[2:]
    )
    violation = check(1, gap)
    assert violation is not None and violation.prop == "watch-order"
    dup = WatchRecord(
        record.key, record.range_end, record.start, record.events[:2] + record.events[1:]
    )
    violation = check(1, dup)
    assert violation is not None and violation.prop == "watch-order"
    early = WatchRecord(record.key, record.range_end, record.start, compacted=5, needed=7)
    violation = check(1, early)
    assert violation is not None and "canceled as compacted" in violation.detail


def test_etcd_with_compactions_keeps_watch_order() -> None:
    """``pnyx sim etcd-compact --seed 33``: a watch resumed at the compact revision (it
    missed the delete there while compaction dropped every tombstone, as etcd 3.4 does)."""
    result = run_sim(ETCD_COMPACT, SimConfig(seed=33, faults=ALL))
    assert result.ok, result.violation


def _compact_failures(seeds: range) -> list[int]:
    return [s for s in seeds if not run_sim(ETCD_COMPACT, SimConfig(seed=s, faults=ALL)).ok]


def test_etcd_with_compactions_is_clean_on_many_seeds() -> None:
    bad = _compact_failures(range(COMPACT_SEEDS))
    assert not bad, f"replay: pnyx sim etcd-compact --seed {bad[0]}"


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_soak_etcd_with_compactions() -> None:
    bad = _compact_failures(range(COMPACT_SEEDS, COMPACT_SOAK_SEEDS))
    assert not bad, f"failing seeds (pnyx sim etcd-compact --seed N): {bad[:20]}"


def test_watch_from_the_compact_revision_sees_the_delete_there() -> None:
    """The same, without the simulator: put k (2), delete k (3), put k (4), compact 3; a
    client that saw revision 2 resumes its watch at 3."""
    store = EtcdStore()
    store.apply(PutRequest(key=b"k", value=b"1"))
    store.apply(DeleteRangeRequest(key=b"k"))
    store.apply(PutRequest(key=b"k", value=b"2"))
    store.apply(CompactionRequest(revision=3))
    hub = WatchHub(store)
    stream = hub.open_stream()
    create = WatchCreateRequest(key=b"k", start_revision=3)
    hub.request(stream, WatchRequest(create_request=create))
    responses = hub.take(stream)
    revisions = [e.kv.mod_revision for r in responses for e in r.events if e.kv is not None]
    canceled = any(r.canceled and r.compact_revision for r in responses)
    assert canceled or revisions == [3, 4], (revisions, responses)


def test_cli_runs_etcd_and_replays_a_mutant_seed() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["sim", "etcd", "--seeds", "0..2"])
    assert result.exit_code == 0, result.output
    caught = _first_catch(WATCH_GAP, 20)
    assert caught is not None
    result = runner.invoke(
        cli, ["sim", f"etcd+{WATCH_GAP}", "--seed", str(caught[0]), "--no-shrink"]
    )
    assert result.exit_code == 1 and "watch-order" in result.output, result.output
