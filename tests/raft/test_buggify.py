"""BUGGIFY (issue 16, item 16): deterministic fault points inside the Raft node, driven by
its injected Rng, that choose legal but unusual behaviour.  Runs with them on must stay
safe and live, be reproducible, and actually reach every point."""

from __future__ import annotations

import dataclasses

from pnyx.protocols.raft import RaftConfig, RaftNode
from pnyx.protocols.raft.node import BUGGIFY_POINTS
from pnyx.protocols.raft.spec import SIM_CONFIG, raft_spec
from pnyx.sim.runner import SimConfig, Simulation, run_sim
from pnyx.sim.schedule import parse_faults

from .cluster import Cluster

ALL = parse_faults("all")
BUGGY = raft_spec(config=dataclasses.replace(SIM_CONFIG, buggify=True, buggify_probability=0.1))
SEEDS = 30


def test_buggify_off_draws_nothing_extra() -> None:
    """With BUGGIFY off a node draws exactly what it drew before (same seed, same trace)."""
    plain = Cluster(3, RaftConfig())
    off = Cluster(3, RaftConfig(buggify=False, buggify_probability=0.9))
    for c in (plain, off):
        c.elect(1)
        c.settle(20)
    assert plain.text() == off.text()
    assert all(not n.buggify_fired for n in off.live())


def test_buggify_runs_are_safe_live_and_reach_every_point() -> None:
    fired: dict[str, int] = dict.fromkeys(BUGGIFY_POINTS, 0)
    failures = []
    for seed in range(SEEDS):
        sim = Simulation(BUGGY, SimConfig(seed=seed, faults=ALL))
        result = sim.run()
        if not result.ok:
            failures.append((seed, str(result.violation)))
        for node_id in sim.node_ids:
            node = sim.node(node_id)
            if not isinstance(node, RaftNode):
                continue  # crashed at the end of the run
            for point, count in node.buggify_fired.items():
                fired[point] += count
    assert not failures, failures[:3]
    assert all(fired.values()), f"points never reached: {fired}"


def test_buggify_runs_are_reproducible() -> None:
    first = run_sim(BUGGY, SimConfig(seed=5, faults=ALL, hash_trace=True))
    again = run_sim(BUGGY, SimConfig(seed=5, faults=ALL, hash_trace=True))
    plain = run_sim(raft_spec(), SimConfig(seed=5, faults=ALL, hash_trace=True))
    assert first.trace_hash == again.trace_hash
    assert first.trace_hash != plain.trace_hash, "BUGGIFY changed nothing"
