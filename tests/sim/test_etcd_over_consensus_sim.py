"""etcd over Multi-Paxos and VR in the simulator (``pnyx sim etcd-paxos``, ``etcd-vr``):
seeds clean under every fault, same seed same trace, the runs exercise what the monitor
checks, the etcd mutants are caught by their property, and Paxos needs its lease epochs
(seed 229 without them: a deposed leader's expiry deletes a renewed lease)."""

from __future__ import annotations

import dataclasses
import os
from collections import Counter

import pytest

from pnyx.catalog import get_protocol, protocol_names
from pnyx.protocols.etcd.spec import LEASE_EXPIRES_EARLY, MUTANT_PROPERTIES, WATCH_GAP, EtcdMonitor
from pnyx.protocols.etcd.spec_consensus import (
    ETCD_PAXOS,
    ETCD_VR,
    PAXOS_INNER,
    etcd_paxos_spec,
    etcd_vr_spec,
)
from pnyx.sim.runner import SimConfig, Simulation, run_sim
from pnyx.sim.schedule import parse_faults
from pnyx.sim.spec import ProtocolDef

ALL = parse_faults("all")
SPECS = {"etcd-paxos": ETCD_PAXOS, "etcd-vr": ETCD_VR}
SEEDS = 60
"""Plain seeds per consensus in ``make test`` (about 4 s of CPU for Paxos, 8 s for VR)."""
SOAK_SEEDS = 2_000
"""``make soak``: plain seeds and as many swarm seeds per consensus."""
FIRST_CATCH: dict[tuple[str, str], int] = {
    ("etcd-paxos", LEASE_EXPIRES_EARLY): 4,
    ("etcd-vr", LEASE_EXPIRES_EARLY): 16,
    ("etcd-paxos", WATCH_GAP): 0,
    ("etcd-vr", WATCH_GAP): 0,
}
"""The first seed (all faults) that catches each etcd mutant, recorded when measured."""
MUTANT_SEED_BUDGET = 60
PAXOS_EPOCH_SEED = 229
"""``pnyx sim etcd-paxos --seed 229`` without lease epochs: lease-early-expiry (the
first of 400 plain seeds to show it)."""


def test_registered_in_the_catalog() -> None:
    assert {"etcd-paxos", "etcd-vr"} <= set(protocol_names())
    assert get_protocol("etcd-paxos") is ETCD_PAXOS and not ETCD_PAXOS.broken
    assert get_protocol("etcd-vr") is ETCD_VR and not ETCD_VR.runnable
    assert get_protocol("etcd-vr+watch_gap").broken
    with pytest.raises(KeyError, match="unknown mutants"):
        get_protocol("etcd-paxos+vote_not_persisted")  # Raft's mutants are Raft's only


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SPECS))
def test_seeds_with_all_faults_have_no_violation(name: str) -> None:
    _clean(SPECS[name], range(SEEDS), swarm=False)


@pytest.mark.soak
@pytest.mark.parametrize("name", sorted(SPECS))
def test_soak_seeds_plain_and_swarm(name: str) -> None:
    if not os.environ.get("PNYX_SOAK"):
        pytest.fail("a soak test: run it with PNYX_SOAK=1 (make soak)")
    _clean(SPECS[name], range(SEEDS, SOAK_SEEDS), swarm=False)
    _clean(SPECS[name], range(SOAK_SEEDS), swarm=True)


def _clean(spec: ProtocolDef, seeds: range, *, swarm: bool) -> None:
    failures, unknown = [], []
    for seed in seeds:
        result = run_sim(spec, SimConfig(seed=seed, faults=ALL, swarm=swarm))
        if result.violation is not None:
            failures.append((seed, str(result.violation)))
        elif not result.ok:
            unknown.append(seed)
    flag = " --swarm" if swarm else ""
    assert not failures, f"replay: pnyx sim {spec.name} --seed {failures[0][0]}{flag}: {failures}"
    assert len(unknown) <= max(1, len(seeds) // 100), f"undecided seeds {unknown}"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_same_seed_same_trace_hash(name: str) -> None:
    spec = SPECS[name]
    first = run_sim(spec, SimConfig(seed=7, faults=ALL, hash_trace=True))
    again = run_sim(spec, SimConfig(seed=7, faults=ALL, hash_trace=True))
    other = run_sim(spec, SimConfig(seed=8, faults=ALL, hash_trace=True))
    assert first.trace_hash and first.trace_hash == again.trace_hash != other.trace_hash
    swarm = run_sim(spec, SimConfig(seed=7, faults=ALL, swarm=True, hash_trace=True))
    swarm_again = run_sim(spec, SimConfig(seed=7, faults=ALL, swarm=True, hash_trace=True))
    assert swarm.trace_hash == swarm_again.trace_hash


@pytest.mark.parametrize("name", sorted(SPECS))
def test_runs_exercise_what_the_monitor_checks(name: str) -> None:
    """Guard against a quiet simulation: revisions, leases kept alive and expiring, txns."""
    seen: Counter[str] = Counter()
    for seed in range(10):
        sim = Simulation(SPECS[name], SimConfig(seed=seed, faults=ALL))
        result = sim.run()
        assert result.ok, result.violation
        monitor = sim.monitor
        assert isinstance(monitor, EtcdMonitor)
        seen["revisions"] += len(monitor.revisions)
        seen["expiries"] += len(monitor.expired_us)
        seen["leases kept alive"] += len(monitor.protected_us)
        seen.update(e.f for e in result.history if e.type == "ok")
    wanted = {"revisions": 80, "expiries": 3, "keep_alive": 20, "cas": 10, "get": 50}
    short = {k: (seen[k], n) for k, n in wanted.items() if seen[k] < n}
    assert not short, f"too little of (seen, wanted): {short}; all: {dict(seen)}"


@pytest.mark.parametrize(("name", "mutant"), sorted(FIRST_CATCH))
def test_mutant_is_caught_by_its_property(name: str, mutant: str) -> None:
    make = etcd_paxos_spec if name == "etcd-paxos" else etcd_vr_spec
    spec = make(frozenset({mutant}), name=f"{name}+{mutant}")
    for seed in range(MUTANT_SEED_BUDGET):
        violation = run_sim(spec, SimConfig(seed=seed, faults=ALL)).violation
        if violation is not None:
            assert violation.prop == MUTANT_PROPERTIES[mutant], f"seed {seed}: {violation}"
            assert seed == FIRST_CATCH[(name, mutant)], f"first caught by seed {seed} now"
            return
    pytest.fail(f"{name}+{mutant} not caught within {MUTANT_SEED_BUDGET} seeds")


def test_paxos_needs_lease_epochs() -> None:
    """Without epochs, seed 229's deposed leader (isolated, then back) has its expiry
    revoke adopted by a later phase 1 after the leader in between renewed the lease."""
    config = SimConfig(seed=PAXOS_EPOCH_SEED, faults=ALL)
    without = etcd_paxos_spec(inner=dataclasses.replace(PAXOS_INNER, epoch=None), name="x")
    violation = run_sim(without, config).violation
    assert violation is not None and violation.prop == "lease-early-expiry", violation
    assert run_sim(ETCD_PAXOS, config).violation is None
