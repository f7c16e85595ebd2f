"""Swarm testing: per-seed draws are visible, replayable and varied."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from pnyx.cli.sim_cmd import replay_command, sim
from pnyx.protocols.raft.spec import RAFT, raft_spec
from pnyx.sim.runner import SimConfig, Simulation, run_sim
from pnyx.sim.schedule import DEFAULT_KINDS, parse_faults
from pnyx.sim.swarm import draw_swarm

ALL = parse_faults("all")


def test_same_seed_same_draw_and_different_seeds_vary() -> None:
    assert draw_swarm(7, RAFT, ALL) == draw_swarm(7, RAFT, ALL)
    draws = [draw_swarm(seed, RAFT, ALL) for seed in range(60)]
    assert len({d.faults for d in draws}) > 20
    assert {d.nodes for d in draws} == {3, 5, 7}
    assert len({d.intensity for d in draws}) > 3
    settings = [dict(d.settings) for d in draws]
    for name in ("pre_vote", "check_quorum", "lease_reads"):
        assert {s[name] for s in settings} == {True, False}, name
    assert len({s["max_inflight_msgs"] for s in settings}) > 2
    assert len({s["snapshot_threshold_entries"] for s in settings}) > 2
    assert all(s["check_quorum"] for s in settings if s["lease_reads"])
    assert all(d.faults <= DEFAULT_KINDS for d in draws)
    rules = set(RAFT.nemesis_rules) | set(RAFT.stream_nemesis_rules)
    assert {r for d in draws for r in d.nemesis.rules} == rules


def test_draws_respect_explicit_sizes_and_allowed_faults() -> None:
    allowed = parse_faults("drop,crash")
    for seed in range(20):
        draw = draw_swarm(seed, RAFT, allowed, nodes=3, clients=2)
        assert draw.nodes == 3 and draw.clients == 2
        assert draw.faults and draw.faults <= allowed


def test_swarm_settings_reach_the_nodes_and_clients() -> None:
    for seed in range(40):
        draw = draw_swarm(seed, RAFT, ALL)
        if dict(draw.settings)["lease_reads"]:
            break
    sim = Simulation(RAFT, SimConfig(seed=seed, faults=ALL, swarm=True))
    assert sim.swarm == draw
    result = sim.run()
    assert result.ok, result.violation
    settings = dict(draw.settings)
    node = next(n for i in sim.node_ids if (n := sim.node(i)) is not None)
    for name in ("pre_vote", "check_quorum", "lease_reads", "max_inflight_msgs"):
        assert getattr(node.cfg, name) == settings[name], name  # type: ignore[attr-defined]
    assert node.cfg.lease_reads  # type: ignore[attr-defined]
    assert len(sim.node_ids) == draw.nodes
    assert result.swarm == draw


def test_lease_read_seeds_are_clean() -> None:
    lease = 0
    for seed in range(60):
        if not dict(draw_swarm(seed, RAFT, ALL).settings)["lease_reads"]:
            continue
        lease += 1
        result = run_sim(RAFT, SimConfig(seed=seed, faults=ALL, swarm=True))
        assert result.ok, f"pnyx sim raft --seed {seed} --swarm: {result.violation}"
        if lease == 8:
            break
    assert lease == 8


def test_swarm_replays_exactly_and_the_command_says_swarm() -> None:
    config = SimConfig(seed=21, faults=ALL, swarm=True, hash_trace=True)
    first, again = run_sim(RAFT, config), run_sim(RAFT, config)
    assert first.trace_hash == again.trace_hash
    plain = run_sim(RAFT, SimConfig(seed=21, faults=ALL, hash_trace=True))
    assert plain.trace_hash != first.trace_hash
    assert replay_command("raft", config).endswith("--seed 21 --faults all --swarm")
    pnyx = Path(sys.executable).with_name("pnyx")
    proc = subprocess.run(
        [str(pnyx), "sim", "raft", "--seed", "21", "--faults", "all", "--swarm", "--trace-hash"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == first.trace_hash


def test_a_failing_swarm_seed_prints_its_draw_and_replay() -> None:
    from pnyx import catalog

    catalog._PROTOCOLS["raft-test-broken"] = "tests.sim.test_swarm:BROKEN"
    try:
        out = CliRunner().invoke(sim, ["raft-test-broken", "--seed", "0", "--swarm", "--no-shrink"])
    finally:
        del catalog._PROTOCOLS["raft-test-broken"]
    assert out.exit_code == 1, out.output
    assert "swarm seed 0: faults" in out.output
    assert "settings: " in out.output and "pre_vote=" in out.output
    assert "nemesis: " in out.output
    assert "replay: pnyx sim raft-test-broken --seed 0 --faults all --swarm" in out.output


BROKEN = raft_spec(frozenset({"leader_apply_before_quorum"}), name="raft-test-broken")
